package blk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"godwit/devices/virtio"
	"godwit/devices/virtio/virtiotest"
	"godwit/vmm/memory"
)

// Fuzz geometry: requests live in the first arenaSize bytes of a small
// guest RAM; the disk is fuzzDiskSize bytes.
const (
	arenaSize    = 16 << 10
	fuzzRAM      = memory.MinSize
	fuzzDiskSize = 64 << 10
)

// fuzzChain builds a chain from layout: 6 bytes per buffer (le16 address
// modulo the arena size, le16 length, flags: bit 0 device-writable, bit 1 moved to
// straddle the end of RAM). Readable buffers keep their order before the
// writable ones, as the chain parser guarantees.
func fuzzChain(layout []byte) *virtio.Chain {
	c := &virtio.Chain{Head: 1}
	for len(layout) >= 6 {
		addr := uint64(binary.LittleEndian.Uint16(layout)) % arenaSize
		n := uint32(binary.LittleEndian.Uint16(layout[2:]))
		flags := layout[4]
		layout = layout[6:]
		if flags&2 != 0 {
			addr += fuzzRAM - arenaSize/2
		}
		b := virtio.Buffer{Addr: addr, Len: n}
		if flags&1 != 0 {
			c.Writable = append(c.Writable, b)
		} else {
			c.Readable = append(c.Readable, b)
		}
	}
	return c
}

// FuzzRequest runs one request from hostile guest memory through the
// request parser and executor: arbitrary buffer layout (split headers,
// overlapping buffers, buffers leaving RAM, empty ones) and arbitrary
// contents. It must never panic; an error must break the queue; the
// device writes only inside device-writable buffers; the image changes and
// blocks are marked written only for a successful OUT to a writable disk.
func FuzzRequest(f *testing.F) {
	put := func(addr, n uint16, flags byte) []byte {
		b := binary.LittleEndian.AppendUint16(nil, addr)
		b = binary.LittleEndian.AppendUint16(b, n)
		return append(b, flags, 0)
	}
	lay := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	read := append(header(TypeIn, 3), make([]byte, 64)...)
	write := append(header(TypeOut, 1), pattern(512, 1)...)
	f.Add(lay(put(0, 16, 0), put(4096, 1024, 1), put(8192, 1, 1)), read, false, false)
	f.Add(lay(put(0, 528, 0), put(8192, 1, 1)), write, false, true)
	f.Add(lay(put(0, 528, 0), put(8192, 1, 1)), write, true, false)
	f.Add(lay(put(0, 5, 0), put(5, 11, 0), put(100, 20, 1), put(120, 1, 1)), header(TypeGetID, 0), false, false)
	f.Add(lay(put(0, 16, 0), put(0, 16, 1)), header(TypeFlush, 0), false, false)
	f.Add(lay(put(0, 16, 2), put(8192, 1, 1)), header(TypeIn, 0), false, false)
	f.Add(lay(put(0, 16, 0), put(8192, 0, 1)), header(TypeDiscard, 0), false, false)
	mem, err := memory.New(fuzzRAM)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { mem.Close() })
	imgInit := pattern(fuzzDiskSize, 0x42)
	f.Fuzz(func(t *testing.T, layout, contents []byte, readOnly, writeThrough bool) {
		arena := mem.RegionHost(0)[:arenaSize]
		clear(arena)
		copy(arena, contents)
		before := append([]byte(nil), arena...)
		img := newMemImage(fuzzDiskSize)
		copy(img.data, imgInit)
		d, err := newDisk(img, fuzzDiskSize, Options{ReadOnly: readOnly, Serial: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		c := fuzzChain(layout)
		// The header as the device reads it: the first 16 readable
		// bytes, across buffers (best effort, for the checks).
		var hdr [headerSize]byte
		pos := 0
		for _, b := range c.Readable {
			n := min(int(b.Len), headerSize-pos)
			mem.Read(b.Addr, hdr[pos:pos+n])
			if pos += n; pos == headerSize {
				break
			}
		}
		used, err := d.serve(mem, c, writeThrough)

		// Writes only inside device-writable buffers.
		mayWrite := make([]bool, arenaSize)
		for _, b := range c.Writable {
			for a := b.Addr; a < b.Addr+uint64(b.Len) && a < arenaSize; a++ {
				mayWrite[a] = true
			}
		}
		if !bytes.Equal(arena, before) {
			for a := range arena {
				if !mayWrite[a] && arena[a] != before[a] {
					t.Fatalf("device wrote %#x outside the writable buffers", a)
				}
			}
		}
		changed := !bytes.Equal(img.snapshot(), imgInit)
		if err != nil {
			if !errors.Is(err, virtio.ErrQueueBroken) {
				t.Fatalf("error does not break the queue: %v", err)
			}
			if changed {
				t.Fatal("image changed by a broken request")
			}
			return
		}
		last := c.Writable[len(c.Writable)-1]
		for i := len(c.Writable) - 1; last.Len == 0; i-- {
			last = c.Writable[i-1]
		}
		var st [1]byte
		if err := mem.Read(last.Addr+uint64(last.Len)-1, st[:]); err != nil {
			t.Fatalf("status byte outside RAM but no error: %v", err)
		}
		if status := st[0]; status > StatusUnsupp {
			t.Fatalf("status %d", status)
		}
		if inLen := c.WritableLen() - 1; uint64(used) > inLen+1 {
			t.Fatalf("used length %d beyond %d writable bytes", used, inLen+1)
		}
		isOut := binary.LittleEndian.Uint32(hdr[:]) == TypeOut
		if changed && (readOnly || !isOut) {
			t.Fatalf("image changed by a request of type %d (read-only %v)", binary.LittleEndian.Uint32(hdr[:]), readOnly)
		}
		if d.Written().Count() > 0 && (readOnly || !isOut) {
			t.Fatal("blocks marked written without a write")
		}
		if changed && d.Written().Count() == 0 {
			t.Fatal("image changed without a written block")
		}
	})
}

// FuzzProcessQueue runs the device over a request queue whose descriptor
// table, available ring and buffers come from the input: the whole path
// from the ring to the image. Any error must break the queue, and the
// device never returns more chains than were made available.
//
// Input: a ring as virtiotest.FuzzRing lays it out (descriptors, the
// available entries, then the data area with headers and indirect
// tables).
func FuzzProcessQueue(f *testing.F) {
	desc := virtiotest.FuzzDesc
	var seed []byte
	seed = append(seed, desc(0, 16, 1, 1)...)    // header
	seed = append(seed, desc(512, 512, 3, 2)...) // data
	seed = append(seed, desc(1024, 1, 2, 0)...)  // status
	seed = append(seed, desc(2048, 48, 4, 0)...) // indirect table
	seed = append(seed, make([]byte, 6*12)...)   // unused descriptors
	seed = append(seed, 2, 0, 3)                 // avail: heads 0, 3
	seed = append(seed, header(TypeIn, 1)...)    // data area: the header at 0
	f.Add(seed)
	f.Add(append(append([]byte(nil), seed[:6*16]...), 1, 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		img := newMemImage(fuzzDiskSize)
		disk, err := newDisk(img, fuzzDiskSize, Options{Serial: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		r := virtiotest.NewRig(t, disk, ^uint64(0), virtiotest.FuzzDescs)
		// The worker stops; the test calls ProcessQueue itself.
		if err := r.M.Transport.Pause(context.Background()); err != nil {
			t.Fatal(err)
		}
		q := r.Queues[0]
		avail, _ := virtiotest.FuzzRing(q, data, 7)
		err = disk.ProcessQueue(0)
		if err != nil && !errors.Is(err, virtio.ErrQueueBroken) {
			t.Fatalf("error does not break the queue: %v", err)
		}
		if used := q.UsedIdx(); int(used) > avail {
			t.Fatalf("used idx %d with %d chains available", used, avail)
		}
	})
}

// FuzzRestoreConfigState feeds arbitrary bytes to RestoreConfigState of a
// disk: see virtiotest.CheckConfigRestore.
func FuzzRestoreConfigState(f *testing.F) {
	good, err := testDisk(f, 1<<20, Options{Serial: "godwit-disk0"}).SaveConfigState()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, false)
	f.Add(good[:12], false)
	f.Add([]byte{1, 0, 1, 0, 0, 8, 0, 0, 0, 0, 0, 0}, true)
	f.Fuzz(func(t *testing.T, b []byte, readOnly bool) {
		virtiotest.CheckConfigRestore(t, testDisk(t, 1<<20, Options{ReadOnly: readOnly, Serial: "before"}), b)
	})
}

// FuzzTransportRestore restores arbitrary bytes into a transport whose
// disk holds a prior state (see virtiotest.FuzzRestore).
func FuzzTransportRestore(f *testing.F) {
	newDev := func(tb testing.TB) virtio.Device {
		return testDisk(tb, 1<<20, Options{Serial: "fuzz"})
	}
	virtiotest.FuzzRestore(f, virtiotest.Suite{Exercise: exerciser(false)}, newDev)
}
