package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGuestHammer boots testdata/hammer.bin (see hammer.S) with an
// entropy device and a disk: a guest that hammers unhandled ports (byte,
// word, dword and string I/O), misprograms both virtio devices' BARs
// through 0xCF8/0xCFC (sizing, over RAM, over the IOAPIC, overlapping,
// swapped), writes all ones over a whole BAR, turns Memory Space off and
// on, resets a device and touches MMIO where nothing is. The VMM must
// survive it, the guest's report must arrive on COM1 with the BAR's size
// mask, the VM must still be running, and GET /vm's counters must show
// the unhandled accesses.
func TestGuestHammer(t *testing.T) {
	img := tempPath(t, "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := tempPath(t, "api.sock")
	p := startGodwit(t, "run", "--boot-sector", "testdata/hammer.bin", "--mem", "16M",
		"--rng", "--disk", "path="+img, "--api-sock", sock, "--serial", "stdio")
	line := p.waitLine(func(l string) bool { return strings.HasPrefix(l, "godwit hammer: survived") }, "the hammer's report")
	// BAR 0 of a virtio device is 32 KiB of 32-bit, non-prefetchable
	// memory: the sizing read returns the size mask.
	if !strings.HasSuffix(strings.TrimSpace(line), "BAR sizing read ffff8000") {
		t.Errorf("report %q, want the BAR sizing read ffff8000", line)
	}

	var info struct {
		State string            `json:"state"`
		Exits map[string]uint64 `json:"exits"`
	}
	if err := json.Unmarshal([]byte(ctl(t, sock, "status", "--json")), &info); err != nil {
		t.Fatal(err)
	}
	t.Logf("state %s, exits %v", info.State, info.Exits)
	if info.State != "running" {
		t.Errorf("state %q after the hammer, want running", info.State)
	}
	// 256 byte ports, a word and a dword port, 64 string accesses: each
	// read and written once.
	const pio = 256 + 2 + 64
	for _, c := range []struct {
		name string
		min  uint64
	}{
		{"unhandled_pio_reads", pio}, {"unhandled_pio_writes", pio},
		{"unhandled_mmio_reads", 1}, {"unhandled_mmio_writes", 1},
		{"mmio", 2 * 0x2000},
	} {
		if got := info.Exits[c.name]; got < c.min {
			t.Errorf("exits[%q] = %d, want at least %d", c.name, got, c.min)
		}
	}

	ctl(t, sock, "shutdown")
	if err := p.wait(); err != nil {
		t.Fatalf("godwit exit after API shutdown: %v", err)
	}
}

// TestBootSectorsReproducible rebuilds the committed boot sectors with
// testdata/build.sh (GNU as and ld; skipped without them) and compares.
func TestBootSectorsReproducible(t *testing.T) {
	for _, tool := range []string{"as", "ld"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	if out, err := exec.Command("sh", "testdata/build.sh", dir).CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, out)
	}
	for _, name := range []string{"pmode.bin", "hammer.bin"} {
		built, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		committed, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(built, committed) {
			t.Errorf("testdata/%s differs from what build.sh builds: run testdata/build.sh and commit it", name)
		}
	}
}
