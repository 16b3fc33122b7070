package pci

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// MaxSlots is the number of device numbers on bus 0 (§3.2.2.3.2).
const MaxSlots = 32

// DefaultINTxGSIs are the IOAPIC inputs PCI INTx lines are routed to: the
// ones above the 16 ISA IRQs on KVM's 24-pin IOAPIC.
var DefaultINTxGSIs = []uint8{16, 17, 18, 19, 20, 21, 22, 23}

// BusConfig configures a Bus.
type BusConfig struct {
	// INTxGSIs are the IOAPIC inputs INTx pins are swizzled over
	// (nil: DefaultINTxGSIs).
	INTxGSIs []uint8
	// INTx returns the line driving IOAPIC input gsi. nil, or a nil
	// result, drops INTx for that input.
	INTx func(gsi uint8) INTxLine
	// OnDecode, if set, is called after the bus re-decodes the BARs: when
	// a function is added, when the guest changes a BAR or a command
	// register, and when a function's configuration space is restored.
	// It runs on the goroutine that caused the change (a vCPU thread for
	// guest writes), possibly with a device's own lock held, so it must
	// not call back into the bus's configuration cycles; it reads the
	// current BAR addresses with ConfigSpace.BARs. Concurrent changes may
	// call it concurrently.
	OnDecode func()
}

// Route is the INTx routing of one function: describe it to the guest with
// boot.PCIInterrupt(Slot, Pin, GSI) in the MP table.
type Route struct {
	// Slot is the device number on bus 0.
	Slot uint8
	// Pin is the interrupt pin, PinA to PinD.
	Pin uint8
	// GSI is the IOAPIC input the pin is wired to.
	GSI uint8
}

// barDecode is one BAR the MMIO window currently routes.
type barDecode struct {
	base, size uint64
	fn         Function
	bar        int
}

// Bus is PCI bus 0 behind the root complex: configuration mechanism 1 on
// ports 0xCF8-0xCFF, a host bridge at 00:00.0, up to 31 more single-function
// devices, and the MMIO window where their BARs live. It is safe for
// concurrent use by several vCPU threads.
type Bus struct {
	gsis     []uint8
	intx     func(gsi uint8) INTxLine
	onDecode func()

	mu       sync.Mutex // serialises CONFIG_ADDRESS/CONFIG_DATA and Add
	addr     uint32     // CONFIG_ADDRESS
	slots    [MaxSlots]Function
	routes   []Route
	nextMMIO uint64

	decodeMu sync.Mutex // serialises rebuilds of decode
	decode   atomic.Pointer[[]barDecode]
	fns      atomic.Pointer[[MaxSlots]Function] // copy of slots for refresh

	host *HostBridge
}

// NewBus returns a bus with the host bridge at slot 0.
func NewBus(cfg BusConfig) (*Bus, error) {
	gsis := cfg.INTxGSIs
	if gsis == nil {
		gsis = DefaultINTxGSIs
	}
	if len(gsis) == 0 {
		return nil, fmt.Errorf("pci: no INTx GSIs")
	}
	b := &Bus{gsis: append([]uint8(nil), gsis...), intx: cfg.INTx, onDecode: cfg.OnDecode, nextMMIO: WindowBase}
	b.decode.Store(&[]barDecode{})
	b.fns.Store(&[MaxSlots]Function{})
	hb, err := NewHostBridge()
	if err != nil {
		return nil, err
	}
	b.host = hb
	if err := b.addAt(0, hb); err != nil {
		return nil, err
	}
	return b, nil
}

// HostBridge returns the host bridge at 00:00.0.
func (b *Bus) HostBridge() *HostBridge { return b.host }

// Add places fn in the lowest free slot, allocates its memory BARs in the
// MMIO window (naturally aligned, upward from WindowBase), enables memory
// decoding as firmware would, and routes its interrupt pin. Functions must
// be added in the same order on a migration source and destination.
func (b *Bus) Add(fn Function) (uint8, error) {
	b.mu.Lock()
	slot := -1
	for i := 1; i < MaxSlots; i++ {
		if b.slots[i] == nil {
			slot = i
			break
		}
	}
	b.mu.Unlock()
	if slot < 0 {
		return 0, fmt.Errorf("pci: bus 0 is full")
	}
	if err := b.addAt(uint8(slot), fn); err != nil {
		return 0, err
	}
	return uint8(slot), nil
}

// addAt places fn at slot.
func (b *Bus) addAt(slot uint8, fn Function) error {
	if fn == nil || fn.Config() == nil {
		return fmt.Errorf("pci: slot %d: nil function", slot)
	}
	cs := fn.Config()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.slots[slot] != nil {
		return fmt.Errorf("pci: slot %d is taken", slot)
	}
	for _, f := range b.slots {
		if f != nil && f.Config() == cs {
			return fmt.Errorf("pci: function added twice")
		}
	}
	// Allocate every BAR first so that a failure leaves no trace.
	next := b.nextMMIO
	var bases [NumBARs]uint64
	for i := 0; i < NumBARs; i++ {
		bar := cs.BAR(i)
		if bar.Kind == BARNone {
			continue
		}
		base := (next + bar.Size - 1) &^ (bar.Size - 1)
		if base < next || base+bar.Size > WindowEnd || base+bar.Size < base {
			return fmt.Errorf("pci: slot %d BAR %d (%#x bytes) does not fit in the MMIO window", slot, i, bar.Size)
		}
		bases[i] = base
		next = base + bar.Size
	}
	var gsi uint8
	var line INTxLine
	pin := cs.hdrByte(RegInterruptPin)
	if pin != PinNone {
		gsi = b.gsis[(int(slot)+int(pin)-1)%len(b.gsis)]
		if b.intx != nil {
			line = b.intx(gsi)
		}
		b.routes = append(b.routes, Route{Slot: slot, Pin: pin, GSI: gsi})
	}
	b.nextMMIO = next
	for i, base := range bases {
		if cs.BAR(i).Kind != BARNone {
			cs.setBARBase(i, base)
		}
	}
	if cs.hasBARs() {
		cs.Write(RegCommand, []byte{CommandMemory, 0})
	}
	cs.attach(line, gsi, b.refresh)
	b.slots[slot] = fn
	fns := b.slots
	b.fns.Store(&fns)
	b.refresh()
	return nil
}

// Routes returns the INTx routing of every function with an interrupt pin,
// for the MP table.
func (b *Bus) Routes() []Route {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Route(nil), b.routes...)
}

// Function returns the function in slot, or nil.
func (b *Bus) Function(slot int) Function {
	if slot < 0 || slot >= MaxSlots {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.slots[slot]
}
