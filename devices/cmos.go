package devices

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"
)

// CMOS port layout: index port at the base (0x70), data port above it (0x71).
const (
	// CMOSIndexOffset is the offset of the index port (0x70).
	CMOSIndexOffset = 0
	// CMOSDataOffset is the offset of the data port (0x71).
	CMOSDataOffset = 1
	// CMOSPorts is the number of ports the CMOS occupies.
	CMOSPorts = 2
	// CMOSSize is the number of CMOS registers (MC146818 RAM).
	CMOSSize = 128
)

// MC146818 registers (datasheet "Address map") and PC BIOS CMOS layout.
const (
	rtcSeconds   = 0x00
	rtcMinutes   = 0x02
	rtcHours     = 0x04
	rtcWeekday   = 0x06
	rtcMonthDay  = 0x07
	rtcMonth     = 0x08
	rtcYear      = 0x09
	rtcRegA      = 0x0a
	rtcRegB      = 0x0b
	rtcRegC      = 0x0c
	rtcRegD      = 0x0d
	rtcCentury   = 0x32
	cmosBaseLo   = 0x15 // base memory in KiB (<= 640)
	cmosExtLo    = 0x17 // memory from 1 MiB in KiB, capped at 0xffff
	cmosExt2Lo   = 0x30 // same value, second copy
	cmosHighLo   = 0x34 // memory from 16 MiB to 4 GiB in 64 KiB units
	cmosAbove4G  = 0x5b // memory above 4 GiB in 64 KiB units, 3 bytes
	regAUIP      = 0x80 // update in progress: never set
	regBSet      = 0x80 // updates halted
	regBBinary   = 0x04 // DM: binary rather than BCD
	regB24h      = 0x02 // 24-hour mode
	regDVRT      = 0x80 // valid RAM and time: battery good
	hourPM       = 0x80 // 12-hour mode PM flag in the hours register
	regADefault  = 0x26 // 32.768 kHz time base, 1024 Hz periodic rate
	regBDefault  = regB24h
	cmosIndexNMI = 0x80 // NMI disable bit of the index port
)

// CMOS is the MC146818 RTC and the PC's battery-backed CMOS RAM. The time
// registers follow the host clock (converted to UTC, as guests expect) in
// the format register B selects (BCD or binary, 12 or 24 hours); guest
// writes to them are ignored, as are alarms and interrupts (no IRQ 8).
// Other registers are RAM the guest may write; the memory-size bytes a
// BIOS would leave there are filled in at creation.
type CMOS struct {
	mu    sync.Mutex
	now   func() time.Time
	index byte
	ram   [CMOSSize]byte
}

// NewCMOS returns a CMOS whose clock reads now (nil means time.Now), with
// memory-size bytes for memBelow4G bytes of RAM from address 0 and
// memAbove4G bytes from 4 GiB.
func NewCMOS(now func() time.Time, memBelow4G, memAbove4G uint64) *CMOS {
	if now == nil {
		now = time.Now
	}
	c := &CMOS{now: now}
	c.ram[rtcRegA] = regADefault
	c.ram[rtcRegB] = regBDefault
	c.ram[rtcRegD] = regDVRT

	const kib, mib = 1 << 10, 1 << 20
	base := min(memBelow4G/kib, 640)
	putLE16(c.ram[cmosBaseLo:], base)
	var ext uint64
	if memBelow4G > mib {
		ext = min((memBelow4G-mib)/kib, 0xffff)
	}
	putLE16(c.ram[cmosExtLo:], ext)
	putLE16(c.ram[cmosExt2Lo:], ext)
	var high uint64
	if memBelow4G > 16*mib {
		high = min((memBelow4G-16*mib)/(64*kib), 0xffff)
	}
	putLE16(c.ram[cmosHighLo:], high)
	above := min(memAbove4G/(64*kib), 0xffffff)
	c.ram[cmosAbove4G] = byte(above)
	c.ram[cmosAbove4G+1] = byte(above >> 8)
	c.ram[cmosAbove4G+2] = byte(above >> 16)
	return c
}

// putLE16 stores the low 16 bits of v little-endian.
func putLE16(b []byte, v uint64) {
	b[0], b[1] = byte(v), byte(v>>8)
}

// Read implements Device: offset 0 reads back the index, offset 1 the
// selected register; anything else reads 0xff.
func (c *CMOS) Read(offset uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	FillOnes(data)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch offset {
	case CMOSIndexOffset:
		data[0] = c.index
	case CMOSDataOffset:
		data[0] = c.readReg(c.index)
	}
}

// Write implements Device: offset 0 selects a register (the NMI-disable bit
// 7 is masked off), offset 1 writes it.
func (c *CMOS) Write(offset uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch offset {
	case CMOSIndexOffset:
		c.index = data[0] &^ cmosIndexNMI
	case CMOSDataOffset:
		c.writeReg(c.index, data[0])
	}
}

// readReg returns register i (< CMOSSize); c.mu is held.
func (c *CMOS) readReg(i byte) byte {
	switch i {
	case rtcSeconds, rtcMinutes, rtcHours, rtcWeekday, rtcMonthDay, rtcMonth, rtcYear, rtcCentury:
		return c.timeReg(i, c.now().UTC())
	case rtcRegA:
		return c.ram[rtcRegA] &^ regAUIP
	case rtcRegC:
		return 0 // no interrupt flags: alarms and periodic interrupts are not emulated
	case rtcRegD:
		return regDVRT
	}
	return c.ram[i%CMOSSize]
}

// writeReg stores v in register i unless it is read-only or derived from
// the clock; c.mu is held.
func (c *CMOS) writeReg(i, v byte) {
	switch i {
	case rtcSeconds, rtcMinutes, rtcHours, rtcWeekday, rtcMonthDay, rtcMonth, rtcYear, rtcCentury,
		rtcRegC, rtcRegD:
		return
	case rtcRegA:
		v &^= regAUIP
	}
	c.ram[i%CMOSSize] = v
}

// timeReg encodes one time field of t in the format register B selects.
func (c *CMOS) timeReg(i byte, t time.Time) byte {
	regB := c.ram[rtcRegB]
	var v int
	pm := false
	switch i {
	case rtcSeconds:
		v = t.Second()
	case rtcMinutes:
		v = t.Minute()
	case rtcHours:
		v = t.Hour()
		if regB&regB24h == 0 {
			pm = v >= 12
			v %= 12
			if v == 0 {
				v = 12
			}
		}
	case rtcWeekday:
		v = int(t.Weekday()) + 1 // 1 = Sunday
	case rtcMonthDay:
		v = t.Day()
	case rtcMonth:
		v = int(t.Month())
	case rtcYear:
		v = t.Year() % 100
	case rtcCentury:
		v = t.Year() / 100 % 100
	}
	if v < 0 { // years before 0: never from a sane clock, but stay in range
		v = -v % 100
	}
	b := byte(v)
	if regB&regBBinary == 0 {
		b = toBCD(b)
	}
	if pm {
		b |= hourPM
	}
	return b
}

// toBCD encodes v (< 100) as two BCD digits.
func toBCD(v byte) byte {
	return (v/10)<<4 | v%10
}

// CMOS state encoding, version 1 (little-endian):
//
//	0 u16 version (1)
//	2 index (< 128)
//	3 128 bytes of register RAM
const (
	cmosStateVersion = 1
	cmosStateLen     = 3 + CMOSSize
)

// SaveState encodes the index and the register RAM. The clock is not
// saved: it follows the host.
func (c *CMOS) SaveState() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := make([]byte, cmosStateLen)
	binary.LittleEndian.PutUint16(b, cmosStateVersion)
	b[2] = c.index
	copy(b[3:], c.ram[:])
	return b, nil
}

// RestoreState replaces the CMOS state with one produced by SaveState. The
// bytes are untrusted: length, version and index are checked, and on error
// the CMOS is unchanged.
func (c *CMOS) RestoreState(b []byte) error {
	if len(b) != cmosStateLen {
		return fmt.Errorf("cmos: %w: %d bytes, want %d", ErrInvalidState, len(b), cmosStateLen)
	}
	if v := binary.LittleEndian.Uint16(b); v != cmosStateVersion {
		return fmt.Errorf("cmos: %w: version %d, want %d", ErrInvalidState, v, cmosStateVersion)
	}
	if b[2] >= CMOSSize {
		return fmt.Errorf("cmos: %w: index %#x out of range", ErrInvalidState, b[2])
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index = b[2]
	copy(c.ram[:], b[3:])
	return nil
}
