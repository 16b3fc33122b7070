package pci

import "godwit/devices"

// Function is one PCI function on bus 0. The configuration space is a
// ConfigSpace the function builds (so BAR sizing, the command register,
// INTx and the capability list behave the same for every function); the
// function itself only serves accesses to its memory BARs.
type Function interface {
	// Config returns the function's configuration space. It must return
	// the same value on every call.
	Config() *ConfigSpace
	// ReadBAR fills data from offset within memory BAR bar. The access
	// lies entirely inside the BAR; the guest chose offset and width.
	ReadBAR(bar int, offset uint64, data []byte)
	// WriteBAR stores data at offset within memory BAR bar.
	WriteBAR(bar int, offset uint64, data []byte)
}

// MSIDelivery sends a message-signalled interrupt: the VMM implements it
// with KVM_SIGNAL_MSI (or an irqfd with an MSI route). It is called with
// the function's MSI-X lock held and must not call back into the function.
type MSIDelivery interface {
	// SignalMSI writes data to the message address addr.
	SignalMSI(addr uint64, data uint32) error
}

// INTxLine is the level-triggered INTx line of a function, routed to an
// IOAPIC input.
type INTxLine = devices.IRQLine

// BARKind is the type of a base address register.
type BARKind uint8

// BAR kinds. I/O BARs are not supported: every godwit device uses memory
// BARs.
const (
	BARNone  BARKind = iota // unimplemented: reads as zero, ignores writes
	BARMem32                // 32-bit memory BAR
	BARMem64                // 64-bit memory BAR; uses the next BAR slot too
)

// BAR describes one base address register of a function.
type BAR struct {
	// Kind is the BAR type.
	Kind BARKind
	// Size is the size in bytes: a power of two, at least 16.
	Size uint64
	// Prefetchable sets the prefetchable bit.
	Prefetchable bool
}

// Header is the read-only identity of a function.
type Header struct {
	VendorID, DeviceID uint16
	Revision           uint8
	// Class is the 24-bit class code: base class, subclass, programming
	// interface (e.g. 0x060000 for a host bridge).
	Class                    uint32
	SubsysVendorID, SubsysID uint16
	// InterruptPin is PinNone or PinA..PinD.
	InterruptPin uint8
	// BARs describes BAR 0 to 5. A BARMem64 entry at i makes entry i+1 its
	// upper half, which must be BARNone.
	BARs [NumBARs]BAR
}

// BARMapping is a memory BAR the function currently decodes.
type BARMapping struct {
	// Index is the BAR number.
	Index int
	// Base is the guest-physical address programmed by the guest (or by
	// Bus.Add).
	Base uint64
	// Size is the BAR size in bytes.
	Size uint64
}
