package virtio_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"godwit/devices/pci"
	"godwit/devices/virtio/virtiotest"
)

// stallingSink returns a sink whose worker stops after taking a chain off
// queue 0, signalling entered, until release is closed: a request in
// flight.
func stallingSink(entered chan<- struct{}, release <-chan struct{}) *sink {
	return &sink{onChain: func(i int) {
		if i == 0 {
			entered <- struct{}{}
			<-release
		}
	}}
}

// checkOwnState pauses m's transport and checks that it takes back the
// state it saves, unchanged.
func checkOwnState(t *testing.T, m *virtiotest.Machine) {
	t.Helper()
	if err := m.Transport.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := m.Transport.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Transport.RestoreState(st); err != nil {
		t.Fatalf("the transport refuses its own state: %v", err)
	}
	if again, _ := m.Transport.SaveState(); !bytes.Equal(again, st) {
		t.Fatal("save, restore, save differs")
	}
}

// drainMSI drops the MSI-X messages delivered so far.
func drainMSI(m *virtiotest.Machine) {
	for {
		select {
		case <-m.MSI.C:
		default:
			return
		}
	}
}

// waitFor fails the test if ch does not deliver within WaitTimeout.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(virtiotest.WaitTimeout):
		t.Fatalf("%s: not within %v", what, virtiotest.WaitTimeout)
	}
}

// TestResetDuringIO: the driver resets the device while a request is in
// flight on the worker. The reset (on the vCPU thread) completes once the
// request does, leaves the device reset, and the device works after the
// driver sets it up again.
func TestResetDuringIO(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	s := stallingSink(entered, release)
	m := virtiotest.NewMachine(t, s)
	d := virtiotest.NewDriver(t, m)
	qs := virtiotest.Activate(t, virtiotest.Suite{QueueSize: 8}, d)
	p := qs[0].Post([]virtiotest.Seg{virtiotest.WR(64)})
	qs[0].Kick()
	waitFor(t, entered, "the request reaching the device")

	reset := make(chan struct{})
	go func() {
		d.SetStatus(0) // a vCPU writing device_status
		close(reset)
	}()
	close(release)
	waitFor(t, reset, "the reset")
	if st := d.Status(); st != 0 {
		t.Fatalf("status %#x after the reset", st)
	}
	d.Write(d.Common+virtiotest.CommonQueueSel, 2, 0)
	if en := d.Read(d.Common+virtiotest.CommonQueueEnable, 2); en != 0 {
		t.Fatal("queue 0 still enabled after the reset")
	}
	// The request completed before the reset took effect; nothing
	// wrote the old rings after it.
	if u := qs[0].TakeUsed(); len(u) != 1 || u[0].ID != uint32(p.Head) {
		t.Fatalf("used %+v, want the request in flight", u)
	}

	// From now on requests pass straight through.
	s.mu.Lock()
	s.onChain = nil
	s.mu.Unlock()
	drainMSI(m)
	qs = virtiotest.Activate(t, virtiotest.Suite{QueueSize: 8}, d)
	p = qs[0].Post([]virtiotest.Seg{virtiotest.WR(32)})
	qs[0].Kick()
	d.WaitMSI(1)
	if u := qs[0].TakeUsed(); len(u) != 1 || u[0] != (virtiotest.UsedElem{ID: uint32(p.Head), Len: 32}) {
		t.Fatalf("after re-initialisation: used %+v", u)
	}
}

// TestBARMoveDuringIO: while one vCPU drives requests (posting chains,
// kicking through the notify register wherever BAR 0 is decoded now),
// another keeps moving BAR 0 and turning Memory Space on and off, and a
// third reads the common configuration and ISR. Nothing panics or races
// (run with -race), every request completes (a kick that hit the moved
// BAR is repeated), and the device works once the BAR is back.
func TestBARMoveDuringIO(t *testing.T) {
	m := virtiotest.NewMachine(t, &sink{})
	d := virtiotest.NewDriver(t, m)
	q := virtiotest.Activate(t, virtiotest.Suite{QueueSize: 8}, d)[0]
	home := d.BAR0
	away := home + 0x100000
	mmio := m.Bus.MMIO()
	// bar0 returns where BAR 0 is decoded now.
	bar0 := func() (uint64, bool) {
		for _, b := range m.Transport.Config().BARs() {
			if b.Index == 0 {
				return b.Base, true
			}
		}
		return 0, false
	}
	var done atomic.Bool
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the guest's PCI code, on another vCPU
		defer wg.Done()
		io := m.Bus.ConfigIO()
		cfg := func(reg int, v []byte) {
			io.Write(0, binary.LittleEndian.AppendUint32(nil, 0x8000_0000|uint32(m.Slot)<<11|uint32(reg)))
			io.Write(4, v)
		}
		for i := 0; !done.Load(); i++ {
			base := home
			if i%2 == 1 {
				base = away
			}
			cfg(pci.RegBAR0, binary.LittleEndian.AppendUint32(nil, uint32(base)))
			cmd := uint16(pci.CommandMemory)
			if i%3 == 2 {
				cmd = 0
			}
			cfg(pci.RegCommand, binary.LittleEndian.AppendUint16(nil, cmd))
			runtime.Gosched()
		}
	}()
	go func() { // a third vCPU reading registers
		defer wg.Done()
		var b [4]byte
		for !done.Load() {
			if base, ok := bar0(); ok {
				mmio.Read(base-pci.WindowBase+d.Common-d.BAR0+virtiotest.CommonQueueSize, b[:2])
				mmio.Read(base-pci.WindowBase+d.ISR-d.BAR0, b[:1])
			}
			runtime.Gosched()
		}
	}()
	const requests = 200
	deadline := time.Now().Add(virtiotest.WaitTimeout)
	for i := 0; i < requests; i++ {
		q.SetDesc(uint16(i)%q.Size, d.Alloc(16, 8), 16, virtiotest.DescWrite, 0)
		q.Publish(uint16(i) % q.Size)
		for q.UsedIdx() != uint16(i+1) {
			if time.Now().After(deadline) {
				done.Store(true)
				wg.Wait()
				t.Fatalf("request %d not completed within %v", i, virtiotest.WaitTimeout)
			}
			if base, ok := bar0(); ok {
				mmio.Write(base-pci.WindowBase+d.Notify-d.BAR0, []byte{0, 0})
			}
			runtime.Gosched()
		}
	}
	done.Store(true)
	wg.Wait()

	d.CfgWrite(pci.RegBAR0, binary.LittleEndian.AppendUint32(nil, uint32(home)))
	d.CfgWrite(pci.RegCommand, []byte{pci.CommandMemory, 0})
	q.TakeUsed()
	drainMSI(m)
	p := q.Post([]virtiotest.Seg{virtiotest.WR(8)})
	q.Kick()
	d.WaitMSI(1)
	if u := q.TakeUsed(); len(u) != 1 || u[0].ID != uint32(p.Head) {
		t.Fatalf("after the BAR came home: used %+v", u)
	}
	checkOwnState(t, m)
}
