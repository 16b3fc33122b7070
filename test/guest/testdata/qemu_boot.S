# qemu_boot.S: a 64 KiB "BIOS" for qemu-system-x86_64 (TCG) used only by
# TestGuestUnderQEMU. It stands in for the VMM's flat-guest boot loader:
# from the reset vector it enters protected mode, identity-maps the first
# 1 GiB with 2 MiB pages (tables at 0x1000-0x3fff), enters long mode and
# jumps to the guest at 0x100000 with RSP = 0x80000, RSI = 0x5000 and all
# other GPRs zero, interrupts disabled. QEMU's generic loader places
# guest.bin and the parameter block. Linked at 0xf0000 (the ISA BIOS alias).

	.intel_syntax noprefix
	.code16
	.globl _start
_start:
	cli
	mov	ax, 0xf000
	mov	ds, ax
	lgdt	[gdtr - _start]
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
	mov	edi, 0x1000		# clear PML4, PDPT, PD
	mov	ecx, 0xc00
	xor	eax, eax
	rep	stosd
	mov	dword ptr [0x1000], 0x2003	# PML4[0] -> PDPT
	mov	dword ptr [0x2000], 0x3003	# PDPT[0] -> PD
	mov	edi, 0x3000
	mov	eax, 0x83		# present, writable, 2 MiB
	mov	ecx, 512
.Lpd:
	mov	dword ptr [edi], eax
	add	eax, 0x200000
	add	edi, 8
	loop	.Lpd
	mov	eax, cr4
	or	eax, 0x20		# PAE
	mov	cr4, eax
	mov	eax, 0x1000
	mov	cr3, eax
	mov	ecx, 0xc0000080		# EFER
	rdmsr
	or	eax, 0x100		# LME
	wrmsr
	mov	eax, cr0
	or	eax, 0x80000000		# PG
	mov	cr0, eax
	.byte	0xea			# ljmp 0x18:lm64
	.long	lm64
	.word	0x18

	.code64
lm64:
	mov	esp, 0x80000
	mov	esi, 0x5000
	push	0x100000
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
	ret				# to 0x100000, RSP back at 0x80000

	.balign 8
gdt:
	.quad	0
	.quad	0x00cf9a000000ffff	# 0x08 code32
	.quad	0x00cf92000000ffff	# 0x10 data
	.quad	0x00af9a000000ffff	# 0x18 code64
gdtr:
	.word	31
	.long	gdt

	.org	0xfff0			# reset vector: ljmp 0xf000:0
	.byte	0xea
	.word	0
	.word	0xf000
	.org	0x10000
