package net

import (
	"encoding/binary"
	"fmt"

	"godwit/devices"
)

// StateVersion is the version of the device state encoding.
const StateVersion = 1

// State is the saved state of a network device, separate from the
// runtime Device. Queues are saved by the transport; the transmit path
// holds nothing between chains, so the only packets in flight are the
// received frames not yet in guest buffers.
type State struct {
	// MAC is the device's address; a destination must have been built
	// with the same one.
	MAC [6]byte
	// Status is the configuration status (link up, announce pending).
	Status uint16
	// Backlog are the frames read from the tap and not delivered yet,
	// each with its virtio-net header, oldest first.
	Backlog [][]byte
}

// Encoding, version 1 (little-endian):
//
//	u16 version
//	6 bytes MAC
//	u16 status
//	u16 number of backlog frames n (≤ MaxBacklogFrames), then n times:
//	  u32 length, length bytes (header and frame)
//
// The frames total at most MaxBacklogBytes.
const stateHeaderSize = 12

// invalid returns an ErrInvalidState error.
func invalid(format string, args ...any) error {
	return fmt.Errorf("virtio-net state: %w: %s", devices.ErrInvalidState, fmt.Sprintf(format, args...))
}

// check validates s's structure: MAC, status bits, backlog bounds.
func (s *State) check() error {
	if err := CheckMAC(s.MAC); err != nil {
		return invalid("%v", err)
	}
	if s.Status&^(StatusLinkUp|StatusAnnounce) != 0 || s.Status&StatusLinkUp == 0 {
		return invalid("status %#x", s.Status)
	}
	if len(s.Backlog) > MaxBacklogFrames {
		return invalid("%d backlog frames, at most %d", len(s.Backlog), MaxBacklogFrames)
	}
	total := 0
	for i, f := range s.Backlog {
		if len(f) < hdrSize+ethHeaderSize || len(f) > maxPacket {
			return invalid("backlog frame %d of %d bytes", i, len(f))
		}
		total += len(f)
	}
	if total > MaxBacklogBytes {
		return invalid("backlog of %d bytes, at most %d", total, MaxBacklogBytes)
	}
	return nil
}

// MarshalBinary encodes s.
func (s *State) MarshalBinary() ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	b := le.AppendUint16(nil, StateVersion)
	b = append(b, s.MAC[:]...)
	b = le.AppendUint16(b, s.Status)
	b = le.AppendUint16(b, uint16(len(s.Backlog)))
	for _, f := range s.Backlog {
		b = le.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b, nil
}

// UnmarshalBinary decodes b, checking its structure; whether it fits a
// given device is checked by RestoreConfigState.
func (s *State) UnmarshalBinary(b []byte) error {
	if len(b) < stateHeaderSize {
		return invalid("%d bytes, truncated", len(b))
	}
	le := binary.LittleEndian
	if v := le.Uint16(b); v != StateVersion {
		return invalid("version %d, want %d", v, StateVersion)
	}
	var n State
	copy(n.MAC[:], b[2:8])
	n.Status = le.Uint16(b[8:])
	count := int(le.Uint16(b[10:]))
	if count > MaxBacklogFrames {
		return invalid("%d backlog frames, at most %d", count, MaxBacklogFrames)
	}
	rest := b[stateHeaderSize:]
	for i := 0; i < count; i++ {
		if len(rest) < 4 {
			return invalid("backlog frame %d: truncated", i)
		}
		l := le.Uint32(rest)
		rest = rest[4:]
		if uint64(l) > uint64(len(rest)) || l > maxPacket {
			return invalid("backlog frame %d of %d bytes, %d left", i, l, len(rest))
		}
		n.Backlog = append(n.Backlog, append([]byte(nil), rest[:l]...))
		rest = rest[l:]
	}
	if len(rest) != 0 {
		return invalid("%d trailing bytes", len(rest))
	}
	if err := n.check(); err != nil {
		return err
	}
	*s = n
	return nil
}

// SaveConfigState implements virtio.Device.
func (d *Device) SaveConfigState() ([]byte, error) {
	d.mu.Lock()
	s := State{MAC: d.mac, Status: d.status, Backlog: append([][]byte(nil), d.backlog...)}
	d.mu.Unlock()
	return s.MarshalBinary()
}

// RestoreConfigState implements virtio.Device: the saved MAC must be this
// device's (both come from the migrated configuration); the status and
// the backlog replace this device's. On error nothing changes.
func (d *Device) RestoreConfigState(data []byte) error {
	var s State
	if err := s.UnmarshalBinary(data); err != nil {
		return err
	}
	if s.MAC != d.mac {
		return invalid("MAC %s, this device has %s", FormatMAC(s.MAC), FormatMAC(d.mac))
	}
	size := 0
	for _, f := range s.Backlog {
		size += len(f)
	}
	d.mu.Lock()
	d.status = s.Status
	d.backlog, d.backlogSz = s.Backlog, size
	d.mu.Unlock()
	return nil
}
