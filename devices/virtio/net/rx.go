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

// Receiving. Frames come from the tap two ways, never at once, so they
// reach the driver in the order the tap gave them:
//
//   - The worker reads the tap itself (nonblocking, TryRead) while it
//     processes the receive queue and the driver has buffers: each frame
//     goes from the device's one read buffer straight into the driver's
//     buffers, many frames per wake-up, no allocation.
//   - When the tap is empty the worker arms the receive goroutine, which
//     waits in the Go poller on the tap (ReadWhen), reads the next frame
//     into the backlog, disarms itself and kicks the receive queue; the
//     worker then delivers it and reads on by itself. Arming is a flag:
//     the goroutine is parked on the tap already, so it costs no wake-up.
//
// While the receive goroutine is armed the worker does not read; while it
// is not, only the worker reads, and only with an empty backlog. So the
// backlog holds at most the frame the goroutine read, a frame the worker
// read but could not place (too few buffers yet), and a restored backlog.
// When the driver has no buffers nobody reads: frames wait in the tap's
// kernel queue (backpressure rather than drops, which would cost TCP a
// retransmission each).

// rxBudget bounds the frames one ProcessQueue call reads from the tap; it
// then kicks the queue and returns, so that the transmit and control
// queues get their turn. rxSignalEvery is how often (in frames) it offers
// the driver a used-buffer notification on the way.
const (
	rxBudget      = 64
	rxSignalEvery = 16
)

// reader is one run of the receive goroutine.
type reader struct {
	stop  atomic.Bool
	done  chan struct{}
	armed bool   // on Device.mu: the goroutine may read the tap now
	dead  bool   // on Device.mu: the tap failed; nobody reads until the next run
	buf   []byte // the goroutine's read buffer; a backlog entry may alias it
}

// startReaderLocked starts the receive goroutine if none runs; mu is held.
// It starts armed: the first frame after activation or resume is its.
func (d *Device) startReaderLocked() {
	if d.reader != nil {
		return
	}
	r := &reader{done: make(chan struct{}), armed: true}
	d.reader = r
	go d.readLoop(r)
}

// stopReader stops the receive goroutine and waits for it. A frame it was
// reading is in the backlog when stopReader returns. mu is not held (the
// goroutine takes it). The worker is stopped already (the transport stops
// it before Pause, Reset and Close), so nobody else reads the tap.
func (d *Device) stopReader() {
	d.mu.Lock()
	r := d.reader
	d.reader = nil
	d.mu.Unlock()
	if r == nil {
		return
	}
	r.stop.Store(true)
	// A deadline in the past wakes the goroutine from the poller. The
	// backend may already be closed; the read then fails by itself.
	_ = d.tap.SetReadDeadline(time.Unix(1, 0))
	<-r.done
	_ = d.tap.SetReadDeadline(time.Time{})
}

// readLoop is the receive goroutine: whenever armed it reads a frame from
// the tap into the backlog, disarms itself and kicks the receive queue,
// until stopped or the tap fails.
func (d *Device) readLoop(r *reader) {
	defer close(r.done)
	r.buf = make([]byte, maxPacket+1) // one more: a larger frame shows
	armed := func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return r.armed
	}
	for !r.stop.Load() {
		n, err := d.tap.ReadWhen(r.buf, armed)
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
			d.mu.Lock()
			r.armed, r.dead = false, true
			d.mu.Unlock()
			return
		}
		d.enqueue(r, r.buf[:n])
	}
}

// enqueue puts a frame the receive goroutine read into the backlog (the
// entry aliases r.buf when nothing else does, else a copy), disarms the
// goroutine and kicks the receive queue; it drops the frame when the
// backlog is full (only a restored backlog fills it) or the frame cannot
// be a packet, and then stays armed.
func (d *Device) enqueue(r *reader, p []byte) {
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
		if d.aliasesBacklog(r.buf) {
			p = append([]byte(nil), p...)
		}
		d.backlog = append(d.backlog, p)
		d.backlogSz += len(p)
		r.armed = false
	}
	d.mu.Unlock()
	if hook != nil {
		hook()
	}
	if host != nil {
		host.Kick(rxQueue)
	}
}

// aliasesBacklog reports whether a backlog entry uses buf's memory; mu is
// held. Only the entry the reader put last can.
func (d *Device) aliasesBacklog(buf []byte) bool {
	for _, f := range d.backlog {
		if len(f) > 0 && len(buf) > 0 && &f[0] == &buf[0] {
			return true
		}
	}
	return false
}

// next returns the oldest backlog frame, or nil and whether the worker
// may read the tap: the receive goroutine runs, is not armed, and the tap
// has not failed. The goroutine appends to the backlog only while armed,
// and disarms itself in the same critical section; only the worker
// removes frames and arms it. So when next reports an empty backlog and
// may-read, both stay so until the worker arms the goroutine.
func (d *Device) next() ([]byte, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.backlog) > 0 {
		return d.backlog[0], false
	}
	r := d.reader
	return nil, r != nil && !r.armed && !r.dead && !r.stop.Load()
}

// popFront removes the oldest backlog frame.
func (d *Device) popFront() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.backlog) > 0 {
		d.backlogSz -= len(d.backlog[0])
		d.backlog[0] = nil
		d.backlog = d.backlog[1:]
		if len(d.backlog) == 0 {
			d.backlog = nil
		}
	}
}

// pushBack appends a copy of a frame the worker read but could not place
// yet to the backlog.
func (d *Device) pushBack(p []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.backlog = append(d.backlog, append([]byte(nil), p...))
	d.backlogSz += len(p)
}

// tryRead reads a frame from the tap into rxBuf if one is queued. If none
// is, it arms the receive goroutine in the same critical section as the
// goroutine's check of the flag: a frame arriving after the empty read
// wakes the goroutine from the poller, which then finds itself armed.
func (d *Device) tryRead() (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, err := d.tap.TryRead(d.rxBuf)
	if errors.Is(err, tap.ErrWouldBlock) {
		if r := d.reader; r != nil && !r.dead {
			r.armed = true
		}
	}
	return n, err
}

// rxDead stops the worker's tap reads after the tap failed.
func (d *Device) rxDead() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if r := d.reader; r != nil {
		r.dead = true
	}
}

// processRx delivers backlog frames, then reads frames from the tap
// straight into the driver's buffers while it has some, until the tap is
// empty (then the receive goroutine is armed) or the budget is spent.
func (d *Device) processRx(q *virtio.Queue, features uint64, host virtio.Host) error {
	if d.rxBuf == nil {
		d.rxBuf = make([]byte, maxPacket+1) // one more: a larger frame shows
	}
	read := 0
	for {
		p, mayRead := d.next()
		if p != nil {
			done, err := d.deliver(q, p, features)
			if err != nil {
				return err
			}
			if !done {
				return nil // no buffers yet: the driver's next notification brings us back
			}
			d.popFront()
			continue
		}
		if !mayRead {
			break
		}
		// Nothing is read without a buffer to put it in. Available also
		// refreshes the index the transport's ArmNotify compares
		// against (and with VIRTIO_F_EVENT_IDX asks after).
		if n, err := q.Available(); err != nil || n == 0 {
			return err
		}
		if read == rxBudget {
			host.Kick(rxQueue) // come back after the other queues
			return nil
		}
		n, err := d.tryRead()
		if err != nil {
			if errors.Is(err, tap.ErrWouldBlock) {
				return nil // the receive goroutine is armed
			}
			// As the receive goroutine: the tap is gone.
			d.stats.rxErrors.Add(1)
			d.rxDead()
			return nil
		}
		read++
		hook := d.hook()
		p = d.rxBuf[:n]
		if len(p) < hdrSize+ethHeaderSize || len(p) > maxPacket {
			d.stats.rxInvalid.Add(1)
		} else {
			done, err := d.deliver(q, p, features)
			if err != nil {
				return err
			}
			if !done {
				d.pushBack(p)
				if hook != nil {
					hook()
				}
				return nil // the driver's next notification brings us back
			}
		}
		if hook != nil {
			hook()
		}
		if read%rxSignalEvery == 0 {
			host.SignalQueue(rxQueue)
		}
	}
	_, err := q.Available()
	return err
}

// hook returns the onFrame test hook.
func (d *Device) hook() func() {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.onFrame
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
	chains := d.rxChains[:0]
	defer func() { d.rxChains = chains[:0] }()
	var got uint64
	for got < need && (mrg || len(chains) == 0) && len(chains) < int(q.Size()) {
		// The chains are kept in d.rxChains, whose entries (and their
		// buffer arrays) are reused from frame to frame.
		if len(chains) == cap(chains) {
			chains = append(chains, virtio.Chain{})
		} else {
			chains = chains[:len(chains)+1]
		}
		c := &chains[len(chains)-1]
		ok, err := q.PopInto(c)
		if !ok {
			chains = chains[:len(chains)-1]
			if err != nil {
				return false, err
			}
			break
		}
		n := c.WritableLen()
		if n < hdrSize {
			return false, errRxFraming(c.Head, n)
		}
		got += n
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
	used, err := scatter(q.Memory(), chains, h[:], p[hdrSize:], d.rxUsed[:0])
	d.rxUsed = used[:0]
	if err != nil {
		return false, err
	}
	if !mrg {
		used[0] = uint32(need)
	}
	for i := range chains {
		if err := q.PushUsed(chains[i].Head, used[i]); err != nil {
			return false, err
		}
	}
	d.stats.rxFrames.Add(1)
	d.stats.rxBytes.Add(need - hdrSize)
	return true, nil
}

// scatter writes hdr then frame into the chains' writable buffers in
// order, through memory.Write (which marks the VMM dirty bitmap), and
// returns the bytes written into each chain, in used (whose array it
// reuses). The chains hold at least len(hdr)+len(frame) bytes.
func scatter(mem *memory.Memory, chains []virtio.Chain, hdr, frame []byte, used []uint32) ([]uint32, error) {
	used = append(used[:0], make([]uint32, len(chains))...)
	src := [2][]byte{hdr, frame}
	part := 0
	for i := range chains {
		c := &chains[i]
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
					return used, fmt.Errorf("%w: virtio-net receive buffer at descriptor %d: %v", virtio.ErrQueueBroken, c.Head, err)
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
