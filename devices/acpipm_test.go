package devices

import (
	"encoding/binary"
	"reflect"
	"testing"
)

// pmOp is one guest access to the PM block: a write of v (width bytes,
// little-endian) at off, or a read expected to return v.
type pmOp struct {
	write bool
	off   uint64
	width int
	v     uint64
}

func pmW(off uint64, width int, v uint64) pmOp { return pmOp{true, off, width, v} }
func pmR(off uint64, width int, v uint64) pmOp { return pmOp{false, off, width, v} }

func TestACPIPM(t *testing.T) {
	const s5 = 5
	slp := func(typ uint16) uint64 {
		return uint64(typ<<PM1ControlSleepTypeShift | PM1ControlSleepEnable)
	}
	tests := []struct {
		name      string
		ops       []pmOp
		button    bool // press the power button before the ops
		poweroffs int
		ignored   uint64
		sci       []bool
	}{
		{name: "reset state: SCI_EN reads 1, the rest 0",
			ops: []pmOp{pmR(0, 4, 0), pmR(4, 2, 1), pmR(4, 1, 1), pmR(5, 1, 0)}},
		{name: "bytes past the block read 0xff",
			ops: []pmOp{pmR(4, 4, 0xffff0001), pmR(6, 2, 0xffff), pmR(^uint64(0), 2, 0xffff)}},
		{name: "S5 through a 16-bit write (ACPICA's sequence)",
			// SLP_TYP first, then SLP_TYP|SLP_EN.
			ops:       []pmOp{pmW(4, 2, s5<<10|1), pmR(4, 2, s5<<10|1), pmW(4, 2, slp(s5)|1)},
			poweroffs: 1},
		{name: "S5 through the high byte alone",
			ops:       []pmOp{pmW(5, 1, slp(s5)>>8)},
			poweroffs: 1},
		{name: "S5 through a 32-bit write at the control block",
			ops:       []pmOp{pmW(4, 4, slp(s5))},
			poweroffs: 1},
		{name: "SLP_TYP without SLP_EN does nothing",
			ops: []pmOp{pmW(4, 2, s5<<10)}},
		{name: "other sleep types are counted and ignored",
			ops:     []pmOp{pmW(4, 2, slp(0)), pmW(4, 2, slp(1)), pmW(4, 2, slp(3)), pmW(4, 2, slp(7)), pmR(4, 2, 7<<10|1)},
			ignored: 4},
		{name: "SLP_EN, GBL_RLS and SCI_EN are not stored",
			ops:     []pmOp{pmW(4, 2, 0xffff), pmR(4, 2, uint64(pm1ControlStored|PM1ControlSCIEnable)), pmW(4, 2, 0), pmR(4, 2, 1)},
			ignored: 1},
		{name: "enable register keeps the defined bits",
			ops: []pmOp{pmW(2, 2, 0xffff), pmR(2, 2, uint64(pm1EnableMask)), pmW(3, 1, 0), pmR(2, 2, uint64(pm1EnableMask&0xff))}},
		{name: "status is write-1-to-clear",
			button: true,
			ops:    []pmOp{pmR(0, 2, 0x100), pmW(0, 2, 0xfeff), pmR(0, 2, 0x100), pmW(1, 1, 0x01), pmR(0, 2, 0)}},
		{name: "power button raises the SCI once enabled, clearing the status lowers it",
			button: true,
			ops:    []pmOp{pmW(2, 2, 0x100), pmR(0, 4, 0x01000100), pmW(0, 2, 0x100), pmR(0, 4, 0x01000000)},
			sci:    []bool{true, false}},
		{name: "disabling the event lowers the SCI",
			button: true,
			ops:    []pmOp{pmW(2, 2, 0x100), pmW(2, 2, 0)},
			sci:    []bool{true, false}},
		{name: "a 32-bit write to the event block clears status and sets enable",
			button: true,
			ops:    []pmOp{pmW(0, 4, 0x0100_0100), pmR(0, 4, 0x0100_0000)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			poweroffs := 0
			p := NewACPIPM(s5, func() { poweroffs++ })
			irq := &fakeIRQ{}
			p.SetSCI(irq)
			if tt.button {
				p.PowerButton()
			}
			for i, op := range tt.ops {
				buf := make([]byte, 8)
				if op.write {
					binary.LittleEndian.PutUint64(buf, op.v)
					p.Write(op.off, buf[:op.width])
					continue
				}
				p.Read(op.off, buf[:op.width])
				if got := binary.LittleEndian.Uint64(buf); got != op.v {
					t.Errorf("op %d: read %d bytes at %d = %#x, want %#x", i, op.width, op.off, got, op.v)
				}
			}
			if poweroffs != tt.poweroffs {
				t.Errorf("%d poweroffs, want %d", poweroffs, tt.poweroffs)
			}
			if got := p.IgnoredSleeps(); got != tt.ignored {
				t.Errorf("IgnoredSleeps() = %d, want %d", got, tt.ignored)
			}
			if got := irq.take(); !reflect.DeepEqual(got, tt.sci) {
				t.Errorf("SCI levels %v, want %v", got, tt.sci)
			}
		})
	}
}

// TestACPIPMPoweroffUnlocked checks that the callback runs without the
// device's lock: it may read the device (as a VMM stopping the VM might).
func TestACPIPMPoweroffUnlocked(t *testing.T) {
	var p *ACPIPM
	read := []byte{0, 0}
	p = NewACPIPM(5, func() { p.Read(ACPIPMControlOffset, read) })
	p.Write(ACPIPMControlOffset, []byte{0, 5<<2 | 1<<5})
	if got := binary.LittleEndian.Uint16(read); got != 5<<10|1 {
		t.Errorf("PM1_CNT read from the callback = %#x", got)
	}
	// A nil callback and no SCI line: no panic.
	q := NewACPIPM(5, nil)
	q.PowerButton()
	q.Write(ACPIPMEnableOffset, []byte{0, 1})
	q.Write(ACPIPMControlOffset, []byte{0, 5<<2 | 1<<5})
	q.Write(0, nil)
	q.Read(0, nil)
}
