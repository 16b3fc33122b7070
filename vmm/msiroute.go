package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"golang.org/x/sys/unix"

	"godwit/internal/rawsys"
	"godwit/vmm/kvm"
)

// MSI delivery through KVM GSI routes and irqfds.
//
// A device worker that fires an MSI-X vector hands its message (address,
// data) to msiRoutes.SignalMSI. The first time a message is seen, it gets
// a GSI of its own (from firstMSIGSI up), an MSI route for that GSI in
// KVM's routing table and an eventfd bound to the GSI with KVM_IRQFD; from
// then on delivering it is one write(2) to the eventfd, which KVM turns
// into the interrupt in the writer's context, no ioctl and no vCPU exit.
// Only messages KVM injects synchronously get routes (see routable). Messages are few
// (one per vector, re-programmed only when the guest moves an interrupt),
// so routes are never evicted: once maxMSIRoutes messages have routes, or
// if KVM refuses a route or an irqfd, the remaining messages go through
// KVM_SIGNAL_MSI as before. Nothing here is migrated: the routes are a
// cache of the MSI-X tables, which are, and the destination rebuilds them
// on first use.

// firstMSIGSI is the first GSI given to an MSI route: GSIs 0-23 are the
// IOAPIC's pins (0-15 also the PICs').
const firstMSIGSI = 24

// maxMSIRoutes bounds the routes (and eventfds) a VM's MSI messages get;
// a guest that keeps re-programming vectors cannot exhaust KVM's routing
// table or this process's file descriptors.
const maxMSIRoutes = 1024

// msiKVM is the part of the KVM VM MSI delivery uses: *kvm.VM implements
// it, tests fake it.
type msiKVM interface {
	SetGSIRouting([]kvm.IRQRoutingEntry) error
	IRQFD(fd int, gsi uint32, flags uint32, resampleFD int) error
	SignalMSI(kvm.MSI) (bool, error)
}

// msiMessage is an MSI message: where the device writes and what.
type msiMessage struct {
	addr uint64
	data uint32
}

// msiRoute is a message's GSI and the eventfd bound to it.
type msiRoute struct {
	gsi uint32
	fd  int
}

// msiRoutes delivers MSI messages for one VM. It is safe for concurrent
// use by device workers.
type msiRoutes struct {
	log *slog.Logger
	k   msiKVM

	mu       sync.RWMutex
	routes   map[msiMessage]msiRoute
	table    []kvm.IRQRoutingEntry // the whole routing table KVM has
	fallback bool                  // routing failed once: every message uses KVM_SIGNAL_MSI
	closed   bool
	warned   bool // a KVM_SIGNAL_MSI failure was logged
}

// newMSIRoutes returns MSI delivery through k. With routing false (no
// KVM_CAP_IRQ_ROUTING or KVM_CAP_IRQFD) every message uses KVM_SIGNAL_MSI.
func newMSIRoutes(k msiKVM, routing bool, log *slog.Logger) *msiRoutes {
	if log == nil {
		log = slog.Default()
	}
	return &msiRoutes{log: log, k: k, routes: map[msiMessage]msiRoute{}, fallback: !routing}
}

// defaultIRQRoutes is the routing table KVM_CREATE_IRQCHIP installs: GSIs
// 0-15 to both PICs and the IOAPIC, 16-23 to the IOAPIC. Setting a table
// replaces it, so every table godwit sets starts with these.
func defaultIRQRoutes() []kvm.IRQRoutingEntry {
	var t []kvm.IRQRoutingEntry
	for gsi := uint32(0); gsi < firstMSIGSI; gsi++ {
		switch {
		case gsi < 8:
			t = append(t, kvm.IRQChipRoute(gsi, kvm.IRQChipPICMaster, gsi))
		case gsi < 16:
			t = append(t, kvm.IRQChipRoute(gsi, kvm.IRQChipPICSlave, gsi-8))
		}
		t = append(t, kvm.IRQChipRoute(gsi, kvm.IRQChipIOAPIC, gsi))
	}
	return t
}

// SignalMSI implements pci.MSIDelivery.
func (r *msiRoutes) SignalMSI(addr uint64, data uint32) error {
	m := msiMessage{addr, data}
	r.mu.RLock()
	route, ok := r.routes[m]
	if ok {
		err := signalEventFD(route.fd)
		r.mu.RUnlock()
		return err
	}
	r.mu.RUnlock()

	r.mu.Lock()
	route, ok = r.routes[m]
	if !ok {
		route, ok = r.addLocked(m)
	}
	if ok {
		err := signalEventFD(route.fd)
		r.mu.Unlock()
		return err
	}
	r.mu.Unlock()
	return r.signalDirect(m)
}

// MSI message fields (Intel SDM vol. 3 §11.11): address bit 2 is the
// destination mode (1 logical), bits 12-19 the destination APIC ID; data
// bits 8-10 the delivery mode (0 fixed).
const (
	msiAddrDestLogical = 1 << 2
	msiAddrDestShift   = 12
	msiDataModeMask    = 7 << 8
	msiBroadcastDest   = 0xff
)

// routable reports whether KVM injects m in the eventfd writer's context:
// a fixed-delivery message to one APIC in physical destination mode
// (what Linux programs). Other messages may have KVM defer the injection
// to a worker, which could run after a pause has saved the APIC state and
// so lose the interrupt in a migration; they keep KVM_SIGNAL_MSI, which
// injects before it returns.
func routable(m msiMessage) bool {
	return m.addr&msiAddrDestLogical == 0 && m.data&msiDataModeMask == 0 &&
		(m.addr>>msiAddrDestShift)&0xff != msiBroadcastDest
}

// addLocked gives m a GSI route and an irqfd; mu is held for writing. It
// reports false when m must go through KVM_SIGNAL_MSI instead.
func (r *msiRoutes) addLocked(m msiMessage) (msiRoute, bool) {
	if r.fallback || r.closed || len(r.routes) >= maxMSIRoutes || !routable(m) {
		return msiRoute{}, false
	}
	if r.table == nil {
		r.table = defaultIRQRoutes()
	}
	gsi := uint32(firstMSIGSI + len(r.routes))
	table := append(r.table[:len(r.table):len(r.table)], kvm.MSIRoute(gsi, uint32(m.addr), uint32(m.addr>>32), m.data))
	if err := r.k.SetGSIRouting(table); err != nil {
		r.disableLocked("KVM_SET_GSI_ROUTING", err)
		return msiRoute{}, false
	}
	r.table = table
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		r.disableLocked("eventfd", err)
		return msiRoute{}, false
	}
	if err := r.k.IRQFD(fd, gsi, 0, -1); err != nil {
		unix.Close(fd)
		r.disableLocked("KVM_IRQFD", err)
		return msiRoute{}, false
	}
	route := msiRoute{gsi: gsi, fd: fd}
	r.routes[m] = route
	r.log.Debug("MSI route", "gsi", gsi, "addr", fmt.Sprintf("%#x", m.addr), "data", fmt.Sprintf("%#x", m.data))
	return route, true
}

// disableLocked switches every later new message to KVM_SIGNAL_MSI after
// a routing step failed; mu is held. Messages routed so far keep their
// routes.
func (r *msiRoutes) disableLocked(step string, err error) {
	r.fallback = true
	r.log.Warn("MSI delivery falls back to KVM_SIGNAL_MSI", "step", step, "err", err)
}

// signalDirect delivers m with KVM_SIGNAL_MSI.
func (r *msiRoutes) signalDirect(m msiMessage) error {
	_, err := r.k.SignalMSI(kvm.MSI{AddressLo: uint32(m.addr), AddressHi: uint32(m.addr >> 32), Data: m.data})
	if err != nil {
		r.mu.Lock()
		first := !r.warned
		r.warned = true
		r.mu.Unlock()
		if first {
			r.log.Warn("MSI", "addr", fmt.Sprintf("%#x", m.addr), "data", fmt.Sprintf("%#x", m.data), "err", err)
		}
	}
	return err
}

// signalEventFD adds one to the eventfd's counter (nonblocking: through
// internal/rawsys). EAGAIN (the counter is at its maximum) means
// interrupts are pending anyway.
func signalEventFD(fd int) error {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, err := rawsys.Write(fd, one[:])
	if errors.Is(err, unix.EAGAIN) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("signalling an MSI eventfd: %w", err)
	}
	return nil
}

// routeCount returns how many messages have routes.
func (r *msiRoutes) routeCount() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.routes)
}

// close closes the eventfds (KVM drops an irqfd whose eventfd closes) and
// sends every later message through KVM_SIGNAL_MSI. Call it after the
// device workers have stopped, before the KVM VM is closed. It is
// idempotent.
func (r *msiRoutes) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	for m, route := range r.routes {
		unix.Close(route.fd)
		delete(r.routes, m)
	}
}
