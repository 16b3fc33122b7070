package boot

import "testing"

// TestFixedRangesDoNotOverlap lists every reserved range of the memory map and
// checks they are sorted, non-empty, below 1 MiB, above the BIOS data area
// and pairwise disjoint, and that the test guest's fixed addresses fall where
// the map keeps room for them.
func TestFixedRangesDoNotOverlap(t *testing.T) {
	rs := FixedRanges()
	names := map[string]bool{}
	for i, r := range rs {
		names[r.Name] = true
		if r.Start >= r.End {
			t.Errorf("%s [%#x, %#x) is empty", r.Name, r.Start, r.End)
		}
		if r.Start < 0x500 || r.End > 0x100000 {
			t.Errorf("%s [%#x, %#x) outside [0x500, 1 MiB)", r.Name, r.Start, r.End)
		}
		if i > 0 && rs[i-1].Start > r.Start {
			t.Errorf("%s not in address order after %s", r.Name, rs[i-1].Name)
		}
		for _, o := range rs[i+1:] {
			if r.Overlaps(o) {
				t.Errorf("%s [%#x, %#x) overlaps %s [%#x, %#x)", r.Name, r.Start, r.End, o.Name, o.Start, o.End)
			}
		}
	}
	for _, want := range []string{"GDT", "PML4", "PDPT", "zero page", "command line",
		"test-guest parameter block", "page directories", "stack area", "MP table"} {
		if !names[want] {
			t.Errorf("FixedRanges lacks %q", want)
		}
	}

	// The test guest (package test/guest) uses a parameter block at 0x5000 and
	// a stack growing down from 0x80000; the kernel goes at 1 MiB.
	within := []struct {
		name       string
		start, end uint64
		in         Range
	}{
		{"test-guest parameter block", 0x5000, 0x5000 + 0x58, Range{"", ParamBlockAddr, ParamBlockAddr + ParamBlockSize}},
		{"test-guest stack", 0x80000 - FlatMinStack, 0x80000, Range{"", StackAreaStart, StackTop}},
		{"MP floating pointer", MPFloatingPointerAddr, MPFloatingPointerAddr + 16, Range{"", 639 * 1024, 640 * 1024}},
		{"GDT", GDTAddr, GDTAddr + GDTSize, Range{"", GDTAddr, PML4Addr}},
		{"page directories", PDAddr, PDAddr + MaxIdentityMap>>30*4096, Range{"", PDAddr, StackAreaStart}},
	}
	for _, w := range within {
		if w.start < w.in.Start || w.end > w.in.End {
			t.Errorf("%s [%#x, %#x) not within [%#x, %#x)", w.name, w.start, w.end, w.in.Start, w.in.End)
		}
	}
	for _, r := range longModeRanges() {
		if r.Overlaps(Range{"kernel", KernelAddr, KernelAddr + 1}) {
			t.Errorf("%s overlaps the kernel load address", r.Name)
		}
	}
}
