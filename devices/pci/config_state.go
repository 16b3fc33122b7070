package pci

import (
	"encoding/binary"
	"fmt"

	"godwit/devices"
)

// Configuration space state encoding, version 1 (little-endian). Only the
// guest-writable registers are saved; the read-only ones come from the
// function's construction, which must match on the destination.
//
//	0  u16 version (1)
//	2  u16 command
//	4  u8 cache line size, u8 latency timer, u8 interrupt line
//	7  u8 flags: bit 0 INTx asserted by the function
//	8  6 × u32 BAR registers
const (
	configStateVersion = 1
	configStateSize    = 8 + 4*NumBARs
)

// SaveState encodes the guest-writable registers and the INTx state.
// Capabilities save their own state (see MSIX.SaveState).
func (cs *ConfigSpace) SaveState() ([]byte, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	b := make([]byte, configStateSize)
	le := binary.LittleEndian
	le.PutUint16(b[0:], configStateVersion)
	copy(b[2:4], cs.hdr[RegCommand:RegCommand+2])
	b[4], b[5], b[6] = cs.hdr[RegCacheLineSize], cs.hdr[RegLatencyTimer], cs.hdr[RegInterruptLine]
	if cs.intxAsserted {
		b[7] = 1
	}
	copy(b[8:], cs.hdr[RegBAR0:RegBAR0+4*NumBARs])
	return b, nil
}

// CheckState reports whether RestoreState would accept b, without
// changing anything.
func (cs *ConfigSpace) CheckState(b []byte) error {
	if len(b) != configStateSize {
		return fmt.Errorf("pci config: %w: %d bytes, want %d", devices.ErrInvalidState, len(b), configStateSize)
	}
	le := binary.LittleEndian
	if v := le.Uint16(b); v != configStateVersion {
		return fmt.Errorf("pci config: %w: version %d, want %d", devices.ErrInvalidState, v, configStateVersion)
	}
	if cmd := le.Uint16(b[2:]); cmd&^commandWritable != 0 {
		return fmt.Errorf("pci config: %w: command %#x has read-only bits", devices.ErrInvalidState, cmd)
	}
	if b[7]&^1 != 0 {
		return fmt.Errorf("pci config: %w: flags %#x", devices.ErrInvalidState, b[7])
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for i := 0; i < 4*NumBARs; i++ {
		p := RegBAR0 + i
		if (b[8+i]^cs.hdr[p])&^cs.wmask[p] != 0 {
			return fmt.Errorf("pci config: %w: BAR %d register %#x does not match the BAR's type or size", devices.ErrInvalidState, i/4, le.Uint32(b[8+i&^3:]))
		}
	}
	return nil
}

// RestoreState replaces the writable registers with ones produced by
// SaveState. The bytes are untrusted: length, version, read-only bits of
// the command register and of every BAR (type bits, size mask) are
// checked, and on error nothing changes. The INTx line is then driven to
// the restored level (SetLevel is called even when unchanged) and the bus
// re-decodes the BARs.
func (cs *ConfigSpace) RestoreState(b []byte) error {
	if err := cs.CheckState(b); err != nil {
		return err
	}
	cs.mu.Lock()
	copy(cs.hdr[RegCommand:RegCommand+2], b[2:4])
	cs.hdr[RegCacheLineSize], cs.hdr[RegLatencyTimer], cs.hdr[RegInterruptLine] = b[4], b[5], b[6]
	copy(cs.hdr[RegBAR0:], b[8:8+4*NumBARs])
	cs.intxAsserted = b[7]&1 != 0
	cs.updateINTx(true)
	hook := cs.onChange
	cs.mu.Unlock()
	if hook != nil {
		hook()
	}
	return nil
}
