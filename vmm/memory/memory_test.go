package memory

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLayout(t *testing.T) {
	const MiB, GiB = 1 << 20, 1 << 30
	tests := []struct {
		name    string
		size    uint64
		want    []Region
		wantErr bool
	}{
		{"small", 256 * MiB, []Region{{Slot: 0, GPA: 0, Size: 256 * MiB}}, false},
		{"exactly low", 3 * GiB, []Region{{Slot: 0, GPA: 0, Size: 3 * GiB}}, false},
		{"above hole", 5 * GiB, []Region{{Slot: 0, GPA: 0, Size: 3 * GiB}, {Slot: 1, GPA: 4 * GiB, Size: 2 * GiB, Offset: 3 * GiB}}, false},
		{"too small", 1 * MiB, nil, true},
		{"unaligned", 256*MiB + 1, nil, true},
		{"too large", 2 << 40, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Layout(tt.size)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Layout(%d) error = %v, wantErr %v", tt.size, err, tt.wantErr)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("Layout(%d) = %+v, want %+v", tt.size, got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("region %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestAccessBounds(t *testing.T) {
	const size = 4 << 20
	m, err := New(size)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tests := []struct {
		name string
		gpa  uint64
		n    uint64
		ok   bool
	}{
		{"start", 0, 8, true},
		{"last byte", size - 1, 1, true},
		{"whole", 0, size, true},
		{"past end", size - 4, 8, false},
		{"beyond", size, 1, false},
		{"wrap", ^uint64(0) - 2, 8, false},
		{"huge length", 8, ^uint64(0), false},
		{"empty at end", size, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Slice(tt.gpa, tt.n)
			if (err == nil) != tt.ok {
				t.Fatalf("Slice(%#x, %#x) err = %v, want ok=%v", tt.gpa, tt.n, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrOutOfRange) {
				t.Errorf("error %v is not ErrOutOfRange", err)
			}
			if got := m.Contains(tt.gpa, tt.n); got != tt.ok {
				t.Errorf("Contains = %v, want %v", got, tt.ok)
			}
		})
	}
}

func TestWriteMarksDirty(t *testing.T) {
	m, err := New(8 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.WriteUint64(0x1ff8, 0x1122334455667788); err != nil {
		t.Fatal(err)
	}
	if err := m.Write(PageSize*64-1, []byte{1, 2}); err != nil { // spans pages 63 and 64
		t.Fatal(err)
	}
	if v, err := m.ReadUint64(0x1ff8); err != nil || v != 0x1122334455667788 {
		t.Fatalf("ReadUint64 = %#x, %v", v, err)
	}
	bm := make([]uint64, (m.Regions()[0].Pages()+63)/64)
	n, err := m.TakeDirty(0, bm)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || bm[0] != 1<<1|1<<63 || bm[1] != 1 {
		t.Fatalf("dirty = %d pages, bitmap %#x %#x", n, bm[0], bm[1])
	}
	clear(bm)
	if n, _ := m.TakeDirty(0, bm); n != 0 || bm[0] != 0 {
		t.Fatalf("TakeDirty did not clear: %d, %#x", n, bm[0])
	}
	if _, err := m.TakeDirty(0, bm[:1]); err == nil {
		t.Fatal("TakeDirty accepted a short bitmap")
	}
	// Reads do not dirty.
	if _, err := m.Slice(0, 8<<20); err != nil {
		t.Fatal(err)
	}
	if n, _ := m.TakeDirty(0, bm); n != 0 {
		t.Fatalf("read marked %d pages dirty", n)
	}
}

func TestMarkDirtyWholeRegion(t *testing.T) {
	m, err := New(MinSize)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.MarkDirty(0, MinSize)
	m.MarkDirty(MinSize, 1) // outside: ignored
	bm := make([]uint64, (MinSize/PageSize+63)/64)
	if n, _ := m.TakeDirty(0, bm); n != int(MinSize/PageSize) {
		t.Fatalf("dirty pages = %d, want %d", n, MinSize/PageSize)
	}
}

func TestPreallocKeepsContentsAndMakesRAMResident(t *testing.T) {
	const size = 4 << 20
	m, err := New(size)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := []byte("written before the preallocation")
	if err := m.Write(0x10000, want); err != nil {
		t.Fatal(err)
	}
	if err := m.Prealloc(); err != nil {
		if errors.Is(err, unix.EINVAL) {
			t.Skipf("kernel without MADV_POPULATE_WRITE: %v", err)
		}
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if err := m.Read(0x10000, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("after Prealloc the guest's bytes are %q, want %q", got, want)
	}
	// A memfd counts its allocated pages in st_blocks (512-byte units).
	var st unix.Stat_t
	if err := unix.Fstat(m.fd, &st); err != nil {
		t.Fatal(err)
	}
	if allocated := st.Blocks * 512; allocated < size {
		t.Fatalf("after Prealloc %d of %d bytes of guest RAM are allocated", allocated, size)
	}
}

func TestPopulateInBackground(t *testing.T) {
	tests := []struct {
		name      string
		closeNow  bool // Close right after starting: must stop it and not fail
		wantAlloc bool
	}{
		{name: "runs to the end and keeps contents", wantAlloc: true},
		{name: "Close stops it", closeNow: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const size = 8 << 20
			m, err := New(size)
			if err != nil {
				t.Fatal(err)
			}
			if m.PopulateDone() != nil {
				t.Fatal("PopulateDone before PopulateInBackground is not nil")
			}
			want := []byte("written before the population")
			if err := m.Write(0x3000, want); err != nil {
				t.Fatal(err)
			}
			m.PopulateInBackground()
			done := m.PopulateDone()
			if tt.closeNow {
				if err := m.Close(); err != nil {
					t.Fatal(err)
				}
				select {
				case <-done:
				default:
					t.Fatal("Close returned with the population still running")
				}
				return
			}
			defer m.Close()
			<-done
			got := make([]byte, len(want))
			if err := m.Read(0x3000, got); err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("after the population the guest's bytes are %q, want %q", got, want)
			}
			var st unix.Stat_t
			if err := unix.Fstat(m.fd, &st); err != nil {
				t.Fatal(err)
			}
			if allocated := st.Blocks * 512; tt.wantAlloc && allocated < size {
				if err := unix.Madvise(m.mapping[:4096], unix.MADV_POPULATE_WRITE); errors.Is(err, unix.EINVAL) {
					t.Skipf("kernel without MADV_POPULATE_WRITE: %v", err)
				}
				t.Fatalf("after the population %d of %d bytes of guest RAM are allocated", allocated, size)
			}
		})
	}
}

func TestPopulate(t *testing.T) {
	const size = 4 << 20
	pages := uint64(size / PageSize)
	tests := []struct {
		name          string
		region        int
		first, n      uint64
		wantErr       bool
		wantAllocated []uint64 // pages allocated afterwards, besides page 3 (written first)
	}{
		{name: "a run", first: 16, n: 5, wantAllocated: []uint64{16, 17, 18, 19, 20}},
		{name: "the written page and its neighbour", first: 3, n: 2, wantAllocated: []uint64{4}},
		{name: "last page", first: pages - 1, n: 1, wantAllocated: []uint64{pages - 1}},
		{name: "empty run", first: pages, n: 0},
		{name: "past the end", first: pages - 1, n: 2, wantErr: true},
		{name: "first past the end", first: pages + 1, n: 0, wantErr: true},
		{name: "huge count", first: 1, n: ^uint64(0), wantErr: true},
		{name: "no such region", region: 1, n: 1, wantErr: true},
		{name: "negative region", region: -1, n: 1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(size)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			want := []byte("written before Populate")
			if err := m.Write(3*PageSize+100, want); err != nil {
				t.Fatal(err)
			}
			err = m.Populate(tt.region, tt.first, tt.n)
			if errors.Is(err, unix.EINVAL) && !tt.wantErr {
				t.Skipf("kernel without MADV_POPULATE_WRITE: %v", err)
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("Populate(%d, %d, %d) = %v, want error %v", tt.region, tt.first, tt.n, err, tt.wantErr)
			}
			got := make([]byte, len(want))
			if err := m.Read(3*PageSize+100, got); err != nil || string(got) != string(want) {
				t.Fatalf("after Populate the guest's bytes are %q (%v), want %q", got, err, want)
			}
			bm := make([]uint64, (pages+63)/64)
			if _, err := m.DataPages(0, 0, pages, bm); err != nil {
				t.Fatal(err)
			}
			// Every page asked for is allocated; with shmem huge pages
			// the rest of its 2 MiB is too, but nothing of a 2 MiB block
			// neither the range nor page 3 touches.
			const hugePages = 2 << 20 / PageSize
			touched := map[uint64]bool{3 / hugePages: true}
			for _, p := range tt.wantAllocated {
				if bm[p/64]&(1<<(p%64)) == 0 {
					t.Errorf("page %d not allocated", p)
				}
				touched[p/hugePages] = true
			}
			for p := uint64(0); p < pages; p++ {
				if !touched[p/hugePages] && bm[p/64]&(1<<(p%64)) != 0 {
					t.Errorf("page %d allocated, outside what was asked for", p)
					break
				}
			}
		})
	}
}

func TestShmemPolicyHuge(t *testing.T) {
	tests := []struct {
		contents string
		want     bool
	}{
		{"always within_size advise [never] deny force\n", false},
		{"always within_size [advise] never deny force\n", true},
		{"[always] within_size advise never deny force\n", true},
		{"always [within_size] advise never deny force\n", true},
		{"always within_size advise never [deny] force\n", false},
		{"always within_size advise never deny [force]\n", true},
		{"always within_size advise never deny force\n", false}, // none chosen
		{"", false},
		{"[]", false},
	}
	for _, tt := range tests {
		if got := shmemPolicyHuge(tt.contents); got != tt.want {
			t.Errorf("shmemPolicyHuge(%q) = %v, want %v", tt.contents, got, tt.want)
		}
	}
}
