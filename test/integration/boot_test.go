package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"godwit/test/guest"
)

// heartbeatPass parses a test guest heartbeat line.
func heartbeatPass(line string) (uint64, bool) {
	rest, ok := strings.CutPrefix(line, "heartbeat ")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(rest), 10, 64)
	return n, err == nil
}

// TestTestGuestPauseResumeDump boots the embedded test guest and checks the
// banner, heartbeats, pause (memory frozen), resume (heartbeats again), a
// memory dump the checker accepts, and a clean shutdown through the API.
func TestTestGuestPauseResumeDump(t *testing.T) {
	sock := tempPath(t, "api.sock")
	// `godwit run` with no kernel and the default 256 MiB: the banner and
	// the heartbeats' arrival times are printed (issue 2 asks for both
	// within 5 s in the nested host; timings are shown, not asserted).
	const mem = 256 << 20
	p := startGodwit(t, "run", "--api-sock", sock, "--guest-arg", "heartbeat=2")
	p.waitLine(func(l string) bool { return strings.HasPrefix(l, guest.BannerPrefix) }, "test guest banner")
	t.Logf("banner after %v", time.Since(p.start))
	var last uint64
	for i := 0; i < 2; i++ {
		l := p.waitLine(func(l string) bool { _, ok := heartbeatPass(l); return ok }, "heartbeat")
		last, _ = heartbeatPass(l)
		t.Logf("heartbeat %d (pass %d) after %v", i+1, last, time.Since(p.start))
	}

	var info struct {
		State  string `json:"state"`
		Config struct {
			MemoryBytes uint64 `json:"memory_bytes"`
			Guest       string `json:"guest"`
		} `json:"config"`
	}
	if err := json.Unmarshal([]byte(ctl(t, sock, "status", "--json")), &info); err != nil {
		t.Fatal(err)
	}
	if info.State != "running" || info.Config.MemoryBytes != mem || info.Config.Guest != "test-guest" {
		t.Fatalf("status = %+v", info)
	}

	ctl(t, sock, "pause")
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	ctl(t, sock, "dump-memory", "--out", a)
	ctl(t, sock, "dump-memory", "--out", b)
	imgA, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	imgB, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgA) != mem {
		t.Fatalf("dump is %d bytes, want %d", len(imgA), mem)
	}
	if string(imgA) != string(imgB) {
		t.Fatal("guest memory changed while the VM was paused")
	}
	params := guest.DefaultParams(mem)
	if err := guest.ParseParam(&params, "heartbeat", "2"); err != nil {
		t.Fatal(err)
	}
	res, err := guest.Check(imgA, params)
	if err != nil {
		t.Fatalf("checker rejected the dump: %v", err)
	}
	t.Logf("paused image: counter %d, boundary %d", res.Counter, res.Boundary)
	passes, err := guest.ReadStatus(imgA[guest.ParamAddr:])
	if err != nil {
		t.Fatal(err)
	}
	if passes < last {
		t.Fatalf("status pass counter %d below the last heartbeat %d", passes, last)
	}

	ctl(t, sock, "resume")
	p.waitLine(func(l string) bool { n, ok := heartbeatPass(l); return ok && n > passes }, "heartbeat after resume")

	ctl(t, sock, "shutdown")
	if err := p.wait(); err != nil {
		t.Fatalf("godwit exit after API shutdown: %v", err)
	}
}

// TestBootSectorProtectedMode runs a 512-byte boot sector that enters
// protected mode, writes to COM1 and resets through the i8042.
func TestBootSectorProtectedMode(t *testing.T) {
	p := startGodwit(t, "run", "--boot-sector", "testdata/pmode.bin", "--mem", "16M")
	p.waitLine(func(l string) bool { return l == "godwit boot sector: protected mode OK" }, "boot sector output")
	if err := p.wait(); err != nil {
		t.Fatalf("godwit exit after the guest's reset: %v", err)
	}
}

// TestLinuxBootSMP boots Debian's stock kernel with a busybox initramfs on
// two vCPUs and checks that userspace sees both CPUs.
func TestLinuxBootSMP(t *testing.T) {
	kernel := asset(t, "GODWIT_KERNEL")
	initrd := asset(t, "GODWIT_INITRD")
	p := startGodwit(t, "run", "--kernel", kernel, "--initrd", initrd,
		"--cmdline", "console=ttyS0 reboot=k panic=-1", "--mem", "256M", "--cpus", "2")
	line := p.waitLine(func(l string) bool { return strings.Contains(l, "GODWIT-GUEST-READY") }, "guest userspace")
	t.Logf("userspace after %v: %s", time.Since(p.start), line)
	if !strings.Contains(line, "cpus=2") {
		t.Fatalf("guest reports %q, want cpus=2", line)
	}
	if err := p.wait(); err != nil {
		t.Fatalf("godwit exit after the guest's reboot: %v", err)
	}
}
