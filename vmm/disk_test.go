package vmm

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"godwit/devices/pci"
	"godwit/migrate"
)

func TestParseDisk(t *testing.T) {
	checkParse(t, "ParseDisk", ParseDisk, []parseCase[DiskConfig]{
		{"path=/a.img", DiskConfig{Path: "/a.img"}, ""},
		{"path=/a.img,readonly=on", DiskConfig{Path: "/a.img", ReadOnly: true}, ""},
		{"readonly=true,path=rel.img", DiskConfig{Path: "rel.img", ReadOnly: true}, ""},
		{"path=/a.img,readonly=off", DiskConfig{Path: "/a.img"}, ""},
		{"path=/with=equals", DiskConfig{Path: "/with=equals"}, ""},
		{"", DiskConfig{}, "want path=FILE"},
		{"/a.img", DiskConfig{}, "want path=FILE"},
		{"path=", DiskConfig{}, "missing"},
		{"readonly=on", DiskConfig{}, "missing"},
		{"path=/a,readonly=maybe", DiskConfig{}, "want on or off"},
		{"path=/a,cache=none", DiskConfig{}, "unknown key"},
		{"path=/a,path=/b", DiskConfig{}, "want path=FILE"},
		{"path=/a,", DiskConfig{}, "want path=FILE"},
	})
}

func TestValidateDisks(t *testing.T) {
	checkValidate(t, []validateCase{
		{"two disks", func(c *Config) { c.Disks = []DiskConfig{{Path: "a"}, {Path: "b", ReadOnly: true}} }, ""},
		{"too many", func(c *Config) { c.Disks = make([]DiskConfig, MaxDisks+1) }, "at most"},
		{"no path", func(c *Config) { c.Disks = []DiskConfig{{}} }, "no path"},
		{"map without incoming", func(c *Config) { c.DiskMap = map[string]string{"a": "b"} }, "incoming"},
		{"map incoming", func(c *Config) { c.DiskMap = map[string]string{"a": "b"}; c.Incoming = true }, ""},
	})
}

// image creates a raw image of size bytes and returns its path.
func image(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPCIWiringDisks(t *testing.T) {
	dir := t.TempDir()
	a := image(t, dir, "a.img", 1<<20)
	b := image(t, dir, "b.img", 2<<20)
	v := newPCITestVM(t, Config{CPUs: 1, RNG: true, Disks: []DiskConfig{{Path: a}, {Path: b, ReadOnly: true}}})
	if got, want := v.cfg.pciDevices(), []string{pciDeviceRNG, pciDeviceBlk, pciDeviceBlk}; !slices.Equal(got, want) {
		t.Fatalf("pciDevices = %q, want %q", got, want)
	}
	// Bus order: the entropy device, then the disks, one slot each.
	for slot, want := range map[int]uint32{1: 0x1044_1af4, 2: 0x1042_1af4, 3: 0x1042_1af4, 4: 0xffffffff} {
		if got := cfgRead(t, v, slot, pci.RegVendorID); got != want {
			t.Errorf("00:%02x.0 vendor/device = %#x, want %#x", slot, got, want)
		}
	}
	if got := cfgRead(t, v, 2, pci.RegClassCode&^3) >> 8; got != 0x010000 {
		t.Errorf("disk class %#x", got)
	}
	disks := v.Disks()
	if len(disks) != 2 {
		t.Fatalf("%d disks", len(disks))
	}
	for i, want := range []struct {
		path     string
		sectors  uint64
		readOnly bool
		serial   string
	}{{a, 2048, false, "godwit-disk0"}, {b, 4096, true, "godwit-disk1"}} {
		d := disks[i]
		if d.Path() != want.path || d.Capacity() != want.sectors || d.ReadOnly() != want.readOnly || d.Serial() != want.serial {
			t.Errorf("disk %d: %s %d %v %q", i, d.Path(), d.Capacity(), d.ReadOnly(), d.Serial())
		}
	}
	// The handshake describes the disks.
	want := []MigrationDisk{{Path: a, Sectors: 2048}, {Path: b, ReadOnly: true, Sectors: 4096}}
	if got := v.migrationDisks(); !slices.Equal(got, want) {
		t.Errorf("migrationDisks = %+v, want %+v", got, want)
	}
	mc := roundTripConfig(t, MigrationConfig{MemoryBytes: 64 << 20, CPUs: 1, Guest: "linux", Devices: v.cfg.pciDevices(), Disks: v.migrationDisks()})
	if !slices.Equal(mc.Disks, want) {
		t.Errorf("parsed disks %+v", mc.Disks)
	}
	closeTwice(t, v)
}

func TestSetupPCIDiskErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		disks []DiskConfig
		want  string
	}{
		{"missing image", []DiskConfig{{Path: filepath.Join(dir, "nope.img")}}, "virtio-blk0: disk: open"},
		{"second missing", []DiskConfig{{Path: image(t, dir, "ok.img", 4096)}, {Path: filepath.Join(dir, "nope.img")}}, "virtio-blk1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := setupPCIError(t, Config{CPUs: 1, Disks: tc.disks}); !errMatches(err, tc.want) {
				t.Fatalf("setupPCI = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestIncomingDisks(t *testing.T) {
	src := []MigrationDisk{{Path: "/src/a.img", Sectors: 8}, {Path: "/src/b.img", ReadOnly: true, Sectors: 8}}
	for _, tc := range []struct {
		name    string
		m       map[string]string
		want    []DiskConfig
		wantErr string
	}{
		{"shared paths", nil, []DiskConfig{{Path: "/src/a.img"}, {Path: "/src/b.img", ReadOnly: true}}, ""},
		{"one mapped", map[string]string{"/src/b.img": "/dst/b.img"}, []DiskConfig{{Path: "/src/a.img"}, {Path: "/dst/b.img", ReadOnly: true}}, ""},
		{"both mapped", map[string]string{"/src/a.img": "/x", "/src/b.img": "/y"}, []DiskConfig{{Path: "/x"}, {Path: "/y", ReadOnly: true}}, ""},
		{"unknown source disk", map[string]string{"/src/c.img": "/x"}, nil, "no such disk"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := incomingDisks(src, tc.m)
			checkList(t, "incomingDisks", got, err, tc.want, tc.wantErr)
		})
	}
}

// TestDiskMigrationState saves a VM with disks and restores it into a VM
// that opened the images at other paths (as --disk-map does), and checks
// that a destination whose image differs is refused.
func TestDiskMigrationState(t *testing.T) {
	dir := t.TempDir()
	cfg := func(a, b string) Config {
		return Config{CPUs: 1, Disks: []DiskConfig{{Path: a}, {Path: b, ReadOnly: true}}}
	}
	src := newPCITestVM(t, cfg(image(t, dir, "a.img", 1<<20), image(t, dir, "b.img", 1<<20)))
	sections, err := src.savePCIState()
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]migrate.Section{}
	var ids []string
	for _, s := range sections {
		byID[s.ID] = s
		ids = append(ids, s.ID)
	}
	if want := []string{"pci", "dev/virtio-blk0", "dev/virtio-blk1"}; !slices.Equal(ids, want) {
		t.Fatalf("sections %q, want %q", ids, want)
	}

	t.Run("same images elsewhere", func(t *testing.T) {
		dst := newPCITestVM(t, cfg(image(t, dir, "a2.img", 1<<20), image(t, dir, "b2.img", 1<<20)))
		if err := dst.checkIncomingDisks(src.migrationDisks()); err != nil {
			t.Fatal(err)
		}
		if err := dst.checkPCISections(byID); err != nil {
			t.Fatal(err)
		}
		if err := dst.restorePCIState(byID); err != nil {
			t.Fatal(err)
		}
		checkSavesSame(t, dst, sections)
	})
	t.Run("image of another size", func(t *testing.T) {
		dst := newPCITestVM(t, cfg(image(t, dir, "a3.img", 2<<20), image(t, dir, "b3.img", 1<<20)))
		err := dst.checkIncomingDisks(src.migrationDisks())
		if err == nil || !strings.Contains(err.Error(), "4096 sectors here") {
			t.Fatalf("checkIncomingDisks = %v", err)
		}
		// The device state refuses it too.
		err = dst.restorePCIState(byID)
		if !errors.Is(err, errState) || !strings.Contains(err.Error(), "virtio-blk0") {
			t.Fatalf("restore = %v", err)
		}
	})
	t.Run("read-only differs", func(t *testing.T) {
		c := cfg(image(t, dir, "a4.img", 1<<20), image(t, dir, "b4.img", 1<<20))
		c.Disks[1].ReadOnly = false
		dst := newPCITestVM(t, c)
		err := dst.restorePCIState(byID)
		if !errors.Is(err, errState) || !strings.Contains(err.Error(), "virtio-blk1") {
			t.Fatalf("restore = %v", err)
		}
	})
}
