package virtio

import (
	"sync/atomic"

	"godwit/devices/pci"
)

// QueueInfo is a diagnostic snapshot of one virtqueue: the device's
// indices as of the worker's last pass, and the ring fields the driver and
// the device share, read from guest memory now. A stalled queue shows
// itself here (e.g. the driver's avail idx ahead of LastAvail with no
// notification pending).
type QueueInfo struct {
	Index  int    `json:"index"`
	Size   uint16 `json:"size"`
	Ready  bool   `json:"ready"`
	Vector uint16 `json:"vector"`
	// Pending reports a notification not yet serviced.
	Pending bool `json:"pending"`
	// LastAvail, UsedIdx, AvailSeen and Signalled are the device's next
	// available entry, next used entry, last avail idx read and used idx
	// at the last interrupt decision.
	LastAvail uint16 `json:"last_avail"`
	UsedIdx   uint16 `json:"used_idx"`
	AvailSeen uint16 `json:"avail_seen"`
	Signalled uint16 `json:"signalled"`
	// RingAvailIdx, RingAvailFlags and RingUsedEvent are the driver's
	// fields, RingUsedIdx and RingAvailEvent the device's, as guest
	// memory holds them now (absent when unreadable).
	RingAvailIdx   *uint16 `json:"ring_avail_idx,omitempty"`
	RingAvailFlags *uint16 `json:"ring_avail_flags,omitempty"`
	RingUsedEvent  *uint16 `json:"ring_used_event,omitempty"`
	RingUsedIdx    *uint16 `json:"ring_used_idx,omitempty"`
	RingAvailEvent *uint16 `json:"ring_avail_event,omitempty"`
}

// TransportInfo is a diagnostic snapshot of a transport and its device.
type TransportInfo struct {
	Status   uint8  `json:"status"`
	Features uint64 `json:"features"`
	// Activated reports that the device runs with the driver's queues
	// (DRIVER_OK); Paused that the transport is paused (its worker and
	// the device's own goroutines stopped: a VM being paused or
	// migrated, or a migration destination before it starts).
	Activated bool         `json:"activated"`
	Paused    bool         `json:"paused"`
	ISR       uint8        `json:"isr"`
	MSIX      pci.MSIXInfo `json:"msix"`
	Queues    []QueueInfo  `json:"queues"`
	// Counters are the device's own, when it keeps any.
	Counters map[string]uint64 `json:"counters,omitempty"`
	// Error is the last device error (a broken queue says so here).
	Error string `json:"error,omitempty"`
}

// Counterer is implemented by devices that keep counters for diagnostics.
type Counterer interface {
	Counters() map[string]uint64
}

// queueMirror holds a queue's worker-owned indices for readers outside
// the worker: lastAvail, usedIdx, availCache, signalled, 16 bits each.
type queueMirror struct{ v atomic.Uint64 }

// publish stores q's indices; worker only.
func (m *queueMirror) publish(q *Queue) {
	m.v.Store(uint64(q.lastAvail) | uint64(q.usedIdx)<<16 | uint64(q.availCache)<<32 | uint64(q.signalled)<<48)
}

// Inspect returns a snapshot of the transport for diagnostics. It takes
// no lock the worker holds while processing, so it answers even when a
// device is stuck.
func (t *Transport) Inspect() TransportInfo {
	t.mu.Lock()
	info := TransportInfo{Status: t.status, Features: t.acked, Activated: t.activated, Paused: t.paused}
	type geometry struct {
		size         uint16
		ready        bool
		driver, used uint64
		eventIdx     bool
	}
	geo := make([]geometry, len(t.queues))
	for i, q := range t.queues {
		// The driver configures queues under mu; the worker's indices
		// come from the mirrors.
		geo[i] = geometry{q.size, q.ready, q.driver, q.device, q.eventIdx}
	}
	t.mu.Unlock()
	t.irqMu.Lock()
	info.ISR = t.isr
	t.irqMu.Unlock()
	info.MSIX = t.msix.Inspect()
	if err := t.Err(); err != nil {
		info.Error = err.Error()
	}
	for i, g := range geo {
		v := t.mirrors[i].v.Load()
		qi := QueueInfo{
			Index: i, Size: g.size, Ready: g.ready, Vector: uint16(t.vectors[i].Load()),
			Pending:   t.pending[i].Load(),
			LastAvail: uint16(v), UsedIdx: uint16(v >> 16), AvailSeen: uint16(v >> 32), Signalled: uint16(v >> 48),
		}
		if g.ready {
			read := func(gpa uint64) *uint16 {
				x, err := t.mem.ReadUint16(gpa)
				if err != nil {
					return nil
				}
				return &x
			}
			qi.RingAvailFlags = read(g.driver)
			qi.RingAvailIdx = read(g.driver + 2)
			qi.RingUsedIdx = read(g.used + 2)
			if g.eventIdx {
				qi.RingUsedEvent = read(g.driver + ringHeader + 2*uint64(g.size))
				qi.RingAvailEvent = read(g.used + ringHeader + usedElemSize*uint64(g.size))
			}
		}
		info.Queues = append(info.Queues, qi)
	}
	if c, ok := t.dev.(Counterer); ok {
		info.Counters = c.Counters()
	}
	return info
}
