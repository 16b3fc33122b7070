package pci

// Type 0 configuration header offsets (PCI Local Bus Specification 3.0
// §6.1, figure 6-1).
const (
	RegVendorID      = 0x00
	RegDeviceID      = 0x02
	RegCommand       = 0x04
	RegStatus        = 0x06
	RegRevisionID    = 0x08
	RegClassCode     = 0x09 // three bytes: programming interface, subclass, base class
	RegCacheLineSize = 0x0c
	RegLatencyTimer  = 0x0d
	RegHeaderType    = 0x0e
	RegBAR0          = 0x10
	RegSubsysVendor  = 0x2c
	RegSubsysID      = 0x2e
	RegExpansionROM  = 0x30
	RegCapPointer    = 0x34
	RegInterruptLine = 0x3c
	RegInterruptPin  = 0x3d

	// HeaderSize is the size of the predefined header; capabilities
	// follow it.
	HeaderSize = 0x40
	// ConfigSize is the size of a conventional PCI configuration space.
	ConfigSize = 0x100
	// NumBARs is the number of base address registers of a type 0 header.
	NumBARs = 6
)

// Command register bits (§6.2.2).
const (
	CommandIO          = 1 << 0
	CommandMemory      = 1 << 1
	CommandBusMaster   = 1 << 2
	CommandParity      = 1 << 6
	CommandSERR        = 1 << 8
	CommandINTxDisable = 1 << 10

	commandWritable = CommandIO | CommandMemory | CommandBusMaster | CommandParity | CommandSERR | CommandINTxDisable
)

// Status register bits (§6.2.3).
const (
	StatusINTx    = 1 << 3 // interrupt status (PCI 2.3)
	StatusCapList = 1 << 4 // capabilities list present
)

// BAR low bits (§6.2.5.1).
const (
	barMem64       = 0x4
	barPrefetch    = 0x8
	barMemTypeMask = 0xf
)

// Capability IDs (PCI Code and ID Assignment Specification §2).
const (
	CapIDVendor = 0x09
	CapIDMSIX   = 0x11
)

// Interrupt pins for RegInterruptPin (§6.2.4).
const (
	PinNone = 0
	PinA    = 1
	PinB    = 2
	PinC    = 3
	PinD    = 4
)

// Layout of godwit's PCI MMIO window: the bottom of the 32-bit MMIO hole up
// to the region holding the IOAPIC (0xFEC00000) and the local APIC
// (0xFEE00000), which stays outside the window.
const (
	WindowBase uint64 = 0xC000_0000
	WindowEnd  uint64 = 0xFE00_0000
	WindowSize        = WindowEnd - WindowBase

	// ConfigAddressPort is the CONFIG_ADDRESS port; CONFIG_DATA follows
	// at ConfigAddressPort+4. Register ConfigIO there with ConfigIOSize.
	ConfigAddressPort uint64 = 0xcf8
	// ConfigIOSize is the number of ports ConfigIO covers.
	ConfigIOSize uint64 = 8
)
