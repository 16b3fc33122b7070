package devices

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func cmosRead(c *CMOS, reg byte) byte {
	c.Write(CMOSIndexOffset, []byte{reg})
	b := []byte{0}
	c.Read(CMOSDataOffset, b)
	return b[0]
}

func cmosWrite(c *CMOS, reg, v byte) {
	c.Write(CMOSIndexOffset, []byte{reg})
	c.Write(CMOSDataOffset, []byte{v})
}

func TestCMOSTime(t *testing.T) {
	// Saturday 9 March 2024, 13:05:07 UTC, given in another zone.
	zone := time.FixedZone("UTC+5", 5*3600)
	at := time.Date(2024, 3, 9, 18, 5, 7, 0, zone)
	midnight := time.Date(1999, 12, 31, 0, 0, 59, 0, time.UTC)
	regs := []byte{rtcSeconds, rtcMinutes, rtcHours, rtcWeekday, rtcMonthDay, rtcMonth, rtcYear, rtcCentury}
	tests := []struct {
		name string
		now  time.Time
		regB byte
		want []byte // in regs order
	}{
		{"BCD 24h (default)", at, regBDefault, []byte{0x07, 0x05, 0x13, 0x07, 0x09, 0x03, 0x24, 0x20}},
		{"binary 24h", at, regBBinary | regB24h, []byte{7, 5, 13, 7, 9, 3, 24, 20}},
		{"BCD 12h PM", at, 0, []byte{0x07, 0x05, 0x81, 0x07, 0x09, 0x03, 0x24, 0x20}},
		{"binary 12h PM", at, regBBinary, []byte{7, 5, 0x81, 7, 9, 3, 24, 20}},
		{"BCD 12h midnight", midnight, 0, []byte{0x59, 0x00, 0x12, 0x06, 0x31, 0x12, 0x99, 0x19}},
		{"binary 24h midnight", midnight, regBBinary | regB24h, []byte{59, 0, 0, 6, 31, 12, 99, 19}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCMOS(func() time.Time { return tt.now }, 0, 0)
			cmosWrite(c, rtcRegB, tt.regB)
			for i, r := range regs {
				if got := cmosRead(c, r); got != tt.want[i] {
					t.Errorf("register %#x = %#x, want %#x", r, got, tt.want[i])
				}
				cmosWrite(c, r, 0x33) // the clock ignores writes
				if got := cmosRead(c, r); got != tt.want[i] {
					t.Errorf("register %#x = %#x after a write, want %#x", r, got, tt.want[i])
				}
			}
		})
	}
}

func TestCMOSStatusRegisters(t *testing.T) {
	c := NewCMOS(nil, 0, 0)
	tests := []struct {
		name  string
		reg   byte
		write int // -1: no write
		want  byte
	}{
		{"A default", rtcRegA, -1, regADefault},
		{"A never shows UIP", rtcRegA, 0xa6, 0x26},
		{"B default", rtcRegB, -1, 0x02},
		{"B writable", rtcRegB, 0x06, 0x06},
		{"C reads 0", rtcRegC, 0xf0, 0},
		{"D battery good", rtcRegD, 0x00, regDVRT},
		{"NVRAM", 0x40, 0x5a, 0x5a},
		{"NVRAM top", 0x7f, 0xa5, 0xa5},
		{"alarm seconds is RAM", 0x01, 0x30, 0x30},
	}
	for _, tt := range tests {
		if tt.write >= 0 {
			cmosWrite(c, tt.reg, byte(tt.write))
		}
		if got := cmosRead(c, tt.reg); got != tt.want {
			t.Errorf("%s: register %#x = %#x, want %#x", tt.name, tt.reg, got, tt.want)
		}
	}
	// The NMI-disable bit of the index port is masked off.
	c.Write(CMOSIndexOffset, []byte{0x80 | 0x40})
	b := []byte{0}
	c.Read(CMOSIndexOffset, b)
	if b[0] != 0x40 {
		t.Errorf("index reads %#x, want 0x40", b[0])
	}
	c.Read(CMOSDataOffset, b)
	if b[0] != 0x5a {
		t.Errorf("register 0x40 through NMI-masked index = %#x, want 0x5a", b[0])
	}
	// Other offsets and empty accesses.
	c.Write(2, []byte{0x12})
	c.Write(CMOSDataOffset, nil)
	c.Read(CMOSDataOffset, nil)
	wide := []byte{0, 0}
	c.Read(5, wide)
	if wide[0] != 0xff || wide[1] != 0xff {
		t.Errorf("offset 5 reads % x, want ff ff", wide)
	}
}

func TestCMOSMemorySize(t *testing.T) {
	const mib, gib = 1 << 20, 1 << 30
	tests := []struct {
		name         string
		below, above uint64
		want         map[byte]byte
	}{
		{"512 KiB", 512 << 10, 0, map[byte]byte{
			0x15: 0x00, 0x16: 0x02, 0x17: 0, 0x18: 0, 0x30: 0, 0x31: 0, 0x34: 0, 0x35: 0, 0x5b: 0, 0x5c: 0, 0x5d: 0}},
		{"32 MiB", 32 * mib, 0, map[byte]byte{
			0x15: 0x80, 0x16: 0x02, 0x17: 0x00, 0x18: 0x7c, 0x30: 0x00, 0x31: 0x7c, 0x34: 0x00, 0x35: 0x01, 0x5b: 0, 0x5c: 0, 0x5d: 0}},
		{"3 GiB + 2 GiB", 3 * gib, 2 * gib, map[byte]byte{
			0x15: 0x80, 0x16: 0x02, 0x17: 0xff, 0x18: 0xff, 0x30: 0xff, 0x31: 0xff, 0x34: 0x00, 0x35: 0xbf, 0x5b: 0x00, 0x5c: 0x80, 0x5d: 0x00}},
		{"huge", 4 * gib, 1 << 62, map[byte]byte{
			0x17: 0xff, 0x18: 0xff, 0x34: 0x00, 0x35: 0xff, 0x5b: 0xff, 0x5c: 0xff, 0x5d: 0xff}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCMOS(nil, tt.below, tt.above)
			for reg, want := range tt.want {
				if got := cmosRead(c, reg); got != want {
					t.Errorf("register %#x = %#x, want %#x", reg, got, want)
				}
			}
		})
	}
}

func TestCMOSSaveRestore(t *testing.T) {
	src := NewCMOS(nil, 64<<20, 0)
	cmosWrite(src, 0x40, 0x11)
	cmosWrite(src, rtcRegB, 0x06)
	src.Write(CMOSIndexOffset, []byte{0x41})
	saved, err := src.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	dst := NewCMOS(nil, 0, 0)
	if err := dst.RestoreState(saved); err != nil {
		t.Fatal(err)
	}
	again, _ := dst.SaveState()
	if !bytes.Equal(saved, again) {
		t.Fatal("save→restore→save differs")
	}
	if got := cmosRead(dst, 0x40); got != 0x11 {
		t.Errorf("NVRAM byte after restore = %#x, want 0x11", got)
	}

	bad := func(i int, v byte) []byte {
		b := append([]byte(nil), saved...)
		b[i] = v
		return b
	}
	for name, b := range map[string][]byte{
		"nil":       nil,
		"truncated": saved[:len(saved)-1],
		"long":      append(append([]byte(nil), saved...), 0),
		"version":   bad(0, 9),
		"index":     bad(2, 0x80),
	} {
		before, _ := dst.SaveState()
		if err := dst.RestoreState(b); !errors.Is(err, ErrInvalidState) {
			t.Errorf("%s: RestoreState = %v, want ErrInvalidState", name, err)
		}
		after, _ := dst.SaveState()
		if !bytes.Equal(before, after) {
			t.Errorf("%s: failed restore changed the state", name)
		}
	}
}

func FuzzCMOSAccess(f *testing.F) {
	f.Add([]byte{0x00, 0x8b, 0x01, 0x06, 0x00, 0x04, 0x02})
	f.Fuzz(func(t *testing.T, ops []byte) {
		c := NewCMOS(func() time.Time { return time.Unix(int64(len(ops))*1e7, 0) }, 1<<30, 0)
		for i := 0; i+1 < len(ops); i += 2 {
			off := uint64(ops[i] & 3)
			if ops[i]&0x80 != 0 {
				c.Write(off, ops[i+1:i+2])
			} else {
				c.Read(off, make([]byte, 1+int(ops[i+1]&7)))
			}
		}
		st, _ := c.SaveState()
		if err := c.RestoreState(st); err != nil {
			t.Fatalf("own state rejected: %v", err)
		}
	})
}
