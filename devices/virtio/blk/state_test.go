package blk

import (
	"bytes"
	"errors"
	"testing"

	"godwit/devices"
)

func testDisk(t testing.TB, size uint64, opts Options) *Disk {
	t.Helper()
	d, err := newDisk(newMemImage(int(size)), size, opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestStateRoundTrip(t *testing.T) {
	for _, opts := range []Options{{}, {ReadOnly: true}, {Serial: "godwit-disk0"}, {Serial: "01234567890123456789", ReadOnly: true}} {
		src := testDisk(t, 1<<20, opts)
		b, err := src.SaveConfigState()
		if err != nil {
			t.Fatal(err)
		}
		var s State
		if err := s.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if s != (State{Capacity: 2048, ReadOnly: opts.ReadOnly, Serial: opts.Serial}) {
			t.Errorf("state %+v", s)
		}
		// The destination named its disk differently: it takes the
		// source's serial.
		dst := testDisk(t, 1<<20, Options{ReadOnly: opts.ReadOnly, Serial: "other"})
		if err := dst.RestoreConfigState(b); err != nil {
			t.Fatal(err)
		}
		if dst.Serial() != opts.Serial {
			t.Errorf("serial %q after restore, want %q", dst.Serial(), opts.Serial)
		}
		again, _ := dst.SaveConfigState()
		if !bytes.Equal(again, b) {
			t.Errorf("save→restore→save differs: %x vs %x", again, b)
		}
	}
}

func TestRestoreConfigStateRejects(t *testing.T) {
	good, err := testDisk(t, 1<<20, Options{Serial: "abc"}).SaveConfigState()
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"truncated header", good[:5]},
		{"truncated serial", good[:len(good)-1]},
		{"trailing byte", append(append([]byte(nil), good...), 0)},
		{"version", mut(func(b []byte) []byte { b[0] = 2; return b })},
		{"unknown flag", mut(func(b []byte) []byte { b[2] |= 2; return b })},
		{"serial too long", mut(func(b []byte) []byte { b[3] = 21; return append(b, make([]byte, 18)...) })},
		{"serial with NUL", mut(func(b []byte) []byte { b[len(b)-1] = 0; return b })},
		{"capacity differs", mut(func(b []byte) []byte { b[4]++; return b })},
		{"read-only differs", mut(func(b []byte) []byte { b[2] |= 1; return b })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := testDisk(t, 1<<20, Options{Serial: "keep"})
			err := d.RestoreConfigState(tt.data)
			if !errors.Is(err, devices.ErrInvalidState) {
				t.Fatalf("err = %v, want ErrInvalidState", err)
			}
			if d.Serial() != "keep" {
				t.Errorf("a rejected restore changed the serial to %q", d.Serial())
			}
		})
	}
}

func TestStateMarshalRejectsBadSerial(t *testing.T) {
	for _, s := range []string{"012345678901234567890", "a\x00"} {
		if _, err := (&State{Serial: s}).MarshalBinary(); err == nil {
			t.Errorf("serial %q encoded", s)
		}
	}
}
