package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCPUIDRoundTrip marshals kvm_cpuid2 and decodes it back.
func TestCPUIDRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		entries []CPUIDEntry2
	}{
		{"empty", nil},
		{"one leaf", []CPUIDEntry2{{Function: 0, EAX: 0xd, EBX: 0x756e6547, ECX: 0x6c65746e, EDX: 0x49656e69}}},
		{"subleaves", []CPUIDEntry2{
			{Function: 7, Index: 0, Flags: CPUIDFlagSignificantIndex, EBX: 0x029c67af},
			{Function: 7, Index: 1, Flags: CPUIDFlagSignificantIndex, EAX: 0x10},
			{Function: 0x80000001, ECX: 0x121, EDX: 0x2c100800},
		}},
		{"max", func() []CPUIDEntry2 {
			e := make([]CPUIDEntry2, MaxCPUIDEntries)
			for i := range e {
				e[i] = CPUIDEntry2{Function: uint32(i), Index: uint32(i * 3), Flags: 1, EAX: ^uint32(i), EBX: 1, ECX: 2, EDX: 3}
			}
			return e
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := marshalCPUID2(tt.entries)
			if want := (8 + 40*len(tt.entries) + 7) / 8; len(w) != want {
				t.Fatalf("buffer is %d words, want %d", len(w), want)
			}
			if n := binary.NativeEndian.Uint32(wordBytes(w)); n != uint32(len(tt.entries)) {
				t.Fatalf("nent = %d, want %d", n, len(tt.entries))
			}
			got, err := unmarshalCPUID2(w)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Entries, tt.entries) && !(len(got.Entries) == 0 && len(tt.entries) == 0) {
				t.Errorf("round trip changed entries:\n got %+v\nwant %+v", got.Entries, tt.entries)
			}
		})
	}
}

// TestCPUIDLayout checks the byte layout of a marshalled kvm_cpuid_entry2.
func TestCPUIDLayout(t *testing.T) {
	w := marshalCPUID2([]CPUIDEntry2{{Function: 1}, {Function: 0x11, Index: 0x22, Flags: 0x33, EAX: 0x44, EBX: 0x55, ECX: 0x66, EDX: 0x77}})
	b := wordBytes(w)
	// Second entry starts at 8 + 40; its fields are consecutive __u32s and
	// the three padding words stay zero.
	want := []uint32{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0, 0, 0}
	for i, v := range want {
		if got := binary.NativeEndian.Uint32(b[48+4*i:]); got != v {
			t.Errorf("word %d of entry 1 = %#x, want %#x", i, got, v)
		}
	}
}

// TestUnmarshalCPUID2Rejects checks that inconsistent kvm_cpuid2 buffers are refused.
func TestUnmarshalCPUID2Rejects(t *testing.T) {
	tests := []struct {
		name string
		w    []uint64
	}{
		{"no header", nil},
		{"nent beyond buffer", func() []uint64 {
			w := marshalCPUID2(make([]CPUIDEntry2, 2))
			binary.NativeEndian.PutUint32(wordBytes(w), 3)
			return w
		}()},
		{"nent huge", func() []uint64 {
			w := marshalCPUID2(nil)
			binary.NativeEndian.PutUint32(wordBytes(w), ^uint32(0))
			return w
		}()},
	}
	for _, tt := range tests {
		if c, err := unmarshalCPUID2(tt.w); err == nil {
			t.Errorf("%s: unmarshalCPUID2 = %+v, want an error", tt.name, c)
		}
	}
}

// TestCPUIDFind checks leaf lookup with and without significant indexes.
func TestCPUIDFind(t *testing.T) {
	c := &CPUID{Entries: []CPUIDEntry2{
		{Function: 1, EAX: 0x906ea},
		{Function: 7, Index: 0, Flags: CPUIDFlagSignificantIndex, EBX: 0xaa},
		{Function: 7, Index: 1, Flags: CPUIDFlagSignificantIndex, EBX: 0xbb},
	}}
	tests := []struct {
		fn, idx uint32
		wantEBX uint32
		found   bool
	}{
		{1, 0, 0, true},
		{1, 5, 0, true}, // index ignored without the flag
		{7, 0, 0xaa, true},
		{7, 1, 0xbb, true},
		{7, 2, 0, false},
		{0x80000000, 0, 0, false},
	}
	for _, tt := range tests {
		e := c.Find(tt.fn, tt.idx)
		if (e != nil) != tt.found || (e != nil && e.EBX != tt.wantEBX) {
			t.Errorf("Find(%#x, %d) = %+v, want found=%v ebx=%#x", tt.fn, tt.idx, e, tt.found, tt.wantEBX)
		}
	}
	if (*CPUID)(nil).Find(1, 0) != nil {
		t.Error("Find on nil CPUID returned an entry")
	}
}

// TestMSRsRoundTrip marshals kvm_msrs, plays the kernel, and decodes the data back.
func TestMSRsRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		entries []MSREntry
		kernelN int // entries the fake kernel "read"
	}{
		{"empty", nil, 0},
		{"all read", []MSREntry{{Index: 0x10}, {Index: 0xc0000080}, {Index: 0x4b564d01}}, 3},
		{"partial read", []MSREntry{{Index: 0x10}, {Index: 0x1234}, {Index: 0x174}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := marshalMSRs(tt.entries)
			b := wordBytes(w)
			if len(b) != 8+16*len(tt.entries) {
				t.Fatalf("buffer is %d bytes, want %d", len(b), 8+16*len(tt.entries))
			}
			if n := binary.NativeEndian.Uint32(b); n != uint32(len(tt.entries)) {
				t.Fatalf("nmsrs = %d", n)
			}
			// Play the kernel: fill data = index * 3 for the first kernelN.
			for i := range tt.kernelN {
				o := b[8+16*i:]
				if idx := binary.NativeEndian.Uint32(o); idx != tt.entries[i].Index {
					t.Fatalf("entry %d index %#x, want %#x", i, idx, tt.entries[i].Index)
				}
				binary.NativeEndian.PutUint64(o[8:], uint64(tt.entries[i].Index)*3)
			}
			got := slices.Clone(tt.entries)
			if err := unmarshalMSRData(w, got, tt.kernelN); err != nil {
				t.Fatal(err)
			}
			for i, e := range got {
				want := uint64(0)
				if i < tt.kernelN {
					want = uint64(e.Index) * 3
				}
				if e.Data != want {
					t.Errorf("entry %d (%#x) data = %#x, want %#x", i, e.Index, e.Data, want)
				}
			}
		})
	}
}

// TestUnmarshalMSRDataRejects checks that inconsistent kvm_msrs results are refused.
func TestUnmarshalMSRDataRejects(t *testing.T) {
	entries := []MSREntry{{Index: 1}, {Index: 2}}
	w := marshalMSRs(entries)
	tests := []struct {
		name string
		n    int
		w    []uint64
	}{
		{"count above passed", 3, w},
		{"negative count", -1, w},
		{"index rewritten", 2, func() []uint64 {
			c := slices.Clone(w)
			binary.NativeEndian.PutUint32(wordBytes(c)[8+16:], 99)
			return c
		}()},
	}
	for _, tt := range tests {
		if err := unmarshalMSRData(tt.w, slices.Clone(entries), tt.n); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
}

// TestMSRListRoundTrip marshals kvm_msr_list and decodes filled lists.
func TestMSRListRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		cap     int
		indices []uint32
		wantErr bool
	}{
		{"count probe", 0, nil, false},
		{"odd count", 3, []uint32{0x174, 0x175, 0x176}, false},
		{"partly filled", 8, []uint32{0x10, 0xc0000080}, false},
		{"overfull", 2, []uint32{1, 2, 3}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := marshalMSRList(tt.cap)
			if msrListCount(w) != uint32(tt.cap) {
				t.Fatalf("nmsrs = %d, want %d", msrListCount(w), tt.cap)
			}
			if len(wordBytes(w)) < 4+4*tt.cap {
				t.Fatalf("buffer of %d bytes too small for %d indices", len(wordBytes(w)), tt.cap)
			}
			// Play the kernel.
			b := wordBytes(w)
			binary.NativeEndian.PutUint32(b, uint32(len(tt.indices)))
			for i, v := range tt.indices {
				if 4+4*i+4 <= len(b) {
					binary.NativeEndian.PutUint32(b[4+4*i:], v)
				}
			}
			got, err := unmarshalMSRList(w, tt.cap)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("unmarshalMSRList = %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.indices) && len(got)+len(tt.indices) != 0 {
				t.Errorf("got %#x, want %#x", got, tt.indices)
			}
		})
	}
}

// TestIRQRoutingRoundTrip marshals kvm_irq_routing and decodes it back.
func TestIRQRoutingRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		entries []IRQRoutingEntry
	}{
		{"empty", nil},
		{"legacy", []IRQRoutingEntry{IRQChipRoute(0, IRQChipPICMaster, 0), IRQChipRoute(0, IRQChipIOAPIC, 2), IRQChipRoute(9, IRQChipPICSlave, 1)}},
		{"msi", []IRQRoutingEntry{MSIRoute(24, 0xfee00000, 0, 0x4041), MSIRoute(25, 0xfee01000, 1, 0x31)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := marshalIRQRouting(tt.entries)
			if len(wordBytes(w)) != 8+48*len(tt.entries) {
				t.Fatalf("buffer is %d bytes", len(wordBytes(w)))
			}
			got, err := unmarshalIRQRouting(w)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.entries) && len(got)+len(tt.entries) != 0 {
				t.Errorf("got %+v, want %+v", got, tt.entries)
			}
		})
	}
	// Layout spot check: the union starts at byte 16 of each entry.
	b := wordBytes(marshalIRQRouting([]IRQRoutingEntry{MSIRoute(7, 0xfee00000, 0x1, 0x41)}))
	for i, want := range []uint32{7, IRQRoutingMSI, 0, 0, 0xfee00000, 1, 0x41} {
		if got := binary.NativeEndian.Uint32(b[8+4*i:]); got != want {
			t.Errorf("word %d = %#x, want %#x", i, got, want)
		}
	}
	if _, err := unmarshalIRQRouting([]uint64{5}); err == nil {
		t.Error("unmarshalIRQRouting accepted nr beyond the buffer")
	}
}

// TestGrowOnE2BIG checks the buffer-growing retry used by the CPUID ioctls.
func TestGrowOnE2BIG(t *testing.T) {
	tests := []struct {
		name      string
		need      int // capacity the fake ioctl needs; 0 = fail with EINVAL
		wantTries []int
		wantErr   error
	}{
		{"fits at once", 10, []int{64}, nil},
		{"grows twice", 200, []int{64, 128, 256}, nil},
		{"too big", 300, []int{64, 128, 256}, unix.E2BIG},
		{"other error not retried", 0, []int{64}, unix.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tries []int
			err := growOnE2BIG(64, 256, func(n int) error {
				tries = append(tries, n)
				if tt.need == 0 {
					return opError("FAKE", unix.EINVAL)
				}
				if n < tt.need {
					return opError("FAKE", unix.E2BIG)
				}
				return nil
			})
			if !slices.Equal(tries, tt.wantTries) {
				t.Errorf("tried %v, want %v", tries, tt.wantTries)
			}
			if (tt.wantErr == nil) != (err == nil) || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestDirtyBitmapWords checks the dirty bitmap sizing (one bit per page, whole words).
func TestDirtyBitmapWords(t *testing.T) {
	tests := []struct {
		size uint64
		want int
	}{
		{0, 0},
		{4096, 1},
		{64 * 4096, 1},
		{65 * 4096, 2},
		{1 << 30, 4096},
		{4097, 1},
	}
	for _, tt := range tests {
		if got := DirtyBitmapWords(tt.size); got != tt.want {
			t.Errorf("DirtyBitmapWords(%d) = %d, want %d", tt.size, got, tt.want)
		}
	}
}

// TestStateMirrorsHaveNoHiddenPadding checks that every byte of the state
// mirrors is a named or blank field, so a Go value copies all kernel state.
func TestStateMirrorsHaveNoHiddenPadding(t *testing.T) {
	types := []any{Regs{}, Sregs{}, FPU{}, XSave{}, XCRS{}, LAPICState{}, VCPUEvents{}, MPState{}, DebugRegs{},
		IRQChip{}, PITState2{}, ClockData{}, MSREntry{}, CPUIDEntry2{}, IRQRoutingEntry{}, IOEventFD{}, MSI{}, UserspaceMemoryRegion{}}
	for _, v := range types {
		name := fmt.Sprintf("%T", v)
		if got, want := binary.Size(v), int(reflect.TypeOf(v).Size()); got != want {
			t.Errorf("%s: encoding/binary size %d, memory size %d (implicit padding)", name, got, want)
		}
	}
}
