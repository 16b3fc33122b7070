// Package boot prepares guest memory and the boot vCPU's initial state for
// the three kinds of guest godwit starts: a Linux bzImage entered through the
// 64-bit boot protocol (Documentation/arch/x86/boot.rst), a raw boot sector
// or flat real-mode image entered at 0x7c00, and a flat 64-bit image (the
// embedded test guest of package test/guest). It also writes the Intel
// MultiProcessor Specification 1.4 table through which Linux finds the vCPUs
// and the IOAPIC, and the ACPI tables (WriteACPI) through which Linux
// powers the VM off.
//
// A loader writes guest memory and returns an Entry (mode and general
// registers). The caller then reads the vCPU's special registers with
// KVM_GET_SREGS, applies SetupSregs for Entry.Mode, and sets both.
//
// Everything read from a kernel image is untrusted: every offset and length
// is bounds-checked and a malformed image yields an error, never a panic.
//
// # Guest-physical memory map
//
// All fixed structures live in the first MiB; FixedRanges lists them and a
// test checks that no two overlap.
//
//	0x00000-0x00500  real-mode IVT and BIOS data area (left zero)
//	0x00500-0x00520  GDT: null, null, 0x10 64-bit code, 0x18 flat data (GDTAddr)
//	0x01000-0x02000  PML4 (PML4Addr)
//	0x02000-0x03000  PDPT (PDPTAddr)
//	0x03000-0x04000  Linux zero page, struct boot_params (ZeroPageAddr)
//	0x04000-0x05000  Linux command line, NUL-terminated (CmdlineAddr)
//	0x05000-0x06000  test-guest parameter block (ParamBlockAddr; owned by test/guest)
//	0x07c00-0x17c00  boot sector / flat real-mode image, RealMode only (BootSectorAddr)
//	0x20000-0x60000  page directories, one 4 KiB page per GiB, 64 at most (PDAddr)
//	0x60000-0x80000  stack area: the test guest's stack and the scratch stack
//	                 Linux is entered with grow down from 0x80000 (StackTop)
//	0x9f000-0xa0000  MP table: config table at 0x9f000, floating pointer at
//	                 0x9fc00 (the last KiB of base memory, where Linux scans);
//	                 reserved in the e820 map
//	0xa0000-0x100000 legacy VGA/ROM hole: RAM in godwit, absent from the e820 map
//	0xe0000-0xe2000  ACPI tables inside the hole (RSDP at 0xe0000, where Linux
//	                 scans; FACS, XSDT, RSDT, FADT, MADT, DSDT: see acpi.go)
//	0x100000-        Linux protected-mode kernel / flat 64-bit image (KernelAddr)
//	high low RAM     Linux initrd, page-aligned, as high as possible below
//	                 min(initrd_addr_max+1, end of RAM below the MMIO hole)
//	0xC0000000-4GiB  32-bit MMIO hole (package memory), absent from the e820 map
//	4 GiB-           RAM above the hole, if any
//
// The identity map written by WriteLongModeSetup uses 2 MiB pages and covers
// [0, max(4 GiB, end of RAM)) rounded up to a GiB and capped at
// MaxIdentityMap (64 GiB). Linux needs only its own image, the zero page and
// the command line mapped; it builds its own page tables at once.
package boot
