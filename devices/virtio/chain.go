package virtio

import (
	"encoding/binary"
	"fmt"
)

// Buffer is one guest-physical range of a descriptor chain. Its range was
// checked to lie inside guest RAM when the chain was parsed.
type Buffer struct {
	// Addr is the guest-physical address.
	Addr uint64
	// Len is the length in bytes (never zero).
	Len uint32
}

// Chain is a descriptor chain taken from the available ring (§2.7.5): the
// device-readable buffers followed by the device-writable ones, with the
// indirect tables already followed.
type Chain struct {
	// Head is the index of the first descriptor, returned in the used
	// ring.
	Head uint16
	// Readable are the device-readable buffers in order.
	Readable []Buffer
	// Writable are the device-writable buffers in order.
	Writable []Buffer
}

// WritableLen returns the total length of the writable buffers.
func (c *Chain) WritableLen() uint64 {
	var n uint64
	for _, b := range c.Writable {
		n += uint64(b.Len)
	}
	return n
}

// ReadableLen returns the total length of the readable buffers.
func (c *Chain) ReadableLen() uint64 {
	var n uint64
	for _, b := range c.Readable {
		n += uint64(b.Len)
	}
	return n
}

// descriptor is a decoded struct virtq_desc (§2.7.5).
type descriptor struct {
	addr  uint64
	len   uint32
	flags uint16
	next  uint16
}

// readDesc decodes descriptor i of the table at gpa.
func (q *Queue) readDesc(table uint64, i uint16) (descriptor, error) {
	b, err := q.mem.Slice(table+uint64(i)*descSize, descSize)
	if err != nil {
		return descriptor{}, fmt.Errorf("descriptor %d of table %#x: %w", i, table, err)
	}
	le := binary.LittleEndian
	return descriptor{le.Uint64(b), le.Uint32(b[8:]), le.Uint16(b[12:]), le.Uint16(b[14:])}, nil
}

// parseChain walks the chain starting at head. Every violation of the
// driver requirements of §2.7.5.3.1 and §2.7.4.2 is an error: index out of
// range, more descriptors than the table holds (which catches loops),
// INDIRECT without the feature, with NEXT, nested, or with a length that
// is zero, not a multiple of 16 or larger than the queue; a buffer outside
// RAM; a readable buffer after a writable one.
//
// The chain goes into c, whose buffer arrays are reused.
func (q *Queue) parseChain(head uint16, c *Chain) error {
	c.Head, c.Readable, c.Writable = head, c.Readable[:0], c.Writable[:0]
	table, tableLen := q.desc, uint32(q.size)
	indirect := false
	i, seen := head, uint32(0)
	for {
		if uint32(i) >= tableLen {
			return fmt.Errorf("descriptor index %d out of range (table of %d)", i, tableLen)
		}
		seen++
		if seen > tableLen {
			return fmt.Errorf("chain from head %d is longer than its table of %d (loop?)", head, tableLen)
		}
		d, err := q.readDesc(table, i)
		if err != nil {
			return err
		}
		if d.flags&descFIndirect != 0 {
			switch {
			case !q.indirect:
				return fmt.Errorf("descriptor %d: INDIRECT without VIRTIO_F_INDIRECT_DESC", i)
			case indirect:
				return fmt.Errorf("descriptor %d: nested indirect table", i)
			case d.flags&descFNext != 0:
				return fmt.Errorf("descriptor %d: INDIRECT with NEXT", i)
			case d.len == 0 || d.len%descSize != 0 || d.len/descSize > uint32(q.size):
				return fmt.Errorf("descriptor %d: indirect table length %d", i, d.len)
			case !q.mem.Contains(d.addr, uint64(d.len)):
				return fmt.Errorf("descriptor %d: indirect table [%#x,+%#x) outside RAM", i, d.addr, d.len)
			}
			table, tableLen = d.addr, d.len/descSize
			indirect = true
			i, seen = 0, 0
			continue
		}
		if d.len > 0 {
			if !q.mem.Contains(d.addr, uint64(d.len)) {
				return fmt.Errorf("descriptor %d: buffer [%#x,+%#x) outside RAM", i, d.addr, d.len)
			}
			b := Buffer{Addr: d.addr, Len: d.len}
			if d.flags&descFWrite != 0 {
				c.Writable = append(c.Writable, b)
			} else if len(c.Writable) > 0 {
				return fmt.Errorf("descriptor %d: readable buffer after a writable one", i)
			} else {
				c.Readable = append(c.Readable, b)
			}
		}
		if d.flags&descFNext == 0 {
			return nil
		}
		i = d.next
	}
}
