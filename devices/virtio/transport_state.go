package virtio

import (
	"context"
	"errors"
	"fmt"

	"godwit/devices"
)

// errRestoredBroken marks a queue that was broken on the source.
var errRestoredBroken = fmt.Errorf("%w: broken before migration", ErrQueueBroken)

// SaveState encodes the transport, its queues and the device's own state
// (TransportState, version TransportStateVersion). The worker is
// quiesced while the state is taken, so the queue positions are
// consistent; the migration engine calls it while the VM is paused.
func (t *Transport) SaveState() ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.stopWorkerCtx(context.Background()); err != nil {
		return nil, err
	}
	defer t.startWorkerLocked()
	s := TransportState{
		DeviceFeatureSelect: t.devFeatSel,
		DriverFeatureSelect: t.drvFeatSel,
		DriverFeatures:      t.acked,
		Status:              t.status,
		NeedsReset:          t.needsReset.Load(),
		ConfigGeneration:    uint8(t.configGen.Load()),
		QueueSelect:         t.queueSel,
		ConfigVector:        uint16(t.configVec.Load()),
	}
	t.irqMu.Lock()
	s.ISR = t.isr
	t.irqMu.Unlock()
	for i, q := range t.queues {
		s.Queues = append(s.Queues, QueueState{
			Size: q.size, Ready: q.ready, Broken: q.broken != nil,
			Vector: uint16(t.vectors[i].Load()),
			Desc:   q.desc, Driver: q.driver, Device: q.device,
			LastAvail: q.lastAvail, UsedIdx: q.usedIdx, Signalled: q.signalled,
		})
	}
	var err error
	if s.PCIConfig, err = t.cs.SaveState(); err != nil {
		return nil, err
	}
	if s.MSIX, err = t.msix.SaveState(); err != nil {
		return nil, err
	}
	if s.DeviceConfig, err = t.dev.SaveConfigState(); err != nil {
		return nil, fmt.Errorf("virtio device state: %w", err)
	}
	return s.MarshalBinary()
}

// invalid returns an ErrInvalidState error.
func invalid(format string, args ...any) error {
	return fmt.Errorf("virtio state: %w: %s", devices.ErrInvalidState, fmt.Sprintf(format, args...))
}

// checkState validates s against this transport and device: everything
// RestoreState needs except the device's own blob.
func (t *Transport) checkState(s *TransportState) error {
	if len(s.Queues) != t.nq {
		return invalid("%d queues, the device has %d", len(s.Queues), t.nq)
	}
	if s.DriverFeatures&^t.offered != 0 {
		return invalid("acked features %#x not offered (offered %#x)", s.DriverFeatures, t.offered)
	}
	if s.Status&^driverStatusBits != 0 {
		return invalid("device status %#x", s.Status)
	}
	if s.Status&StatusFeaturesOK != 0 && s.DriverFeatures&FeatureVersion1 == 0 {
		return invalid("FEATURES_OK without VIRTIO_F_VERSION_1")
	}
	if s.Status&StatusDriverOK != 0 && s.Status&StatusFeaturesOK == 0 {
		return invalid("DRIVER_OK without FEATURES_OK")
	}
	if s.ISR&^(isrQueue|isrConfig) != 0 {
		return invalid("ISR %#x", s.ISR)
	}
	if uint32(s.ConfigVector) != t.vectorOrNone(s.ConfigVector) {
		return invalid("config vector %d beyond %d MSI-X vectors", s.ConfigVector, t.msix.Vectors())
	}
	active := s.Status&StatusDriverOK != 0
	for i, qs := range s.Queues {
		q := t.queues[i]
		if !validSize(qs.Size, q.max) {
			return invalid("queue %d size %d (maximum %d, power of two)", i, qs.Size, q.max)
		}
		if uint32(qs.Vector) != t.vectorOrNone(qs.Vector) {
			return invalid("queue %d vector %d", i, qs.Vector)
		}
		if !qs.Ready && (qs.Broken || qs.LastAvail != 0 || qs.UsedIdx != 0 || qs.Signalled != 0) {
			return invalid("queue %d disabled with ring state", i)
		}
		if !active && (qs.LastAvail != 0 || qs.UsedIdx != 0 || qs.Signalled != 0) {
			return invalid("queue %d has ring state before DRIVER_OK", i)
		}
		if inFlight := qs.LastAvail - qs.UsedIdx; inFlight > qs.Size {
			return invalid("queue %d: %d chains in flight (last avail %d, used %d), more than its size %d", i, inFlight, qs.LastAvail, qs.UsedIdx, qs.Size)
		}
		if qs.Ready && !qs.Broken {
			tmp := Queue{mem: t.mem, size: qs.Size, desc: qs.Desc, driver: qs.Driver, device: qs.Device}
			if err := tmp.ringsValid(); err != nil {
				return invalid("queue %d: %v", i, err)
			}
		}
	}
	if err := t.cs.CheckState(s.PCIConfig); err != nil {
		return err
	}
	return t.msix.CheckState(s.MSIX)
}

// RestoreState replaces the transport's state with SaveState output from
// an identical device. The bytes are untrusted: the structure, every
// queue (size a power of two ≤ the maximum, chains in flight ≤ size, ring
// addresses inside RAM), acked features ⊆ offered, status consistency,
// vectors, PCI and MSI-X state and the device's own state are validated,
// and on error nothing changes. An active device is re-activated with the
// restored queues and its worker restarted unless the transport is
// paused; every live queue is then processed once, in case the driver
// posted buffers whose notification was lost in the migration.
func (t *Transport) RestoreState(b []byte) error {
	var s TransportState
	if err := s.UnmarshalBinary(b); err != nil {
		return err
	}
	if err := t.checkState(&s); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopWorkerLocked()
	// The device's own state is validated by RestoreConfigState itself,
	// after the Reset an active device needs: keep what it had, to put
	// back if the new state is refused, so that a refusal changes
	// nothing (a Reset alone would drop, e.g., a NIC's backlog).
	prior, err := t.dev.SaveConfigState()
	if err != nil {
		t.startWorkerLocked()
		return fmt.Errorf("virtio device state: %w", err)
	}
	wasActive := t.activated
	if wasActive {
		t.dev.Reset()
		t.activated = false
	}
	if err := t.dev.RestoreConfigState(s.DeviceConfig); err != nil {
		if rerr := t.dev.RestoreConfigState(prior); rerr != nil {
			err = errors.Join(err, fmt.Errorf("putting the device's own state back: %w", rerr))
		}
		if wasActive {
			t.activateLocked()
		} else {
			t.startWorkerLocked()
		}
		if !errors.Is(err, devices.ErrInvalidState) {
			err = fmt.Errorf("virtio device state: %w: %w", devices.ErrInvalidState, err)
		}
		return err
	}
	// Checked above; these cannot fail now.
	if err := t.cs.RestoreState(s.PCIConfig); err != nil {
		return err
	}
	if err := t.msix.RestoreState(s.MSIX); err != nil {
		return err
	}
	t.resetRegsLocked()
	t.devFeatSel, t.drvFeatSel, t.acked = s.DeviceFeatureSelect, s.DriverFeatureSelect, s.DriverFeatures
	t.status, t.queueSel = s.Status, s.QueueSelect
	t.configGen.Store(uint32(s.ConfigGeneration))
	t.configVec.Store(uint32(s.ConfigVector))
	t.needsReset.Store(s.NeedsReset)
	t.irqMu.Lock()
	t.isr = s.ISR
	t.irqMu.Unlock()
	for i, qs := range s.Queues {
		q := t.queues[i]
		q.size, q.ready = qs.Size, qs.Ready
		q.desc, q.driver, q.device = qs.Desc, qs.Driver, qs.Device
		q.lastAvail, q.usedIdx, q.signalled = qs.LastAvail, qs.UsedIdx, qs.Signalled
		q.availCache = qs.LastAvail
		if qs.Broken {
			q.broken = errRestoredBroken
		}
		t.vectors[i].Store(uint32(qs.Vector))
		t.mirrors[i].publish(q)
	}
	if s.Status&StatusDriverOK != 0 {
		t.activateLocked()
	}
	return nil
}
