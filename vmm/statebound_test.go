package vmm

import (
	"testing"

	"godwit/migrate"
)

// TestStateBoundCoversSavedState creates a VM on /dev/kvm (skipped
// without) with two vCPUs and an entropy device, saves its state as a
// migration does and checks that the bound the destination would apply
// holds it, and that the bound stays far below migrate.MaxStateSize.
func TestStateBoundCoversSavedState(t *testing.T) {
	v := newKVMTestVM(t, Config{CPUs: 2, MemoryBytes: 64 << 20, RNG: true, Serial: SerialConfig{Mode: "none"}, Log: quietLog()})
	// The vCPUs never ran: as quiet as paused ones.
	v.runMu.Lock()
	v.state = "paused"
	v.runMu.Unlock()
	sections, err := v.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	n := 4
	for _, s := range sections {
		n += 2 + len(s.ID) + 4 + 4 + len(s.Data)
	}
	bound := v.MaxStateBytes()
	t.Logf("state %d bytes, bound %d", n, bound)
	if n > bound {
		t.Fatalf("the saved state (%d bytes) exceeds the VM's bound (%d)", n, bound)
	}
	if bound > migrate.MaxStateSize/8 {
		t.Errorf("bound %d: hardly tighter than the protocol's %d", bound, migrate.MaxStateSize)
	}
	if nets := stateBound(1, []string{pciDeviceNet}); nets < 1<<20 {
		t.Errorf("a network device's bound %d does not cover its backlog", nets)
	}
}
