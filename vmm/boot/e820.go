package boot

import (
	"cmp"
	"encoding/binary"
	"slices"

	"godwit/vmm/memory"
)

// E820 entry types (Documentation/arch/x86/zero-page.rst, ACPI "Address
// Range Types").
const (
	// E820RAM is usable RAM.
	E820RAM uint32 = 1
	// E820Reserved is reserved: not to be used by the OS.
	E820Reserved uint32 = 2
)

// E820Entry is one entry of the e820 memory map; it mirrors struct
// boot_e820_entry (arch/x86/include/uapi/asm/setup_data.h), 20 bytes packed.
type E820Entry struct {
	// Addr is the first guest-physical address of the range.
	Addr uint64
	// Size is the length of the range in bytes.
	Size uint64
	// Type is E820RAM or E820Reserved.
	Type uint32
}

// e820EntrySize is sizeof(struct boot_e820_entry).
const e820EntrySize = 20

// maxE820Entries is E820_MAX_ENTRIES_ZEROPAGE, the capacity of
// boot_params.e820_table.
const maxE820Entries = 128

// E820Map returns the e820 map for the RAM regions: the RAM of every region,
// minus [MPTableAddr, KernelAddr) (the MP area, reported reserved, and the
// legacy VGA/ROM hole, not reported), in address order.
func E820Map(regions []memory.Region) []E820Entry {
	var out []E820Entry
	add := func(start, end uint64, typ uint32) {
		if end > start {
			out = append(out, E820Entry{Addr: start, Size: end - start, Type: typ})
		}
	}
	for _, r := range regions {
		start, end := r.GPA, r.End()
		// The part below the MP area, the MP area itself, the part above 1 MiB.
		add(start, min(end, MPTableAddr), E820RAM)
		add(max(start, MPTableAddr), min(end, MPAreaEnd), E820Reserved)
		add(max(start, KernelAddr), end, E820RAM)
	}
	slices.SortFunc(out, func(a, b E820Entry) int { return cmp.Compare(a.Addr, b.Addr) })
	return out
}

// encode appends the packed 20-byte encoding of e to b.
func (e E820Entry) encode(b []byte) []byte {
	b = binary.LittleEndian.AppendUint64(b, e.Addr)
	b = binary.LittleEndian.AppendUint64(b, e.Size)
	return binary.LittleEndian.AppendUint32(b, e.Type)
}
