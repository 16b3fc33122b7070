package devices

import (
	"encoding/binary"
	"sync"
)

// ACPIPM register layout: one device covers the PM1a event block (PM1_STS
// then PM1_EN, 2 bytes each; ACPI 6.5 §4.8.3.1, "PM1 Event Grouping") and,
// right after it, the PM1a control block (PM1_CNT, 2 bytes; §4.8.3.2). The
// FADT's PM1a_EVT_BLK is the base the device is registered at and its
// PM1a_CNT_BLK is base + ACPIPMControlOffset.
const (
	// ACPIPMStatusOffset is the offset of PM1_STS.
	ACPIPMStatusOffset = 0
	// ACPIPMEnableOffset is the offset of PM1_EN.
	ACPIPMEnableOffset = 2
	// ACPIPMControlOffset is the offset of PM1_CNT.
	ACPIPMControlOffset = 4
	// ACPIPMSize is the number of ports the device decodes.
	ACPIPMSize = 6
)

// PM1 status and enable bits (ACPI 6.5 §4.8.4.1, tables 4.16 and 4.17).
// The enable bit of an event is at the same position as its status bit.
const (
	// PM1TimerStatus is TMR_STS (no PM timer here: never set).
	PM1TimerStatus uint16 = 1 << 0
	// PM1GlobalStatus is GBL_STS, set when firmware releases the global lock
	// (no firmware here: never set).
	PM1GlobalStatus uint16 = 1 << 5
	// PM1PowerButtonStatus is PWRBTN_STS, set by PowerButton.
	PM1PowerButtonStatus uint16 = 1 << 8
	// PM1SleepButtonStatus is SLPBTN_STS (no sleep button: never set).
	PM1SleepButtonStatus uint16 = 1 << 9
	// PM1RTCStatus is RTC_STS (no RTC alarm wake: never set).
	PM1RTCStatus uint16 = 1 << 10
	// PM1WakeStatus is WAK_STS (the guest never wakes from a sleep state
	// here: never set).
	PM1WakeStatus uint16 = 1 << 15

	// pm1EnableMask are the PM1_EN bits that exist (PCIEXP_WAKE_DIS, bit
	// 14, included); the others read 0.
	pm1EnableMask = PM1TimerStatus | PM1GlobalStatus | PM1PowerButtonStatus |
		PM1SleepButtonStatus | PM1RTCStatus | 1<<14
	// pm1SCIEvents are the events that raise the SCI when enabled.
	pm1SCIEvents = PM1TimerStatus | PM1GlobalStatus | PM1PowerButtonStatus |
		PM1SleepButtonStatus | PM1RTCStatus
)

// PM1 control bits (ACPI 6.5 §4.8.4.2, table 4.18).
const (
	// PM1ControlSCIEnable is SCI_EN. It always reads 1: there is no legacy
	// (SMI) mode, the FADT's SMI_CMD is 0.
	PM1ControlSCIEnable uint16 = 1 << 0
	// PM1ControlBusMasterReload is BM_RLD.
	PM1ControlBusMasterReload uint16 = 1 << 1
	// PM1ControlGlobalRelease is GBL_RLS (write-only, reads 0).
	PM1ControlGlobalRelease uint16 = 1 << 2
	// PM1ControlSleepTypeShift is the position of the 3-bit SLP_TYP field.
	PM1ControlSleepTypeShift = 10
	// PM1ControlSleepTypeMask is SLP_TYP.
	PM1ControlSleepTypeMask uint16 = 7 << PM1ControlSleepTypeShift
	// PM1ControlSleepEnable is SLP_EN (write-only, reads 0): writing it
	// enters the sleep state SLP_TYP selects.
	PM1ControlSleepEnable uint16 = 1 << 13

	// pm1ControlStored are the bits PM1_CNT keeps.
	pm1ControlStored = PM1ControlBusMasterReload | PM1ControlSleepTypeMask
)

// ACPIPM is the ACPI fixed-hardware power management block of a
// hardware-full platform without firmware: the PM1a event block (status
// and enable registers; status bits are cleared by writing 1) and the PM1a
// control block. Writing SLP_EN with SLP_TYP equal to the DSDT's \_S5_
// value powers the machine off through a callback; other sleep types are
// counted and ignored (the guest then finds itself still running, as after
// an immediate wake). The power button event is the only one that can
// occur; it raises the SCI while PWRBTN_STS and PWRBTN_EN are both set.
//
// There is no PM timer, no GPE block and no SMI: the FADT describes none.
type ACPIPM struct {
	mu      sync.Mutex
	status  uint16
	enable  uint16
	control uint16 // the stored bits; SCI_EN is added on reads

	s5       uint16 // SLP_TYP of \_S5_
	poweroff func()
	ignored  uint64 // SLP_EN writes with another SLP_TYP

	sci   IRQLine // may be nil
	level bool    // current SCI level
}

// NewACPIPM returns the PM block. s5SleepType is the SLP_TYP value of the
// DSDT's \_S5_ package (0-7); poweroff (may be nil) is called from the
// vCPU thread, without the device's lock held, each time the guest enters
// S5.
func NewACPIPM(s5SleepType uint8, poweroff func()) *ACPIPM {
	return &ACPIPM{s5: uint16(s5SleepType & 7), poweroff: poweroff}
}

// SetSCI connects the system control interrupt (the FADT's SCI_INT). Call
// it before the guest runs.
func (p *ACPIPM) SetSCI(line IRQLine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sci = line
}

// PowerButton presses the fixed-feature power button: PWRBTN_STS is set,
// and the SCI rises if the guest enabled PWRBTN_EN. An ACPI guest then
// shuts down in an orderly way (or not: it decides).
func (p *ACPIPM) PowerButton() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status |= PM1PowerButtonStatus
	p.updateSCI()
}

// IgnoredSleeps returns how many times the guest wrote SLP_EN with a sleep
// type other than S5.
func (p *ACPIPM) IgnoredSleeps() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ignored
}

// regs returns the six register bytes as the guest reads them.
func (p *ACPIPM) regs() [ACPIPMSize]byte {
	var r [ACPIPMSize]byte
	le := binary.LittleEndian
	le.PutUint16(r[ACPIPMStatusOffset:], p.status)
	le.PutUint16(r[ACPIPMEnableOffset:], p.enable)
	le.PutUint16(r[ACPIPMControlOffset:], p.control|PM1ControlSCIEnable)
	return r
}

// Read implements Device. Accesses of any width are served byte by byte;
// bytes past the block read 0xff.
func (p *ACPIPM) Read(offset uint64, data []byte) {
	FillOnes(data)
	p.mu.Lock()
	r := p.regs()
	p.mu.Unlock()
	for i := range data {
		if off := offset + uint64(i); off >= offset && off < ACPIPMSize {
			data[i] = r[off]
		}
	}
}

// Write implements Device. The written bytes are merged into the 16-bit
// registers they hit (bytes past the block are dropped): in PM1_STS a 1
// clears the bit, PM1_EN and PM1_CNT take the value. A write that sets
// SLP_EN acts on the SLP_TYP the same write leaves in PM1_CNT.
func (p *ACPIPM) Write(offset uint64, data []byte) {
	var clr, en, cnt [2]byte
	var hitEn, hitCnt bool
	p.mu.Lock()
	le := binary.LittleEndian
	le.PutUint16(en[:], p.enable)
	le.PutUint16(cnt[:], p.control)
	for i, b := range data {
		off := offset + uint64(i)
		if off < offset || off >= ACPIPMSize {
			continue
		}
		switch {
		case off < ACPIPMEnableOffset:
			clr[off-ACPIPMStatusOffset] = b
		case off < ACPIPMControlOffset:
			en[off-ACPIPMEnableOffset] = b
			hitEn = true
		default:
			cnt[off-ACPIPMControlOffset] = b
			hitCnt = true
		}
	}
	p.status &^= le.Uint16(clr[:])
	if hitEn {
		p.enable = le.Uint16(en[:]) & pm1EnableMask
	}
	off := false
	if hitCnt {
		v := le.Uint16(cnt[:])
		p.control = v & pm1ControlStored
		if v&PM1ControlSleepEnable != 0 {
			if (v&PM1ControlSleepTypeMask)>>PM1ControlSleepTypeShift == p.s5 {
				off = true
			} else {
				p.ignored++
			}
		}
	}
	p.updateSCI()
	p.mu.Unlock()
	if off && p.poweroff != nil {
		p.poweroff()
	}
}

// updateSCI drives the SCI to whether an enabled event is pending. It is
// called with p.mu held.
func (p *ACPIPM) updateSCI() {
	level := p.status&p.enable&pm1SCIEvents != 0
	if level == p.level {
		return
	}
	p.level = level
	if p.sci != nil {
		p.sci.SetLevel(level)
	}
}
