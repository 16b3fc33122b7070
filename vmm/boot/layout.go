package boot

import (
	"cmp"
	"slices"
)

// Guest-physical addresses and sizes of the structures the loaders write.
// The package documentation shows them as a map.
const (
	// GDTAddr is where WriteLongModeSetup writes the GDT.
	GDTAddr uint64 = 0x500
	// GDTSize is the size of the GDT in bytes: four 8-byte descriptors.
	GDTSize uint64 = 4 * 8
	// PML4Addr is the page-map level-4 table, loaded into CR3.
	PML4Addr uint64 = 0x1000
	// PDPTAddr is the single page-directory-pointer table (PML4 entry 0).
	PDPTAddr uint64 = 0x2000
	// ZeroPageAddr is the Linux zero page (struct boot_params); RSI points
	// at it when Linux is entered.
	ZeroPageAddr uint64 = 0x3000
	// ZeroPageSize is the size of struct boot_params.
	ZeroPageSize uint64 = 0x1000
	// CmdlineAddr is where the Linux command line is written.
	CmdlineAddr uint64 = 0x4000
	// CmdlineMax is the size of the command-line buffer, terminating NUL
	// included; longer command lines are rejected.
	CmdlineMax uint64 = 0x1000
	// ParamBlockAddr is the page reserved for the test guest's parameter
	// block (package test/guest owns its contents and passes the address to
	// LoadFlat64 as rsi).
	ParamBlockAddr uint64 = 0x5000
	// ParamBlockSize is the size of the page reserved at ParamBlockAddr.
	ParamBlockSize uint64 = 0x1000
	// BootSectorAddr is where LoadBootSector loads a real-mode image.
	BootSectorAddr uint64 = 0x7c00
	// BootSectorMaxSize is the largest image LoadBootSector accepts.
	BootSectorMaxSize uint64 = 0x10000
	// PDAddr is the first page directory; page directory i (mapping GiB i)
	// is at PDAddr + i*4096.
	PDAddr uint64 = 0x20000
	// MaxIdentityMap is the most guest-physical address space the long-mode
	// identity map covers (one page directory per GiB).
	MaxIdentityMap uint64 = 64 << 30
	// StackAreaStart is the lowest address of the area reserved for stacks
	// growing down from StackTop.
	StackAreaStart uint64 = 0x60000
	// StackTop is the top of the stack area: the scratch stack Linux is
	// entered with, and conventionally the test guest's stack top.
	StackTop uint64 = 0x80000
	// MPTableAddr is where WriteMPTable writes the MP configuration table;
	// the reserved MP area runs from here to MPAreaEnd.
	MPTableAddr uint64 = 0x9f000
	// MPFloatingPointerAddr is where WriteMPTable writes the MP floating
	// pointer structure: the last KiB of base memory, which Linux scans.
	MPFloatingPointerAddr uint64 = 0x9fc00
	// MPAreaEnd is the end of the MP area (the end of base memory).
	MPAreaEnd uint64 = 0xa0000
	// KernelAddr is where the Linux protected-mode kernel is loaded (and
	// the usual load address of a flat 64-bit image).
	KernelAddr uint64 = 0x100000
	// Kernel64EntryOffset is the offset of the 64-bit entry point
	// (startup_64) from the start of the protected-mode kernel.
	Kernel64EntryOffset uint64 = 0x200
)

// GDT selectors of the descriptors WriteLongModeSetup writes.
const (
	// CodeSelector selects the 64-bit code segment (GDT entry 2).
	CodeSelector uint16 = 0x10
	// DataSelector selects the flat data segment (GDT entry 3).
	DataSelector uint16 = 0x18
)

// pdEnd is the end of the page-directory area.
const pdEnd = PDAddr + MaxIdentityMap>>30*pageSize

const (
	pageSize  = 0x1000
	hugePage  = 2 << 20
	gib       = 1 << 30
	mib       = 1 << 20
	baseStart = 0x500 // first byte after the IVT and BIOS data area
)

// Range is a named guest-physical address range [Start, End).
type Range struct {
	// Name says what the range holds.
	Name string
	// Start is the first address of the range.
	Start uint64
	// End is the first address after the range.
	End uint64
}

// Overlaps reports whether r and o share at least one address.
func (r Range) Overlaps(o Range) bool {
	return r.Start < o.End && o.Start < r.End
}

// FixedRanges returns the fixed ranges of the guest-physical memory map
// below 1 MiB, in address order: everything the loaders write there and the
// areas they keep free for the test guest and for stacks.
func FixedRanges() []Range {
	out := append(longModeRanges(),
		Range{"boot sector (RealMode only)", BootSectorAddr, BootSectorAddr + BootSectorMaxSize},
		Range{"stack area", StackAreaStart, StackTop},
	)
	slices.SortFunc(out, func(a, b Range) int { return cmp.Compare(a.Start, b.Start) })
	return out
}

// longModeRanges are the ranges LoadFlat64 and LoadLinux must not load
// anything into: the long-mode structures, the zero page and command line,
// the test-guest parameter block, the MP area and the ACPI area.
func longModeRanges() []Range {
	return []Range{
		{"GDT", GDTAddr, GDTAddr + GDTSize},
		{"PML4", PML4Addr, PML4Addr + pageSize},
		{"PDPT", PDPTAddr, PDPTAddr + pageSize},
		{"zero page", ZeroPageAddr, ZeroPageAddr + ZeroPageSize},
		{"command line", CmdlineAddr, CmdlineAddr + CmdlineMax},
		{"test-guest parameter block", ParamBlockAddr, ParamBlockAddr + ParamBlockSize},
		{"page directories", PDAddr, pdEnd},
		{"MP table", MPTableAddr, MPAreaEnd},
		{"ACPI tables", ACPIAreaStart, ACPIAreaEnd},
	}
}
