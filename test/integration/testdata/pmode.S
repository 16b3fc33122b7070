# pmode.S: a 512-byte boot sector for godwit's integration tests.
# Loaded at 0x7c00 in real mode (CS:IP = 0:0x7c00, DL = boot drive), it
# loads a GDT, switches to 32-bit protected mode, writes
# "godwit boot sector: protected mode OK" to COM1 (0x3f8) from 32-bit code,
# then asks the i8042 to pulse the reset line (godwit stops cleanly on it).
# Build: see build.sh.
	.include "pm32.inc"
	START16
	ENTER_PM32
	movl $msg, %esi
next:
	movb (%esi), %bl
	testb %bl, %bl
	jz done
wait_thre:
	movw $0x3fd, %dx
	inb %dx, %al
	testb $0x20, %al
	jz wait_thre
	movw $0x3f8, %dx
	movb %bl, %al
	outb %al, %dx
	incl %esi
	jmp next
done:
	movb $0xfe, %al
	outb %al, $0x64
halt:
	hlt
	jmp halt

	FLAT_GDT
msg:
	.asciz "godwit boot sector: protected mode OK\r\n"

	.org 510
	.byte 0x55, 0xaa
