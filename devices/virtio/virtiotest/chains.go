package virtiotest

import (
	"encoding/binary"
	"testing"

	"godwit/devices/virtio"
)

// Sentinel fills device-writable buffers before Post hands them to the
// device, so a test sees which bytes the device wrote.
const Sentinel = 0xee

// Seg is one descriptor of a chain a test posts: a device-readable buffer
// with Data, or a device-writable one of N bytes.
type Seg struct {
	Data  []byte
	N     uint32
	Write bool
}

// RO returns a device-readable segment holding b.
func RO(b []byte) Seg { return Seg{Data: b} }

// WR returns a device-writable segment of n bytes.
func WR(n uint32) Seg { return Seg{N: n, Write: true} }

// Posted is a chain made available to the device: its head and, per
// segment, the guest address of its buffer.
type Posted struct {
	Head  uint16
	Addrs []uint64
	Segs  []Seg
}

// Post allocates a buffer for each segment (readable ones filled with
// their data, writable ones with Sentinel), writes the chain into the next
// free descriptors of q and publishes it, without a kick.
func (q *Queue) Post(segs []Seg) Posted {
	d := q.D
	d.T.Helper()
	p := Posted{Head: q.nextDesc % q.Size, Segs: segs}
	for i, s := range segs {
		n := uint64(len(s.Data))
		flags := uint16(0)
		if s.Write {
			n = uint64(s.N)
			flags = DescWrite
		}
		addr := d.Alloc(max(n, 1), 8)
		if s.Write {
			mem := d.Mem(addr, n)
			for j := range mem {
				mem[j] = Sentinel
			}
		} else {
			copy(d.Mem(addr, n), s.Data)
		}
		idx := q.nextDesc % q.Size
		q.nextDesc++
		if i < len(segs)-1 {
			flags |= DescNext
		}
		q.SetDesc(idx, addr, uint32(n), flags, q.nextDesc%q.Size)
		p.Addrs = append(p.Addrs, addr)
	}
	q.Publish(p.Head)
	return p
}

// Bytes returns what segment i of p holds now.
func (q *Queue) Bytes(p Posted, i int) []byte {
	n := uint64(len(p.Segs[i].Data))
	if p.Segs[i].Write {
		n = uint64(p.Segs[i].N)
	}
	return append([]byte(nil), q.D.Mem(p.Addrs[i], n)...)
}

// Rig is a device on a Machine whose driver has negotiated features and
// made its queues live: the usual start of a device test.
type Rig struct {
	M      *Machine
	D      *Driver
	Queues []*Queue
	// Acked are the features the driver accepted.
	Acked uint64
}

// NewRig builds a Machine for dev, negotiates the offered features in
// want, enables MSI-X (the configuration on vector 0, queue i on vector
// i+1), sets up queue i with sizes[i] entries for each entry of sizes and
// sets DRIVER_OK.
func NewRig(t testing.TB, dev virtio.Device, want uint64, sizes ...uint16) *Rig {
	t.Helper()
	m := NewMachine(t, dev)
	d := NewDriver(t, m)
	acked, err := d.Negotiate(want)
	if err != nil {
		t.Fatal(err)
	}
	d.EnableMSIX(len(sizes) + 1)
	d.Write(d.Common+CommonConfigVector, 2, 0)
	r := &Rig{M: m, D: d, Acked: acked}
	for i, size := range sizes {
		r.Queues = append(r.Queues, d.SetupQueue(i, size, uint16(i+1)))
	}
	d.DriverOK()
	if st := d.Status(); st&virtio.StatusDriverOK == 0 {
		t.Fatalf("status %#x after DRIVER_OK", st)
	}
	return r
}

// Fuzz ring geometry (FuzzRing): descriptors point into FuzzAreaSize
// bytes of guest RAM at FuzzArea.
const (
	FuzzArea     = 8 << 20
	FuzzAreaSize = 1 << 16
	// FuzzDescs is how many descriptors FuzzRing writes.
	FuzzDescs = 16
)

// FuzzRing fills q (of at least FuzzDescs entries) from fuzz input, the
// way a hostile driver could: FuzzDescs descriptors of 6 bytes (le16
// offset into the fuzz area, le16 length, a flags byte whose bits 0-2
// are NEXT/WRITE/INDIRECT, kept where flagMask has them, and whose bit 7
// moves the buffer to 8 bytes before the end of RAM plus the offset, so
// that it leaves RAM; a next byte taken modulo 32, so some are out of
// range), then the number of available entries (modulo 20) and their
// heads (modulo 32), then the fuzz area's contents (headers, indirect
// tables). It returns how many entries it made available and the
// [start, end) ranges of the device-writable descriptors.
func FuzzRing(q *Queue, data []byte, flagMask byte) (avail int, writable [][2]uint64) {
	d := q.D
	for i := uint16(0); i < FuzzDescs && len(data) >= 6; i++ {
		off := uint64(binary.LittleEndian.Uint16(data))
		addr := FuzzArea + off
		n := uint32(binary.LittleEndian.Uint16(data[2:]))
		flags, next := data[4], uint16(data[5]%32)
		if flags&0x80 != 0 {
			addr = RAMSize - 8 + off
		}
		flags &= flagMask
		q.SetDesc(i, addr, n, uint16(flags), next)
		if flags&DescWrite != 0 {
			writable = append(writable, [2]uint64{addr, addr + uint64(n)})
		}
		data = data[6:]
	}
	if len(data) > 0 {
		avail = int(data[0] % 20)
		data = data[1:]
	}
	for k := 0; k < avail; k++ {
		head := uint16(k)
		if len(data) > 0 {
			head, data = uint16(data[0]%32), data[1:]
		}
		q.Publish(head)
	}
	copy(d.Mem(FuzzArea, FuzzAreaSize), data)
	return avail, writable
}

// FuzzDesc encodes one FuzzRing descriptor, for seeds.
func FuzzDesc(off, n uint16, flags, next byte) []byte {
	b := binary.LittleEndian.AppendUint16(nil, off)
	b = binary.LittleEndian.AppendUint16(b, n)
	return append(b, flags, next)
}

// CheckFuzzAreaWrites fails the test if the fuzz area differs from before
// anywhere outside the writable ranges FuzzRing returned: a device may
// write guest memory only inside device-writable buffers.
func CheckFuzzAreaWrites(t testing.TB, d *Driver, before []byte, writable [][2]uint64) {
	t.Helper()
	after := d.Mem(FuzzArea, FuzzAreaSize)
	for i := range after {
		if i >= len(before) || after[i] == before[i] {
			continue
		}
		a := FuzzArea + uint64(i)
		ok := false
		for _, w := range writable {
			ok = ok || (a >= w[0] && a < w[1])
		}
		if !ok {
			t.Fatalf("device wrote %#x outside the device-writable buffers", a)
		}
	}
}
