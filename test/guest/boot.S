# boot.S: the test guest as a bootable disk image. Build with ./build.sh
# (GNU as + ld + objcopy), after guest.bin, which it includes unchanged.
#
# The same 8 KiB image boots two ways:
#   - by a PC BIOS (QEMU's SeaBIOS) as a raw disk: the BIOS loads sector 0 at
#     0x7c00 and jumps to it with DL = boot drive; the image reads its other
#     15 sectors with INT 13h AH=42h (extended read) to 0x7e00;
#   - by `godwit run --boot-sector`, which loads all of it at 0x7c00 and
#     starts it the same way, with no BIOS (a zero IVT). The image sees its
#     end marker already in memory and reads nothing.
# Either way it then enables A20 (port 0x92), enters protected mode, builds
# page tables that identity-map the first 4 GiB with 2 MiB pages (at
# 0x20000-0x25fff), enters long mode, measures the TSC frequency against
# the PIT when a dirty-rate limit is set, copies its parameter block to
# 0x5000 (with tsc_khz filled in) and the test guest to 0x100000, and
# enters the test guest exactly as godwit's flat-guest loader does
# (test/guest/doc.go): RSP = 0x80000, RSI = 0x5000, other GPRs zero,
# interrupts disabled. From there on it is the test guest, byte for byte.
#
# Header (offsets in the image; `godwit bench` patches the parameter block,
# see PatchBootImage in bootimage.go):
#   0x00  3 bytes   jmp over the header
#   0x08  8 bytes   magic "GDWTBOOT"
#   0x10  u32       header version, 1
#   0x14  u32       image size in bytes (8192)
#   0x18  u32       offset of the parameter block (0x40)
#   0x1c  u32       offset of the included test guest
#   0x20  u32       size of the included test guest
#   0x40  0x58      the test guest's parameter block (guest.Params), with
#                   tsc_khz 0: the image measures it itself
#   0x1fe 2 bytes   0x55 0xaa, the boot signature
#   end-8 8 bytes   "GDWTEND!", the end marker
#
# TSC calibration: PIT channel 2 (gate through port 0x61, speaker off) in
# mode 0 counts 59659 ticks of 1.193182 MHz (50 ms); tsc_khz = TSC ticks
# elapsed / 50. Polls of port 0x61 are bounded; a PIT whose output never
# rises, or a result outside 1 MHz .. 2^32 kHz, is a failure.
#
# Failures print one line on COM1 and halt: "godwit boot image: <what>".

	.intel_syntax noprefix

	.equ BOOT_ADDR, 0x7c00
	.equ IMAGE_SIZE, 8192
	.equ SECTORS, IMAGE_SIZE / 512
	.equ PARAM_ADDR, 0x5000
	.equ PARAM_SIZE, 0x58
	.equ P_MAX_PPS, 0x28
	.equ P_TSC_KHZ, 0x30
	.equ GUEST_ADDR, 0x100000
	.equ STACK_TOP, 0x80000
	.equ PT_BASE, 0x20000		# PML4, PDPT, 4 page directories
	.equ COM1, 0x3f8
	.equ CAL_MS, 50
	.equ CAL_LATCH, 59659		# 1193182 Hz * 50 ms
	.equ CAL_MAX_POLLS, 4000000
	.equ MIN_TSC_KHZ, 1000

	.text
	.code16
	.globl _start
_start:
	jmp	.Lreal
	.balign	8
header:
	.ascii	"GDWTBOOT"
	.long	1			# header version
	.long	IMAGE_SIZE
	.long	params - _start
	.long	payload - _start
	.long	payload_end - payload

	.balign	64
# The parameter block: defaults that run in 64 MiB; `godwit bench`
# overwrites them.
params:
	.ascii	"GDWTPARM"
	.long	1			# version
	.long	PARAM_SIZE
	.quad	0x200000		# range_start
	.quad	0x4000000		# range_end
	.quad	1			# heartbeat_every
	.quad	0			# max_pages_per_sec
	.quad	0			# tsc_khz (measured)
	.word	COM1			# serial_port
	.fill	6, 1, 0
	.fill	24, 1, 0		# status area

# --- sector 0: everything a BIOS-loaded first sector needs ---
.Lreal:
	cli
	cld
	xor	ax, ax
	mov	ds, ax
	mov	es, ax
	mov	ss, ax
	mov	sp, BOOT_ADDR
	.byte	0xea			# ljmp 0:.Lnorm (CS:IP = 0:0x7cxx)
	.word	.Lnorm
	.word	0
.Lnorm:
	mov	byte ptr [boot_drive], dl
	cmp	dword ptr [end_magic], 0x54574447	# "GDWT"
	jne	.Lload
	cmp	dword ptr [end_magic + 4], 0x21444e45	# "END!"
	je	stage2
.Lload:
	# Only the first sector is here: a BIOS loaded it. No BIOS (a zero
	# INT 13h vector) means a truncated image.
	cmp	dword ptr [0x13 * 4], 0
	je	.Lno_bios
	mov	si, offset dap
	mov	dl, byte ptr [boot_drive]
	mov	ah, 0x42
	int	0x13
	jc	.Ldisk_error
	cmp	dword ptr [end_magic], 0x54574447
	jne	.Ldisk_error
	cmp	dword ptr [end_magic + 4], 0x21444e45
	jne	.Ldisk_error
	jmp	stage2
.Lno_bios:
	mov	si, offset msg_truncated
	jmp	.Lfail16
.Ldisk_error:
	mov	si, offset msg_disk
.Lfail16:
	call	puts16
.Lhalt16:
	hlt
	jmp	.Lhalt16

# puts16: print the NUL-terminated string at DS:SI on COM1.
puts16:
	lodsb
	test	al, al
	jz	.Lputs16_done
	mov	bl, al
	mov	dx, COM1 + 5		# LSR
.Lputs16_poll:
	in	al, dx
	test	al, 0x20		# THRE
	jz	.Lputs16_poll
	mov	al, bl
	mov	dx, COM1
	out	dx, al
	jmp	puts16
.Lputs16_done:
	ret

	.balign	4
dap:					# INT 13h AH=42h disk address packet
	.byte	0x10, 0
	.word	SECTORS - 1
	.word	BOOT_ADDR + 512, 0	# offset, segment
	.quad	1			# first LBA
boot_drive:
	.byte	0x80

msg_truncated:
	.asciz	"godwit boot image: image incomplete and no BIOS to read the rest\n"
msg_disk:
	.asciz	"godwit boot image: disk read failed\n"

	.org	510
	.byte	0x55, 0xaa

# --- sector 1 onwards: loaded by the code above when a BIOS booted us ---
stage2:
	in	al, 0x92		# fast A20; never touch bit 0 (reset)
	or	al, 0x02
	and	al, 0xfe
	out	0x92, al
	lgdt	[gdtr]
	mov	eax, cr0
	or	eax, 1			# PE
	mov	cr0, eax
	.byte	0x66, 0xea		# ljmp 0x08:pm32 (32-bit offset)
	.long	pm32
	.word	0x08

	.code32
pm32:
	mov	ax, 0x10
	mov	ds, ax
	mov	es, ax
	mov	ss, ax
	mov	edi, PT_BASE		# clear the six table pages
	mov	ecx, 6 * 1024
	xor	eax, eax
	rep	stosd
	mov	dword ptr [PT_BASE], PT_BASE + 0x1003	# PML4[0] -> PDPT
	mov	edi, PT_BASE + 0x1000	# PDPT[0..3] -> the four PDs
	mov	eax, PT_BASE + 0x2003
	mov	ecx, 4
.Lpdpt:
	mov	dword ptr [edi], eax
	add	eax, 0x1000
	add	edi, 8
	loop	.Lpdpt
	mov	edi, PT_BASE + 0x2000	# 2048 x 2 MiB: 0 .. 4 GiB
	mov	eax, 0x83		# present, writable, large page
	mov	ecx, 2048
.Lpd:
	mov	dword ptr [edi], eax
	add	eax, 0x200000
	add	edi, 8
	loop	.Lpd
	mov	eax, cr4
	or	eax, 0x20		# PAE
	mov	cr4, eax
	mov	eax, PT_BASE
	mov	cr3, eax
	mov	ecx, 0xc0000080		# EFER
	rdmsr
	or	eax, 0x100		# LME
	wrmsr
	mov	eax, cr0
	or	eax, 0x80000000		# PG
	mov	cr0, eax
	.byte	0xea			# ljmp 0x18:long64
	.long	long64
	.word	0x18

	.code64
long64:
	mov	ax, 0x10
	mov	ds, ax
	mov	es, ax
	mov	ss, ax
	mov	fs, ax
	mov	gs, ax
	mov	esp, STACK_TOP
	xor	r12d, r12d		# tsc_khz; 0 without a rate limit
	cmp	qword ptr [params + P_MAX_PPS], 0
	je	.Lcopy
	call	calibrate
	mov	r12, rax
	test	rax, rax
	jnz	.Lcopy
	lea	rsi, [rip + msg_tsc]
	call	puts64
.Lhalt64:
	hlt
	jmp	.Lhalt64

.Lcopy:
	lea	rsi, [rip + params]	# the parameter block, tsc_khz filled in
	mov	edi, PARAM_ADDR
	mov	ecx, PARAM_SIZE
	rep	movsb
	mov	qword ptr [PARAM_ADDR + P_TSC_KHZ], r12
	lea	rsi, [rip + payload]	# the test guest
	mov	edi, GUEST_ADDR
	mov	ecx, payload_end - payload
	rep	movsb
	# Enter the test guest as godwit's flat loader does.
	mov	esp, STACK_TOP
	mov	eax, GUEST_ADDR
	mov	qword ptr [rsp - 8], rax
	mov	esi, PARAM_ADDR
	xor	eax, eax
	xor	ebx, ebx
	xor	ecx, ecx
	xor	edx, edx
	xor	edi, edi
	xor	ebp, ebp
	xor	r8d, r8d
	xor	r9d, r9d
	xor	r10d, r10d
	xor	r11d, r11d
	xor	r12d, r12d
	xor	r13d, r13d
	xor	r14d, r14d
	xor	r15d, r15d
	jmp	qword ptr [rsp - 8]

# calibrate: return the TSC frequency in kHz in rax, or 0 on failure.
calibrate:
	in	al, 0x61
	and	al, 0xfd		# speaker off
	or	al, 0x01		# gate channel 2 on
	out	0x61, al
	mov	al, 0xb0		# channel 2, lobyte/hibyte, mode 0, binary
	out	0x43, al
	mov	al, CAL_LATCH & 0xff
	out	0x42, al
	mov	al, CAL_LATCH >> 8
	out	0x42, al
	rdtsc
	shl	rdx, 32
	or	rax, rdx
	mov	r8, rax
	mov	ecx, CAL_MAX_POLLS
.Lcal_poll:
	in	al, 0x61
	test	al, 0x20		# OUT2: terminal count reached
	jnz	.Lcal_done
	dec	ecx
	jnz	.Lcal_poll
	xor	eax, eax
	ret
.Lcal_done:
	rdtsc
	shl	rdx, 32
	or	rax, rdx
	sub	rax, r8
	xor	edx, edx
	mov	ecx, CAL_MS
	div	rcx			# rax = kHz
	cmp	rax, MIN_TSC_KHZ
	jb	.Lcal_bad
	mov	rdx, rax
	shr	rdx, 32
	jnz	.Lcal_bad
	ret
.Lcal_bad:
	xor	eax, eax
	ret

# puts64: print the NUL-terminated string at rsi on COM1.
puts64:
	lodsb
	test	al, al
	jz	.Lputs64_done
	mov	cl, al
	mov	dx, COM1 + 5
.Lputs64_poll:
	in	al, dx
	test	al, 0x20
	jz	.Lputs64_poll
	mov	al, cl
	mov	dx, COM1
	out	dx, al
	jmp	puts64
.Lputs64_done:
	ret

msg_tsc:
	.asciz	"godwit boot image: TSC calibration against the PIT failed\n"

	.balign	8
gdt:
	.quad	0
	.quad	0x00cf9a000000ffff	# 0x08: 32-bit code
	.quad	0x00cf92000000ffff	# 0x10: data
	.quad	0x00af9a000000ffff	# 0x18: 64-bit code
gdtr:
	.word	gdtr - gdt - 1
	.long	gdt

	.balign	16
payload:
	.incbin	"guest.bin"
payload_end:

	.org	IMAGE_SIZE - 8
end_magic:
	.ascii	"GDWTEND!"
