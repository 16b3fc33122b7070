package integration

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// rngGuestCmd runs in the guest (godwit.cmd, see harness.GuestInit: no
// double quotes inside). It prints the hw_random core's current and
// available sources, 64 bytes read from /dev/hwrng as hex (16 a line), and
// the guest's virtio interrupt lines, each with a prefix the test matches.
const rngGuestCmd = "echo RNG-CURRENT=$(cat /sys/class/misc/hw_random/rng_current);" +
	" echo RNG-AVAILABLE=$(cat /sys/class/misc/hw_random/rng_available);" +
	" head -c 64 /dev/hwrng | od -An -v -tx1 | sed s/^/RNG-BYTES:/;" +
	" grep virtio /proc/interrupts | sed s/^/RNG-IRQ:/"

// TestVirtioRNG boots Debian's stock kernel with --rng and checks that the
// guest's virtio_pci driver finds the entropy device on PCI, that the
// hw_random core uses it, and that bytes read from /dev/hwrng arrive (the
// device answers requests and its interrupts reach the guest).
func TestVirtioRNG(t *testing.T) {
	kernel := asset(t, "GODWIT_KERNEL")
	initrd := asset(t, "GODWIT_INITRD")
	p := startGodwit(t, "run", "--rng", "--kernel", kernel, "--initrd", initrd,
		"--cmdline", `console=ttyS0 reboot=k panic=-1 godwit.cmd="`+rngGuestCmd+`"`,
		"--mem", "256M", "--cpus", "1")
	p.waitLine(func(l string) bool { return strings.Contains(l, "GODWIT-GUEST-CMD-BEGIN") }, "guest command start")
	t.Logf("guest command starts after %v", time.Since(p.start))

	var current string
	var hex []string
	var irqs []string
	exit := p.waitLine(func(l string) bool {
		switch {
		case strings.HasPrefix(l, "RNG-CURRENT="):
			current = strings.TrimPrefix(l, "RNG-CURRENT=")
		case strings.HasPrefix(l, "RNG-BYTES:"):
			hex = append(hex, strings.Fields(strings.TrimPrefix(l, "RNG-BYTES:"))...)
		case strings.HasPrefix(l, "RNG-IRQ:"):
			irqs = append(irqs, l)
		}
		return strings.Contains(l, "GODWIT-GUEST-CMD-EXIT=")
	}, "guest command exit")
	if !strings.HasSuffix(exit, "GODWIT-GUEST-CMD-EXIT=0") {
		t.Errorf("guest command: %s", exit)
	}
	if !strings.HasPrefix(current, "virtio_rng") {
		t.Errorf("rng_current = %q, want virtio_rng.N", current)
	}
	if len(hex) != 64 {
		t.Errorf("read %d bytes from /dev/hwrng, want 64: %q", len(hex), hex)
	} else if strings.Join(hex, "") == strings.Repeat("00", 64) {
		t.Errorf("/dev/hwrng gave 64 zero bytes")
	}
	// The driver uses MSI-X when it works; INTx would show as IO-APIC.
	msi := false
	for _, l := range irqs {
		msi = msi || strings.Contains(l, "MSI")
	}
	if !msi {
		t.Errorf("no virtio MSI interrupt in /proc/interrupts: %q", irqs)
	}
	if err := p.wait(); err != nil {
		t.Fatalf("godwit exit after the guest's reboot: %v", err)
	}
}

// rngTick parses the migration guest command's "rngtick N HEX" lines.
func rngTick(line string) (n int, hex string, ok bool) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "rngtick" || len(f[2]) != 16 {
		return 0, "", false
	}
	n, err := strconv.Atoi(f[1])
	return n, f[2], err == nil
}

// TestVirtioRNGMigration boots Debian's kernel with --rng and a guest
// command that reads 8 bytes from /dev/hwrng every second, migrates the VM
// and checks that the reads go on, in sequence, on the destination: the
// device, its queue positions and its MSI-X vectors moved with the guest
// (a device that lost them would leave the guest's read blocked forever).
func TestVirtioRNGMigration(t *testing.T) {
	kernel := asset(t, "GODWIT_KERNEL")
	initrd := asset(t, "GODWIT_INITRD")
	// The background "alive" lines tell a hung guest from a blocked read.
	cmd := `(while :; do echo rngalive $(cut -d. -f1 /proc/uptime); sleep 5; done) & i=0; while [ $i -lt 1200 ]; do i=$((i+1)); echo rngtick $i $(head -c 8 /dev/hwrng | od -An -v -tx8); sleep 1; done`
	sock := tempPath(t, "src.sock")
	src := startGodwit(t, "run", "--rng", "--kernel", kernel, "--initrd", initrd, "--mem", "256M", "--cpus", "1",
		"--api-sock", sock, "--cmdline", `console=ttyS0 reboot=k panic=-1 quiet godwit.cmd="`+cmd+`"`)
	var before int
	for i := 0; i < 3; i++ {
		l := src.waitLine(func(l string) bool { _, _, ok := rngTick(l); return ok }, "rngtick on the source")
		before, _, _ = rngTick(l)
	}

	dst, listen, dstSock := startReceiver(t, "dst")
	if _, err := migrateVM(t, sock, listen, "--json"); err != nil {
		t.Fatalf("migrating the guest with virtio-rng: %v", err)
	}
	if err := src.wait(); err != nil {
		t.Fatalf("source after migrating: %v", err)
	}
	seen := map[string]bool{}
	prev := 0
	for i := 0; i < 4; i++ {
		l := dst.waitLine(func(l string) bool { _, _, ok := rngTick(l); return ok }, "rngtick on the destination")
		n, hex, _ := rngTick(l)
		if n <= before || (prev != 0 && n != prev+1) {
			t.Fatalf("rngtick %d on the destination after %d (source's last %d): the guest's reads broke across the migration", n, prev, before)
		}
		if seen[hex] || hex == strings.Repeat("0", 16) {
			t.Errorf("rngtick %d: bytes %s repeat or are zero", n, hex)
		}
		seen[hex] = true
		prev = n
	}
	ctl(t, dstSock, "shutdown")
	if err := dst.wait(); err != nil {
		t.Fatalf("destination exit: %v", err)
	}
}
