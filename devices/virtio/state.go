package virtio

import (
	"encoding/binary"
	"fmt"

	"godwit/internal/binenc"
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
	b = binenc.AppendBlob(b, s.PCIConfig)
	b = binenc.AppendBlob(b, s.MSIX)
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
	b = binenc.AppendBlob(b, s.DeviceConfig)
	return b, nil
}

// UnmarshalBinary decodes b: the structure only (version, lengths, flag
// bits). Whether the values fit a given device is checked by
// Transport.RestoreState.
func (s *TransportState) UnmarshalBinary(b []byte) error {
	d := binenc.NewDecoder(b)
	if v := d.U16(); d.Err() == nil && v != TransportStateVersion {
		return invalid("version %d, want %d", v, TransportStateVersion)
	}
	var n TransportState
	n.PCIConfig = d.Blob(maxBlob)
	n.MSIX = d.Blob(maxBlob)
	n.DeviceFeatureSelect = d.U32()
	n.DriverFeatureSelect = d.U32()
	n.DriverFeatures = d.U64()
	n.Status = d.U8()
	flags := d.U8()
	n.ConfigGeneration = d.U8()
	n.ISR = d.U8()
	n.QueueSelect = d.U16()
	n.ConfigVector = d.U16()
	nq := int(d.U16())
	if d.Err() == nil && nq > maxQueueCount {
		return invalid("%d queues", nq)
	}
	if d.Err() == nil && flags&^1 != 0 {
		return invalid("flags %#x", flags)
	}
	n.NeedsReset = flags&1 != 0
	for i := 0; i < nq && d.Err() == nil; i++ {
		var q QueueState
		q.Size = d.U16()
		qf := d.U8()
		pad := d.U8()
		q.Vector = d.U16()
		q.Desc, q.Driver, q.Device = d.U64(), d.U64(), d.U64()
		q.LastAvail, q.UsedIdx, q.Signalled = d.U16(), d.U16(), d.U16()
		pad2 := d.U16()
		if d.Err() == nil && (qf&^3 != 0 || pad != 0 || pad2 != 0) {
			return invalid("queue %d flags %#x", i, qf)
		}
		q.Ready, q.Broken = qf&1 != 0, qf&2 != 0
		n.Queues = append(n.Queues, q)
	}
	n.DeviceConfig = d.Blob(maxBlob)
	if err := d.Finish(); err != nil {
		return invalid("%v", err)
	}
	*s = n
	return nil
}
