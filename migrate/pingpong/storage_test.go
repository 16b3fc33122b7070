package pingpong

import (
	"os"
	"path/filepath"
	"testing"
)

// TestStorageDirs checks where each hop's images go and which stale
// copies are deleted: hop n receives into Dirs[(n-1)%2], and once hop n's
// source exited (n ≥ 2) its images, in the other directory, go.
func TestStorageDirs(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	s := &Storage{Dirs: [2]string{a, b}, Images: []string{"vda.img", "vdb.img"}}
	for n, want := range map[int]string{1: a, 2: b, 3: a, 4: b} {
		if got := s.dir(n); got != want {
			t.Errorf("hop %d receives into %s, want %s", n, got, want)
		}
	}
	touch := func(dir string) {
		for _, name := range s.Images {
			if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	exists := func(dir, name string) bool {
		_, err := os.Stat(filepath.Join(dir, name))
		return err == nil
	}
	touch(a) // hop 1
	if err := s.removeStale(1); err != nil || !exists(a, "vda.img") {
		t.Fatalf("after hop 1: %v; the first instance's images are the caller's", err)
	}
	touch(b) // hop 2: the source of hop 2 used a's images
	if err := s.removeStale(2); err != nil || exists(a, "vda.img") || exists(a, "vdb.img") || !exists(b, "vda.img") {
		t.Fatalf("after hop 2: %v", err)
	}
	if err := s.removeStale(2); err == nil {
		t.Fatal("removing images that are gone succeeded")
	}
}
