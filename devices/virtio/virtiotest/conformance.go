package virtiotest

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"godwit/devices"
	"godwit/devices/virtio"
)

// Suite describes a device to the conformance suite.
type Suite struct {
	// New returns a fresh device backend.
	New func() virtio.Device
	// Exercise makes the device do some work on live queues (vector i+1
	// for queue i; the configuration vector is 0). It may be nil.
	Exercise func(t testing.TB, d *Driver, queues []*Queue)
	// QueueSize is the size the driver configures (0: the maximum).
	QueueSize uint16
}

// phase is a point in a device's life at which state is saved.
type phase struct {
	name string
	run  func(t testing.TB, s Suite, d *Driver) []*Queue
}

var phases = []phase{
	{"reset", func(t testing.TB, s Suite, d *Driver) []*Queue { return nil }},
	{"features negotiated", func(t testing.TB, s Suite, d *Driver) []*Queue {
		if _, err := d.Negotiate(^uint64(0)); err != nil {
			t.Fatal(err)
		}
		return nil
	}},
	{"active", func(t testing.TB, s Suite, d *Driver) []*Queue { return Activate(t, s, d) }},
	{"active and exercised", func(t testing.TB, s Suite, d *Driver) []*Queue {
		qs := Activate(t, s, d)
		if s.Exercise != nil {
			s.Exercise(t, d, qs)
		}
		return qs
	}},
}

// Activate negotiates every offered feature, enables MSI-X, sets up every
// queue (queue i on vector i+1, configuration on vector 0) and sets
// DRIVER_OK.
func Activate(t testing.TB, s Suite, d *Driver) []*Queue {
	t.Helper()
	if _, err := d.Negotiate(^uint64(0)); err != nil {
		t.Fatal(err)
	}
	nq := int(d.Read(d.Common+CommonNumQueues, 2))
	d.EnableMSIX(nq + 1)
	d.Write(d.Common+CommonConfigVector, 2, 0)
	var qs []*Queue
	for i := 0; i < nq; i++ {
		size := s.QueueSize
		if size == 0 {
			d.Write(d.Common+CommonQueueSel, 2, uint64(i))
			size = uint16(d.Read(d.Common+CommonQueueSize, 2))
		}
		qs = append(qs, d.SetupQueue(i, size, uint16(i+1)))
	}
	d.DriverOK()
	if st := d.Status(); st&virtio.StatusDriverOK == 0 || st&virtio.StatusDeviceNeedsReset != 0 {
		t.Fatalf("status %#x after DRIVER_OK", st)
	}
	return qs
}

// save pauses m's transport and saves it.
func save(t testing.TB, m *Machine) []byte {
	t.Helper()
	if err := m.Transport.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := m.Transport.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Run runs the conformance suite on a device: save→restore→save gives
// identical bytes at every phase of the device's life (into a fresh
// machine with a copy of RAM and into the same one), pause and resume are
// idempotent and the device works after them, a reset clears the queues,
// and restore rejects invalid and truncated state leaving the transport
// unchanged.
func Run(t *testing.T, s Suite) {
	for _, p := range phases {
		t.Run("SaveRestoreSave/"+p.name, func(t *testing.T) {
			src := NewMachine(t, s.New())
			p.run(t, s, NewDriver(t, src))
			s1 := save(t, src)

			dst := NewMachine(t, s.New())
			dst.CopyRAM(src)
			if err := dst.Transport.RestoreState(s1); err != nil {
				t.Fatalf("restore: %v", err)
			}
			s2 := save(t, dst)
			if !bytes.Equal(s1, s2) {
				t.Errorf("state differs after restore into a new machine:\n%x\n%x", s1, s2)
			}
			if err := src.Transport.RestoreState(s1); err != nil {
				t.Fatalf("restore into the source: %v", err)
			}
			if s3 := save(t, src); !bytes.Equal(s1, s3) {
				t.Errorf("state differs after restore into the source")
			}
		})
	}

	t.Run("RestoredDeviceWorks", func(t *testing.T) {
		if s.Exercise == nil {
			t.Skip("no Exercise for this device")
		}
		src := NewMachine(t, s.New())
		d := NewDriver(t, src)
		qs := Activate(t, s, d)
		s.Exercise(t, d, qs)
		st := save(t, src)
		dst := NewMachine(t, s.New())
		dst.CopyRAM(src)
		if err := dst.Transport.RestoreState(st); err != nil {
			t.Fatal(err)
		}
		// The destination's driver continues where the source's was.
		d2 := NewDriver(t, dst)
		d2.alloc = d.alloc
		for _, q := range qs {
			q.D = d2
		}
		s.Exercise(t, d2, qs)
	})

	t.Run("PauseResumeIdempotent", func(t *testing.T) {
		m := NewMachine(t, s.New())
		d := NewDriver(t, m)
		qs := Activate(t, s, d)
		tr := m.Transport
		ctx := context.Background()
		for i := 0; i < 2; i++ {
			if err := tr.Pause(ctx); err != nil {
				t.Fatalf("pause %d: %v", i, err)
			}
		}
		a, _ := tr.SaveState()
		if err := tr.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		b, _ := tr.SaveState()
		if !bytes.Equal(a, b) {
			t.Error("a second pause changed the state")
		}
		for i := 0; i < 2; i++ {
			if err := tr.Resume(); err != nil {
				t.Fatalf("resume %d: %v", i, err)
			}
		}
		if s.Exercise != nil {
			s.Exercise(t, d, qs)
		}
	})

	t.Run("ResetClearsQueues", func(t *testing.T) {
		m := NewMachine(t, s.New())
		d := NewDriver(t, m)
		Activate(t, s, d)
		d.SetStatus(0)
		if st := d.Status(); st != 0 {
			t.Fatalf("status %#x after reset", st)
		}
		for i := 0; i < int(d.Read(d.Common+CommonNumQueues, 2)); i++ {
			d.Write(d.Common+CommonQueueSel, 2, uint64(i))
			if en := d.Read(d.Common+CommonQueueEnable, 2); en != 0 {
				t.Errorf("queue %d enabled after reset", i)
			}
			if v := d.Read(d.Common+CommonQueueVector, 2); v != virtio.NoVector {
				t.Errorf("queue %d vector %#x after reset", i, v)
			}
		}
		fresh := NewMachine(t, s.New())
		// The reset device saves like a fresh one apart from PCI and
		// MSI-X state, which a virtio reset does not touch.
		var a, b virtio.TransportState
		if err := a.UnmarshalBinary(save(t, m)); err != nil {
			t.Fatal(err)
		}
		if err := b.UnmarshalBinary(save(t, fresh)); err != nil {
			t.Fatal(err)
		}
		a.PCIConfig, a.MSIX, b.PCIConfig, b.MSIX = nil, nil, nil, nil
		a.ConfigGeneration, b.ConfigGeneration = 0, 0
		a.QueueSelect = 0 // written by the loop above
		ab, _ := a.MarshalBinary()
		bb, _ := b.MarshalBinary()
		if !bytes.Equal(ab, bb) {
			t.Errorf("reset state differs from a fresh device:\n%+v\n%+v", a, b)
		}
	})

	t.Run("RestoreRejects", func(t *testing.T) {
		src := NewMachine(t, s.New())
		Activate(t, s, NewDriver(t, src))
		good := save(t, src)
		var base virtio.TransportState
		if err := base.UnmarshalBinary(good); err != nil {
			t.Fatal(err)
		}
		max := base.Queues[0].Size
		tests := []struct {
			name string
			mut  func(st *virtio.TransportState)
		}{
			{"queue size not a power of two", func(st *virtio.TransportState) { st.Queues[0].Size = 3 }},
			{"queue size zero", func(st *virtio.TransportState) { st.Queues[0].Size = 0 }},
			{"queue size above the maximum", func(st *virtio.TransportState) { st.Queues[0].Size = 2 * max }},
			{"more chains in flight than the queue holds", func(st *virtio.TransportState) {
				st.Queues[0].LastAvail = st.Queues[0].UsedIdx + st.Queues[0].Size + 1
			}},
			{"used index ahead of available", func(st *virtio.TransportState) { st.Queues[0].UsedIdx = st.Queues[0].LastAvail + 1 }},
			{"features not offered", func(st *virtio.TransportState) { st.DriverFeatures |= 1 << 63 }},
			{"DRIVER_OK without FEATURES_OK", func(st *virtio.TransportState) { st.Status &^= virtio.StatusFeaturesOK }},
			{"FEATURES_OK without VERSION_1", func(st *virtio.TransportState) { st.DriverFeatures &^= virtio.FeatureVersion1 }},
			{"unknown status bit", func(st *virtio.TransportState) { st.Status |= 0x10 }},
			{"too few queues", func(st *virtio.TransportState) { st.Queues = st.Queues[:len(st.Queues)-1] }},
			{"too many queues", func(st *virtio.TransportState) { st.Queues = append(st.Queues, st.Queues[0]) }},
			{"ring outside RAM", func(st *virtio.TransportState) { st.Queues[0].Desc = 1 << 40 }},
			{"misaligned used ring", func(st *virtio.TransportState) { st.Queues[0].Device |= 2 }},
			{"queue vector beyond the table", func(st *virtio.TransportState) { st.Queues[0].Vector = 999 }},
			{"config vector beyond the table", func(st *virtio.TransportState) { st.ConfigVector = 999 }},
			{"ISR bits", func(st *virtio.TransportState) { st.ISR = 4 }},
			{"disabled queue with ring state", func(st *virtio.TransportState) { st.Queues[0].Ready = false; st.Queues[0].UsedIdx = 1 }},
			{"PCI config state", func(st *virtio.TransportState) { st.PCIConfig = st.PCIConfig[:3] }},
			{"MSI-X state", func(st *virtio.TransportState) { st.MSIX = nil }},
			{"device state", func(st *virtio.TransportState) { st.DeviceConfig = append(st.DeviceConfig, 0xee) }},
		}
		var cases []struct {
			name string
			data []byte
		}
		for _, tt := range tests {
			st := base
			st.Queues = append([]virtio.QueueState(nil), base.Queues...)
			tt.mut(&st)
			b, err := st.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			cases = append(cases, struct {
				name string
				data []byte
			}{tt.name, b})
		}
		for _, n := range []int{0, 1, 2, 7, len(good) / 2, len(good) - 1} {
			cases = append(cases, struct {
				name string
				data []byte
			}{"truncated", good[:n]})
		}
		bad := append([]byte(nil), good...)
		bad[0]++
		cases = append(cases, struct {
			name string
			data []byte
		}{"version", bad}, struct {
			name string
			data []byte
		}{"trailing bytes", append(append([]byte(nil), good...), 0)})

		dst := NewMachine(t, s.New())
		dst.CopyRAM(src)
		if err := dst.Transport.RestoreState(good); err != nil {
			t.Fatal(err)
		}
		before := save(t, dst)
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				err := dst.Transport.RestoreState(c.data)
				if !errors.Is(err, devices.ErrInvalidState) {
					t.Fatalf("err = %v, want ErrInvalidState", err)
				}
				if now, _ := dst.Transport.SaveState(); !bytes.Equal(now, before) {
					t.Error("a rejected restore changed the transport")
				}
			})
		}
	})
}
