package devices

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// stateful is a device with saved state.
type stateful interface {
	SaveState() ([]byte, error)
	RestoreState([]byte) error
}

// restoreOrKeep restores b into d and reports whether d took it; a
// refusal must wrap ErrInvalidState and leave d's saved state as it was.
func restoreOrKeep(t *testing.T, d stateful, b []byte) bool {
	t.Helper()
	before, err := d.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	err = d.RestoreState(b)
	if err == nil {
		return true
	}
	if !errors.Is(err, ErrInvalidState) {
		t.Fatalf("refusal %v does not wrap ErrInvalidState", err)
	}
	if after, _ := d.SaveState(); !bytes.Equal(before, after) {
		t.Fatalf("a refused restore changed the device: %v", err)
	}
	return false
}

// FuzzCMOSRestore restores arbitrary bytes into a CMOS that holds a prior
// state: a refusal wraps ErrInvalidState and leaves the state unchanged,
// and what is accepted saves back byte for byte.
func FuzzCMOSRestore(f *testing.F) {
	busy := NewCMOS(func() time.Time { return time.Unix(1e9, 0) }, 1<<30, 1<<32)
	cmosWrite(busy, 0x40, 0x55)
	busy.Write(CMOSIndexOffset, []byte{0x0b})
	good, _ := busy.SaveState()
	f.Add(good)
	f.Add(good[:len(good)-1])
	bad := append([]byte(nil), good...)
	bad[2] = 0x80
	f.Add(bad)
	f.Fuzz(func(t *testing.T, b []byte) {
		c := NewCMOS(func() time.Time { return time.Unix(1e9, 0) }, 1<<30, 1<<32)
		cmosWrite(c, 0x41, 0x66)
		if !restoreOrKeep(t, c, b) {
			return
		}
		if again, _ := c.SaveState(); !bytes.Equal(again, b) {
			t.Fatalf("restored % x, saves % x", b, again)
		}
		for off := range uint64(4) {
			c.Read(off, make([]byte, 1))
		}
	})
}

// legacyBus registers the PC's legacy devices where the VM does, with
// callbacks that count resets and power-offs.
func legacyBus(tb testing.TB, resets, offs *int) (*Bus, *Serial) {
	tb.Helper()
	b := NewBus("pio")
	ser := NewSerial(io.Discard, &fakeIRQ{})
	reset := func() { *resets++ }
	kbd := NewI8042(reset)
	kbd.SetIRQ(&fakeIRQ{})
	pm := NewACPIPM(5, func() { *offs++ })
	pm.SetSCI(&fakeIRQ{})
	for _, d := range []struct {
		base, size uint64
		name       string
		dev        Device
	}{
		{0x3f8, SerialPorts, "serial", ser},
		{0x70, 2, "cmos", NewCMOS(func() time.Time { return time.Unix(0, 0) }, 1<<30, 0)},
		{0x80, 1, "post", NewSink("post")},
		{0x92, 1, "port92", NewPort92(reset)},
		{0x60, 1, "i8042-data", kbd.DataPort()},
		{0x64, 1, "i8042-command", kbd.CommandPort()},
		{0x600, ACPIPMSize, "acpi-pm", pm},
	} {
		if err := b.Register(d.base, d.size, d.name, d.dev); err != nil {
			tb.Fatal(err)
		}
	}
	return b, ser
}

// FuzzLegacyPorts plays a guest hammering the port-I/O space: each op is
// 4 bytes (le16 port, within 0-0xfff; a byte whose bits 0-1 choose the
// width 1, 2, 4 or 8 and bit 7 a write; a value byte). No access may
// panic, an access that hits no device is counted, and none may reach
// another device: the UART's scratch register, written only by accesses
// that start inside the UART, reads back what was last written there.
func FuzzLegacyPorts(f *testing.F) {
	f.Add([]byte{0xff, 0x03, 0x80, 0x42, 0x64, 0x00, 0x80, 0xd1, 0x60, 0x00, 0x80, 0x00, 0x04, 0x06, 0x81, 0x20})
	f.Add([]byte{0x70, 0x00, 0x80, 0x8f, 0x71, 0x00, 0x02, 0, 0x00, 0x01, 0x83, 0xff, 0xfe, 0x0f, 0x03, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var resets, offs int
		b, ser := legacyBus(t, &resets, &offs)
		scr := byte(0)
		b.Write(0x3f8+serialSCR, []byte{scr})
		var misses uint64
		for len(ops) >= 4 {
			port := uint64(ops[0]) | uint64(ops[1]&0x0f)<<8
			n := 1 << (ops[2] & 3)
			data := bytes.Repeat([]byte{ops[3]}, n)
			if ops[2]&0x80 != 0 {
				if !b.Write(port, data) {
					misses++
				}
				// A wide access covers consecutive registers of
				// the device it starts in.
				if end := port + uint64(n) - 1; port >= 0x3f8 && port <= 0x3f8+serialSCR && end >= 0x3f8+serialSCR {
					scr = ops[3]
				}
			} else if !b.Read(port, data) {
				misses++
				if !bytes.Equal(data, bytes.Repeat([]byte{0xff}, n)) {
					t.Fatalf("unhandled read of port %#x gave % x", port, data)
				}
			}
			ops = ops[4:]
		}
		if r, w := b.Unhandled(); r+w != misses {
			t.Fatalf("%d unhandled accesses counted, %d made", r+w, misses)
		}
		// Only a DLAB-independent view of SCR is needed: restore LCR.
		ser.Write(serialLCR, []byte{0})
		got := make([]byte, 1)
		ser.Read(serialSCR, got)
		if got[0] != scr {
			t.Fatalf("scratch register %#x, last written %#x", got[0], scr)
		}
		_ = resets + offs
	})
}
