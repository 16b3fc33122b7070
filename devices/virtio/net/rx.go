package net

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"godwit/devices/tap"
	"godwit/devices/virtio"
	"godwit/vmm/memory"
)

// reader is one run of the receive goroutine.
type reader struct {
	stop atomic.Bool
	done chan struct{}
}

// startReaderLocked starts the receive goroutine if none runs; mu is held.
func (d *Device) startReaderLocked() {
	if d.reader != nil {
		return
	}
	r := &reader{done: make(chan struct{})}
	d.reader = r
	go d.readLoop(r)
}

// stopReader stops the receive goroutine and waits for it. A frame it was
// reading is in the backlog when stopReader returns. mu is not held (the
// goroutine takes it to enqueue).
func (d *Device) stopReader() {
	d.mu.Lock()
	r := d.reader
	d.reader = nil
	d.mu.Unlock()
	if r == nil {
		return
	}
	r.stop.Store(true)
	d.mu.Lock()
	d.room.Broadcast() // wakes a reader waiting for backlog room
	d.mu.Unlock()
	// A deadline in the past wakes a blocked Read. The backend may
	// already be closed; the Read then fails by itself.
	_ = d.tap.SetReadDeadline(time.Unix(1, 0))
	<-r.done
	_ = d.tap.SetReadDeadline(time.Time{})
}

// readLoop is the receive goroutine: it reads frames from the tap into
// the backlog until stopped or the tap fails.
func (d *Device) readLoop(r *reader) {
	defer close(r.done)
	buf := make([]byte, maxPacket+1) // one more: a larger frame shows
	for {
		if !d.waitRoom(r) {
			return
		}
		n, err := d.tap.Read(buf)
		if err != nil {
			if r.stop.Load() {
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, tap.ErrFrameTooLarge) {
				continue
			}
			// The tap is gone (closed, or its interface deleted):
			// reading again would fail the same way.
			d.stats.rxErrors.Add(1)
			return
		}
		d.enqueue(buf[:n])
	}
}

// waitRoom blocks until the backlog has room for a frame of the largest
// size; it reports false when the reader must stop instead.
func (d *Device) waitRoom(r *reader) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for !r.stop.Load() && (len(d.backlog) >= MaxBacklogFrames || d.backlogSz+maxPacket > MaxBacklogBytes) {
		d.room.Wait()
	}
	return !r.stop.Load()
}

// enqueue copies a frame read from the tap into the backlog and kicks the
// receive queue; it drops the frame when the backlog is full or the frame
// cannot be a packet.
func (d *Device) enqueue(p []byte) {
	d.mu.Lock()
	host, hook := d.host, d.onFrame
	switch {
	case len(p) < hdrSize+ethHeaderSize || len(p) > maxPacket:
		d.stats.rxInvalid.Add(1)
		host = nil
	case len(d.backlog) >= MaxBacklogFrames || d.backlogSz+len(p) > MaxBacklogBytes:
		d.stats.rxDropped.Add(1)
		host = nil
	default:
		d.backlog = append(d.backlog, append([]byte(nil), p...))
		d.backlogSz += len(p)
	}
	d.mu.Unlock()
	if hook != nil {
		hook()
	}
	if host != nil {
		host.Kick(rxQueue)
	}
}

// front returns the oldest backlog frame, or nil.
func (d *Device) front() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.backlog) == 0 {
		return nil
	}
	return d.backlog[0]
}

// popFront removes the oldest backlog frame.
func (d *Device) popFront() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.backlog) > 0 {
		d.backlogSz -= len(d.backlog[0])
		d.backlog[0] = nil
		d.backlog = d.backlog[1:]
		d.room.Broadcast()
	}
}

// processRx delivers backlog frames while the driver has buffers. Only the
// worker removes frames, so the front stays put between front and
// popFront.
func (d *Device) processRx(q *virtio.Queue, features uint64) error {
	for {
		p := d.front()
		if p == nil {
			break
		}
		done, err := d.deliver(q, p, features)
		if err != nil {
			return err
		}
		if !done {
			return nil // no buffers yet: the driver's next notification brings us back
		}
		d.popFront()
	}
	// Read the available index without taking a buffer, so that the
	// transport's ArmNotify compares against what is there now (and
	// with VIRTIO_F_EVENT_IDX asks for a notification after it).
	c, err := q.Pop()
	if err != nil || c == nil {
		return err
	}
	return q.Unpop(1)
}

// errRxFraming is the error of a receive chain that cannot hold a header:
// it breaks the queue.
func errRxFraming(head uint16, n uint64) error {
	return fmt.Errorf("%w: virtio-net receive buffer at descriptor %d has %d device-writable bytes, less than the %d-byte header", virtio.ErrQueueBroken, head, n, hdrSize)
}

// rxHeader returns the header the driver gets for a frame read from the
// tap, or false when the driver cannot take the frame: GSO of a kind it
// did not negotiate, or a partial checksum without
// VIRTIO_NET_F_GUEST_CSUM (the tap sends neither unless its offloads,
// which follow the driver's features, allow it; a frame read before a
// feature change may still carry them).
func rxHeader(from []byte, features uint64, buffers uint16) ([hdrSize]byte, bool) {
	var h [hdrSize]byte
	flags := from[hdrFlags]
	if !gsoAllowed(from[hdrGSOType], features, FeatureGuestTSO4, FeatureGuestTSO6, FeatureGuestECN) {
		return h, false
	}
	if features&FeatureGuestCsum != 0 {
		h[hdrFlags] = flags & (hdrFNeedsCsum | hdrFDataValid)
		if flags&hdrFNeedsCsum != 0 {
			copy(h[hdrCsumStart:hdrNumBuffers], from[hdrCsumStart:hdrNumBuffers])
		}
	} else if flags&hdrFNeedsCsum != 0 {
		return h, false
	}
	if g := from[hdrGSOType]; g != hdrGSONone {
		h[hdrGSOType] = g
		copy(h[hdrHdrLen:hdrCsumStart], from[hdrHdrLen:hdrCsumStart]) // hdr_len, gso_size
	}
	// §5.1.6.4.1: num_buffers is 1 without VIRTIO_NET_F_MRG_RXBUF.
	binary.LittleEndian.PutUint16(h[hdrNumBuffers:], buffers)
	return h, true
}

// gsoAllowed reports whether a header's gso_type is one the features
// allow: none, or TCPv4/TCPv6 with the matching TSO feature, with the ECN
// bit only with the ECN feature. UDP and any other type are never
// negotiated.
func gsoAllowed(gso uint8, features, tso4, tso6, ecn uint64) bool {
	if gso == hdrGSONone {
		return true
	}
	if gso&hdrGSOECN != 0 && features&ecn == 0 {
		return false
	}
	switch gso &^ hdrGSOECN {
	case hdrGSOTCPv4:
		return features&tso4 != 0
	case hdrGSOTCPv6:
		return features&tso6 != 0
	}
	return false
}

// deliver puts frame p (header and frame from the tap) into receive
// buffers: one chain, or with VIRTIO_NET_F_MRG_RXBUF as many as it needs
// (num_buffers in the header). It reports whether p is done with
// (delivered or dropped); false means the ring has too few buffers now,
// and the chains it took are given back. An error breaks the queue.
func (d *Device) deliver(q *virtio.Queue, p []byte, features uint64) (bool, error) {
	if _, ok := rxHeader(p, features, 1); !ok {
		d.stats.rxInvalid.Add(1)
		return true, nil
	}
	mrg := features&FeatureMrgRxbuf != 0
	need := uint64(len(p))
	var chains []*virtio.Chain
	var got uint64
	for got < need && (mrg || len(chains) == 0) && len(chains) < int(q.Size()) {
		c, err := q.Pop()
		if err != nil {
			return false, err
		}
		if c == nil {
			break
		}
		if n := c.WritableLen(); n < hdrSize {
			return false, errRxFraming(c.Head, n)
		}
		chains = append(chains, c)
		got += chains[len(chains)-1].WritableLen()
	}
	if got < need {
		ringFull := len(chains) > 0 && (!mrg || len(chains) == int(q.Size()))
		if err := q.Unpop(len(chains)); err != nil {
			return false, err
		}
		if ringFull {
			// No set of buffers the driver can post holds it.
			d.stats.rxInvalid.Add(1)
			return true, nil
		}
		return false, nil
	}
	buffers := uint16(1)
	if mrg {
		buffers = uint16(len(chains))
	}
	h, _ := rxHeader(p, features, buffers)
	used, err := scatter(q.Memory(), chains, h[:], p[hdrSize:])
	if err != nil {
		return false, err
	}
	if !mrg {
		used = []uint32{uint32(need)}
	}
	for i, c := range chains {
		if err := q.PushUsed(c.Head, used[i]); err != nil {
			return false, err
		}
	}
	d.stats.rxFrames.Add(1)
	d.stats.rxBytes.Add(need - hdrSize)
	return true, nil
}

// scatter writes hdr then frame into the chains' writable buffers in
// order, through memory.Write (which marks the VMM dirty bitmap), and
// returns the bytes written into each chain. The chains hold at least
// len(hdr)+len(frame) bytes.
func scatter(mem *memory.Memory, chains []*virtio.Chain, hdr, frame []byte) ([]uint32, error) {
	used := make([]uint32, len(chains))
	src := [2][]byte{hdr, frame}
	part := 0
	for i, c := range chains {
		for _, b := range c.Writable {
			room := uint64(b.Len)
			addr := b.Addr
			for room > 0 && part < len(src) {
				if len(src[part]) == 0 {
					part++
					continue
				}
				n := min(room, uint64(len(src[part])))
				if err := mem.Write(addr, src[part][:n]); err != nil {
					return nil, fmt.Errorf("%w: virtio-net receive buffer at descriptor %d: %v", virtio.ErrQueueBroken, c.Head, err)
				}
				src[part] = src[part][n:]
				addr += n
				room -= n
				used[i] += uint32(n)
			}
		}
	}
	return used, nil
}
