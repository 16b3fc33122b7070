package vmm

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"godwit/migrate"
)

// TestStorageSource checks the source side of a storage migration: each
// disk's image opened read-only, its data found by SEEK_DATA/SEEK_HOLE,
// and its written blocks taken from the device's bitmap.
func TestStorageSource(t *testing.T) {
	dir := t.TempDir()
	a := image(t, dir, "a.img", 4<<20)
	f, err := os.OpenFile(a, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{7}, 100), 3<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	v := newPCITestVM(t, Config{CPUs: 1, Disks: []DiskConfig{{Path: a}, {Path: image(t, dir, "b.img", 1<<20), ReadOnly: true}}})
	s, err := v.openStorageSource()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	disks := s.SourceDisks()
	if len(disks) != 2 || disks[0].Size() != 4<<20 || disks[1].Size() != 1<<20 {
		t.Fatalf("source disks %v", disks)
	}
	alloc := make([]uint64, 1)
	if err := disks[0].Allocated(alloc); err != nil {
		t.Fatal(err)
	}
	if want := uint64(1) << (3 << 20 / migrate.DiskBlockSize); alloc[0] != want {
		t.Fatalf("allocated blocks %#x, want %#x (the block at 3 MiB)", alloc[0], want)
	}
	buf := make([]byte, 100)
	if _, err := disks[0].ReadAt(buf, 3<<20); err != nil || !bytes.Equal(buf, bytes.Repeat([]byte{7}, 100)) {
		t.Fatalf("ReadAt: %v %v", buf[:4], err)
	}
	v.Disks()[0].Written().Mark(70<<10, 4096)
	written := make([]uint64, 1)
	if err := disks[0].TakeWritten(written); err != nil || written[0] != 2 {
		t.Fatalf("written blocks %#x (%v), want block 1", written[0], err)
	}
	if err := disks[0].TakeWritten(written[:0]); err == nil {
		t.Fatal("TakeWritten accepted a bitmap too small")
	}
}

// TestStorageIncoming checks the destination side: the images are placed
// and created (sparse, under temporary names the devices open), a refusal
// leaves nothing behind, Commit gives an image its final path, which the
// VM then reports as the disk's, and Discard removes what it received.
func TestStorageIncoming(t *testing.T) {
	dir := t.TempDir()
	src := []MigrationDisk{{Path: "/src/vda.img", Sectors: 2048, Allocated: 4096}, {Path: "/src/b/vdb.img", ReadOnly: true, Sectors: 4096}}
	images, disks, err := createIncomingImages(src, Config{StorageDir: dir, DiskMap: map[string]string{"/src/b/vdb.img": filepath.Join(dir, "data.img")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(images) != 2 || !disks[1].ReadOnly || !strings.HasPrefix(filepath.Base(disks[0].Path), ".vda.img.godwit-partial-") {
		t.Fatalf("disks %+v", disks)
	}
	v := newPCITestVM(t, Config{CPUs: 1, Disks: disks})
	v.images = images
	if err := v.checkIncomingDisks(src); err != nil {
		t.Fatal(err)
	}
	tds := v.TargetDisks()
	if len(tds) != 2 || tds[0].Size() != 2048*512 {
		t.Fatalf("target disks %v", tds)
	}
	if _, err := tds[0].WriteAt([]byte("block"), 65536); err != nil {
		t.Fatal(err)
	}
	if err := tds[0].Commit(); err != nil {
		t.Fatal(err)
	}
	final := filepath.Join(dir, "vda.img")
	if v.cfg.Disks[0].Path != final {
		t.Fatalf("disk 0 reported at %s after commit, want %s", v.cfg.Disks[0].Path, final)
	}
	if b, err := os.ReadFile(final); err != nil || len(b) != 2048*512 || string(b[65536:65541]) != "block" {
		t.Fatalf("committed image: %d bytes, %v", len(b), err)
	}
	// A refused placement creates nothing.
	if _, _, err := createIncomingImages(src, Config{StorageDir: dir}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("second placement onto the committed image: %v", err)
	}
	for _, m := range images {
		if err := m.Remove(); err != nil {
			t.Fatal(err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

// TestStorageMigrationConfig checks the bounds a storage migration's
// configuration must keep.
func TestStorageMigrationConfig(t *testing.T) {
	base := MigrationConfig{MemoryBytes: 64 << 20, CPUs: 1, Guest: "linux", Devices: []string{pciDeviceBlk}, Storage: true}
	for _, tc := range []struct {
		name    string
		disk    MigrationDisk
		wantErr string
	}{
		{"valid", MigrationDisk{Path: "a", Sectors: 8, Allocated: 4096}, ""},
		{"no sectors", MigrationDisk{Path: "a"}, "0 sectors"},
		{"too large", MigrationDisk{Path: "a", Sectors: migrate.MaxDiskSize/512 + 1}, "sectors"},
		{"more allocated than the disk", MigrationDisk{Path: "a", Sectors: 8, Allocated: 4097}, "4097 bytes allocated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc := base
			mc.Disks = []MigrationDisk{tc.disk}
			js, err := json.Marshal(mc)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ParseMigrationConfig(js)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("ParseMigrationConfig = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
