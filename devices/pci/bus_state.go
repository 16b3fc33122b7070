package pci

import (
	"encoding/binary"
	"fmt"

	"godwit/devices"
)

// Bus state encoding, version 1 (little-endian): the root complex's own
// state only. Each function's owner saves its configuration space (for
// virtio, the transport does).
//
//	0  u16 version (1)
//	2  u32 CONFIG_ADDRESS
//	6  host bridge configuration space state (ConfigSpace.SaveState)
const (
	busStateVersion = 1
	busStateHeader  = 6
)

// SaveState encodes CONFIG_ADDRESS and the host bridge's configuration.
func (b *Bus) SaveState() ([]byte, error) {
	b.mu.Lock()
	addr := b.addr
	b.mu.Unlock()
	hb, err := b.host.cs.SaveState()
	if err != nil {
		return nil, err
	}
	out := make([]byte, busStateHeader, busStateHeader+len(hb))
	binary.LittleEndian.PutUint16(out, busStateVersion)
	binary.LittleEndian.PutUint32(out[2:], addr)
	return append(out, hb...), nil
}

// RestoreState restores state produced by SaveState; the bytes are
// untrusted and on error nothing changes.
func (b *Bus) RestoreState(data []byte) error {
	if len(data) < busStateHeader {
		return fmt.Errorf("pci bus: %w: %d bytes", devices.ErrInvalidState, len(data))
	}
	if v := binary.LittleEndian.Uint16(data); v != busStateVersion {
		return fmt.Errorf("pci bus: %w: version %d, want %d", devices.ErrInvalidState, v, busStateVersion)
	}
	addr := binary.LittleEndian.Uint32(data[2:])
	if addr&^cfgAddrMask != 0 {
		return fmt.Errorf("pci bus: %w: CONFIG_ADDRESS %#x has reserved bits", devices.ErrInvalidState, addr)
	}
	if err := b.host.cs.RestoreState(data[busStateHeader:]); err != nil {
		return err
	}
	b.mu.Lock()
	b.addr = addr
	b.mu.Unlock()
	return nil
}
