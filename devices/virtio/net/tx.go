package net

import (
	"encoding/binary"
	"fmt"

	"godwit/devices/virtio"
	"godwit/vmm/memory"
)

// processTx writes every available transmit packet to the tap and returns
// its chain (used length 0: the device writes nothing into transmit
// buffers, §5.1.6.2).
func (d *Device) processTx(q *virtio.Queue, features uint64) error {
	mem := q.Memory()
	c := &d.txChain
	for {
		if ok, err := q.PopInto(c); !ok {
			return err
		}
		if err := d.transmit(mem, c, features); err != nil {
			return err
		}
		if err := q.PushUsed(c.Head, 0); err != nil {
			return err
		}
	}
}

// gather copies the first len(dst) bytes of bufs into dst; bufs hold at
// least that much.
func gather(mem *memory.Memory, bufs []virtio.Buffer, dst []byte) error {
	pos := 0
	for _, b := range bufs {
		if pos == len(dst) {
			break
		}
		n := min(int(b.Len), len(dst)-pos)
		if err := mem.Read(b.Addr, dst[pos:pos+n]); err != nil {
			return err
		}
		pos += n
	}
	return nil
}

// transmit sends one packet: the chain's device-readable bytes are the
// header and the frame, split over the descriptors in any way (§2.7.4).
// The header is copied and checked (the driver could change it in guest
// memory after the check); the frame goes to the tap straight from guest
// memory with one gathered write. A chain without a whole header breaks
// the queue; a packet the tap must not get is dropped and counted.
func (d *Device) transmit(mem *memory.Memory, c *virtio.Chain, features uint64) error {
	n := c.ReadableLen()
	if n < hdrSize {
		return fmt.Errorf("%w: virtio-net transmit packet at descriptor %d has %d device-readable bytes, less than the %d-byte header", virtio.ErrQueueBroken, c.Head, n, hdrSize)
	}
	if n > maxPacket {
		d.stats.txDropped.Add(1)
		return nil
	}
	h := d.txHdr[:]
	if err := gather(mem, c.Readable, h); err != nil {
		return fmt.Errorf("%w: virtio-net transmit packet at descriptor %d: %v", virtio.ErrQueueBroken, c.Head, err)
	}
	if !txValid(h, int(n-hdrSize), features) {
		d.stats.txDropped.Add(1)
		return nil
	}
	// §5.1.6.2: num_buffers is 0 on transmit; the tap ignores it anyway.
	binary.LittleEndian.PutUint16(h[hdrNumBuffers:], 0)
	bufs := append(d.txBufs[:0], h)
	skip := uint64(hdrSize)
	for _, b := range c.Readable {
		if skip >= uint64(b.Len) {
			skip -= uint64(b.Len)
			continue
		}
		// The chain's buffers were checked to lie in RAM when it was
		// parsed; Slice checks again.
		s, err := mem.Slice(b.Addr+skip, uint64(b.Len)-skip)
		if err != nil {
			return fmt.Errorf("%w: virtio-net transmit packet at descriptor %d: %v", virtio.ErrQueueBroken, c.Head, err)
		}
		skip = 0
		bufs = append(bufs, s)
	}
	_, err := d.tap.WriteBuffers(bufs)
	clear(bufs) // no references to guest memory between packets
	d.txBufs = bufs[:0]
	if err != nil {
		d.stats.txErrors.Add(1)
		return nil
	}
	d.stats.txFrames.Add(1)
	d.stats.txBytes.Add(n - hdrSize)
	return nil
}

// txValid checks a transmit header h against the length of the frame
// after it and the negotiated features (§5.1.6.2.1): GSO only of a kind
// VIRTIO_NET_F_HOST_TSO*/HOST_ECN allow, always with
// VIRTIO_NET_HDR_F_NEEDS_CSUM, a non-zero gso_size and hdr_len within the
// frame; no flag but VIRTIO_NET_HDR_F_NEEDS_CSUM, and that one only with
// VIRTIO_NET_F_CSUM and a checksum field inside the frame. The frame holds
// at least an Ethernet header. (The tap's kernel side checks GSO headers
// again; this keeps obvious garbage off it.)
func txValid(h []byte, frame int, features uint64) bool {
	if frame < ethHeaderSize {
		return false
	}
	le := binary.LittleEndian
	if gso := h[hdrGSOType]; gso != hdrGSONone {
		if !gsoAllowed(gso, features, FeatureHostTSO4, FeatureHostTSO6, FeatureHostECN) ||
			h[hdrFlags] != hdrFNeedsCsum || le.Uint16(h[hdrGSOSize:]) == 0 ||
			int(le.Uint16(h[hdrHdrLen:])) > frame {
			return false
		}
	}
	switch flags := h[hdrFlags]; flags {
	case 0:
		return true
	case hdrFNeedsCsum:
		start := int(le.Uint16(h[hdrCsumStart:]))
		off := int(le.Uint16(h[hdrCsumOffset:]))
		return features&FeatureCsum != 0 && start+off+2 <= frame
	}
	return false
}
