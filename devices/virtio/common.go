package virtio

import (
	"encoding/binary"
	"fmt"
)

// struct virtio_pci_common_cfg offsets (§4.1.4.3).
const (
	cDevFeatSel   = 0x00 // le32 device_feature_select
	cDevFeat      = 0x04 // le32 device_feature (RO)
	cDrvFeatSel   = 0x08 // le32 driver_feature_select
	cDrvFeat      = 0x0c // le32 driver_feature
	cConfigVector = 0x10 // le16 config_msix_vector
	cNumQueues    = 0x12 // le16 num_queues (RO)
	cStatus       = 0x14 // u8 device_status
	cConfigGen    = 0x15 // u8 config_generation (RO)
	cQueueSel     = 0x16 // le16 queue_select
	cQueueSize    = 0x18 // le16 queue_size
	cQueueVector  = 0x1a // le16 queue_msix_vector
	cQueueEnable  = 0x1c // le16 queue_enable
	cQueueNotify  = 0x1e // le16 queue_notify_off (RO)
	cQueueDesc    = 0x20 // le64 queue_desc
	cQueueDriver  = 0x28 // le64 queue_driver
	cQueueDevice  = 0x30 // le64 queue_device
	commonLen     = 0x38
)

// writableFields are the common configuration fields the driver writes,
// as (offset, size), in offset order.
var writableFields = [][2]int{
	{cDevFeatSel, 4}, {cDrvFeatSel, 4}, {cDrvFeat, 4}, {cConfigVector, 2},
	{cStatus, 1}, {cQueueSel, 2}, {cQueueSize, 2}, {cQueueVector, 2},
	{cQueueEnable, 2}, {cQueueDesc, 8}, {cQueueDriver, 8}, {cQueueDevice, 8},
}

// commonImage returns the common configuration structure as the driver
// reads it now; mu is held.
func (t *Transport) commonImage() [commonLen]byte {
	var b [commonLen]byte
	le := binary.LittleEndian
	le.PutUint32(b[cDevFeatSel:], t.devFeatSel)
	if t.devFeatSel < 2 {
		le.PutUint32(b[cDevFeat:], uint32(t.offered>>(32*t.devFeatSel)))
	}
	le.PutUint32(b[cDrvFeatSel:], t.drvFeatSel)
	if t.drvFeatSel < 2 {
		le.PutUint32(b[cDrvFeat:], uint32(t.acked>>(32*t.drvFeatSel)))
	}
	le.PutUint16(b[cConfigVector:], uint16(t.configVec.Load()))
	le.PutUint16(b[cNumQueues:], uint16(t.nq))
	b[cStatus] = t.statusValue()
	b[cConfigGen] = uint8(t.configGen.Load())
	le.PutUint16(b[cQueueSel:], t.queueSel)
	if int(t.queueSel) < t.nq {
		q := t.queues[t.queueSel]
		le.PutUint16(b[cQueueSize:], q.size)
		le.PutUint16(b[cQueueVector:], uint16(t.vectors[t.queueSel].Load()))
		if q.ready {
			le.PutUint16(b[cQueueEnable:], 1)
		}
		le.PutUint16(b[cQueueNotify:], t.queueSel) // notify at notifyOffset + 4*sel
		le.PutUint64(b[cQueueDesc:], q.desc)
		le.PutUint64(b[cQueueDriver:], q.driver)
		le.PutUint64(b[cQueueDevice:], q.device)
	}
	return b
}

// statusValue is device_status as the driver reads it; mu is held.
func (t *Transport) statusValue() uint8 {
	s := t.status
	if t.needsReset.Load() {
		s |= StatusDeviceNeedsReset
	}
	return s
}

// readCommon serves a read of the common configuration at off. Any width
// and alignment works; bytes past the structure read as zero.
func (t *Transport) readCommon(off uint64, data []byte) {
	t.mu.Lock()
	img := t.commonImage()
	t.mu.Unlock()
	for i := range data {
		if p := off + uint64(i); p < commonLen {
			data[i] = img[p]
		} else {
			data[i] = 0
		}
	}
}

// writeCommon serves a write of the common configuration at off: the
// written bytes are merged into the current image and every writable
// field they touch is applied in offset order, so 64-bit fields may be
// written as two dwords.
func (t *Transport) writeCommon(off uint64, data []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	img := t.commonImage()
	lo, hi := int(off), int(off)+len(data)
	for i, v := range data {
		if p := off + uint64(i); p < commonLen {
			img[p] = v
		}
	}
	le := binary.LittleEndian
	for _, f := range writableFields {
		if f[0] >= hi || f[0]+f[1] <= lo {
			continue
		}
		var v uint64
		switch f[1] {
		case 1:
			v = uint64(img[f[0]])
		case 2:
			v = uint64(le.Uint16(img[f[0]:]))
		case 4:
			v = uint64(le.Uint32(img[f[0]:]))
		case 8:
			v = le.Uint64(img[f[0]:])
		}
		t.writeField(f[0], v)
	}
}

// writeField applies a driver write of field off; mu is held.
func (t *Transport) writeField(off int, v uint64) {
	switch off {
	case cDevFeatSel:
		t.devFeatSel = uint32(v)
	case cDrvFeatSel:
		t.drvFeatSel = uint32(v)
	case cDrvFeat:
		// §3.1.1: features are written before FEATURES_OK; bits the
		// device did not offer are dropped, so acked ⊆ offered always.
		if t.status&StatusFeaturesOK != 0 || t.drvFeatSel >= 2 {
			return
		}
		shift := 32 * t.drvFeatSel
		t.acked = t.acked&^(0xffffffff<<shift) | v<<shift&t.offered
	case cConfigVector:
		t.configVec.Store(t.vectorOrNone(uint16(v)))
	case cStatus:
		t.writeStatus(uint8(v))
	case cQueueSel:
		t.queueSel = uint16(v)
	default:
		t.writeQueueField(off, v)
	}
}

// vectorOrNone returns v if it names an MSI-X table entry, otherwise
// NoVector, which the driver reads back as the failure indication
// (§4.1.5.1.2).
func (t *Transport) vectorOrNone(v uint16) uint32 {
	if int(v) < t.msix.Vectors() {
		return uint32(v)
	}
	return noVector
}

// writeQueueField applies a write to a field of the selected queue; mu is
// held. The fields of an enabled queue are read-only (§4.1.4.3.2: the
// driver configures a queue before enabling it).
func (t *Transport) writeQueueField(off int, v uint64) {
	if int(t.queueSel) >= t.nq {
		return
	}
	i := int(t.queueSel)
	q := t.queues[i]
	if off == cQueueVector {
		t.vectors[i].Store(t.vectorOrNone(uint16(v)))
		return
	}
	if q.ready {
		return
	}
	switch off {
	case cQueueSize:
		if !validSize(uint16(v), q.max) {
			t.deviceError(fmt.Errorf("queue %d: driver set size %d (maximum %d, power of two)", i, v, q.max))
			return
		}
		q.size = uint16(v)
	case cQueueDesc:
		q.desc = v
	case cQueueDriver:
		q.driver = v
	case cQueueDevice:
		q.device = v
	case cQueueEnable:
		if v != 1 {
			return // §4.1.4.3.2: the driver MUST NOT write 0
		}
		t.enableQueue(i)
	}
}

// enableQueue makes queue i live; mu is held. Invalid ring addresses stop
// the queue at once.
func (t *Transport) enableQueue(i int) {
	q := t.queues[i]
	restart := t.w != nil
	t.stopWorkerLocked()
	q.ready = true
	q.eventIdx = t.acked&FeatureEventIdx != 0
	q.indirect = t.acked&FeatureIndirectDesc != 0
	if err := q.ringsValid(); err != nil {
		t.deviceError(q.fail("queue %d: %v", i, err))
	}
	if restart {
		t.pending[i].Store(true)
		t.startWorkerLocked()
	}
}

// writeStatus applies a device_status write (§2.1, §3.1.1); mu is held.
func (t *Transport) writeStatus(v uint8) {
	if v == 0 {
		t.resetLocked()
		return
	}
	// Only the driver's bits are kept: DEVICE_NEEDS_RESET is the
	// device's, and bits §2.1 does not define are ignored (kept, they
	// would make the state unsavable: RestoreState refuses them).
	v &= driverStatusBits
	v |= t.status // the driver cannot clear bits except by reset
	added := v &^ t.status
	if added&StatusFeaturesOK != 0 && t.acked&FeatureVersion1 == 0 {
		// §3.1.1 step 5-6: the device refuses, FEATURES_OK reads 0.
		v &^= StatusFeaturesOK
		added &^= StatusFeaturesOK
	}
	if added&StatusDriverOK != 0 && v&StatusFeaturesOK == 0 {
		v &^= StatusDriverOK
		added &^= StatusDriverOK
	}
	t.status = v
	if added&StatusDriverOK != 0 {
		t.activateLocked()
	}
}

// activateLocked starts the device; mu is held.
func (t *Transport) activateLocked() {
	for _, q := range t.queues {
		q.eventIdx = t.acked&FeatureEventIdx != 0
		q.indirect = t.acked&FeatureIndirectDesc != 0
	}
	if err := t.dev.Activate(t.acked, t.queues, host{t}); err != nil {
		t.deviceError(fmt.Errorf("activating device: %w", err))
		return
	}
	t.activated = true
	for i, q := range t.queues {
		if q.ready {
			t.pending[i].Store(true)
		}
	}
	t.startWorkerLocked()
}

// resetLocked performs a device reset (§2.4): the worker stops, the device
// and every queue return to their initial state, and the interrupt is
// withdrawn. MSI-X table contents are PCI state and survive. mu is held.
func (t *Transport) resetLocked() {
	t.stopWorkerLocked()
	t.dev.Reset()
	t.activated = false
	t.resetRegsLocked()
	t.irqMu.Lock()
	t.isr = 0
	t.cs.SetINTx(false)
	t.irqMu.Unlock()
}

// resetRegsLocked sets the transport registers to their reset values; mu
// is held (or the transport is not shared yet).
func (t *Transport) resetRegsLocked() {
	t.devFeatSel, t.drvFeatSel, t.acked, t.status, t.queueSel = 0, 0, 0, 0, 0
	for i, q := range t.queues {
		q.reset()
		t.mirrors[i].publish(q)
		t.vectors[i].Store(noVector)
		t.pending[i].Store(false)
	}
	t.configVec.Store(noVector)
	t.needsReset.Store(false)
	t.errMu.Lock()
	t.lastErr = nil
	t.errMu.Unlock()
}
