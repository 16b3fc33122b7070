package net

import (
	"encoding/binary"
	"fmt"
	"time"

	"godwit/devices/virtio"
	"godwit/vmm/memory"
)

// processCtrl answers every available control request (§5.1.6.5). The
// only command the device knows is VIRTIO_NET_CTRL_ANNOUNCE_ACK; every
// other one is answered VIRTIO_NET_ERR (the device offers none of the
// features that bring the others).
func (d *Device) processCtrl(q *virtio.Queue, features uint64) error {
	mem := q.Memory()
	for {
		c, err := q.Pop()
		if err != nil || c == nil {
			return err
		}
		if err := d.control(mem, c, features); err != nil {
			return err
		}
		if err := q.PushUsed(c.Head, 1); err != nil {
			return err
		}
	}
}

// control executes one request: class and command are the first two
// device-readable bytes, the ack the first device-writable byte. A
// request without them breaks the queue.
func (d *Device) control(mem *memory.Memory, c *virtio.Chain, features uint64) error {
	if c.ReadableLen() < 2 || c.WritableLen() < 1 {
		return fmt.Errorf("%w: virtio-net control request at descriptor %d: %d device-readable and %d device-writable bytes, need 2 and 1",
			virtio.ErrQueueBroken, c.Head, c.ReadableLen(), c.WritableLen())
	}
	var cmd [2]byte
	if err := gather(mem, c.Readable, cmd[:]); err != nil {
		return fmt.Errorf("%w: virtio-net control request at descriptor %d: %v", virtio.ErrQueueBroken, c.Head, err)
	}
	ack := byte(ctrlErr)
	if cmd[0] == ctrlClassAnnounce && cmd[1] == ctrlAnnounceAck && features&FeatureGuestAnnounce != 0 {
		// §5.1.6.5.4: the driver announced itself; the device clears
		// VIRTIO_NET_S_ANNOUNCE.
		d.mu.Lock()
		d.status &^= StatusAnnounce
		d.mu.Unlock()
		ack = ctrlOK
	}
	if err := mem.Write(c.Writable[0].Addr, []byte{ack}); err != nil {
		return fmt.Errorf("%w: virtio-net control request at descriptor %d: %v", virtio.ErrQueueBroken, c.Head, err)
	}
	return nil
}

// announcer is one run of the RARP goroutine.
type announcer struct {
	stop, done chan struct{}
}

// Announce tells the network the guest is here now, after a migration:
// the VMM sends a few RARP frames with the guest's MAC on the tap
// (spaced over 0.8 s, in the background), and, when the driver negotiated
// VIRTIO_NET_F_GUEST_ANNOUNCE with VIRTIO_NET_F_CTRL_VQ, the device sets
// VIRTIO_NET_S_ANNOUNCE and sends a configuration interrupt so that the
// guest announces its addresses itself (§5.1.6.5.4). It reports whether
// it asked the guest. A paused or closed device does nothing.
func (d *Device) Announce() (guest bool) {
	d.mu.Lock()
	if d.closed || d.paused {
		d.mu.Unlock()
		return false
	}
	var host virtio.Host
	if d.active && d.features&(FeatureGuestAnnounce|FeatureCtrlVQ) == FeatureGuestAnnounce|FeatureCtrlVQ {
		d.status |= StatusAnnounce
		host = d.host
	}
	if d.announcer == nil {
		a := &announcer{stop: make(chan struct{}), done: make(chan struct{})}
		d.announcer = a
		go d.announceLoop(a)
	}
	d.mu.Unlock()
	if host != nil {
		host.SignalConfig()
	}
	return host != nil
}

// stopAnnouncer stops the RARP goroutine and waits for it.
func (d *Device) stopAnnouncer() {
	d.mu.Lock()
	a := d.announcer
	d.announcer = nil
	d.mu.Unlock()
	if a != nil {
		close(a.stop)
		<-a.done
	}
}

// announceLoop sends one RARP frame after each of d.delays.
func (d *Device) announceLoop(a *announcer) {
	defer close(a.done)
	defer func() {
		d.mu.Lock()
		if d.announcer == a {
			d.announcer = nil
		}
		d.mu.Unlock()
	}()
	f := append(make([]byte, hdrSize), RARP(d.mac)...)
	for _, delay := range d.delays {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-a.stop:
			t.Stop()
			return
		}
		if _, err := d.tap.Write(f); err != nil {
			d.stats.txErrors.Add(1)
			continue
		}
		d.stats.announcements.Add(1)
	}
}

// EtherTypeRARP is the EtherType of RARP frames.
const EtherTypeRARP = 0x8035

// RARP returns the frame a VMM sends to announce a migrated guest (as
// QEMU's self-announce does): a broadcast RARP "reverse request"
// (RFC 903) from mac about mac, with no IP addresses, padded to the
// 60-byte Ethernet minimum. Switches and bridges learn from its source
// address which port the guest is behind now.
func RARP(mac [6]byte) []byte {
	f := make([]byte, 0, 60)
	f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	f = append(f, mac[:]...)
	f = binary.BigEndian.AppendUint16(f, EtherTypeRARP)
	f = binary.BigEndian.AppendUint16(f, 1)      // hardware type: Ethernet
	f = binary.BigEndian.AppendUint16(f, 0x0800) // protocol type: IPv4
	f = append(f, 6, 4)                          // address lengths
	f = binary.BigEndian.AppendUint16(f, 3)      // operation: reverse request
	f = append(f, mac[:]...)                     // sender hardware address
	f = append(f, 0, 0, 0, 0)                    // sender protocol address
	f = append(f, mac[:]...)                     // target hardware address
	f = append(f, 0, 0, 0, 0)                    // target protocol address
	return f[:60]
}
