package virtio_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"godwit/devices/virtio"
	"godwit/devices/virtio/virtiotest"
)

// sink is a test device: two queues, an 8-byte configuration, it returns
// every chain with its writable length.
type sink struct {
	mu     sync.Mutex
	queues []*virtio.Queue
	cfg    [8]byte
	chains int
	paused int
	// onChain, if set, runs on the worker after each chain is taken
	// off queue i and before it is returned.
	onChain func(i int)
}

func (s *sink) DeviceType() uint16   { return 0x7f }
func (s *sink) Features() uint64     { return 1 << 3 }
func (s *sink) NumQueues() int       { return 2 }
func (s *sink) MaxQueueSize() uint16 { return 16 }
func (s *sink) ConfigSize() int      { return len(s.cfg) }
func (s *sink) ReadConfig(off uint64, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	copy(data, s.cfg[off:])
}
func (s *sink) WriteConfig(off uint64, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	copy(s.cfg[off:], data)
}
func (s *sink) Activate(_ uint64, qs []*virtio.Queue, _ virtio.Host) error {
	s.mu.Lock()
	s.queues = qs
	s.mu.Unlock()
	return nil
}
func (s *sink) ProcessQueue(i int) error {
	s.mu.Lock()
	q := s.queues[i]
	s.mu.Unlock()
	for {
		c, err := q.Pop()
		if err != nil || c == nil {
			return err
		}
		s.mu.Lock()
		s.chains++
		hook := s.onChain
		s.mu.Unlock()
		if hook != nil {
			hook(i)
		}
		if err := q.PushUsed(c.Head, uint32(c.WritableLen())); err != nil {
			return err
		}
	}
}
func (s *sink) Reset() {
	s.mu.Lock()
	s.queues = nil
	s.mu.Unlock()
}
func (s *sink) SaveConfigState() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte{1}, s.cfg[:]...), nil
}
func (s *sink) RestoreConfigState(b []byte) error {
	if len(b) != 9 || b[0] != 1 {
		return errors.New("bad sink state")
	}
	s.mu.Lock()
	copy(s.cfg[:], b[1:])
	s.mu.Unlock()
	return nil
}
func (s *sink) Pause() {
	s.mu.Lock()
	s.paused++
	s.mu.Unlock()
}
func (s *sink) Resume() {
	s.mu.Lock()
	s.paused--
	s.mu.Unlock()
}

// sinkSuite is the conformance suite of the sink device.
var sinkSuite = virtiotest.Suite{
	New: func() virtio.Device { return &sink{} },
	Exercise: func(t testing.TB, d *virtiotest.Driver, qs []*virtiotest.Queue) {
		for _, q := range qs {
			buf := d.Alloc(64, 8)
			head := q.AvailIdx % q.Size
			q.SetDesc(head, buf, 64, virtiotest.DescWrite, 0)
			q.Publish(head)
			q.Kick()
			d.WaitMSI(q.Index + 1)
			if used := q.TakeUsed(); len(used) != 1 || used[0].Len != 64 {
				t.Fatalf("queue %d: used %+v", q.Index, used)
			}
		}
	},
}

func TestSinkConformance(t *testing.T) {
	virtiotest.Run(t, sinkSuite)
}

// hostile builds a broken chain on queue 0 of an active sink device.
type hostile struct {
	name     string
	features uint64 // negotiated (default: everything)
	build    func(d *virtiotest.Driver, q *virtiotest.Queue)
}

func TestHostileDriver(t *testing.T) {
	const ram = virtiotest.RAMSize
	tests := []hostile{
		{name: "descriptor loop", build: func(d *virtiotest.Driver, q *virtiotest.Queue) {
			buf := d.Alloc(16, 8)
			q.SetDesc(0, buf, 8, virtiotest.DescNext, 1)
			q.SetDesc(1, buf, 8, virtiotest.DescNext, 0)
			q.Publish(0)
		}},
		{name: "next index out of range", build: func(d *virtiotest.Driver, q *virtiotest.Queue) {
			q.SetDesc(0, d.Alloc(8, 8), 8, virtiotest.DescNext, q.Size)
			q.Publish(0)
		}},
		{name: "head out of range", build: func(d *virtiotest.Driver, q *virtiotest.Queue) {
			q.Publish(q.Size + 3)
		}},
		{name: "chain longer than the queue", build: func(d *virtiotest.Driver, q *virtiotest.Queue) {
			buf := d.Alloc(8, 8)
			for i := uint16(0); i < q.Size; i++ {
				q.SetDesc(i, buf, 8, virtiotest.DescNext, (i+1)%q.Size)
			}
			q.Publish(0)
		}},
		{name: "address beyond RAM", build: func(d *virtiotest.Driver, q *virtiotest.Queue) {
			q.SetDesc(0, ram-4, 8, virtiotest.DescWrite, 0)
			q.Publish(0)
		}},
		{name: "length overflow", build: func(d *virtiotest.Driver, q *virtiotest.Queue) {
			q.SetDesc(0, 0xffff_ffff_ffff_f000, 0x2000, virtiotest.DescWrite, 0)
			q.Publish(0)
		}},
		{name: "indirect table with a bad length", build: func(d *virtiotest.Driver, q *virtiotest.Queue) {
			q.SetDesc(0, d.Alloc(64, 16), 24, virtiotest.DescIndirect, 0)
			q.Publish(0)
		}},
		{name: "nested indirect table", build: func(d *virtiotest.Driver, q *virtiotest.Queue) {
			table := d.Alloc(32, 16)
			virtiotest.WriteDesc(d.Mem(table, 16), table, 16, virtiotest.DescIndirect, 0)
			q.SetDesc(0, table, 16, virtiotest.DescIndirect, 0)
			q.Publish(0)
		}},
		{name: "indirect without the feature", features: virtio.FeatureVersion1, build: func(d *virtiotest.Driver, q *virtiotest.Queue) {
			table := d.Alloc(16, 16)
			virtiotest.WriteDesc(d.Mem(table, 16), d.Alloc(8, 8), 8, virtiotest.DescWrite, 0)
			q.SetDesc(0, table, 16, virtiotest.DescIndirect, 0)
			q.Publish(0)
		}},
		{name: "available index jump", build: func(d *virtiotest.Driver, q *virtiotest.Queue) {
			q.SetAvailIdx(q.Size + 1)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := virtiotest.NewMachine(t, &sink{})
			d := virtiotest.NewDriver(t, m)
			want := tt.features
			if want == 0 {
				want = ^uint64(0)
			}
			if _, err := d.Negotiate(want); err != nil {
				t.Fatal(err)
			}
			d.EnableMSIX(3)
			d.Write(d.Common+virtiotest.CommonConfigVector, 2, 0)
			q0 := d.SetupQueue(0, 16, 1)
			q1 := d.SetupQueue(1, 16, 2)
			d.DriverOK()
			tt.build(d, q0)
			q0.Kick()
			d.WaitStatus(virtio.StatusDeviceNeedsReset, 0)
			if err := m.Transport.Err(); !errors.Is(err, virtio.ErrQueueBroken) {
				t.Errorf("Err() = %v, want ErrQueueBroken", err)
			}
			if used := q0.TakeUsed(); len(used) != 0 {
				t.Errorf("broken chain returned: %+v", used)
			}
			// The other queue and the VMM carry on.
			buf := d.Alloc(8, 8)
			q1.SetDesc(0, buf, 8, virtiotest.DescWrite, 0)
			q1.Publish(0)
			q1.Kick()
			d.WaitMSI(2)
			if used := q1.TakeUsed(); len(used) != 1 {
				t.Errorf("queue 1 after queue 0 broke: %+v", used)
			}
			// The state saves and restores with the queue broken.
			st, err := m.Transport.SaveState()
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Transport.RestoreState(st); err != nil {
				t.Fatalf("restore of a broken queue: %v", err)
			}
			// A reset recovers the device.
			virtiotest.Activate(t, virtiotest.Suite{QueueSize: 16}, d)
			if st := d.Status(); st&virtio.StatusDeviceNeedsReset != 0 {
				t.Errorf("status %#x after reset", st)
			}
		})
	}
}

func TestDriverMisconfiguration(t *testing.T) {
	tests := []struct {
		name string
		do   func(d *virtiotest.Driver)
	}{
		{"queue size not a power of two", func(d *virtiotest.Driver) {
			d.Write(d.Common+virtiotest.CommonQueueSel, 2, 0)
			d.Write(d.Common+virtiotest.CommonQueueSize, 2, 3)
		}},
		{"queue size above the maximum", func(d *virtiotest.Driver) {
			d.Write(d.Common+virtiotest.CommonQueueSel, 2, 0)
			d.Write(d.Common+virtiotest.CommonQueueSize, 2, 32)
		}},
		{"rings outside RAM", func(d *virtiotest.Driver) {
			d.Write(d.Common+virtiotest.CommonQueueSel, 2, 0)
			d.Write(d.Common+virtiotest.CommonQueueDesc, 8, virtiotest.RAMSize)
			d.Write(d.Common+virtiotest.CommonQueueEnable, 2, 1)
		}},
		{"misaligned descriptor table", func(d *virtiotest.Driver) {
			d.Write(d.Common+virtiotest.CommonQueueSel, 2, 0)
			d.Write(d.Common+virtiotest.CommonQueueDesc, 8, 0x1008)
			d.Write(d.Common+virtiotest.CommonQueueEnable, 2, 1)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := virtiotest.NewMachine(t, &sink{})
			d := virtiotest.NewDriver(t, m)
			if _, err := d.Negotiate(^uint64(0)); err != nil {
				t.Fatal(err)
			}
			d.EnableMSIX(3)
			d.Write(d.Common+virtiotest.CommonConfigVector, 2, 0)
			tt.do(d)
			d.WaitStatus(virtio.StatusDeviceNeedsReset, 0)
		})
	}
}

func TestCommonConfig(t *testing.T) {
	m := virtiotest.NewMachine(t, &sink{})
	d := virtiotest.NewDriver(t, m)
	c := d.Common
	type step struct {
		name string
		do   func()
		off  uint64
		size int
		want uint64
	}
	steps := []step{
		{"num_queues", func() {}, virtiotest.CommonNumQueues, 2, 2},
		{"feature word 0", func() { d.Write(c+virtiotest.CommonDevFeatSel, 4, 0) }, virtiotest.CommonDevFeat, 4, virtio.FeatureIndirectDesc | virtio.FeatureEventIdx | 1<<3},
		{"feature word 1", func() { d.Write(c+virtiotest.CommonDevFeatSel, 4, 1) }, virtiotest.CommonDevFeat, 4, 1},
		{"feature word 7 is zero", func() { d.Write(c+virtiotest.CommonDevFeatSel, 4, 7) }, virtiotest.CommonDevFeat, 4, 0},
		{"unoffered driver features dropped", func() {
			d.Write(c+virtiotest.CommonDrvFeatSel, 4, 0)
			d.Write(c+virtiotest.CommonDrvFeat, 4, 0xffffffff)
		}, virtiotest.CommonDrvFeat, 4, virtio.FeatureIndirectDesc | virtio.FeatureEventIdx | 1<<3},
		{"FEATURES_OK refused without VERSION_1", func() {
			d.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK)
		}, virtiotest.CommonStatus, 1, virtio.StatusAcknowledge | virtio.StatusDriver},
		{"DRIVER_OK refused without FEATURES_OK", func() {
			d.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusDriverOK)
		}, virtiotest.CommonStatus, 1, virtio.StatusAcknowledge | virtio.StatusDriver},
		{"queue select beyond num_queues reads size 0", func() { d.Write(c+virtiotest.CommonQueueSel, 2, 5) }, virtiotest.CommonQueueSize, 2, 0},
		{"queue maximum size", func() { d.Write(c+virtiotest.CommonQueueSel, 2, 1) }, virtiotest.CommonQueueSize, 2, 16},
		{"queue notify off", func() {}, virtiotest.CommonQueueNotify, 2, 1},
		{"64-bit desc as dwords", func() {
			d.Write(c+virtiotest.CommonQueueDesc, 4, 0x1000)
			d.Write(c+virtiotest.CommonQueueDesc+4, 4, 0x2)
		}, virtiotest.CommonQueueDesc, 8, 0x2_0000_1000},
		{"vector beyond the table reads NO_VECTOR", func() { d.Write(c+virtiotest.CommonQueueVector, 2, 50) }, virtiotest.CommonQueueVector, 2, virtio.NoVector},
		{"config vector", func() { d.Write(c+virtiotest.CommonConfigVector, 2, 2) }, virtiotest.CommonConfigVector, 2, 2},
		{"past the structure", func() {}, 0x40, 4, 0},
		{"device config", func() { d.Write(d.DeviceCfg+2, 2, 0xbeef) }, d.DeviceCfg - c + 2, 2, 0xbeef},
		{"device config straddling its end", func() {}, d.DeviceCfg - c + 6, 4, 0},
		{"reset clears everything", func() { d.SetStatus(0) }, virtiotest.CommonConfigVector, 2, virtio.NoVector},
	}
	for _, s := range steps {
		s.do()
		if got := d.Read(c+s.off, s.size); got != s.want {
			t.Errorf("%s: read %#x = %#x, want %#x", s.name, s.off, got, s.want)
		}
	}
}

func TestQueueFieldsLockedWhenEnabled(t *testing.T) {
	m := virtiotest.NewMachine(t, &sink{})
	d := virtiotest.NewDriver(t, m)
	virtiotest.Activate(t, virtiotest.Suite{QueueSize: 8}, d)
	c := d.Common
	d.Write(c+virtiotest.CommonQueueSel, 2, 0)
	desc := d.Read(c+virtiotest.CommonQueueDesc, 8)
	d.Write(c+virtiotest.CommonQueueDesc, 8, 0x5000)
	d.Write(c+virtiotest.CommonQueueSize, 2, 4)
	d.Write(c+virtiotest.CommonQueueEnable, 2, 0)
	if got := d.Read(c+virtiotest.CommonQueueDesc, 8); got != desc {
		t.Errorf("desc changed on an enabled queue: %#x", got)
	}
	if got := d.Read(c+virtiotest.CommonQueueSize, 2); got != 8 {
		t.Errorf("size changed on an enabled queue: %d", got)
	}
	if got := d.Read(c+virtiotest.CommonQueueEnable, 2); got != 1 {
		t.Errorf("queue disabled by writing 0")
	}
}

func TestINTxFallbackAndISR(t *testing.T) {
	m := virtiotest.NewMachine(t, &sink{})
	d := virtiotest.NewDriver(t, m)
	if _, err := d.Negotiate(^uint64(0)); err != nil {
		t.Fatal(err)
	}
	q := d.SetupQueue(0, 8, virtio.NoVector)
	d.DriverOK()
	q.SetDesc(0, d.Alloc(8, 8), 8, virtiotest.DescWrite, 0)
	q.Publish(0)
	q.Kick()
	d.WaitINTx()
	if isr := d.Read(d.ISR, 1); isr != 1 {
		t.Errorf("ISR = %#x, want 1", isr)
	}
	if isr := d.Read(d.ISR, 1); isr != 0 {
		t.Errorf("ISR not cleared by reading: %#x", isr)
	}
	select {
	case high := <-m.INTx.C:
		if high {
			t.Error("INTx asserted again")
		}
	default:
		t.Error("reading ISR did not deassert INTx")
	}
}

// TestPauseKeepsQueuedWork: a chain the driver publishes while the
// transport is paused is serviced on resume, whether its notification
// arrived while paused (kept) or never reached the device before the state
// was saved and restored (every queue is serviced once after a restore).
func TestPauseKeepsQueuedWork(t *testing.T) {
	for _, tt := range []struct {
		name    string
		queue   int
		kick    bool // the notification arrives while paused
		restore bool // save and restore the state before resuming
	}{
		{"notified while paused", 0, true, false},
		{"notification lost, restored", 1, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &sink{}
			m := virtiotest.NewMachine(t, s)
			d := virtiotest.NewDriver(t, m)
			qs := virtiotest.Activate(t, virtiotest.Suite{QueueSize: 8}, d)
			if err := m.Transport.Pause(context.Background()); err != nil {
				t.Fatal(err)
			}
			q := qs[tt.queue]
			q.SetDesc(0, d.Alloc(8, 8), 8, virtiotest.DescWrite, 0)
			q.Publish(0)
			if tt.kick {
				q.Kick()
			}
			// The worker is stopped, so nothing can have consumed the chain.
			if idx := q.UsedIdx(); idx != 0 {
				t.Fatalf("processed while paused: used idx %d", idx)
			}
			s.mu.Lock()
			paused := s.paused
			s.mu.Unlock()
			if paused != 1 {
				t.Errorf("device Pause calls outstanding = %d, want 1", paused)
			}
			if tt.restore {
				state, err := m.Transport.SaveState()
				if err != nil {
					t.Fatal(err)
				}
				if err := m.Transport.RestoreState(state); err != nil {
					t.Fatal(err)
				}
			}
			if err := m.Transport.Resume(); err != nil {
				t.Fatal(err)
			}
			d.WaitMSI(tt.queue + 1)
			if used := q.TakeUsed(); len(used) != 1 {
				t.Errorf("used after resume: %+v", used)
			}
		})
	}
}

// TestInspect: the diagnostic snapshot shows the device's indices after
// the worker's pass and the ring fields in guest memory, and a chain
// published without a notification as the driver's avail idx ahead of the
// device's.
func TestInspect(t *testing.T) {
	s := &sink{}
	m := virtiotest.NewMachine(t, s)
	d := virtiotest.NewDriver(t, m)
	qs := virtiotest.Activate(t, virtiotest.Suite{QueueSize: 8}, d)
	q := qs[0]
	q.SetDesc(0, d.Alloc(8, 8), 8, virtiotest.DescWrite, 0)
	q.Publish(0)
	q.Kick()
	d.WaitMSI(1)
	q.SetDesc(1, d.Alloc(8, 8), 8, virtiotest.DescWrite, 0)
	q.Publish(1) // not notified
	info := m.Transport.Inspect()
	if len(info.Queues) != 2 {
		t.Fatalf("%d queues", len(info.Queues))
	}
	qi := info.Queues[0]
	if !qi.Ready || qi.Size != 8 || qi.LastAvail != 1 || qi.UsedIdx != 1 || qi.Signalled != 1 {
		t.Errorf("queue 0 device side %+v, want ready, size 8, one chain taken, used and signalled", qi)
	}
	if qi.RingAvailIdx == nil || *qi.RingAvailIdx != 2 || qi.RingUsedIdx == nil || *qi.RingUsedIdx != 1 {
		t.Errorf("queue 0 ring avail idx %v used idx %v, want 2 and 1", qi.RingAvailIdx, qi.RingUsedIdx)
	}
	if !info.MSIX.Enabled || info.Status&virtio.StatusDriverOK == 0 || info.Error != "" {
		t.Errorf("transport %+v", info)
	}
}

// FuzzTransportRestore restores arbitrary bytes into a transport (with
// the sink device) that holds a prior state: see virtiotest.FuzzRestore.
func FuzzTransportRestore(f *testing.F) {
	virtiotest.FuzzRestore(f, sinkSuite, func(testing.TB) virtio.Device { return &sink{} })
}
