package net

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"godwit/devices"
	"godwit/devices/virtio"
	"godwit/devices/virtio/virtiotest"
)

// Fuzz geometry: a queue of fuzzQSize entries whose buffers point into a
// data area of fuzzArea bytes at fuzzBase.
const (
	fuzzQSize = 16
	fuzzBase  = 8 << 20
	fuzzArea  = 1 << 16
)

// fuzzMachine builds a device over a pipeTap on a machine with every
// queue of fuzzQSize entries enabled and the features in want negotiated,
// then stops the worker so that the test calls ProcessQueue itself.
func fuzzMachine(t *testing.T, want uint64) (*Device, *pipeTap, *virtiotest.Driver, []*virtiotest.Queue, uint64) {
	p := newPipeTap(t)
	dev, err := New(p, Options{MAC: testMAC})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	m := virtiotest.NewMachine(t, dev)
	d := virtiotest.NewDriver(t, m)
	acked, err := d.Negotiate(want)
	if err != nil {
		t.Fatal(err)
	}
	d.EnableMSIX(4)
	var qs []*virtiotest.Queue
	for i := 0; i < numQueues; i++ {
		qs = append(qs, d.SetupQueue(i, fuzzQSize, uint16(i+1)))
	}
	d.DriverOK()
	if err := m.Transport.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	return dev, p, d, qs, acked
}

// fuzzRing fills q's descriptor table and available ring from data: 16
// descriptors of 6 bytes (le16 offset into the data area, le16 length,
// flags byte: bits 0-2 NEXT/WRITE/INDIRECT masked with flagMask, bit 7 an
// address at the end of RAM; next byte modulo 32, so that some are out of
// range), then the number of available entries and their heads (modulo
// 32), then the data area's contents. It returns the number of available
// entries and the device-writable ranges of the table.
func fuzzRing(d *virtiotest.Driver, q *virtiotest.Queue, data []byte, flagMask byte) (int, [][2]uint64) {
	var writable [][2]uint64
	for i := uint16(0); i < fuzzQSize && len(data) >= 6; i++ {
		addr := fuzzBase + uint64(binary.LittleEndian.Uint16(data))
		n := uint32(binary.LittleEndian.Uint16(data[2:]))
		flags, next := data[4], uint16(data[5]%32)
		if flags&0x80 != 0 {
			addr = virtiotest.RAMSize - 8 + uint64(binary.LittleEndian.Uint16(data))
		}
		flags &= flagMask
		q.SetDesc(i, addr, n, uint16(flags), next)
		if flags&virtiotest.DescWrite != 0 {
			writable = append(writable, [2]uint64{addr, addr + uint64(n)})
		}
		data = data[6:]
	}
	avail := 0
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
	copy(d.Mem(fuzzBase, fuzzArea), data)
	return avail, writable
}

// desc encodes one fuzzRing descriptor.
func desc(off, n uint16, flags, next byte) []byte {
	b := binary.LittleEndian.AppendUint16(nil, off)
	b = binary.LittleEndian.AppendUint16(b, n)
	return append(b, flags, next)
}

// FuzzTransmit runs the transmit or the control queue over a ring whose
// descriptors, available entries and buffer contents come from the
// input: chain parsing, header checks and control requests. Any error
// must break the queue, the device never uses more chains than were
// available, and whatever reaches the tap has a header the negotiated
// features allow.
func FuzzTransmit(f *testing.F) {
	var seed []byte
	seed = append(seed, desc(0, 12, 1, 1)...)   // header
	seed = append(seed, desc(64, 60, 0, 0)...)  // frame
	seed = append(seed, desc(256, 32, 4, 0)...) // indirect table
	seed = append(seed, make([]byte, 6*13)...)
	seed = append(seed, 2, 0, 2) // avail: heads 0, 2
	area := make([]byte, 512)
	copy(area[64:], ethFrame(60, 1))
	virtiotest.WriteDesc(area[256:], fuzzBase, 12, virtiotest.DescNext, 1)
	virtiotest.WriteDesc(area[272:], fuzzBase+64, 60, 0, 0)
	f.Add(byte(txQueue), append(seed, area...))
	ctrl := append(desc(0, 2, 1, 1), desc(8, 1, 2, 0)...)
	ctrl = append(append(ctrl, make([]byte, 6*14)...), 1, 0)
	f.Add(byte(ctrlQueue), append(ctrl, ctrlClassAnnounce, ctrlAnnounceAck))
	f.Add(byte(txQueue|0x10), append(seed[:6*16], 1, 0))
	f.Fuzz(func(t *testing.T, sel byte, data []byte) {
		qi := txQueue
		if sel&1 == 0 {
			qi = ctrlQueue
		}
		want := ^uint64(0)
		if sel&0x10 != 0 {
			want &^= FeatureCsum
		}
		dev, p, d, qs, acked := fuzzMachine(t, want)
		avail, _ := fuzzRing(d, qs[qi], data, 7)
		err := dev.ProcessQueue(qi)
		if err != nil && !errors.Is(err, virtio.ErrQueueBroken) {
			t.Fatalf("error does not break the queue: %v", err)
		}
		if used := qs[qi].UsedIdx(); int(used) > avail {
			t.Fatalf("used idx %d with %d chains available", used, avail)
		}
		s := dev.Stats()
		for i := uint64(0); i < s.TxFrames; i++ {
			pkt := p.next(t)
			if len(pkt) > maxPacket || !txValid(pkt, acked) || binary.LittleEndian.Uint16(pkt[hdrNumBuffers:]) != 0 {
				t.Fatalf("the tap got an invalid packet: %x", pkt)
			}
		}
		p.none(t)
	})
}

// FuzzReceive delivers a packet from the input into a receive ring built
// from the input (descriptors without INDIRECT, so that the writable
// ranges are known): the device writes guest memory only inside
// device-writable descriptors (and the used ring), uses no more chains
// than available, tells the driver a length no larger than the packet,
// and any error breaks the queue.
func FuzzReceive(f *testing.F) {
	var seed []byte
	seed = append(seed, desc(0, 64, 3, 1)...)
	seed = append(seed, desc(64, 2048, 2, 0)...)
	seed = append(seed, desc(4096, 2048, 2, 0)...)
	seed = append(seed, make([]byte, 6*13)...)
	seed = append(seed, 2, 0, 2)
	pkt := packet(0, 0, 0, 0, ethFrame(100, 1))
	f.Add(seed, pkt, true)
	f.Add(seed, pkt, false)
	f.Add(seed, packet(hdrFNeedsCsum, 0, 34, 16, ethFrame(3000, 2)), true)
	f.Fuzz(func(t *testing.T, data, pkt []byte, mrg bool) {
		want := ^uint64(0)
		if !mrg {
			want &^= FeatureMrgRxbuf
		}
		dev, _, d, qs, _ := fuzzMachine(t, want)
		avail, writable := fuzzRing(d, qs[rxQueue], data, virtiotest.DescNext|virtiotest.DescWrite)
		if len(pkt) < hdrSize+ethHeaderSize || len(pkt) > maxPacket {
			return // enqueue drops these before they reach a queue
		}
		dev.mu.Lock()
		dev.backlog, dev.backlogSz = [][]byte{append([]byte(nil), pkt...)}, len(pkt)
		dev.mu.Unlock()
		before := append([]byte(nil), d.Mem(fuzzBase, fuzzArea)...)
		err := dev.ProcessQueue(rxQueue)
		if err != nil && !errors.Is(err, virtio.ErrQueueBroken) {
			t.Fatalf("error does not break the queue: %v", err)
		}
		after := d.Mem(fuzzBase, fuzzArea)
		if !bytes.Equal(before, after) {
			for i := range after {
				if after[i] == before[i] {
					continue
				}
				a := fuzzBase + uint64(i)
				ok := false
				for _, w := range writable {
					ok = ok || (a >= w[0] && a < w[1])
				}
				if !ok {
					t.Fatalf("device wrote %#x outside the device-writable buffers", a)
				}
			}
		}
		q := qs[rxQueue]
		used := q.TakeUsed()
		if len(used) > avail {
			t.Fatalf("%d used entries with %d chains available", len(used), avail)
		}
		var total uint64
		for _, u := range used {
			total += uint64(u.Len)
		}
		if len(used) > 0 && total != uint64(len(pkt)) {
			t.Fatalf("used lengths add up to %d for a packet of %d bytes", total, len(pkt))
		}
	})
}

// FuzzRestoreConfigState feeds arbitrary bytes to RestoreConfigState: it
// never panics, rejects with ErrInvalidState leaving the device unchanged,
// and what it accepts saves back byte for byte.
func FuzzRestoreConfigState(f *testing.F) {
	good, err := (&State{MAC: testMAC, Status: StatusLinkUp | StatusAnnounce,
		Backlog: [][]byte{packet(0, 0, 0, 0, ethFrame(60, 1)), packet(0, 0, 0, 0, ethFrame(100, 2))}}).MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:stateHeaderSize])
	f.Add(good[:len(good)-1])
	f.Fuzz(func(t *testing.T, b []byte) {
		dev, err := New(newPipeTap(t), Options{MAC: testMAC})
		if err != nil {
			t.Fatal(err)
		}
		before, _ := dev.SaveConfigState()
		if err := dev.RestoreConfigState(b); err != nil {
			if !errors.Is(err, devices.ErrInvalidState) {
				t.Fatalf("error %v is not ErrInvalidState", err)
			}
			if now, _ := dev.SaveConfigState(); !bytes.Equal(now, before) {
				t.Fatal("a rejected restore changed the device")
			}
			return
		}
		again, err := dev.SaveConfigState()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted %x, saves %x", b, again)
		}
	})
}
