package boot

import (
	"encoding/binary"
	"testing"

	"godwit/vmm/memory"
)

// walk translates va through the 4-level page tables rooted at PML4Addr, as
// the MMU would with CR4.PAE and EFER.LME, and reports whether it is mapped
// writable.
func walk(t *testing.T, m *memory.Memory, va uint64) (uint64, bool) {
	t.Helper()
	const addrMask = 0x000f_ffff_ffff_f000
	table := uint64(PML4Addr)
	for level, shift := range []uint64{39, 30, 21} {
		e, err := m.ReadUint64(table + (va>>shift)&511*8)
		if err != nil {
			t.Fatalf("reading level %d entry for %#x: %v", level, va, err)
		}
		if e&1 == 0 || e&2 == 0 {
			return 0, false
		}
		if e&0x80 != 0 {
			if shift != 21 {
				t.Fatalf("unexpected large page at level %d for %#x", level, va)
			}
			return e&addrMask&^(1<<21-1) | va&(1<<21-1), true
		}
		table = e & addrMask
	}
	t.Fatalf("%#x: page directory entry is not a 2 MiB page", va)
	return 0, false
}

func TestWriteLongModeSetupIdentityMap(t *testing.T) {
	tests := []struct {
		name     string
		ram      uint64
		mapped   []uint64
		unmapped []uint64
		mapSize  uint64
	}{
		{
			name:     "256 MiB",
			ram:      256 << 20,
			mapped:   []uint64{0, 0x100000, 0x7c00, 3 << 30, 0xfee00000, 4<<30 - 1},
			unmapped: []uint64{4 << 30},
			mapSize:  4 << 30,
		},
		{
			name:     "5 GiB",
			ram:      5 << 30,
			mapped:   []uint64{0, 0x100000, 3 << 30, 4<<30 + 2<<20, 4<<30 + 2<<20 + 0x123, 6<<30 - 1},
			unmapped: []uint64{6 << 30, 512 << 30},
			mapSize:  6 << 30,
		},
		{
			name:     "70 GiB is capped at 64 GiB",
			ram:      70 << 30,
			mapped:   []uint64{0, 64<<30 - 1},
			unmapped: []uint64{64 << 30, 69 << 30},
			mapSize:  64 << 30,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMem(t, tc.ram)
			if got := IdentityMapSize(m); got != tc.mapSize {
				t.Errorf("IdentityMapSize = %#x, want %#x", got, tc.mapSize)
			}
			if err := WriteLongModeSetup(m); err != nil {
				t.Fatal(err)
			}
			for _, va := range tc.mapped {
				pa, ok := walk(t, m, va)
				if !ok || pa != va {
					t.Errorf("walk(%#x) = %#x, %v; want identity", va, pa, ok)
				}
			}
			for _, va := range tc.unmapped {
				if pa, ok := walk(t, m, va); ok {
					t.Errorf("walk(%#x) = %#x, want not mapped", va, pa)
				}
			}
			gdt := readBytes(t, m, GDTAddr, 32)
			want := []uint64{0, 0, 0x00af9b000000ffff, 0x00cf93000000ffff}
			for i, w := range want {
				if got := binary.LittleEndian.Uint64(gdt[i*8:]); got != w {
					t.Errorf("GDT[%d] = %#016x, want %#016x", i, got, w)
				}
			}
		})
	}
}
