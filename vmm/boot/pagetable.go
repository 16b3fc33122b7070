package boot

import (
	"encoding/binary"
	"fmt"

	"godwit/vmm/memory"
)

// Page-table entry bits (Intel SDM vol. 3A, 4.5 "4-level paging").
const (
	ptePresent  = 1 << 0
	pteWritable = 1 << 1
	ptePageSize = 1 << 7 // in a PD entry: maps a 2 MiB page
)

// GDT descriptors (Intel SDM vol. 3A, 3.4.5 "Segment Descriptors"): base 0,
// limit 0xfffff with 4 KiB granularity.
const (
	// gdtCode64: P=1 DPL=0 S=1 type 0xb (execute/read, accessed), L=1, D=0, G=1.
	gdtCode64 uint64 = 0x00af_9b00_0000_ffff
	// gdtData: P=1 DPL=0 S=1 type 0x3 (read/write, accessed), B=1, G=1.
	gdtData uint64 = 0x00cf_9300_0000_ffff
)

// IdentityMapSize returns how much guest-physical address space
// WriteLongModeSetup maps for mem: max(4 GiB, end of RAM) rounded up to a
// GiB, capped at MaxIdentityMap.
func IdentityMapSize(mem *memory.Memory) uint64 {
	end := uint64(4 * gib)
	for _, r := range mem.Regions() {
		end = max(end, r.End())
	}
	end = (end + gib - 1) &^ (gib - 1)
	return min(end, MaxIdentityMap)
}

// WriteLongModeSetup writes the GDT (null, null, CodeSelector 64-bit code,
// DataSelector flat data) at GDTAddr and identity-mapping page tables with
// 2 MiB pages at PML4Addr, PDPTAddr and PDAddr covering
// [0, IdentityMapSize(mem)), all pages present and writable. SetupSregs with
// LongMode points GDTR and CR3 at them.
func WriteLongModeSetup(mem *memory.Memory) error {
	gdt := make([]byte, 0, GDTSize)
	for _, d := range []uint64{0, 0, gdtCode64, gdtData} {
		gdt = binary.LittleEndian.AppendUint64(gdt, d)
	}
	if err := mem.Write(GDTAddr, gdt); err != nil {
		return fmt.Errorf("writing GDT: %w", err)
	}

	gibs := IdentityMapSize(mem) / gib
	pml4 := make([]byte, pageSize)
	binary.LittleEndian.PutUint64(pml4, PDPTAddr|ptePresent|pteWritable)
	if err := mem.Write(PML4Addr, pml4); err != nil {
		return fmt.Errorf("writing PML4: %w", err)
	}
	pdpt := make([]byte, pageSize)
	for i := range gibs {
		binary.LittleEndian.PutUint64(pdpt[i*8:], (PDAddr+i*pageSize)|ptePresent|pteWritable)
	}
	if err := mem.Write(PDPTAddr, pdpt); err != nil {
		return fmt.Errorf("writing PDPT: %w", err)
	}
	pd := make([]byte, pageSize)
	for i := range gibs {
		for j := range uint64(512) {
			binary.LittleEndian.PutUint64(pd[j*8:], (i*gib+j*hugePage)|ptePresent|pteWritable|ptePageSize)
		}
		if err := mem.Write(PDAddr+i*pageSize, pd); err != nil {
			return fmt.Errorf("writing page directory %d: %w", i, err)
		}
	}
	return nil
}
