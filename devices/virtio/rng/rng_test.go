package rng

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"godwit/devices/virtio"
	"godwit/devices/virtio/virtiotest"
)

// exercise posts one request of two writable buffers on the request queue
// and checks the device filled them.
func exercise(t testing.TB, d *virtiotest.Driver, qs []*virtiotest.Queue) {
	t.Helper()
	q := qs[0]
	buf := d.Alloc(96, 8)
	head := (q.AvailIdx * 2) % q.Size
	q.SetDesc(head, buf, 64, virtiotest.DescWrite|virtiotest.DescNext, head+1)
	q.SetDesc(head+1, buf+64, 32, virtiotest.DescWrite, 0)
	q.Publish(head)
	q.Kick()
	d.WaitMSI(1)
	used := q.TakeUsed()
	if len(used) != 1 || used[0] != (virtiotest.UsedElem{ID: uint32(head), Len: 96}) {
		t.Fatalf("used = %+v, want head %d len 96", used, head)
	}
	if bytes.Equal(d.Mem(buf, 96), make([]byte, 96)) {
		t.Fatal("buffer still zero")
	}
}

func TestConformance(t *testing.T) {
	virtiotest.Run(t, virtiotest.Suite{
		New:      func() virtio.Device { return New() },
		Exercise: exercise,
	})
}

func TestEntropyEndToEnd(t *testing.T) {
	tests := []struct {
		name      string
		features  uint64
		msix      bool
		queueSize uint16
	}{
		{"MSI-X, event idx, indirect", ^uint64(0), true, 256},
		{"MSI-X, no optional features", virtio.FeatureVersion1, true, 16},
		{"INTx fallback", ^uint64(0), false, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := virtiotest.NewMachine(t, New())
			d := virtiotest.NewDriver(t, m)
			if id := d.Cfg32(0); id != (0x1040+virtio.DeviceEntropy)<<16|0x1af4 {
				t.Fatalf("IDs %#x", id)
			}
			acked, err := d.Negotiate(tt.features)
			if err != nil {
				t.Fatal(err)
			}
			vector := uint16(virtio.NoVector)
			if tt.msix {
				d.EnableMSIX(2)
				vector = 1
			}
			q := d.SetupQueue(0, tt.queueSize, vector)
			d.DriverOK()
			if acked&virtio.FeatureEventIdx != 0 {
				q.SetUsedEvent(0) // interrupt for the first used entry
			}
			// Fill the ring twice over, one request at a time.
			for k := 0; k < 2*int(tt.queueSize); k++ {
				var dirty [64]uint64
				m.Mem.TakeDirty(0, dirty[:])
				buf := d.Alloc(uint64(16+k%32), 1)
				head := q.AvailIdx % q.Size
				q.SetDesc(head, buf, uint32(16+k%32), virtiotest.DescWrite, 0)
				q.Publish(head)
				if acked&virtio.FeatureEventIdx != 0 {
					q.SetUsedEvent(q.LastUsed)
				}
				q.Kick()
				if tt.msix {
					d.WaitMSI(1)
				} else {
					d.WaitINTx()
					if isr := d.Read(d.ISR, 1); isr&1 == 0 {
						t.Fatalf("ISR %#x", isr)
					}
				}
				used := q.TakeUsed()
				if len(used) != 1 || used[0].ID != uint32(head) || used[0].Len != uint32(16+k%32) {
					t.Fatalf("request %d: used %+v", k, used)
				}
				n, _ := m.Mem.TakeDirty(0, dirty[:])
				if n == 0 || dirty[buf/4096/64]&(1<<(buf/4096%64)) == 0 {
					t.Fatalf("request %d: device writes not marked dirty", k)
				}
			}
			// Pause waits for the worker, which re-arms after signalling.
			if err := m.Transport.Pause(context.Background()); err != nil {
				t.Fatal(err)
			}
			if acked&virtio.FeatureEventIdx != 0 && q.AvailEvent() != q.AvailIdx {
				t.Errorf("avail_event %d, want %d", q.AvailEvent(), q.AvailIdx)
			}
			if err := m.Transport.Err(); err != nil {
				t.Errorf("device error: %v", err)
			}
		})
	}
}

func TestRequestCap(t *testing.T) {
	m := virtiotest.NewMachine(t, New())
	d := virtiotest.NewDriver(t, m)
	qs := virtiotest.Activate(t, virtiotest.Suite{}, d)
	q := qs[0]
	buf := d.Alloc(MaxPerRequest+4096, 4096)
	q.SetDesc(0, buf, MaxPerRequest+4096, virtiotest.DescWrite, 0)
	q.Publish(0)
	q.Kick()
	d.WaitMSI(1)
	if used := q.TakeUsed(); len(used) != 1 || used[0].Len != MaxPerRequest {
		t.Fatalf("used %+v, want %d bytes", used, MaxPerRequest)
	}
}

func TestRestoreConfigState(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		ok   bool
	}{
		{"saved", []byte{1, 0}, true},
		{"empty", nil, false},
		{"version", []byte{2, 0}, false},
		{"long", []byte{1, 0, 0}, false},
	}
	for _, tt := range tests {
		if err := New().RestoreConfigState(tt.data); (err == nil) != tt.ok {
			t.Errorf("%s: err = %v", tt.name, err)
		}
	}
}

// FuzzTransportRestore restores arbitrary bytes into a transport whose
// entropy device holds a prior state (see virtiotest.FuzzRestore).
func FuzzTransportRestore(f *testing.F) {
	virtiotest.FuzzRestore(f, virtiotest.Suite{Exercise: exercise}, func(testing.TB) virtio.Device { return New() })
}

// FuzzProcessQueue runs the request queue over a ring a hostile driver
// built (virtiotest.FuzzRing, without INDIRECT so that the writable
// ranges are known): any error breaks the queue, the device uses no more
// chains than were available, reports no more bytes than the chain's
// writable buffers hold, and writes guest memory only inside them.
func FuzzProcessQueue(f *testing.F) {
	var seed []byte
	seed = append(seed, virtiotest.FuzzDesc(0, 64, 3, 1)...)
	seed = append(seed, virtiotest.FuzzDesc(64, 32, 2, 0)...)
	seed = append(seed, virtiotest.FuzzDesc(4096, 4096, 2, 0)...)
	seed = append(seed, virtiotest.FuzzDesc(0xfff0, 0x40, 0x82, 0)...)
	seed = append(seed, make([]byte, 6*12)...)
	seed = append(seed, 3, 0, 2, 3)
	f.Add(seed)
	f.Add(append(seed[:6*16], 2, 7, 7))
	f.Fuzz(func(t *testing.T, data []byte) {
		dev := New()
		r := virtiotest.NewRig(t, dev, ^uint64(0), virtiotest.FuzzDescs)
		if err := r.M.Transport.Pause(context.Background()); err != nil {
			t.Fatal(err)
		}
		q := r.Queues[0]
		avail, writable := virtiotest.FuzzRing(q, data, virtiotest.DescNext|virtiotest.DescWrite)
		before := append([]byte(nil), r.D.Mem(virtiotest.FuzzArea, virtiotest.FuzzAreaSize)...)
		err := dev.ProcessQueue(0)
		if err != nil && !errors.Is(err, virtio.ErrQueueBroken) {
			t.Fatalf("error does not break the queue: %v", err)
		}
		used := q.TakeUsed()
		if len(used) > avail {
			t.Fatalf("%d used entries with %d chains available", len(used), avail)
		}
		var room uint64
		for _, w := range writable {
			room += w[1] - w[0]
		}
		for _, u := range used {
			if uint64(u.Len) > room {
				t.Fatalf("used length %d, the writable descriptors hold %d bytes", u.Len, room)
			}
		}
		virtiotest.CheckFuzzAreaWrites(t, r.D, before, writable)
	})
}
