package blk

import (
	"encoding/binary"
	"fmt"

	"godwit/devices"
)

// StateVersion is the version of the device state encoding.
const StateVersion = 1

// State is the saved state of a disk: its configuration as the guest saw
// it. Queues are saved by the transport, and no request is ever in flight
// when state is saved (they complete on the worker, which the transport
// stops first). The written-block bitmap is not part of it: it belongs to
// the storage migration, which drains it before the switchover.
type State struct {
	// Capacity is the disk size in 512-byte sectors.
	Capacity uint64
	// ReadOnly says whether VIRTIO_BLK_F_RO was offered.
	ReadOnly bool
	// Serial is the GET_ID string.
	Serial string
}

// Encoding, version 1 (little-endian):
//
//	u16 version
//	u8  flags (bit 0 read-only)
//	u8  serial length n (≤ IDBytes)
//	u64 capacity in sectors
//	n bytes serial (no NUL)
const stateHeaderSize = 12

// MarshalBinary encodes s.
func (s *State) MarshalBinary() ([]byte, error) {
	if err := checkSerial(s.Serial); err != nil {
		return nil, fmt.Errorf("blk state: %w", err)
	}
	le := binary.LittleEndian
	b := le.AppendUint16(nil, StateVersion)
	var flags byte
	if s.ReadOnly {
		flags |= 1
	}
	b = append(b, flags, byte(len(s.Serial)))
	b = le.AppendUint64(b, s.Capacity)
	return append(b, s.Serial...), nil
}

// invalid returns an ErrInvalidState error.
func invalid(format string, args ...any) error {
	return fmt.Errorf("blk state: %w: %s", devices.ErrInvalidState, fmt.Sprintf(format, args...))
}

// UnmarshalBinary decodes b, checking its structure (version, flags,
// lengths, the serial); whether it fits a given disk is checked by
// RestoreConfigState.
func (s *State) UnmarshalBinary(b []byte) error {
	if len(b) < stateHeaderSize {
		return invalid("%d bytes, truncated", len(b))
	}
	le := binary.LittleEndian
	if v := le.Uint16(b); v != StateVersion {
		return invalid("version %d, want %d", v, StateVersion)
	}
	flags, n := b[2], int(b[3])
	if flags&^1 != 0 {
		return invalid("flags %#x", flags)
	}
	if n > IDBytes {
		return invalid("serial of %d bytes", n)
	}
	if len(b) != stateHeaderSize+n {
		return invalid("%d bytes, want %d", len(b), stateHeaderSize+n)
	}
	serial := string(b[stateHeaderSize:])
	if err := checkSerial(serial); err != nil {
		return invalid("%v", err)
	}
	*s = State{Capacity: le.Uint64(b[4:]), ReadOnly: flags&1 != 0, Serial: serial}
	return nil
}

// SaveConfigState implements virtio.Device.
func (d *Disk) SaveConfigState() ([]byte, error) {
	s := State{Capacity: d.capacity, ReadOnly: d.readOnly, Serial: d.Serial()}
	return s.MarshalBinary()
}

// RestoreConfigState implements virtio.Device. The image this side opened
// must have the saved capacity and read-only flag (the guest's view of the
// disk cannot change under it); the serial is taken from the state, so
// the guest keeps seeing the source's even if this side named the disk
// differently. On error nothing changes.
func (d *Disk) RestoreConfigState(data []byte) error {
	var s State
	if err := s.UnmarshalBinary(data); err != nil {
		return err
	}
	if s.Capacity != d.capacity {
		return invalid("capacity %d sectors, this disk has %d", s.Capacity, d.capacity)
	}
	if s.ReadOnly != d.readOnly {
		return invalid("read-only %v, this disk is opened with read-only %v", s.ReadOnly, d.readOnly)
	}
	d.mu.Lock()
	d.serial = s.Serial
	d.mu.Unlock()
	return nil
}
