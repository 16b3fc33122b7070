package net

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"godwit/devices/virtio"
	"godwit/devices/virtio/virtiotest"
)

// fuzzMachine builds a device over a pipeTap on a machine with every
// queue enabled (virtiotest.FuzzDescs entries, for virtiotest.FuzzRing)
// and the features in want negotiated, then stops the worker so that the
// test calls ProcessQueue itself.
func fuzzMachine(t *testing.T, want uint64) (*Device, *pipeTap, *virtiotest.Driver, []*virtiotest.Queue, uint64) {
	p := newPipeTap(t)
	dev, err := New(p, Options{MAC: testMAC})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	sizes := make([]uint16, numQueues)
	for i := range sizes {
		sizes[i] = virtiotest.FuzzDescs
	}
	r := virtiotest.NewRig(t, dev, want, sizes...)
	if err := r.M.Transport.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	return dev, p, r.D, r.Queues, r.Acked
}

// desc encodes one virtiotest.FuzzRing descriptor.
var desc = virtiotest.FuzzDesc

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
	virtiotest.WriteDesc(area[256:], virtiotest.FuzzArea, 12, virtiotest.DescNext, 1)
	virtiotest.WriteDesc(area[272:], virtiotest.FuzzArea+64, 60, 0, 0)
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
		dev, p, _, qs, acked := fuzzMachine(t, want)
		avail, _ := virtiotest.FuzzRing(qs[qi], data, 7)
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
			if len(pkt) > maxPacket || !txValid(pkt, len(pkt)-hdrSize, acked) || binary.LittleEndian.Uint16(pkt[hdrNumBuffers:]) != 0 {
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
		avail, writable := virtiotest.FuzzRing(qs[rxQueue], data, virtiotest.DescNext|virtiotest.DescWrite)
		if len(pkt) < hdrSize+ethHeaderSize || len(pkt) > maxPacket {
			return // enqueue drops these before they reach a queue
		}
		dev.mu.Lock()
		dev.backlog, dev.backlogSz = [][]byte{append([]byte(nil), pkt...)}, len(pkt)
		dev.mu.Unlock()
		before := append([]byte(nil), d.Mem(virtiotest.FuzzArea, virtiotest.FuzzAreaSize)...)
		err := dev.ProcessQueue(rxQueue)
		if err != nil && !errors.Is(err, virtio.ErrQueueBroken) {
			t.Fatalf("error does not break the queue: %v", err)
		}
		virtiotest.CheckFuzzAreaWrites(t, d, before, writable)
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

// FuzzRestoreConfigState feeds arbitrary bytes to RestoreConfigState of a
// device holding a backlog: see virtiotest.CheckConfigRestore.
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
		// A device with a backlog and an announcement pending, which
		// a refusal must keep.
		if err := dev.RestoreConfigState(good); err != nil {
			t.Fatal(err)
		}
		virtiotest.CheckConfigRestore(t, dev, b)
	})
}

// FuzzTransportRestore restores arbitrary bytes into a transport whose
// network device holds a prior state (see virtiotest.FuzzRestore). The
// extra seed has a backlog and a pending announcement, which a refused
// restore must not lose.
func FuzzTransportRestore(f *testing.F) {
	newDev := func(tb testing.TB) virtio.Device {
		dev, err := New(newPipeTap(tb), Options{MAC: testMAC})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { dev.Close() })
		return dev
	}
	m := virtiotest.NewMachine(f, newDev(f))
	virtiotest.Activate(f, virtiotest.Suite{}, virtiotest.NewDriver(f, m))
	if err := m.Transport.Pause(context.Background()); err != nil {
		f.Fatal(err)
	}
	saved, err := m.Transport.SaveState()
	if err != nil {
		f.Fatal(err)
	}
	var ts virtio.TransportState
	if err := ts.UnmarshalBinary(saved); err != nil {
		f.Fatal(err)
	}
	ts.DeviceConfig, err = (&State{MAC: testMAC, Status: StatusLinkUp | StatusAnnounce,
		Backlog: [][]byte{packet(0, 0, 0, 0, ethFrame(60, 1)), packet(0, 0, 0, 0, ethFrame(100, 2))}}).MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	rich, err := ts.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	// The same with another MAC: well-formed, refused by this device
	// only after the transport has checked everything else.
	ts.DeviceConfig[2] ^= 0x10
	otherMAC, err := ts.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	virtiotest.FuzzRestore(f, virtiotest.Suite{Exercise: exercise}, newDev, rich, otherMAC)
}
