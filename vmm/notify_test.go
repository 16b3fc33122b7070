package vmm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"godwit/devices/pci"
	"godwit/devices/virtio"
	"godwit/devices/virtio/rng"
	"godwit/devices/virtio/virtiotest"
	"godwit/migrate"
	"godwit/vmm/kvm"
)

// fakeIOEventFDs is KVM's ioeventfd table: it checks each call the way
// KVM does (no duplicate assignment, deassign only what is assigned).
type fakeIOEventFDs struct {
	mu    sync.Mutex
	regs  map[uint64]int32 // address → eventfd
	calls int
	fail  bool // refuse every assignment
}

func newFakeIOEventFDs() *fakeIOEventFDs { return &fakeIOEventFDs{regs: map[uint64]int32{}} }

func (f *fakeIOEventFDs) IOEventFD(e kvm.IOEventFD) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if e.Len != notifyWriteLen || e.FD < 0 || e.Flags&^kvm.IOEventFDDeassign != 0 {
		return fmt.Errorf("unexpected ioeventfd %+v", e)
	}
	fd, ok := f.regs[e.Addr]
	if e.Flags&kvm.IOEventFDDeassign != 0 {
		if !ok || fd != e.FD {
			return unix.ENOENT
		}
		delete(f.regs, e.Addr)
		return nil
	}
	if f.fail {
		return unix.ENOSYS
	}
	if ok {
		return unix.EEXIST
	}
	f.regs[e.Addr] = e.FD
	return nil
}

// addrs returns the registered addresses, sorted.
func (f *fakeIOEventFDs) addrs() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.regs))
}

// fd returns the eventfd registered at addr, or -1.
func (f *fakeIOEventFDs) fd(addr uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fd, ok := f.regs[addr]; ok {
		return int(fd)
	}
	return -1
}

// fakeBAR is a movable BAR 0.
type fakeBAR struct {
	mu     sync.Mutex
	base   uint64
	mapped bool
}

func (b *fakeBAR) get() (uint64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.base, b.mapped
}

func (b *fakeBAR) set(base uint64, mapped bool) {
	b.mu.Lock()
	b.base, b.mapped = base, mapped
	b.mu.Unlock()
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// notifyAddrs returns the notify addresses of nq queues at base.
func notifyAddrs(base uint64, nq int) []uint64 {
	var out []uint64
	for i := 0; i < nq; i++ {
		out = append(out, virtio.NotifyAddress(base, i))
	}
	return out
}

// signal writes to an eventfd as KVM does on a matching guest write.
func signal(t *testing.T, fd int) {
	t.Helper()
	if fd < 0 {
		t.Fatal("no eventfd registered")
	}
	if _, err := unix.Write(fd, binary.NativeEndian.AppendUint64(nil, 1)); err != nil {
		t.Fatalf("writing the eventfd: %v", err)
	}
}

func TestNotifiersFollowBAR(t *testing.T) {
	const a, b = 0xc000_0000, 0xc001_0000
	k := newFakeIOEventFDs()
	n := newNotifiers(quietLog())
	bar0 := &fakeBAR{base: a, mapped: true}
	bar1 := &fakeBAR{} // not decoded yet
	if err := n.add("dev0", 2, bar0.get, noWatch, noUnwatch); err != nil {
		t.Fatal(err)
	}
	if err := n.add("dev1", 3, bar1.get, noWatch, noUnwatch); err != nil {
		t.Fatal(err)
	}
	n.sync() // before attach: nothing to register with
	if k.calls != 0 {
		t.Fatalf("%d ioctls before attach", k.calls)
	}
	if err := n.attach(k); err != nil {
		t.Fatal(err)
	}
	check := func(step string, want ...uint64) {
		t.Helper()
		slices.Sort(want)
		if got := k.addrs(); !slices.Equal(got, want) {
			t.Fatalf("%s: registered %#x, want %#x", step, got, want)
		}
	}
	check("attached", notifyAddrs(a, 2)...)

	bar1.set(b, true)
	n.sync()
	check("dev1 mapped", append(notifyAddrs(a, 2), notifyAddrs(b, 3)...)...)
	fd := k.fd(virtio.NotifyAddress(b, 1))

	// The guest moves dev1's BAR: the same eventfds follow it.
	const c = 0xc002_0000
	bar1.set(c, true)
	n.sync()
	check("dev1 moved", append(notifyAddrs(a, 2), notifyAddrs(c, 3)...)...)
	if got := k.fd(virtio.NotifyAddress(c, 1)); got != fd {
		t.Errorf("queue 1 moved with eventfd %d, want %d", got, fd)
	}

	calls := k.calls
	n.sync()
	if k.calls != calls {
		t.Errorf("sync without a change made %d ioctls", k.calls-calls)
	}

	// Memory Space off: dev0's registrations go.
	bar0.set(a, false)
	n.sync()
	check("dev0 disabled", notifyAddrs(c, 3)...)
	bar0.set(a, true)
	n.sync()
	check("dev0 enabled", append(notifyAddrs(a, 2), notifyAddrs(c, 3)...)...)

	n.close()
	check("closed")
	n.close() // idempotent
	bar0.set(b, true)
	n.sync()
	check("sync after close")
}

func TestNotifiersFallBackToMMIO(t *testing.T) {
	k := newFakeIOEventFDs()
	k.fail = true
	n := newNotifiers(quietLog())
	bar := &fakeBAR{base: 0xc000_0000, mapped: true}
	if err := n.add("dev0", 2, bar.get, noWatch, noUnwatch); err != nil {
		t.Fatal(err)
	}
	if err := n.attach(k); err != nil {
		t.Fatal(err)
	}
	if got := k.addrs(); len(got) != 0 {
		t.Fatalf("registered %#x with a failing KVM", got)
	}
	if !n.logged {
		t.Error("the failure was not logged")
	}
	// KVM recovers (say the colliding BAR moved away): the next re-decode
	// registers.
	k.mu.Lock()
	k.fail = false
	k.mu.Unlock()
	n.sync()
	if got, want := k.addrs(), notifyAddrs(0xc000_0000, 2); !slices.Equal(got, want) {
		t.Fatalf("registered %#x, want %#x", got, want)
	}
	n.close()
}

// fakeWatcher records the eventfds a device is handed.
type fakeWatcher struct {
	mu      sync.Mutex
	fds     map[int]int // queue → eventfd
	fail    int         // refuse this queue (-1: none)
	unwatch []int       // queues taken back, in order
}

func (w *fakeWatcher) watch(i, fd int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if i == w.fail {
		return unix.ENOMEM
	}
	if _, dup := w.fds[i]; dup {
		return fmt.Errorf("queue %d watched twice", i)
	}
	w.fds[i] = fd
	return nil
}

func (w *fakeWatcher) unwatchFD(i, fd int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fds[i] == fd {
		// Still open: the notifiers close an eventfd only after taking
		// it back.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			panic(fmt.Sprintf("queue %d: eventfd %d closed before unwatch: %v", i, fd, err))
		}
		delete(w.fds, i)
		w.unwatch = append(w.unwatch, i)
	}
}

func noWatch(int, int) error { return nil }
func noUnwatch(int, int)     {}

// TestNotifiersHandOverEventfds checks that each queue's device gets the
// eventfd KVM signals for that queue, gets it back before it is closed,
// and that a device refusing one leaves every queue on the MMIO path.
func TestNotifiersHandOverEventfds(t *testing.T) {
	const base = 0xc000_0000
	tests := []struct {
		name      string
		fail      int
		wantAddrs int
	}{
		{"all watched", -1, 3},
		{"queue 1 refused", 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newFakeIOEventFDs()
			n := newNotifiers(quietLog())
			w := &fakeWatcher{fds: map[int]int{}, fail: tt.fail}
			bar := &fakeBAR{base: base, mapped: true}
			if err := n.add("dev0", 3, bar.get, w.watch, w.unwatchFD); err != nil {
				t.Fatal(err)
			}
			err := n.attach(k)
			if got := len(k.addrs()); got != tt.wantAddrs {
				t.Fatalf("attach (%v): %d registrations, want %d", err, got, tt.wantAddrs)
			}
			if tt.fail >= 0 {
				if err == nil {
					t.Fatal("attach succeeded with a refusing device")
				}
				if len(w.fds) != 0 {
					t.Fatalf("eventfds left with the device: %v", w.fds)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				if got, want := w.fds[i], k.fd(virtio.NotifyAddress(base, i)); got != want {
					t.Errorf("queue %d: device watches eventfd %d, KVM signals %d", i, got, want)
				}
			}
			n.close()
			if len(w.fds) != 0 || len(w.unwatch) != 3 {
				t.Fatalf("after close: still watched %v, taken back %v", w.fds, w.unwatch)
			}
		})
	}
}

// TestNotifierDeliversEventfd signals a queue's eventfd as KVM does on
// the guest's notify write: the transport's worker, which waits on it,
// processes the queue without any other notification.
func TestNotifierDeliversEventfd(t *testing.T) {
	m := virtiotest.NewMachine(t, rng.New())
	d := virtiotest.NewDriver(t, m)
	qs := virtiotest.Activate(t, virtiotest.Suite{QueueSize: 8}, d)
	k := newFakeIOEventFDs()
	n := newNotifiers(quietLog())
	t.Cleanup(n.close)
	if err := n.add("rng", 1, func() (uint64, bool) { return transportBAR0(m.Transport) },
		m.Transport.WatchNotifyFD, m.Transport.UnwatchNotifyFD); err != nil {
		t.Fatal(err)
	}
	if err := n.attach(k); err != nil {
		t.Fatal(err)
	}
	base, ok := transportBAR0(m.Transport)
	if !ok {
		t.Fatal("BAR 0 not decoded")
	}
	q := qs[0]
	for round := 0; round < 3; round++ {
		head := q.AvailIdx % q.Size
		q.SetDesc(head, d.Alloc(16, 8), 16, virtiotest.DescWrite, 0)
		q.Publish(head)
		signal(t, k.fd(virtio.NotifyAddress(base, 0)))
		d.WaitMSI(1)
		if used := q.TakeUsed(); len(used) != 1 || used[0].ID != uint32(head) {
			t.Fatalf("round %d: used %+v, want head %d", round, used, head)
		}
		q.SetUsedEvent(q.LastUsed)
	}
}

// TestNotifierWhilePaused sends a notification through the eventfd while
// the transport is paused (as during a migration's stop-and-copy): it is
// held, and serviced on Resume.
func TestNotifierWhilePaused(t *testing.T) {
	m := virtiotest.NewMachine(t, rng.New())
	d := virtiotest.NewDriver(t, m)
	qs := virtiotest.Activate(t, virtiotest.Suite{QueueSize: 8}, d)
	k := newFakeIOEventFDs()
	n := newNotifiers(quietLog())
	t.Cleanup(n.close)
	err := n.add("rng", 1, func() (uint64, bool) { return transportBAR0(m.Transport) },
		m.Transport.WatchNotifyFD, m.Transport.UnwatchNotifyFD)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.attach(k); err != nil {
		t.Fatal(err)
	}
	base, ok := transportBAR0(m.Transport)
	if !ok {
		t.Fatal("BAR 0 not decoded")
	}
	if err := m.Transport.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	q := qs[0]
	q.SetDesc(0, d.Alloc(16, 8), 16, virtiotest.DescWrite, 0)
	q.Publish(0)
	signal(t, k.fd(virtio.NotifyAddress(base, 0)))
	// No worker runs while paused (Pause waited for it), so nothing can
	// have used the buffer, however long the signal took.
	if idx := q.UsedIdx(); idx != 0 {
		t.Fatalf("processed while paused: used idx %d", idx)
	}
	if err := m.Transport.Resume(); err != nil {
		t.Fatal(err)
	}
	d.WaitMSI(1)
	if used := q.TakeUsed(); len(used) != 1 {
		t.Errorf("used after resume: %+v", used)
	}
}

// TestPCINotifiers checks the VM wiring: registrations follow the BAR the
// guest programs through configuration cycles, and a migration
// destination registers where the restored BARs are.
func TestPCINotifiers(t *testing.T) {
	src := newPCITestVM(t, Config{CPUs: 1, RNG: true})
	k := newFakeIOEventFDs()
	if err := src.notify.attach(k); err != nil {
		t.Fatal(err)
	}
	dev := src.pciDevs[0]
	base, ok := transportBAR0(dev.t)
	if !ok {
		t.Fatal("BAR 0 not decoded")
	}
	nq := dev.t.Device().NumQueues()
	if got, want := k.addrs(), notifyAddrs(base, nq); !slices.Equal(got, want) {
		t.Fatalf("registered %#x, want %#x", got, want)
	}

	// The guest moves BAR 0 by 1 MiB, then turns Memory Space off.
	moved := base + 1<<20
	cfgWrite(t, src, int(dev.slot), pci.RegBAR0, uint32(moved))
	if got, want := k.addrs(), notifyAddrs(moved, nq); !slices.Equal(got, want) {
		t.Fatalf("after the move: registered %#x, want %#x", got, want)
	}
	cmd := cfgRead(t, src, int(dev.slot), pci.RegCommand)
	sections, err := src.savePCIState()
	if err != nil {
		t.Fatal(err)
	}
	cfgWrite(t, src, int(dev.slot), pci.RegCommand, cmd&^pci.CommandMemory)
	if got := k.addrs(); len(got) != 0 {
		t.Fatalf("Memory Space off: registered %#x", got)
	}

	// The destination registers at its default BAR on attach, then where
	// the source's guest put it once restored.
	dst := newPCITestVM(t, Config{CPUs: 1, RNG: true})
	kd := newFakeIOEventFDs()
	if err := dst.notify.attach(kd); err != nil {
		t.Fatal(err)
	}
	byID := map[string]migrate.Section{}
	for _, s := range sections {
		byID[s.ID] = s
	}
	if err := dst.restorePCIState(byID); err != nil {
		t.Fatal(err)
	}
	if got, want := kd.addrs(), notifyAddrs(moved, nq); !slices.Equal(got, want) {
		t.Fatalf("destination: registered %#x, want %#x", got, want)
	}
	dst.closeDevices()
	if got := kd.addrs(); len(got) != 0 {
		t.Fatalf("closed destination: registered %#x", got)
	}
}

// cfgWrite writes a configuration dword of bus 0 slot through the VM's
// port-I/O bus.
func cfgWrite(t *testing.T, v *VM, slot, reg int, val uint32) {
	t.Helper()
	v.pio.Write(pci.ConfigAddressPort, binary.LittleEndian.AppendUint32(nil, 1<<31|uint32(slot)<<11|uint32(reg)))
	v.pio.Write(pci.ConfigAddressPort+4, binary.LittleEndian.AppendUint32(nil, val))
}

// TestNotifiersOnKVM creates (but does not run) a VM with a virtio device
// on /dev/kvm and checks that its queues got ioeventfds and that Close
// releases them. It skips without /dev/kvm.
func TestNotifiersOnKVM(t *testing.T) {
	v := newKVMTestVM(t, Config{CPUs: 1, MemoryBytes: 64 << 20, RNG: true, Serial: SerialConfig{Mode: "none"}, Log: quietLog()})
	if n, err := v.sys.CheckExtension(kvm.CapIOEventFD); err != nil || n == 0 {
		t.Skipf("no KVM_CAP_IOEVENTFD: %d, %v", n, err)
	}
	base, ok := transportBAR0(v.pciDevs[0].t)
	if !ok {
		t.Fatal("BAR 0 not decoded")
	}
	v.notify.mu.Lock()
	var got []uint64
	for _, d := range v.notify.devs {
		for _, q := range d.queues {
			if q.registered {
				got = append(got, q.addr)
			}
		}
	}
	v.notify.mu.Unlock()
	if want := notifyAddrs(base, v.pciDevs[0].t.Device().NumQueues()); !slices.Equal(got, want) {
		t.Fatalf("registered %#x, want %#x", got, want)
	}
	// KVM holds them: registering the same address again collides.
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := v.vm.IOEventFD(kvm.IOEventFD{Addr: got[0], Len: v.notify.width, FD: int32(efd)}); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("second registration at %#x = %v, want EEXIST", got[0], err)
	}
	if err := v.closeDevices(); err != nil {
		t.Fatal(err)
	}
	// Released: the address is free again.
	e := kvm.IOEventFD{Addr: got[0], Len: v.notify.width, FD: int32(efd)}
	if err := v.vm.IOEventFD(e); err != nil {
		t.Fatalf("registering at %#x after close: %v", got[0], err)
	}
	e.Flags = kvm.IOEventFDDeassign
	if err := v.vm.IOEventFD(e); err != nil {
		t.Fatal(err)
	}
}
