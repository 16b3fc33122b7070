package virtiotest

import (
	"bytes"
	"errors"
	"testing"

	"godwit/devices"
	"godwit/devices/virtio"
)

// FuzzRestore is the transport-level restore fuzz target of a device:
// each input is a prior state and a candidate. A fresh machine is
// restored to the prior state (inputs whose prior is refused are
// skipped) and paused, then offered the candidate. A refused candidate
// must fail with devices.ErrInvalidState and leave the saved state
// exactly as it was (nothing half-restored); an accepted one must save
// back byte for byte (so nothing the input did not carry was invented,
// and what was decoded is bounded by the input). Seeds are the device's
// state at every phase of the conformance suite, plus extra.
//
// newDev returns a fresh device whose resources go when tb ends (s.New is
// not used: each input needs its own device).
func FuzzRestore(f *testing.F, s Suite, newDev func(tb testing.TB) virtio.Device, extra ...[]byte) {
	s.New = func() virtio.Device { return newDev(f) }
	var states [][]byte
	for _, p := range phases {
		m := NewMachine(f, s.New())
		p.run(f, s, NewDriver(f, m))
		states = append(states, save(f, m))
	}
	states = append(states, extra...)
	for i, prior := range states {
		for _, cand := range states {
			f.Add(prior, cand)
		}
		f.Add(prior, prior[:len(prior)/2])
		f.Add(prior, append(append([]byte(nil), states[(i+1)%len(states)]...), 0))
	}
	f.Fuzz(func(t *testing.T, prior, cand []byte) {
		m := NewMachine(t, newDev(t))
		if err := m.Transport.RestoreState(prior); err != nil {
			return
		}
		before := save(t, m)
		err := m.Transport.RestoreState(cand)
		after := save(t, m)
		if err != nil {
			if !errors.Is(err, devices.ErrInvalidState) {
				t.Fatalf("refusal %v does not wrap ErrInvalidState", err)
			}
			if !bytes.Equal(before, after) {
				t.Fatalf("a refused restore changed the transport:\nbefore %x\nafter  %x", before, after)
			}
			return
		}
		if !bytes.Equal(after, cand) {
			t.Fatalf("accepted %x, saves %x", cand, after)
		}
	})
}

// CheckConfigRestore restores b into dev's own state and checks the
// contract of virtio.Device.RestoreConfigState: a refusal wraps
// devices.ErrInvalidState and leaves SaveConfigState as it was, and an
// accepted state saves back byte for byte. It reports whether dev took b.
func CheckConfigRestore(t testing.TB, dev virtio.Device, b []byte) bool {
	t.Helper()
	before, err := dev.SaveConfigState()
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.RestoreConfigState(b); err != nil {
		if !errors.Is(err, devices.ErrInvalidState) {
			t.Fatalf("refusal %v does not wrap ErrInvalidState", err)
		}
		if now, _ := dev.SaveConfigState(); !bytes.Equal(now, before) {
			t.Fatal("a refused restore changed the device")
		}
		return false
	}
	again, err := dev.SaveConfigState()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, b) {
		t.Fatalf("accepted %x, saves %x", b, again)
	}
	return true
}
