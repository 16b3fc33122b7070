# hammer.S: a hostile guest for godwit's integration tests (TestGuestHammer).
# Loaded at 0x7c00 in real mode by `godwit run --boot-sector`, run with
# --rng and --disk (the entropy device in PCI slot 1, the disk in slot 2).
# It
#   1. hammers 256 unhandled I/O ports (0x200-0x2ff) with a byte OUT and a
#      byte IN each, then word and dword accesses at 0x300-0x30f and a
#      REP OUTSB / REP INSB of 64 bytes at port 0x2f0;
#   2. switches to 32-bit protected mode and, with configuration
#      mechanism 1 (0xCF8/0xCFC), misprograms BAR 0 of both virtio
#      devices: sizes it with all ones, moves it over RAM and over the
#      IOAPIC, puts the disk's over the entropy device's, writes all ones
#      over all 32 KiB of the overlapped BAR (common configuration, ISR,
#      device configuration, notify registers, MSI-X table) and reads them
#      back, turns Memory Space off and on, swaps the two BARs, and puts
#      everything back, resetting the entropy device;
#   3. reads and writes MMIO outside the PCI window (0xFE800000), where
#      nothing is;
#   4. prints "godwit hammer: survived, BAR sizing read XXXXXXXX" on COM1
#      (the value the sizing read returned) and halts with interrupts off.
# Nothing here may stop the VM: no port 0x64/0x92 reset, no ACPI S5.
# Build: see build.sh.
	.set BAR_RNG, 0x80000810	# bus 0, device 1, function 0, BAR 0
	.set BAR_DISK, 0x80001010	# bus 0, device 2, function 0, BAR 0
	.set CMD_DISK, 0x80001004	# bus 0, device 2, command register

	.include "pm32.inc"
	START16

	# 1. Unhandled ports.
	movw $0x200, %dx
ports:
	movb $0xa5, %al
	outb %al, %dx
	inb %dx, %al
	incw %dx
	cmpw $0x300, %dx
	jne ports
	movw $0x300, %dx
	movw $0x5a5a, %ax
	outw %ax, %dx
	inw %dx, %ax
	movw $0x308, %dx
	movl $0xdeadbeef, %eax
	outl %eax, %dx
	inl %dx, %eax
	cld
	movw $0x2f0, %dx
	movw $_start, %si
	movw $64, %cx
	rep outsb
	movw $0x9000, %di
	movw $64, %cx
	rep insb

	# 2. Protected mode, flat.
	ENTER_PM32

	movl $BAR_RNG, %eax
	call cfg_read
	movl %eax, bar_rng
	movl $BAR_DISK, %eax
	call cfg_read
	movl %eax, bar_disk

	# Sizing: all ones, read back the size mask.
	movl $BAR_RNG, %eax
	movl $0xffffffff, %ebx
	call cfg_write
	movl $BAR_RNG, %eax
	call cfg_read
	movl %eax, sized
	# Over RAM, then over the IOAPIC.
	movl $BAR_RNG, %eax
	movl $0x00100000, %ebx
	call cfg_write
	movl $BAR_RNG, %eax
	movl $0xfec00000, %ebx
	call cfg_write
	# Back, and the disk's BAR over it.
	movl $BAR_RNG, %eax
	movl bar_rng, %ebx
	call cfg_write
	movl $BAR_DISK, %eax
	movl bar_rng, %ebx
	call cfg_write

	# All ones over the whole overlapped BAR, then read it all.
	movl bar_rng, %edi
	andl $0xfffffff0, %edi
	movl %edi, %esi
	movl $0x2000, %ecx
	movl $0xffffffff, %eax
	rep stosl
	movl $0x2000, %ecx
	rep lodsl

	# Memory Space off and on for the disk.
	movl $CMD_DISK, %eax
	xorl %ebx, %ebx
	call cfg_write
	movl $CMD_DISK, %eax
	movl $0x00000002, %ebx
	call cfg_write

	# Swap, then put both back.
	movl $BAR_RNG, %eax
	movl bar_disk, %ebx
	call cfg_write
	movl $BAR_DISK, %eax
	movl bar_rng, %ebx
	call cfg_write
	movl $BAR_DISK, %eax
	movl bar_disk, %ebx
	call cfg_write
	movl $BAR_RNG, %eax
	movl bar_rng, %ebx
	call cfg_write
	# Reset the entropy device (device_status, common configuration 0x14).
	movl bar_rng, %edi
	andl $0xfffffff0, %edi
	movb $0, 0x14(%edi)

	# 3. MMIO where nothing is.
	movl $0xfe800000, %edi
	movl $0x12345678, (%edi)
	movl (%edi), %eax

	# 4. Report.
	movl $msg, %esi
	call puts
	movl sized, %ebp
	movl $8, %ecx
hex:
	roll $4, %ebp
	movl %ebp, %eax
	andl $0xf, %eax
	movb digits(%eax), %al
	call putc
	loop hex
	movl $crlf, %esi
	call puts
halt:
	cli
	hlt
	jmp halt

# cfg_read: %eax = CONFIG_ADDRESS; returns the dword in %eax.
cfg_read:
	movw $0xcf8, %dx
	outl %eax, %dx
	movw $0xcfc, %dx
	inl %dx, %eax
	ret

# cfg_write: %eax = CONFIG_ADDRESS, %ebx = value.
cfg_write:
	movw $0xcf8, %dx
	outl %eax, %dx
	movw $0xcfc, %dx
	movl %ebx, %eax
	outl %eax, %dx
	ret

# puts: the NUL-terminated string at %esi to COM1.
puts:
	movb (%esi), %al
	testb %al, %al
	jz 1f
	call putc
	incl %esi
	jmp puts
1:	ret

# putc: %al to COM1, once the transmitter holding register is empty.
putc:
	movb %al, %bl
	movw $0x3fd, %dx
1:	inb %dx, %al
	testb $0x20, %al
	jz 1b
	movw $0x3f8, %dx
	movb %bl, %al
	outb %al, %dx
	ret

	FLAT_GDT
bar_rng:
	.long 0
bar_disk:
	.long 0
sized:
	.long 0
digits:
	.ascii "0123456789abcdef"
msg:
	.asciz "godwit hammer: survived, BAR sizing read "
crlf:
	.asciz "\r\n"
