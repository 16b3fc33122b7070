package pci

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync"
)

// ConfigSpace is the 256-byte configuration space of a type 0 function:
// the predefined header kept as a byte image with a per-byte mask of
// writable bits (so the BAR sizing protocol of §6.2.5.1 falls out of the
// masks: writing all ones reads back the size mask and the type bits), the
// capability list after it, and the function's INTx state. It is safe for
// concurrent use.
type ConfigSpace struct {
	mu    sync.Mutex
	hdr   [HeaderSize]byte
	wmask [HeaderSize]byte
	bars  [NumBARs]BAR
	caps  []capEntry

	intxAsserted bool     // the function wants its INTx line asserted
	level        bool     // last level given to line
	line         INTxLine // set by Bus.Add; nil drops INTx
	onChange     func()   // called without mu after BAR or command changes
}

// NewConfigSpace builds the configuration space of a function with header
// h and the capabilities caps, in list order. BAR sizes must be powers of
// two of at least 16 bytes; a 64-bit BAR needs a free slot after it.
func NewConfigSpace(h Header, caps ...Capability) (*ConfigSpace, error) {
	cs := &ConfigSpace{bars: h.BARs}
	le := binary.LittleEndian
	le.PutUint16(cs.hdr[RegVendorID:], h.VendorID)
	le.PutUint16(cs.hdr[RegDeviceID:], h.DeviceID)
	cs.hdr[RegRevisionID] = h.Revision
	cs.hdr[RegClassCode] = byte(h.Class)
	cs.hdr[RegClassCode+1] = byte(h.Class >> 8)
	cs.hdr[RegClassCode+2] = byte(h.Class >> 16)
	le.PutUint16(cs.hdr[RegSubsysVendor:], h.SubsysVendorID)
	le.PutUint16(cs.hdr[RegSubsysID:], h.SubsysID)
	if h.InterruptPin > PinD {
		return nil, fmt.Errorf("pci: interrupt pin %d out of range", h.InterruptPin)
	}
	cs.hdr[RegInterruptPin] = h.InterruptPin

	le.PutUint16(cs.wmask[RegCommand:], commandWritable)
	cs.wmask[RegCacheLineSize] = 0xff
	cs.wmask[RegLatencyTimer] = 0xff
	cs.wmask[RegInterruptLine] = 0xff

	for i := 0; i < NumBARs; i++ {
		b := h.BARs[i]
		if b.Kind == BARNone {
			continue
		}
		if b.Kind != BARMem32 && b.Kind != BARMem64 {
			return nil, fmt.Errorf("pci: BAR %d: unknown kind %d", i, b.Kind)
		}
		if b.Size < 16 || bits.OnesCount64(b.Size) != 1 || (b.Kind == BARMem32 && b.Size > 1<<31) {
			return nil, fmt.Errorf("pci: BAR %d: size %#x is not a power of two in [16, 2 GiB (32-bit) or 2^63]", i, b.Size)
		}
		mask := ^(b.Size - 1)
		var low uint32
		if b.Prefetchable {
			low |= barPrefetch
		}
		reg := RegBAR0 + 4*i
		if b.Kind == BARMem64 {
			if i == NumBARs-1 || h.BARs[i+1].Kind != BARNone {
				return nil, fmt.Errorf("pci: BAR %d: a 64-bit BAR needs BAR %d free", i, i+1)
			}
			low |= barMem64
			le.PutUint32(cs.wmask[reg+4:], uint32(mask>>32))
		}
		le.PutUint32(cs.hdr[reg:], low)
		le.PutUint32(cs.wmask[reg:], uint32(mask)&^barMemTypeMask)
		if b.Kind == BARMem64 {
			i++
		}
	}

	placed, err := layoutCaps(caps)
	if err != nil {
		return nil, err
	}
	cs.caps = placed
	if len(placed) > 0 {
		cs.hdr[RegCapPointer] = byte(placed[0].off)
		le.PutUint16(cs.hdr[RegStatus:], StatusCapList)
	}
	return cs, nil
}

// Read fills data from configuration space offset off. Bytes beyond the
// 256-byte space and unused bytes read as zero.
func (cs *ConfigSpace) Read(off uint64, data []byte) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for i := 0; i < len(data); {
		p := off + uint64(i)
		if p < off || p >= ConfigSize {
			data[i] = 0
			i++
			continue
		}
		if p < HeaderSize {
			data[i] = cs.headerByte(int(p))
			i++
			continue
		}
		n := cs.capAccess(int(p), data[i:], false)
		i += n
	}
}

// Write stores data at configuration space offset off, honouring the
// read-only bits of every register.
func (cs *ConfigSpace) Write(off uint64, data []byte) {
	changed := false
	cs.mu.Lock()
	for i := 0; i < len(data); {
		p := off + uint64(i)
		if p < off || p >= ConfigSize {
			break
		}
		if p < HeaderSize {
			old := cs.hdr[p]
			cs.hdr[p] = old&^cs.wmask[p] | data[i]&cs.wmask[p]
			if cs.hdr[p] != old && (p == RegCommand || p == RegCommand+1 || (p >= RegBAR0 && p < RegBAR0+4*NumBARs)) {
				changed = true
			}
			i++
			continue
		}
		i += cs.capAccess(int(p), data[i:], true)
	}
	cs.updateINTx(false)
	hook := cs.onChange
	cs.mu.Unlock()
	if changed && hook != nil {
		hook()
	}
}

// headerByte returns header byte p with the live INTx status bit; mu is held.
func (cs *ConfigSpace) headerByte(p int) byte {
	v := cs.hdr[p]
	if p == RegStatus && cs.intxAsserted {
		v |= StatusINTx
	}
	return v
}

// capAccess reads or writes the bytes of data that fall into one
// capability (or into the unused space after them) starting at config
// offset p ≥ HeaderSize, and returns how many bytes it handled (≥ 1); mu is
// held.
func (cs *ConfigSpace) capAccess(p int, data []byte, write bool) int {
	for k, e := range cs.caps {
		end := e.off + e.cap.CapLen()
		if p < e.off || p >= end {
			continue
		}
		rel := p - e.off
		if rel < 2 {
			if !write {
				if rel == 0 {
					data[0] = e.cap.CapID()
				} else if k+1 < len(cs.caps) {
					data[0] = byte(cs.caps[k+1].off)
				} else {
					data[0] = 0
				}
			}
			return 1
		}
		n := min(len(data), end-p)
		if write {
			e.cap.WriteCap(rel, data[:n])
		} else {
			e.cap.ReadCap(rel, data[:n])
		}
		return n
	}
	if !write {
		data[0] = 0
	}
	return 1
}

// Command returns the command register.
func (cs *ConfigSpace) Command() uint16 {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return binary.LittleEndian.Uint16(cs.hdr[RegCommand:])
}

// InterruptLine returns the interrupt line register (the GSI Bus.Add
// routed INTx to, unless the guest rewrote it).
func (cs *ConfigSpace) InterruptLine() uint8 {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.hdr[RegInterruptLine]
}

// SetINTx asserts or deasserts the function's INTx line. The line level
// follows asserted unless the guest set Interrupt Disable in the command
// register (§6.2.2); the status register reports asserted either way.
func (cs *ConfigSpace) SetINTx(asserted bool) {
	cs.mu.Lock()
	cs.intxAsserted = asserted
	cs.updateINTx(false)
	cs.mu.Unlock()
}

// updateINTx drives the line to the current level, on a change or when
// force is set; mu is held.
func (cs *ConfigSpace) updateINTx(force bool) {
	cmd := binary.LittleEndian.Uint16(cs.hdr[RegCommand:])
	level := cs.intxAsserted && cmd&CommandINTxDisable == 0 && cs.hdr[RegInterruptPin] != PinNone
	if level == cs.level && !force {
		return
	}
	cs.level = level
	if cs.line != nil {
		cs.line.SetLevel(level)
	}
}

// barBase returns the address programmed in BAR i; mu is held.
func (cs *ConfigSpace) barBase(i int) uint64 {
	le := binary.LittleEndian
	reg := RegBAR0 + 4*i
	base := uint64(le.Uint32(cs.hdr[reg:]) &^ barMemTypeMask)
	if cs.bars[i].Kind == BARMem64 {
		base |= uint64(le.Uint32(cs.hdr[reg+4:])) << 32
	}
	return base
}

// setBARBase programs BAR i with base (masked to the BAR's alignment).
func (cs *ConfigSpace) setBARBase(i int, base uint64) {
	cs.mu.Lock()
	le := binary.LittleEndian
	reg := RegBAR0 + 4*i
	low := le.Uint32(cs.hdr[reg:])&barMemTypeMask | uint32(base)&le.Uint32(cs.wmask[reg:])
	le.PutUint32(cs.hdr[reg:], low)
	if cs.bars[i].Kind == BARMem64 {
		le.PutUint32(cs.hdr[reg+4:], uint32(base>>32)&le.Uint32(cs.wmask[reg+4:]))
	}
	cs.mu.Unlock()
}

// BARs returns the memory BARs the function decodes now: none while
// Memory Space is disabled in the command register.
func (cs *ConfigSpace) BARs() []BARMapping {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if binary.LittleEndian.Uint16(cs.hdr[RegCommand:])&CommandMemory == 0 {
		return nil
	}
	var out []BARMapping
	for i, b := range cs.bars {
		if b.Kind == BARMem32 || b.Kind == BARMem64 {
			out = append(out, BARMapping{Index: i, Base: cs.barBase(i), Size: b.Size})
		}
	}
	return out
}

// BAR returns the description of BAR i (BARNone when i is out of range).
func (cs *ConfigSpace) BAR(i int) BAR {
	if i < 0 || i >= NumBARs {
		return BAR{}
	}
	return cs.bars[i]
}

// attach connects the function to the bus; called once by Bus.Add.
func (cs *ConfigSpace) attach(line INTxLine, gsi uint8, onChange func()) {
	cs.mu.Lock()
	cs.line = line
	cs.hdr[RegInterruptLine] = gsi
	cs.onChange = onChange
	cs.mu.Unlock()
}

// hdrByte returns header byte p.
func (cs *ConfigSpace) hdrByte(p int) byte {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.hdr[p]
}

// hasBARs reports whether the function implements any BAR.
func (cs *ConfigSpace) hasBARs() bool {
	for _, b := range cs.bars {
		if b.Kind != BARNone {
			return true
		}
	}
	return false
}
