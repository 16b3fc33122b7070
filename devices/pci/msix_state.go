package pci

import (
	"encoding/binary"
	"fmt"

	"godwit/devices"
)

// MSI-X state encoding, version 1 (little-endian):
//
//	0  u16 version (1)
//	2  u16 message control (Enable and Function Mask only)
//	4  u16 number of vectors n (must match the capability)
//	6  n × {u32 address low, u32 address high, u32 data, u32 vector control}
//	.. (n+63)/64 × u64 pending bits
const (
	msixStateVersion = 1
	msixStateHeader  = 6
)

// SaveState encodes the message control register, the table and the PBA.
func (m *MSIX) SaveState() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	le := binary.LittleEndian
	b := make([]byte, msixStateHeader, msixStateHeader+len(m.entries)*MSIXEntrySize+len(m.pending)*8)
	le.PutUint16(b[0:], msixStateVersion)
	le.PutUint16(b[2:], m.control)
	le.PutUint16(b[4:], uint16(len(m.entries)))
	for _, e := range m.entries {
		b = le.AppendUint32(b, e.addrLo)
		b = le.AppendUint32(b, e.addrHi)
		b = le.AppendUint32(b, e.data)
		b = le.AppendUint32(b, e.control)
	}
	for _, w := range m.pending {
		b = le.AppendUint64(b, w)
	}
	return b, nil
}

// parseState decodes and validates MSI-X state.
func (m *MSIX) parseState(b []byte) (uint16, []msixEntry, []uint64, error) {
	le := binary.LittleEndian
	n := m.n
	want := msixStateHeader + n*MSIXEntrySize + (n+63)/64*8
	if len(b) < msixStateHeader {
		return 0, nil, nil, fmt.Errorf("pci msix: %w: %d bytes", devices.ErrInvalidState, len(b))
	}
	if v := le.Uint16(b); v != msixStateVersion {
		return 0, nil, nil, fmt.Errorf("pci msix: %w: version %d, want %d", devices.ErrInvalidState, v, msixStateVersion)
	}
	control := le.Uint16(b[2:])
	if control&^msixControlRW != 0 {
		return 0, nil, nil, fmt.Errorf("pci msix: %w: message control %#x has read-only bits", devices.ErrInvalidState, control)
	}
	if got := int(le.Uint16(b[4:])); got != n {
		return 0, nil, nil, fmt.Errorf("pci msix: %w: %d vectors, the device has %d", devices.ErrInvalidState, got, n)
	}
	if len(b) != want {
		return 0, nil, nil, fmt.Errorf("pci msix: %w: %d bytes, want %d", devices.ErrInvalidState, len(b), want)
	}
	entries := make([]msixEntry, n)
	p := b[msixStateHeader:]
	for i := range entries {
		e := msixEntry{le.Uint32(p), le.Uint32(p[4:]), le.Uint32(p[8:]), le.Uint32(p[12:])}
		if e.control&^msixVectorMasked != 0 {
			return 0, nil, nil, fmt.Errorf("pci msix: %w: vector %d control %#x has reserved bits", devices.ErrInvalidState, i, e.control)
		}
		entries[i] = e
		p = p[MSIXEntrySize:]
	}
	pending := make([]uint64, (n+63)/64)
	for i := range pending {
		pending[i] = le.Uint64(p[8*i:])
	}
	if r := n % 64; r != 0 && pending[len(pending)-1]>>r != 0 {
		return 0, nil, nil, fmt.Errorf("pci msix: %w: pending bits beyond vector %d", devices.ErrInvalidState, n-1)
	}
	return control, entries, pending, nil
}

// CheckState reports whether RestoreState would accept b, without
// changing anything.
func (m *MSIX) CheckState(b []byte) error {
	_, _, _, err := m.parseState(b)
	return err
}

// RestoreState replaces the MSI-X state with one produced by SaveState.
// The bytes are untrusted: version, vector count, length, reserved control
// bits and pending bits beyond the table are checked; on error nothing
// changes. No message is sent: pending vectors stay pending until the
// guest unmasks them, as on the source.
func (m *MSIX) RestoreState(b []byte) error {
	control, entries, pending, err := m.parseState(b)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.control = control
	m.enabled.Store(control&msixEnable != 0)
	copy(m.entries, entries)
	copy(m.pending, pending)
	m.mu.Unlock()
	return nil
}
