// Package virtiotest is test support for virtio devices: a Machine (guest
// RAM, a PCI bus and a transport, with recording interrupt sinks), a
// Driver that plays the guest's virtio-pci driver through configuration
// cycles and BAR accesses exactly as a guest would, and Run, the
// conformance suite every device passes.
package virtiotest

import (
	"sync/atomic"
	"testing"
	"time"

	"godwit/devices/pci"
	"godwit/devices/virtio"
	"godwit/vmm/memory"
)

// RAMSize is the guest RAM of a Machine.
const RAMSize = 16 << 20

// WaitTimeout bounds every wait for an interrupt; reaching it fails the
// test (it is a deadline, not a synchronisation delay).
const WaitTimeout = 10 * time.Second

// MSI is a pci.MSIDelivery recording messages on a channel.
type MSI struct {
	C    chan MSIMessage
	hook atomic.Pointer[func(MSIMessage) bool]
}

// SetHook makes h see every message first, on the delivering goroutine;
// a message h takes (it returns true) does not go to C. A benchmark uses
// it to deliver interrupts to a thread blocked in the kernel, as KVM's
// irqfds do. nil removes the hook.
func (m *MSI) SetHook(h func(MSIMessage) bool) {
	if h == nil {
		m.hook.Store(nil)
		return
	}
	m.hook.Store(&h)
}

// MSIMessage is one delivered message.
type MSIMessage struct {
	Addr uint64
	Data uint32
}

// SignalMSI implements pci.MSIDelivery. It never blocks: beyond the
// channel's capacity messages are dropped.
func (m *MSI) SignalMSI(addr uint64, data uint32) error {
	if h := m.hook.Load(); h != nil && (*h)(MSIMessage{addr, data}) {
		return nil
	}
	select {
	case m.C <- MSIMessage{addr, data}:
	default:
	}
	return nil
}

// Line is an INTx line recording level changes on a channel.
type Line struct {
	C chan bool
}

// SetLevel implements pci.INTxLine.
func (l *Line) SetLevel(high bool) {
	select {
	case l.C <- high:
	default:
	}
}

// Machine is a minimal guest platform for one virtio device.
type Machine struct {
	Mem       *memory.Memory
	Bus       *pci.Bus
	Transport *virtio.Transport
	MSI       *MSI
	INTx      *Line
	Slot      uint8
}

// NewMachine builds RAM, a PCI bus and a transport for dev in slot 1. The
// transport is closed and RAM released when the test ends.
func NewMachine(t testing.TB, dev virtio.Device) *Machine {
	t.Helper()
	mem, err := memory.New(RAMSize)
	if err != nil {
		t.Fatal(err)
	}
	m := &Machine{Mem: mem, MSI: &MSI{C: make(chan MSIMessage, 1024)}, INTx: &Line{C: make(chan bool, 1024)}}
	m.Bus, err = pci.NewBus(pci.BusConfig{INTx: func(uint8) pci.INTxLine { return m.INTx }})
	if err != nil {
		t.Fatal(err)
	}
	m.Transport, err = virtio.NewTransport(dev, mem, m.MSI)
	if err != nil {
		t.Fatal(err)
	}
	m.Slot, err = m.Bus.Add(m.Transport)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Transport.Close()
		mem.Close()
	})
	return m
}

// CopyRAM copies guest RAM from src to m, as a migration would.
func (m *Machine) CopyRAM(src *Machine) {
	for i := range m.Mem.Regions() {
		copy(m.Mem.RegionHost(i), src.Mem.RegionHost(i))
	}
}
