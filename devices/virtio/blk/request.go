package blk

import (
	"encoding/binary"
	"fmt"
	"math"

	"godwit/devices/virtio"
	"godwit/vmm/memory"
)

// request is a decoded struct virtio_blk_req (§5.2.6): the header fields,
// the data buffers in each direction, and where the status byte goes. The
// device makes no assumption about how the driver split the request into
// descriptors (§2.7.4): the header is the first 16 device-readable bytes,
// the status the last device-writable byte, and the data everything in
// between, in either direction.
type request struct {
	typ    uint32
	sector uint64
	// out is the device-readable data after the header (OUT), in the
	// device-writable data before the status byte (IN, GET_ID).
	out, in       []virtio.Buffer
	outLen, inLen uint64
	status        uint64 // guest-physical address of the status byte
}

// errFraming is the error of a request that cannot be answered: it breaks
// the queue (the transport then sets DEVICE_NEEDS_RESET).
func errFraming(head uint16, format string, args ...any) error {
	return fmt.Errorf("%w: virtio-blk request at descriptor %d: %s", virtio.ErrQueueBroken, head, fmt.Sprintf(format, args...))
}

// split returns the buffers covering bytes [0, n) of bufs and those
// covering the rest; n ≤ the total length.
func split(bufs []virtio.Buffer, n uint64) (head, tail []virtio.Buffer) {
	for i, b := range bufs {
		if n == 0 {
			return head, append(tail, bufs[i:]...)
		}
		if uint64(b.Len) <= n {
			head = append(head, b)
			n -= uint64(b.Len)
			continue
		}
		head = append(head, virtio.Buffer{Addr: b.Addr, Len: uint32(n)})
		tail = append(tail, virtio.Buffer{Addr: b.Addr + n, Len: b.Len - uint32(n)})
		return head, append(tail, bufs[i+1:]...)
	}
	return head, tail
}

// parseRequest decodes chain c. A chain without a 16-byte device-readable
// header or without a device-writable byte for the status is a framing
// error.
func parseRequest(mem *memory.Memory, c *virtio.Chain) (*request, error) {
	rlen, wlen := c.ReadableLen(), c.WritableLen()
	if rlen < headerSize {
		return nil, errFraming(c.Head, "%d device-readable bytes, the header needs %d", rlen, headerSize)
	}
	if wlen < 1 {
		return nil, errFraming(c.Head, "no device-writable status byte")
	}
	hdrBufs, out := split(c.Readable, headerSize)
	var hdr [headerSize]byte
	pos := 0
	for _, b := range hdrBufs {
		if err := mem.Read(b.Addr, hdr[pos:pos+int(b.Len)]); err != nil {
			return nil, errFraming(c.Head, "reading the header: %v", err)
		}
		pos += int(b.Len)
	}
	in, _ := split(c.Writable, wlen-1)
	// The status is the last device-writable byte (the chain parser
	// drops empty buffers, but do not rely on it here).
	var status uint64
	for i := len(c.Writable) - 1; i >= 0; i-- {
		if b := c.Writable[i]; b.Len > 0 {
			status = b.Addr + uint64(b.Len) - 1
			break
		}
	}
	// A status the device could not write would break the queue only
	// after the request ran (and a write changed the image): check it
	// first. (The chain parser keeps buffers inside RAM; this holds for
	// any chain.)
	if !mem.Contains(status, 1) {
		return nil, errFraming(c.Head, "status byte at %#x outside guest RAM", status)
	}
	return &request{
		typ:    binary.LittleEndian.Uint32(hdr[0:]),
		sector: binary.LittleEndian.Uint64(hdr[8:]),
		out:    out,
		in:     in,
		outLen: rlen - headerSize,
		inLen:  wlen - 1,
		status: status,
	}, nil
}

// inRange reports whether n bytes from sector lie inside the disk.
func (d *Disk) inRange(sector, n uint64) bool {
	return sector <= d.capacity && n/SectorSize <= d.capacity-sector
}

// serve executes one request and writes its status. It returns the used
// length: the bytes written from the start of the device-writable part
// without a gap (§2.7.8.1 lets it undercount, never overcount), so the
// status byte counts only when all the data before it was written too. An
// error breaks the queue.
func (d *Disk) serve(mem *memory.Memory, c *virtio.Chain, writeThrough bool) (uint32, error) {
	r, err := parseRequest(mem, c)
	if err != nil {
		return 0, err
	}
	var status byte
	var written uint64
	switch r.typ {
	case TypeIn:
		status, written, err = d.read(mem, r)
	case TypeOut:
		status, err = d.write(mem, r, writeThrough)
	case TypeFlush:
		status = StatusOK
		if err := d.img.Sync(); err != nil {
			status = StatusIOErr
		}
	case TypeGetID:
		status, written, err = d.getID(mem, r)
	default:
		status = StatusUnsupp
	}
	if err != nil {
		return 0, errFraming(c.Head, "%v", err)
	}
	if err := mem.Write(r.status, []byte{status}); err != nil {
		return 0, errFraming(c.Head, "writing the status: %v", err)
	}
	if written == r.inLen {
		written++
	}
	return uint32(min(written, math.MaxUint32)), nil
}

// read executes an IN request: the data buffers are filled from the image
// with pread straight into guest memory. It returns the status and the
// bytes of the data filled before the first failure; an error means guest
// memory failed, which the checks of the chain exclude.
func (d *Disk) read(mem *memory.Memory, r *request) (byte, uint64, error) {
	if r.outLen != 0 || r.inLen%SectorSize != 0 || !d.inRange(r.sector, r.inLen) {
		return StatusIOErr, 0, nil
	}
	off := r.sector * SectorSize
	if v, ok := d.img.(vectored); ok {
		bufs := make([][]byte, 0, len(r.in))
		for _, b := range r.in {
			dst, err := mem.WritableSlice(b.Addr, uint64(b.Len))
			if err != nil {
				return 0, 0, err
			}
			bufs = append(bufs, dst)
		}
		n, err := v.ReadVAt(bufs, int64(off))
		// Marked again now that the bytes landed: a migration round
		// may have taken WritableSlice's mark before.
		for _, b := range r.in {
			mem.MarkDirty(b.Addr, uint64(b.Len))
		}
		if err != nil || uint64(n) != r.inLen {
			return StatusIOErr, uint64(n), nil
		}
		return StatusOK, uint64(n), nil
	}
	var done uint64
	for _, b := range r.in {
		dst, err := mem.WritableSlice(b.Addr, uint64(b.Len))
		if err != nil {
			return 0, 0, err
		}
		n, err := d.img.ReadAt(dst, int64(off+done))
		mem.MarkDirty(b.Addr, uint64(b.Len))
		done += uint64(n)
		if err != nil || n != len(dst) {
			return StatusIOErr, done, nil
		}
	}
	return StatusOK, done, nil
}

// write executes an OUT request: the data buffers are written to the image
// with pwritev (pwrite for backends without it) straight from guest memory, then synced when the driver did
// not negotiate VIRTIO_BLK_F_FLUSH. Every byte range that reached the
// image is marked in the written-block bitmap, even when a later part
// fails: a storage migration must resend whatever changed.
func (d *Disk) write(mem *memory.Memory, r *request, writeThrough bool) (byte, error) {
	if d.readOnly || r.inLen != 0 || r.outLen%SectorSize != 0 || !d.inRange(r.sector, r.outLen) {
		return StatusIOErr, nil
	}
	off := r.sector * SectorSize
	// Every buffer is resolved before anything is written: a request
	// with a buffer outside guest RAM fails with the image untouched.
	bufs := make([][]byte, 0, len(r.out))
	for _, b := range r.out {
		src, err := mem.Slice(b.Addr, uint64(b.Len))
		if err != nil {
			return 0, err
		}
		bufs = append(bufs, src)
	}
	if v, ok := d.img.(vectored); ok {
		n, err := v.WriteVAt(bufs, int64(off))
		d.written.Mark(off, uint64(n))
		if err != nil || uint64(n) != r.outLen {
			return StatusIOErr, nil
		}
	} else {
		for _, src := range bufs {
			n, err := d.img.WriteAt(src, int64(off))
			d.written.Mark(off, uint64(n))
			off += uint64(n)
			if err != nil || n != len(src) {
				return StatusIOErr, nil
			}
		}
	}
	if writeThrough && r.outLen > 0 {
		if err := d.img.Sync(); err != nil {
			return StatusIOErr, nil
		}
	}
	return StatusOK, nil
}

// getID executes a GET_ID request: the serial, NUL-padded to IDBytes,
// into the data buffers (as much of it as they hold; §5.2.6 lets the
// string miss its NUL when it is IDBytes long).
func (d *Disk) getID(mem *memory.Memory, r *request) (byte, uint64, error) {
	var id [IDBytes]byte
	d.mu.Lock()
	copy(id[:], d.serial)
	d.mu.Unlock()
	n := min(r.inLen, IDBytes)
	bufs, _ := split(r.in, n)
	pos := uint64(0)
	for _, b := range bufs {
		if err := mem.Write(b.Addr, id[pos:pos+uint64(b.Len)]); err != nil {
			return 0, 0, err
		}
		pos += uint64(b.Len)
	}
	return StatusOK, n, nil
}
