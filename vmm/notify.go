package vmm

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"golang.org/x/sys/unix"

	"godwit/devices/pci"
	"godwit/devices/virtio"
	"godwit/vmm/kvm"
)

// Virtqueue notifications through KVM ioeventfds.
//
// A driver notifies queue i with a 4-byte write to
// virtio.NotifyAddress(BAR 0, i). Without help that write is an MMIO exit
// handled on the vCPU thread (vcpu.go → MMIO bus → PCI window → the
// transport's notify region). With KVM_IOEVENTFD, KVM instead signals an
// eventfd and resumes the guest at once. The transport's worker waits on
// its queues' eventfds itself (Transport.WatchNotifyFD, an epoll set in
// devices/virtio), so the signal wakes the thread that processes the
// queue: no goroutine here reads the eventfd and hands the notification
// on. The MMIO path stays: it serves other write sizes, queues whose
// registration failed, and hosts without KVM_CAP_IOEVENTFD.
//
// Registrations follow BAR 0: the PCI bus calls notifiers.sync after every
// re-decode (device added, guest moves a BAR or toggles Memory Space,
// configuration space restored on a migration destination), and sync
// moves each queue's registration to where the BAR now is, or drops it
// while the BAR is not decoded. The eventfds live as long as the VM and
// stay in the worker's epoll set, so a move never loses a notification
// already signalled.
//
// Pause and migration need nothing here: a signal while the transport is
// paused stays in the worker's epoll set and is serviced on Resume; a
// restored transport services every live queue once when it runs (on a
// destination: when the VM starts), covering a notification that was
// still in an eventfd on the source when its state was saved.

// ioEventFDs is the part of the KVM VM the notifiers use: *kvm.VM
// implements it, tests fake it.
type ioEventFDs interface {
	IOEventFD(kvm.IOEventFD) error
}

// notifyLen is the stride of the notify registers (one dword per queue,
// notify_off_multiplier 4): the span of guest addresses one queue's
// notifications may use.
const notifyLen = 4

// notifyWriteLen is the width of the write a driver notifies with: the
// 16-bit queue index (virtio 1.x §4.1.4.4; Linux uses iowrite16). KVM
// signals an ioeventfd only for a write of exactly its length, so the
// notifiers register this width where KVM cannot match any width
// (KVM_CAP_IOEVENTFD_ANY_LENGTH); writes of other widths then take the
// MMIO path, as before.
const notifyWriteLen = 2

// notifyQueue is one virtqueue's eventfd and its KVM registration.
type notifyQueue struct {
	fd         int    // the eventfd, watched by the device's worker
	addr       uint64 // the registered guest-physical address
	registered bool   // a KVM_IOEVENTFD assignment at addr is in place
}

// notifyDevice is the notify region of one virtio device.
type notifyDevice struct {
	name string
	nq   int
	bar0 func() (base uint64, ok bool) // where BAR 0 is decoded now
	// owns, if set, reports whether a notify write at addr reaches this
	// device through the MMIO path now (another device's BAR may cover
	// the address): only then may KVM take the write instead.
	owns func(addr uint64) bool
	// watch hands queue i's eventfd to the device, which waits on it
	// (Transport.WatchNotifyFD); unwatch takes it back before it is
	// closed.
	watch   func(i, fd int) error
	unwatch func(i, fd int)
	queues  []*notifyQueue // nil until the notifiers are attached
}

// notifiers owns the ioeventfds of every virtio queue of a VM. Its methods
// are safe for concurrent use; sync runs on vCPU threads.
type notifiers struct {
	log *slog.Logger

	mu     sync.Mutex
	kvm    ioEventFDs // nil until attached (or without ioeventfd support)
	devs   []*notifyDevice
	closed bool
	logged bool // a registration failure was logged
	// width is the length the eventfds are registered with:
	// notifyWriteLen, or 0 (any width) where KVM supports it.
	width uint32
}

// newNotifiers returns notifiers that register nothing until attached.
func newNotifiers(log *slog.Logger) *notifiers {
	if log == nil {
		log = slog.Default()
	}
	return &notifiers{log: log, width: notifyWriteLen}
}

// add adds a device with nq queues whose BAR 0 bar0 reports and whose
// eventfds watch and unwatch hand over and take back.
func (n *notifiers) add(name string, nq int, bar0 func() (uint64, bool), watch func(i, fd int) error, unwatch func(i, fd int)) error {
	return n.addDevice(&notifyDevice{name: name, nq: nq, bar0: bar0, watch: watch, unwatch: unwatch})
}

// addDevice adds d.
func (n *notifiers) addDevice(d *notifyDevice) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("notifiers closed")
	}
	n.devs = append(n.devs, d)
	if n.kvm != nil {
		if err := n.openLocked(d); err != nil {
			return err
		}
		n.syncLocked()
	}
	return nil
}

// addTransport adds a virtio-pci transport on bus: its queues get
// ioeventfds only where bus routes their notify writes to it.
func (n *notifiers) addTransport(name string, t *virtio.Transport, bus *pci.Bus) error {
	return n.addDevice(&notifyDevice{
		name: name, nq: t.Device().NumQueues(), watch: t.WatchNotifyFD, unwatch: t.UnwatchNotifyFD,
		bar0: func() (uint64, bool) { return transportBAR0(t) },
		owns: func(addr uint64) bool {
			fn, ok := bus.FunctionAt(addr, notifyLen)
			return ok && fn == pci.Function(t)
		},
	})
}

// transportBAR0 returns where t's BAR 0 is decoded, if it is decoded
// inside the PCI window (the only place the MMIO bus routes it to the
// transport, so the only place a notification can be meant for it).
func transportBAR0(t *virtio.Transport) (uint64, bool) {
	for _, m := range t.Config().BARs() {
		if m.Index != 0 {
			continue
		}
		end := m.Base + m.Size
		if m.Base < pci.WindowBase || end > pci.WindowEnd || end < m.Base {
			return 0, false
		}
		return m.Base, true
	}
	return 0, false
}

// setWidth sets the length the eventfds are registered with (0: any
// width); call it before attach.
func (n *notifiers) setWidth(w uint32) {
	n.mu.Lock()
	n.width = w
	n.mu.Unlock()
}

// attach opens an eventfd for every queue and hands it to the device,
// then registers them with k where the BARs are now. On error nothing is
// registered and notifications keep exiting to userspace.
func (n *notifiers) attach(k ioEventFDs) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("notifiers closed")
	}
	if n.kvm != nil {
		return errors.New("notifiers already attached")
	}
	for _, d := range n.devs {
		if err := n.openLocked(d); err != nil {
			for _, d := range n.devs {
				n.closeDeviceLocked(d)
			}
			return err
		}
	}
	n.kvm = k
	n.syncLocked()
	return nil
}

// openLocked opens d's eventfds and hands them to the device; mu is
// held. On error d has none.
func (n *notifiers) openLocked(d *notifyDevice) error {
	for i := 0; i < d.nq; i++ {
		// Nonblocking: nobody here reads it, and a stray read elsewhere
		// must not hang.
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			n.closeDeviceLocked(d)
			return fmt.Errorf("%s queue %d: eventfd: %w", d.name, i, err)
		}
		if err := d.watch(i, fd); err != nil {
			unix.Close(fd)
			n.closeDeviceLocked(d)
			return fmt.Errorf("%s queue %d: %w", d.name, i, err)
		}
		d.queues = append(d.queues, &notifyQueue{fd: fd})
	}
	return nil
}

// sync moves every queue's registration to where its BAR 0 is decoded
// now. The PCI bus calls it after every re-decode.
func (n *notifiers) sync() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.syncLocked()
}

// syncLocked is sync with mu held.
//
// A guest may make BARs overlap, so that a queue's notify register lies
// in another device's BAR, or two queues' registers share an address.
// KVM takes one ioeventfd per address and would swallow the write, while
// the MMIO path routes it to the device in the lowest slot (pci.Bus
// decodes overlapping BARs in slot order): so a queue is registered only
// where its device owns the address, and only one queue per address (the
// first, in slot order). Other writes keep the MMIO path, which leads
// where the PCI decode says. Registrations that move or lose their
// address are dropped before any is made, so a swap of two BARs never
// collides with a stale registration.
func (n *notifiers) syncLocked() {
	if n.kvm == nil || n.closed {
		return
	}
	type want struct {
		addr uint64
		ok   bool
	}
	claimed := map[uint64]bool{}
	wants := make([][]want, len(n.devs))
	for di, d := range n.devs {
		base, mapped := d.bar0()
		wants[di] = make([]want, len(d.queues))
		for i := range d.queues {
			addr := virtio.NotifyAddress(base, i)
			if mapped && !claimed[addr] && (d.owns == nil || d.owns(addr)) {
				claimed[addr] = true
				wants[di][i] = want{addr, true}
			}
		}
	}
	for di, d := range n.devs {
		for i, q := range d.queues {
			if w := wants[di][i]; q.registered && (!w.ok || q.addr != w.addr) {
				n.deassignLocked(d, i, q)
			}
		}
	}
	for di, d := range n.devs {
		for i, q := range d.queues {
			w := wants[di][i]
			if !w.ok || q.registered {
				continue
			}
			if err := n.kvm.IOEventFD(kvm.IOEventFD{Addr: w.addr, Len: n.width, FD: int32(q.fd)}); err != nil {
				n.failedLocked(d, i, w.addr, err)
				continue
			}
			q.addr, q.registered = w.addr, true
		}
	}
}

// deassignLocked drops q's registration; mu is held. A failure is logged
// and forgotten: the eventfd then keeps receiving writes to the old
// address, which at worst are spurious notifications, until the VM is
// closed.
func (n *notifiers) deassignLocked(d *notifyDevice, i int, q *notifyQueue) {
	err := n.kvm.IOEventFD(kvm.IOEventFD{Addr: q.addr, Len: n.width, FD: int32(q.fd), Flags: kvm.IOEventFDDeassign})
	if err != nil {
		n.log.Warn("deregistering a queue notification ioeventfd", "name", d.name, "queue", i,
			"addr", fmt.Sprintf("%#x", q.addr), "err", err)
	}
	q.registered = false
}

// failedLocked records a failed registration; the queue keeps MMIO exits.
// Only the first failure is logged.
func (n *notifiers) failedLocked(d *notifyDevice, i int, addr uint64, err error) {
	if n.logged {
		return
	}
	n.logged = true
	n.log.Debug("queue notifications exit to userspace: KVM_IOEVENTFD failed", "name", d.name, "queue", i,
		"addr", fmt.Sprintf("%#x", addr), "err", err)
}

// closeDeviceLocked deregisters d's eventfds, takes them back from the
// device and closes them; mu is held.
func (n *notifiers) closeDeviceLocked(d *notifyDevice) {
	for i, q := range d.queues {
		if q.registered {
			n.deassignLocked(d, i, q)
		}
		d.unwatch(i, q.fd)
		unix.Close(q.fd)
	}
	d.queues = nil
}

// close deregisters every ioeventfd, takes the eventfds back from the
// devices and closes them. Call it before closing the KVM VM. It is
// idempotent.
func (n *notifiers) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		n.closed = true
		for _, d := range n.devs {
			n.closeDeviceLocked(d)
		}
	}
}

// attachNotifiers registers the queue notification ioeventfds with KVM.
// Without KVM_CAP_IOEVENTFD, or if that fails, notifications keep exiting
// to userspace; that is logged once, at debug level.
func (v *VM) attachNotifiers() {
	if v.notify == nil {
		return
	}
	if n, err := v.sys.CheckExtension(kvm.CapIOEventFD); err != nil || n == 0 {
		v.log.Debug("queue notifications exit to userspace: no KVM_CAP_IOEVENTFD", "err", err)
		return
	}
	// A registration of length 0 matches a write of any width: the
	// 16-bit notifications of Linux and the 32-bit ones of other
	// drivers alike. Without that, 16 bits, what the spec prescribes.
	if n, err := v.sys.CheckExtension(kvm.CapIOEventFDAnyLength); err == nil && n > 0 {
		v.notify.setWidth(0)
	}
	if err := v.notify.attach(v.vm); err != nil {
		v.log.Debug("queue notifications exit to userspace", "err", err)
	}
}
