// Package guest embeds godwit's test guest: a tiny flat x86-64 program that
// dirties a range of guest RAM in a pattern that can be verified exactly
// after every live-migration hop, together with the Go helpers to build its
// parameter block and to check a memory image.
//
// # Execution contract
//
// The VMM's flat-guest boot loader copies [Binary] to [LoadAddr] (1 MiB) and
// starts the vCPU at LoadAddr in 64-bit long mode, with paging identity-
// mapping all guest RAM (2 MiB pages), flat code and data segments,
// interrupts disabled (the guest never enables them), RSP = [StackTop]
// (the stack grows down; the guest uses well under 4 KiB of it),
// RSI = [ParamAddr] (the GPA of the parameter block) and every other GPR zero.
//
// # Parameter block
//
// The block is [ParamSize] bytes at ParamAddr, little-endian:
//
//	0x00 u64 magic              "GDWTPARM" as bytes
//	0x08 u32 version            1
//	0x0C u32 size               size of the block (ParamSize)
//	0x10 u64 range_start        page-aligned GPA of the first dirtied page
//	0x18 u64 range_end          page-aligned GPA, exclusive
//	0x20 u64 heartbeat_every    heartbeat line every N passes; 0 = never
//	0x28 u64 max_pages_per_sec  dirty-rate limit; 0 = unlimited
//	0x30 u64 tsc_khz            TSC frequency from KVM_GET_TSC_KHZ
//	0x38 u16 serial_port        8250 base port (0x3f8)
//	0x3A     6 bytes reserved, zero
//	-- status area, written by the guest --
//	0x40 u64 passes             completed passes
//	0x48 u64 alive              bumped after every chunk of 64 pages and on
//	                            every iteration of the rate-limit wait
//	0x50 u64 state              0 not started, 1 running, 2 bad parameters
//
// # Behaviour
//
// The guest validates the block, prints the banner returned by [Banner]
// (prefix [BannerPrefix]) on the serial port, polling LSR bit 5 before every
// byte, and then loops forever. One pass adds 1 to the little-endian u64 at
// the first byte of every page in [range_start, range_end), in increasing
// GPA order, with a single add instruction per page, so a pause can only
// split a pass between two pages; then it increments passes. Every
// heartbeat_every passes it prints "heartbeat <passes in decimal>\n".
//
// With max_pages_per_sec and tsc_khz both non-zero, after each chunk of up to
// 64 pages the guest spins on rdtsc until the TSC ticks elapsed since the
// pass started are at least pages_done*tsc_khz*1000/max_pages_per_sec
// (computed with a 128-bit product).
//
// If the magic, version or size is wrong, the serial port is zero, the range
// is empty or unaligned, starts below [MinRangeStart], overlaps the
// parameter block or the stack, or tsc_khz is 2^32 or more, the guest prints
// [BadParamsLine] and halts forever (state = 2 when the header was valid).
//
// The guest writes only to its stack, the status area and the range. Hence a
// memory image taken while the guest is paused satisfies [Check]: every page
// of the range holds the same counter c, except a prefix that may hold c+1.
//
// # Boot image
//
// [BootImage] (boot.S, built into boot.bin) carries the same binary in an
// 8 KiB disk image that a PC BIOS boots (QEMU's SeaBIOS, as a raw disk) and
// `godwit run --boot-sector` boots directly: it enters long mode, measures
// the TSC frequency against the PIT when a rate limit is set, and starts
// the test guest under the execution contract above. [PatchBootImage]
// writes the parameter block into it. `godwit bench --peer qemu` runs it on
// both sides, so godwit and QEMU migrate the very same guest.
//
// The binary is built from guest.S by build.sh (GNU as, ld and objcopy) and
// checked in as guest.bin, and boot.bin likewise from boot.S;
// TestBinaryReproducible and TestBootImageReproducible rebuild them when
// binutils are available. TestGuestUnderQEMU runs it under
// qemu-system-x86_64 (TCG) when installed, with testdata/qemu_boot.S
// standing in for the VMM's boot loader, and checks the serial output, the
// memory pattern and the status; TestBootImageUnderSeaBIOS boots the boot
// image from a raw disk the same way.
package guest
