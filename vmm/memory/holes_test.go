package memory

import (
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDataPages checks that DataPages reports exactly the pages written
// (allocated in the memfd), for whole regions and for windows into them,
// and refuses ranges outside the region.
func TestDataPages(t *testing.T) {
	m, err := New(4 << 20) // one region of 1024 pages
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// Page-sized allocations: with shared-memory THP a write would
	// allocate its whole 2 MiB.
	if err := unix.Madvise(m.mapping, unix.MADV_NOHUGEPAGE); err != nil {
		t.Fatal(err)
	}
	for _, p := range []uint64{3, 64, 130, 500, 501, 502, 503, 504, 505, 506, 507, 508, 509, 510, 511, 512, 513, 514, 515, 516, 517, 518, 519, 1023} {
		if err := m.Write(p*PageSize+17, []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name     string
		region   int
		first, n uint64
		words    int
		want     []uint64 // pages, relative to first
		through  uint64
		wantErr  string
	}{
		{"whole region", 0, 0, 1024, 16, append([]uint64{3, 64, 130}, append(pageRange(500, 520), 1023)...), 1024, ""},
		{"window", 0, 64, 128, 2, []uint64{0, 66}, 131, ""},
		{"window ending inside a run", 0, 200, 304, 5, []uint64{300, 301, 302, 303}, 520, ""},
		{"window without data", 0, 192, 108, 2, nil, 192, ""},
		{"last page", 0, 1023, 1, 1, []uint64{0}, 1024, ""},
		{"empty", 0, 1024, 0, 0, nil, 1024, ""},
		{"no region", 1, 0, 1, 1, nil, 0, "no memory region"},
		{"past the end", 0, 1000, 25, 1, nil, 0, "region 0"},
		{"short bitmap", 0, 0, 65, 1, nil, 0, "bitmap of 1 words"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]uint64, tt.words)
			through, err := m.DataPages(tt.region, tt.first, tt.n, dst)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("DataPages = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for p := uint64(0); p < uint64(tt.words)*64; p++ {
				if dst[p/64]&(1<<(p%64)) != 0 {
					got = append(got, p)
				}
			}
			if !slices.Equal(got, tt.want) || through != tt.through {
				t.Errorf("data pages %v through %d, want %v through %d", got, through, tt.want, tt.through)
			}
		})
	}
}

// pageRange returns the pages [from, to).
func pageRange(from, to uint64) []uint64 {
	var out []uint64
	for p := from; p < to; p++ {
		out = append(out, p)
	}
	return out
}
