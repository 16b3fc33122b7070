package virtio

import (
	"encoding/binary"
	"fmt"

	"godwit/devices"
)

// TransportStateVersion is the version of the TransportState encoding.
const TransportStateVersion = 1

// maxBlob bounds every length-prefixed blob in a saved state.
const maxBlob = 1 << 20

// QueueState is the saved state of one virtqueue: the driver's
// configuration and the device's position in the rings. It is separate
// from the runtime Queue, as Firecracker keeps versioned state structs
// apart from runtime structs.
type QueueState struct {
	Size      uint16 // queue_size
	Ready     bool   // queue_enable
	Broken    bool   // stopped after a driver error
	Vector    uint16 // queue_msix_vector
	Desc      uint64 // queue_desc
	Driver    uint64 // queue_driver (available ring)
	Device    uint64 // queue_device (used ring)
	LastAvail uint16 // next available ring entry the device takes
	UsedIdx   uint16 // used idx the device last published
	Signalled uint16 // used idx at the last used-buffer notification
}

// TransportState is the saved state of a Transport: the PCI function
// (configuration space and MSI-X, as pci encodes them), the common
// configuration, the queues, and the device's own state as an opaque
// blob.
type TransportState struct {
	PCIConfig           []byte
	MSIX                []byte
	DeviceFeatureSelect uint32
	DriverFeatureSelect uint32
	DriverFeatures      uint64 // acked features
	Status              uint8  // device_status without DEVICE_NEEDS_RESET
	NeedsReset          bool
	ConfigGeneration    uint8
	QueueSelect         uint16
	ConfigVector        uint16
	ISR                 uint8
	Queues              []QueueState
	DeviceConfig        []byte
}

// Encoding, version 1 (little-endian):
//
//	u16 version
//	u32 n, n bytes PCI configuration state
//	u32 n, n bytes MSI-X state
//	u32 device_feature_select, u32 driver_feature_select, u64 driver features
//	u8 status, u8 flags (bit 0 needs reset), u8 config_generation, u8 ISR
//	u16 queue_select, u16 config_msix_vector
//	u16 number of queues, then per queue (38 bytes):
//	  u16 size, u8 flags (bit 0 ready, bit 1 broken), u8 0, u16 vector,
//	  u64 desc, u64 driver, u64 device, u16 last avail, u16 used idx,
//	  u16 signalled, u16 0
//	u32 n, n bytes device state
const queueStateSize = 38

// MarshalBinary encodes s.
func (s *TransportState) MarshalBinary() ([]byte, error) {
	le := binary.LittleEndian
	b := le.AppendUint16(nil, TransportStateVersion)
	b = appendBlob(b, s.PCIConfig)
	b = appendBlob(b, s.MSIX)
	b = le.AppendUint32(b, s.DeviceFeatureSelect)
	b = le.AppendUint32(b, s.DriverFeatureSelect)
	b = le.AppendUint64(b, s.DriverFeatures)
	var flags uint8
	if s.NeedsReset {
		flags = 1
	}
	b = append(b, s.Status, flags, s.ConfigGeneration, s.ISR)
	b = le.AppendUint16(b, s.QueueSelect)
	b = le.AppendUint16(b, s.ConfigVector)
	if len(s.Queues) > maxQueueCount {
		return nil, fmt.Errorf("virtio: %d queues", len(s.Queues))
	}
	b = le.AppendUint16(b, uint16(len(s.Queues)))
	for _, q := range s.Queues {
		var qf uint8
		if q.Ready {
			qf |= 1
		}
		if q.Broken {
			qf |= 2
		}
		b = le.AppendUint16(b, q.Size)
		b = append(b, qf, 0)
		b = le.AppendUint16(b, q.Vector)
		b = le.AppendUint64(b, q.Desc)
		b = le.AppendUint64(b, q.Driver)
		b = le.AppendUint64(b, q.Device)
		b = le.AppendUint16(b, q.LastAvail)
		b = le.AppendUint16(b, q.UsedIdx)
		b = le.AppendUint16(b, q.Signalled)
		b = le.AppendUint16(b, 0)
	}
	b = appendBlob(b, s.DeviceConfig)
	return b, nil
}

func appendBlob(b, blob []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(blob)))
	return append(b, blob...)
}

// decoder reads a state encoding with bounds checks; the first failure
// sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = fmt.Errorf("virtio state: %w: truncated", devices.ErrInvalidState)
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() uint8 {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if p := d.take(2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if p := d.take(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if p := d.take(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

func (d *decoder) blob() []byte {
	n := d.u32()
	if d.err == nil && n > maxBlob {
		d.err = fmt.Errorf("virtio state: %w: blob of %d bytes", devices.ErrInvalidState, n)
		return nil
	}
	return append([]byte(nil), d.take(int(n))...)
}

// UnmarshalBinary decodes b: the structure only (version, lengths, flag
// bits). Whether the values fit a given device is checked by
// Transport.RestoreState.
func (s *TransportState) UnmarshalBinary(b []byte) error {
	d := &decoder{b: b}
	if v := d.u16(); d.err == nil && v != TransportStateVersion {
		return fmt.Errorf("virtio state: %w: version %d, want %d", devices.ErrInvalidState, v, TransportStateVersion)
	}
	var n TransportState
	n.PCIConfig = d.blob()
	n.MSIX = d.blob()
	n.DeviceFeatureSelect = d.u32()
	n.DriverFeatureSelect = d.u32()
	n.DriverFeatures = d.u64()
	n.Status = d.u8()
	flags := d.u8()
	n.ConfigGeneration = d.u8()
	n.ISR = d.u8()
	n.QueueSelect = d.u16()
	n.ConfigVector = d.u16()
	nq := int(d.u16())
	if d.err == nil && nq > maxQueueCount {
		return fmt.Errorf("virtio state: %w: %d queues", devices.ErrInvalidState, nq)
	}
	if d.err == nil && flags&^1 != 0 {
		return fmt.Errorf("virtio state: %w: flags %#x", devices.ErrInvalidState, flags)
	}
	n.NeedsReset = flags&1 != 0
	for i := 0; i < nq && d.err == nil; i++ {
		var q QueueState
		q.Size = d.u16()
		qf := d.u8()
		pad := d.u8()
		q.Vector = d.u16()
		q.Desc, q.Driver, q.Device = d.u64(), d.u64(), d.u64()
		q.LastAvail, q.UsedIdx, q.Signalled = d.u16(), d.u16(), d.u16()
		pad2 := d.u16()
		if d.err == nil && (qf&^3 != 0 || pad != 0 || pad2 != 0) {
			return fmt.Errorf("virtio state: %w: queue %d flags %#x", devices.ErrInvalidState, i, qf)
		}
		q.Ready, q.Broken = qf&1 != 0, qf&2 != 0
		n.Queues = append(n.Queues, q)
	}
	n.DeviceConfig = d.blob()
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("virtio state: %w: %d trailing bytes", devices.ErrInvalidState, len(d.b))
	}
	*s = n
	return nil
}
