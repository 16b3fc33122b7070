package storage

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestPlace(t *testing.T) {
	dir := t.TempDir()
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "taken.img"), make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	plenty := func(string) (uint64, error) { return 1 << 40, nil }
	w := func(src string) Want { return Want{Source: src, Size: 1 << 20, Allocated: 1 << 20} }
	tests := []struct {
		name    string
		wants   []Want
		o       PlaceOptions
		want    []string
		wantErr string
	}{
		{name: "storage dir", wants: []Want{w("/a/vda.img"), w("/b/vdb.img")}, o: PlaceOptions{Dir: dir},
			want: []string{filepath.Join(dir, "vda.img"), filepath.Join(dir, "vdb.img")}},
		{name: "map wins over the dir", wants: []Want{w("/a/vda.img"), w("/b/vdb.img")},
			o:    PlaceOptions{Dir: dir, Map: map[string]string{"/b/vdb.img": filepath.Join(other, "x.img")}},
			want: []string{filepath.Join(dir, "vda.img"), filepath.Join(other, "x.img")}},
		{name: "map alone", wants: []Want{w("/a/vda.img")}, o: PlaceOptions{Map: map[string]string{"/a/vda.img": filepath.Join(other, "y.img")}},
			want: []string{filepath.Join(other, "y.img")}},
		{name: "nowhere", wants: []Want{w("/a/vda.img")}, wantErr: "give receive --storage-dir DIR or --disk-map /a/vda.img=PATH"},
		{name: "map for no disk", wants: []Want{w("/a/vda.img")}, o: PlaceOptions{Dir: dir, Map: map[string]string{"/typo.img": "z"}},
			wantErr: `--disk-map ["/typo.img"]: the source VM has no such disk`},
		{name: "same base name twice", wants: []Want{w("/a/vda.img"), w("/b/vda.img")}, o: PlaceOptions{Dir: dir},
			wantErr: "disks 0 and 1 would both be received as"},
		{name: "unusable name", wants: []Want{w("/")}, o: PlaceOptions{Dir: dir}, wantErr: "no usable file name"},
		{name: "dot dot", wants: []Want{w("/a/..")}, o: PlaceOptions{Dir: dir}, wantErr: "no usable file name"},
		{name: "long name", wants: []Want{w(strings.Repeat("n", 201))}, o: PlaceOptions{Dir: dir}, wantErr: "no usable file name"},
		{name: "exists", wants: []Want{w("/a/taken.img")}, o: PlaceOptions{Dir: dir}, wantErr: "taken.img exists: refusing to replace it (receive --overwrite does)"},
		{name: "exists, overwrite", wants: []Want{w("/a/taken.img")}, o: PlaceOptions{Dir: dir, Overwrite: true},
			want: []string{filepath.Join(dir, "taken.img")}},
		{name: "a directory is never replaced", wants: []Want{w("/a/adir")}, o: PlaceOptions{Dir: dir, Overwrite: true}, wantErr: "is not a regular file"},
		{name: "no such directory", wants: []Want{w("/a/vda.img")}, o: PlaceOptions{Dir: filepath.Join(dir, "missing")}, wantErr: "no such file or directory"},
		{name: "space short", wants: []Want{w("/a/vda.img"), w("/b/vdb.img")},
			o:       PlaceOptions{Dir: dir, FreeSpace: func(string) (uint64, error) { return 1<<21 - 1, nil }},
			wantErr: "they need 2 MiB (what the source images have allocated), 1 MiB are free"},
		{name: "space just enough", wants: []Want{w("/a/vda.img"), w("/b/vdb.img")},
			o:    PlaceOptions{Dir: dir, FreeSpace: func(string) (uint64, error) { return 1 << 21, nil }},
			want: []string{filepath.Join(dir, "vda.img"), filepath.Join(dir, "vdb.img")}},
		{name: "allocated beyond the size is capped", wants: []Want{{Source: "/a/vda.img", Size: 4096, Allocated: 1 << 50}},
			o:    PlaceOptions{Dir: dir, FreeSpace: func(string) (uint64, error) { return 4096, nil }},
			want: []string{filepath.Join(dir, "vda.img")}},
		{name: "overwriting frees the old file", wants: []Want{{Source: "/a/taken.img", Size: 8192, Allocated: 8192}},
			o:    PlaceOptions{Dir: dir, Overwrite: true, FreeSpace: func(string) (uint64, error) { return 0, nil }},
			want: []string{filepath.Join(dir, "taken.img")}},
		{name: "statfs fails", wants: []Want{w("/a/vda.img")},
			o: PlaceOptions{Dir: dir, FreeSpace: func(string) (uint64, error) { return 0, errors.New("EIO") }}, wantErr: "EIO"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.o.FreeSpace == nil {
				tt.o.FreeSpace = plenty
			}
			got, err := Place(tt.wants, tt.o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Place = %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("Place = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	t.Run("statfs", func(t *testing.T) {
		if _, err := Place([]Want{w("/a/vda.img")}, PlaceOptions{Dir: dir}); err != nil {
			t.Fatal(err)
		}
		if _, err := Place([]Want{{Source: "/a/vda.img", Size: 1 << 60, Allocated: 1 << 60}}, PlaceOptions{Dir: dir}); err == nil || !strings.Contains(err.Error(), "not enough space") {
			t.Fatalf("an exabyte fits: %v", err)
		}
	})
}

func TestImageLifecycle(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "vda.img")
	img, err := Create(final, 1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(img.Path()), ".vda.img.godwit-partial-") || img.FinalPath() != final || img.Size() != 1<<20 {
		t.Fatalf("image at %s for %s", img.Path(), img.FinalPath())
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{1}, 4096), 65536); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct{ off, n int64 }{{1 << 20, 1}, {1<<20 - 10, 11}, {-1, 1}} {
		if _, err := img.WriteAt(make([]byte, w.n), w.off); err == nil {
			t.Fatalf("write of %d at %d outside the image succeeded", w.n, w.off)
		}
	}
	if err := img.Zero(1<<20-4096, 8192); err == nil {
		t.Fatal("clearing past the end succeeded")
	}
	if err := img.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(final); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the final path exists before the commit: %v", err)
	}
	if err := img.Commit(); err != nil {
		t.Fatal(err)
	}
	if img.Path() != final || !slices.Equal(names(t, dir), []string{"vda.img"}) {
		t.Fatalf("after commit: %s, %q", img.Path(), names(t, dir))
	}
	b, err := os.ReadFile(final)
	if err != nil || len(b) != 1<<20 || b[65536] != 1 || b[0] != 0 {
		t.Fatalf("committed image: %d bytes, %v", len(b), err)
	}
	if fi, _ := os.Stat(final); fi.Sys().(*syscall.Stat_t).Blocks*512 > 256<<10 {
		t.Fatal("the image is not sparse")
	}
	// A commit onto a file that appeared meanwhile is refused.
	img2, err := Create(filepath.Join(dir, "vdb.img"), 4096, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vdb.img"), []byte("someone else's"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := img2.Commit(); err == nil || !strings.Contains(err.Error(), "appeared during the migration") {
		t.Fatalf("commit onto an existing file: %v", err)
	}
	if err := img2.Remove(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "vdb.img")); string(b) != "someone else's" {
		t.Fatal("the other file changed")
	}
	// With overwrite the commit replaces it.
	img3, err := Create(filepath.Join(dir, "vdb.img"), 4096, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := img3.Commit(); err != nil {
		t.Fatal(err)
	}
	img3.Close()
	if b, _ := os.ReadFile(filepath.Join(dir, "vdb.img")); len(b) != 4096 {
		t.Fatal("overwrite did not replace the file")
	}
	// Remove deletes a committed image too (a migration that failed
	// after the commit) and is idempotent.
	if err := img.Remove(); err != nil || img.Remove() != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names(t, dir), []string{"vdb.img"}) {
		t.Fatalf("left %q", names(t, dir))
	}
}

func TestZero(t *testing.T) {
	img, err := Create(filepath.Join(t.TempDir(), "z.img"), 1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Remove()
	if _, err := img.WriteAt(bytes.Repeat([]byte{9}, 256<<10), 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Zero(64<<10, 128<<10); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(img.Path())
	if err != nil {
		t.Fatal(err)
	}
	if b[64<<10-1] != 9 || b[192<<10] != 9 || !bytes.Equal(b[64<<10:192<<10], make([]byte, 128<<10)) {
		t.Fatal("Zero cleared the wrong bytes")
	}
}

// TestStalePartial shows that a temporary image whose receiver is gone
// (its lock released) is removed by the next Create for the same path,
// while one a live receiver holds is left alone.
func TestStalePartial(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "vda.img")
	live, err := Create(final, 4096, false)
	if err != nil {
		t.Fatal(err)
	}
	dead, err := Create(final, 4096, false)
	if err != nil {
		t.Fatal(err)
	}
	deadPath := dead.Path()
	dead.Close() // as if its process died: the lock is gone, the file stays
	// Unrelated files that merely look alike stay.
	for _, n := range []string{".vda.img.other", "vda.img.godwit-partial-1", ".vdb.img.godwit-partial-1"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	next, err := Create(final, 4096, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(deadPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the stale partial image is still there: %v", err)
	}
	for _, p := range []string{live.Path(), next.Path(), filepath.Join(dir, ".vda.img.other"), filepath.Join(dir, "vda.img.godwit-partial-1"), filepath.Join(dir, ".vdb.img.godwit-partial-1")} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s was removed: %v", p, err)
		}
	}
	if err := RemoveAll([]*Image{live, next}); err != nil {
		t.Fatal(err)
	}
}

func TestCreateAllUndoes(t *testing.T) {
	dir := t.TempDir()
	_, err := CreateAll([]string{filepath.Join(dir, "a.img"), filepath.Join(dir, "missing", "b.img")}, []uint64{4096, 4096}, false)
	if err == nil {
		t.Fatal("CreateAll into a missing directory succeeded")
	}
	if n := names(t, dir); len(n) != 0 {
		t.Fatalf("CreateAll left %q", n)
	}
	if _, err := CreateAll([]string{"a"}, nil, false); err == nil {
		t.Fatal("CreateAll accepted mismatched lengths")
	}
}

func TestMarkData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sparse.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const bs = 64 << 10
	if err := f.Truncate(100 * bs); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 10*bs + 100, 63*bs + bs - 1, 99 * bs} {
		if _, err := f.WriteAt([]byte{1}, off); err != nil {
			t.Fatal(err)
		}
	}
	src, err := OpenSource(path, 100*bs)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := make([]uint64, 2)
	if err := src.MarkData(bs, dst); err != nil {
		t.Fatal(err)
	}
	// File systems allocate in their own blocks (4 KiB here), so a
	// written byte marks its 64 KiB block; nothing else is marked
	// unless the file system cannot tell holes (then everything is).
	want := []uint64{1 | 1<<10 | 1<<63, 1 << (99 - 64)}
	all := []uint64{^uint64(0), 1<<36 - 1}
	if !slices.Equal(dst, want) && !slices.Equal(dst, all) {
		t.Fatalf("MarkData = %#x, want %#x", dst, want)
	}
	if err := src.MarkData(bs, dst[:1]); err == nil {
		t.Fatal("MarkData accepted a bitmap too small")
	}
	if n, err := src.AllocatedBytes(); err != nil || n == 0 || n > 100*bs {
		t.Fatalf("AllocatedBytes = %d, %v", n, err)
	}
	if _, err := OpenSource(path, 101*bs); err == nil {
		t.Fatal("OpenSource accepted an image shorter than the disk")
	}
}

// TestVectoredIO writes an image with WritevAt and reads it back through
// a Source with ReadvAt: buffers in order, empty ones included, and
// writes outside the image refused before anything is written.
func TestVectoredIO(t *testing.T) {
	const size = 1 << 20
	img, err := Create(filepath.Join(t.TempDir(), "v.img"), size, false)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Remove()
	a, b, c := bytes.Repeat([]byte{1}, 5000), []byte{}, bytes.Repeat([]byte{2}, 70000)
	if n, err := img.WritevAt([][]byte{a, b, c}, 4096); err != nil || n != len(a)+len(c) {
		t.Fatalf("WritevAt = %d, %v", n, err)
	}
	for _, w := range []struct {
		off  int64
		bufs [][]byte
	}{
		{size - 10, [][]byte{make([]byte, 5), make([]byte, 6)}},
		{-1, [][]byte{{1}}},
		{size + 1, nil},
	} {
		if _, err := img.WritevAt(w.bufs, w.off); err == nil {
			t.Fatalf("WritevAt at %d outside the image succeeded", w.off)
		}
	}
	src, err := OpenSource(img.Path(), size)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	x, y := make([]byte, 4096+5000), make([]byte, 70000+10)
	if n, err := src.ReadvAt([][]byte{x, nil, y}, 0); err != nil || n != len(x)+len(y) {
		t.Fatalf("ReadvAt = %d, %v", n, err)
	}
	want := append(append(make([]byte, 4096), a...), c...)
	if got := append(append([]byte{}, x...), y...); !bytes.Equal(got, append(want, make([]byte, 10)...)) {
		t.Fatal("read back something else")
	}
	if b, err := os.ReadFile(img.Path()); err != nil || b[size-1] != 0 || b[size-11] != 0 {
		t.Fatalf("a refused write wrote: %v", err)
	}
	// At the end of the file a read comes short.
	if n, err := src.ReadvAt([][]byte{make([]byte, 100)}, size-40); n != 40 || err != nil {
		t.Fatalf("ReadvAt at the end = %d, %v", n, err)
	}
}

func TestAdvance(t *testing.T) {
	bufs := [][]byte{[]byte("abc"), []byte(""), []byte("de"), []byte("f")}
	tests := []struct {
		n    int
		want string
		left int
	}{
		{0, "abc|de|f", 4},
		{1, "bc|de|f", 4},
		{3, "de|f", 2},
		{4, "e|f", 2},
		{5, "f", 1},
		{6, "", 0},
	}
	for _, tt := range tests {
		got := advance(bufs, tt.n)
		var parts []string
		for _, p := range got {
			if len(p) > 0 {
				parts = append(parts, string(p))
			}
		}
		if strings.Join(parts, "|") != tt.want || len(got) != tt.left {
			t.Fatalf("advance(%d) = %q (%d buffers), want %q (%d)", tt.n, got, len(got), tt.want, tt.left)
		}
	}
	if string(bufs[0]) != "abc" {
		t.Fatal("advance changed its argument")
	}
}
