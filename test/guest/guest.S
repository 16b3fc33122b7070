# godwit test guest: a flat x86-64 binary that dirties a range of guest
# pages in a checkable pattern. Build with ./build.sh (GNU as + ld + objcopy).
#
# Execution contract (set up by the VMM's flat-guest boot loader):
#   - loaded at LOAD_ADDR (0x100000, 1 MiB); entry point = LOAD_ADDR;
#   - 64-bit long mode, paging identity-maps all guest RAM (2 MiB pages),
#     flat code/data segments, interrupts disabled (never enabled here);
#   - RSP = 0x80000 (stack grows down; at most STACK_RESERVE bytes used);
#   - RSI = GPA of the parameter block (normally 0x5000); other GPRs zero.
#
# Parameter block (little-endian; PARAM_SIZE = 0x58 bytes):
#   0x00 u64 magic            "GDWTPARM" as bytes (0x4d52415054574447)
#   0x08 u32 version          1
#   0x0C u32 size             size of the block, >= PARAM_SIZE
#   0x10 u64 range_start      page-aligned GPA of the first dirtied page
#   0x18 u64 range_end        page-aligned GPA, exclusive
#   0x20 u64 heartbeat_every  print "heartbeat <passes>" every N passes; 0 = never
#   0x28 u64 max_pages_per_sec dirty-rate limit; 0 = unlimited
#   0x30 u64 tsc_khz          TSC frequency (KVM_GET_TSC_KHZ); 0 disables the limit
#   0x38 u16 serial_port      8250 base I/O port (0x3f8)
#   0x3A 6 bytes              reserved, zero
#   --- status area, written by the guest ---
#   0x40 u64 passes           completed passes
#   0x48 u64 alive            incremented after every chunk of pages and on
#                             every iteration of the rate-limit wait
#   0x50 u64 state            0 = not started, 1 = running, 2 = bad parameters
#
# Behaviour: validate the block, print
#   "godwit test guest: range 0x<start>-0x<end>\n" (16 lowercase hex digits
# each) on the serial port, then loop forever. One pass adds 1 to the u64 at
# the first byte of every page of [range_start, range_end) in increasing GPA
# order, one "add qword ptr [rdi], 1" per page, then increments `passes`.
# Every heartbeat_every passes it prints "heartbeat <passes decimal>\n".
# Rate limit (max_pages_per_sec > 0 and tsc_khz > 0): after each chunk of
# up to 64 pages, spin on rdtsc until the TSC ticks elapsed since the pass
# started are >= pages_done * tsc_khz * 1000 / max_pages_per_sec.
#
# Bad parameters (wrong magic/version/size, zero serial port, empty or
# unaligned range, range starting below MIN_RANGE_START, range overlapping
# the parameter block or the stack, tsc_khz >= 2^32): print
# "godwit test guest: bad parameters\n" (on 0x3f8 unless the block named a
# port) and halt forever. state = 2 is written only if magic, version and
# size were valid.
#
# Memory written: the stack, the status area and the pages of the range.
#
# Register use in the main loop:
#   rbx = parameter block    rbp = serial port       r8  = max_pages_per_sec
#   r9  = TSC ticks/second   r10 = TSC at pass start r12 = range_start
#   r13 = range_end          r14 = passes            r15 = heartbeat_every

	.intel_syntax noprefix
	.code64

	.equ LOAD_ADDR, 0x100000
	.equ MIN_RANGE_START, 0x110000	# LOAD_ADDR + 64 KiB maximum image size
	.equ PAGE_SIZE, 4096
	.equ CHUNK_PAGES, 64
	.equ STACK_RESERVE, 4096
	.equ DEFAULT_PORT, 0x3f8
	.equ PARAM_MAGIC, 0x4d52415054574447	# "GDWTPARM" little-endian
	.equ PARAM_VERSION, 1
	.equ PARAM_SIZE, 0x58

	.equ P_MAGIC, 0x00
	.equ P_VERSION, 0x08
	.equ P_SIZE, 0x0c
	.equ P_RANGE_START, 0x10
	.equ P_RANGE_END, 0x18
	.equ P_HEARTBEAT, 0x20
	.equ P_MAX_PPS, 0x28
	.equ P_TSC_KHZ, 0x30
	.equ P_SERIAL, 0x38
	.equ P_PASSES, 0x40
	.equ P_ALIVE, 0x48
	.equ P_STATE, 0x50

	.equ STATE_RUNNING, 1
	.equ STATE_BAD, 2

	.text
	.globl _start
_start:
	cld
	mov	ebp, DEFAULT_PORT
	mov	rbx, rsi

	# --- block header: on failure the block is not ours, write nothing ---
	movabs	rax, PARAM_MAGIC
	cmp	qword ptr [rbx + P_MAGIC], rax
	jne	.Lbad_block
	cmp	dword ptr [rbx + P_VERSION], PARAM_VERSION
	jne	.Lbad_block
	cmp	dword ptr [rbx + P_SIZE], PARAM_SIZE
	jb	.Lbad_block

	# --- serial port ---
	movzx	eax, word ptr [rbx + P_SERIAL]
	test	eax, eax
	jz	.Lbad_params
	mov	ebp, eax

	# --- range: aligned, non-empty, above the image ---
	mov	r12, qword ptr [rbx + P_RANGE_START]
	mov	r13, qword ptr [rbx + P_RANGE_END]
	test	r12, PAGE_SIZE - 1
	jnz	.Lbad_params
	test	r13, PAGE_SIZE - 1
	jnz	.Lbad_params
	cmp	r12, r13
	jae	.Lbad_params
	cmp	r12, MIN_RANGE_START
	jb	.Lbad_params

	# --- the parameter block must not overlap the range:
	#     ok if rbx + PARAM_SIZE <= start or rbx >= end ---
	lea	rax, [rbx + PARAM_SIZE]
	cmp	rax, r12
	jbe	.Lblock_ok
	cmp	rbx, r13
	jb	.Lbad_params
.Lblock_ok:
	# --- the stack [rsp - STACK_RESERVE, rsp) must not overlap the range ---
	cmp	rsp, r12
	jbe	.Lstack_ok
	lea	rax, [rsp - STACK_RESERVE]
	cmp	rax, r13
	jb	.Lbad_params
.Lstack_ok:
	# --- rate limit: r8 = pages/s, r9 = ticks/s; r8 = 0 disables ---
	mov	r9, qword ptr [rbx + P_TSC_KHZ]
	mov	rax, r9
	shr	rax, 32
	jnz	.Lbad_params
	imul	r9, r9, 1000
	mov	r8, qword ptr [rbx + P_MAX_PPS]
	test	r9, r9
	jnz	.Lrate_ok
	xor	r8d, r8d
.Lrate_ok:
	mov	r15, qword ptr [rbx + P_HEARTBEAT]

	# --- status area ---
	xor	r14d, r14d
	mov	qword ptr [rbx + P_PASSES], r14
	mov	qword ptr [rbx + P_ALIVE], r14
	mov	qword ptr [rbx + P_STATE], STATE_RUNNING

	# --- banner ---
	lea	rsi, [rip + banner]
	call	puts
	mov	rdi, r12
	call	puthex
	mov	al, 0x2d		# '-'
	call	putc
	mov	rdi, r13
	call	puthex
	mov	al, 0x0a		# '\n'
	call	putc

	# --- main loop: one iteration = one pass over the range ---
.Lpass:
	rdtsc
	shl	rdx, 32
	or	rax, rdx
	mov	r10, rax		# TSC at pass start
	mov	rdi, r12		# current page
	xor	esi, esi		# pages done in this pass
.Lchunk:
	mov	ecx, CHUNK_PAGES
.Lpage:
	add	qword ptr [rdi], 1	# the only write to the range
	add	rdi, PAGE_SIZE
	inc	rsi
	cmp	rdi, r13
	jae	.Lchunk_done
	dec	ecx
	jnz	.Lpage
.Lchunk_done:
	inc	qword ptr [rbx + P_ALIVE]
	test	r8, r8
	jz	.Lchunk_next
	# target ticks = pages_done * ticks_per_sec / pages_per_sec (128-bit
	# product; if the quotient does not fit 64 bits, wait "forever")
	mov	rax, rsi
	mul	r9
	cmp	rdx, r8
	jae	.Ltarget_max
	div	r8
	mov	rcx, rax
	jmp	.Lwait
.Ltarget_max:
	mov	rcx, -1
.Lwait:
	rdtsc
	shl	rdx, 32
	or	rax, rdx
	sub	rax, r10		# elapsed ticks in this pass
	cmp	rax, rcx
	jae	.Lchunk_next
	pause
	inc	qword ptr [rbx + P_ALIVE]
	jmp	.Lwait
.Lchunk_next:
	cmp	rdi, r13
	jb	.Lchunk

	# --- pass complete ---
	inc	r14
	mov	qword ptr [rbx + P_PASSES], r14
	test	r15, r15
	jz	.Lpass
	mov	rax, r14
	xor	edx, edx
	div	r15			# r15 != 0, rdx = 0: cannot fault
	test	rdx, rdx
	jnz	.Lpass
	lea	rsi, [rip + heartbeat]
	call	puts
	mov	rdi, r14
	call	putdec
	mov	al, 0x0a		# '\n'
	call	putc
	jmp	.Lpass

	# --- bad parameters ---
.Lbad_params:
	mov	qword ptr [rbx + P_STATE], STATE_BAD
.Lbad_block:
	lea	rsi, [rip + badparams]
	call	puts
.Lhalt:
	hlt
	jmp	.Lhalt

# putc: write al to the serial port at ebp, polling LSR.THRE (bit 5) first.
# Preserves eax; clobbers ecx, edx.
putc:
	mov	ecx, eax
	lea	edx, [rbp + 5]		# LSR
.Lputc_poll:
	in	al, dx
	test	al, 0x20
	jz	.Lputc_poll
	mov	eax, ecx
	mov	edx, ebp		# THR
	out	dx, al
	ret

# puts: write the NUL-terminated string at rsi. Clobbers rsi, eax, ecx, edx.
puts:
	lodsb
	test	al, al
	jz	.Lputs_done
	call	putc
	jmp	puts
.Lputs_done:
	ret

# puthex: write rdi as "0x" and 16 lowercase hex digits. Preserves rdi;
# clobbers eax, ecx, edx, r11d.
puthex:
	mov	al, 0x30		# '0'
	call	putc
	mov	al, 0x78		# 'x'
	call	putc
	mov	r11d, 16
.Lputhex_digit:
	rol	rdi, 4
	mov	eax, edi
	and	eax, 0x0f
	add	al, 0x30		# '0'
	cmp	al, 0x39		# '9'
	jbe	.Lputhex_out
	add	al, 0x27		# 'a' - '9' - 1
.Lputhex_out:
	call	putc
	dec	r11d
	jnz	.Lputhex_digit
	ret

# putdec: write rdi in decimal. Uses 32 bytes of stack for the digits.
# Clobbers rax, rcx, rdx, rsi.
putdec:
	sub	rsp, 32
	lea	rsi, [rsp + 24]
	mov	byte ptr [rsi], 0
	mov	rax, rdi
	mov	ecx, 10
.Lputdec_digit:
	xor	edx, edx
	div	rcx
	add	dl, 0x30		# '0'
	dec	rsi
	mov	byte ptr [rsi], dl
	test	rax, rax
	jnz	.Lputdec_digit
	call	puts
	add	rsp, 32
	ret

banner:
	.asciz	"godwit test guest: range "
heartbeat:
	.asciz	"heartbeat "
badparams:
	.asciz	"godwit test guest: bad parameters\n"
