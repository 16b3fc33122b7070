package integration

import (
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
