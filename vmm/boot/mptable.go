package boot

import (
	"encoding/binary"
	"fmt"

	"godwit/vmm/memory"
)

// MP table constants (Intel MultiProcessor Specification 1.4, chapter 4).
const (
	// MaxCPUs is the largest vCPU count WriteMPTable accepts.
	MaxCPUs = 16
	// IOAPICAddr is the IOAPIC's MMIO base (KVM's in-kernel IOAPIC).
	IOAPICAddr uint32 = 0xfec00000
	// IOAPICPins is the number of redirection entries of KVM's IOAPIC.
	IOAPICPins = 24
	// LAPICAddr is the local APICs' MMIO base.
	LAPICAddr uint32 = 0xfee00000

	ioapicVersion = 0x11 // KVM's IOAPIC version register
	lapicVersion  = 0x14 // KVM's local APIC version register
	mpSpecRev     = 4    // MP spec 1.4
	// cpuSignature is family 6, model 10, stepping 5 (MP spec table 4-5):
	// plausible, and only printed by Linux.
	cpuSignature = 0x6<<8 | 0xa<<4 | 0x5
	// cpuFeatures are CPUID.1:EDX bits FPU (0) and APIC (9).
	cpuFeatures = 1<<0 | 1<<9

	mpFloatingSize = 16 // struct mpf_intel
	mpHeaderSize   = 44 // struct mpc_table
	mpProcSize     = 20 // struct mpc_cpu
	mpEntrySize    = 8  // bus, IOAPIC, I/O and local interrupt entries
	mpMaxTableSize = MPFloatingPointerAddr - MPTableAddr
)

// MP configuration table entry types (MP spec table 4-3).
const (
	mpEntryProcessor      = 0
	mpEntryBus            = 1
	mpEntryIOAPIC         = 2
	mpEntryIOInterrupt    = 3
	mpEntryLocalInterrupt = 4
)

// Interrupt types of I/O and local interrupt entries (MP spec table 4-10).
const (
	// MPIntINT is a vectored interrupt (vector from the IOAPIC entry).
	MPIntINT uint8 = 0
	// MPIntNMI is a non-maskable interrupt.
	MPIntNMI uint8 = 1
	// MPIntSMI is a system management interrupt.
	MPIntSMI uint8 = 2
	// MPIntExtINT is an 8259-compatible external interrupt.
	MPIntExtINT uint8 = 3
)

// Interrupt entry flags (MP spec table 4-10): polarity in bits 0-1, trigger
// mode in bits 2-3; zero means "conforms to the bus" (ISA: edge, active
// high; PCI: level, active low).
const (
	// MPFlagsConforming leaves polarity and trigger mode to the bus.
	MPFlagsConforming uint16 = 0
	// MPFlagsActiveHigh selects active-high polarity.
	MPFlagsActiveHigh uint16 = 1
	// MPFlagsActiveLow selects active-low polarity.
	MPFlagsActiveLow uint16 = 3
	// MPFlagsEdge selects edge triggering.
	MPFlagsEdge uint16 = 1 << 2
	// MPFlagsLevel selects level triggering.
	MPFlagsLevel uint16 = 3 << 2
)

// MP bus IDs. Linux matches the PCI bus's MP ID against the PCI bus number,
// so the PCI bus must be ID 0.
const (
	// MPBusPCI is the bus ID of PCI bus 0.
	MPBusPCI uint8 = 0
	// MPBusISA is the bus ID of the ISA bus.
	MPBusISA uint8 = 1
)

// isaIRQs is the number of ISA IRQs routed to IOAPIC pins of the same
// number.
const isaIRQs = 16

// MPInterrupt is an I/O interrupt assignment entry (MP spec 4.3.4): source
// bus IRQ SourceIRQ on SourceBus drives IOAPIC input IOAPICPin. It mirrors
// the fields of struct mpc_intsrc (arch/x86/include/asm/mpspec_def.h) but
// the destination IOAPIC, which is always the one IOAPIC.
type MPInterrupt struct {
	// Type is MPIntINT, MPIntNMI, MPIntSMI or MPIntExtINT.
	Type uint8
	// Flags are polarity and trigger mode, MPFlagsConforming or an OR of
	// one MPFlagsActive* and one of MPFlagsEdge/MPFlagsLevel.
	Flags uint16
	// SourceBus is MPBusISA or MPBusPCI.
	SourceBus uint8
	// SourceIRQ is the ISA IRQ (0-15), or for PCI device<<2 | (pin-1)
	// (see PCIInterrupt).
	SourceIRQ uint8
	// IOAPICPin is the IOAPIC input, 0 to IOAPICPins-1; with KVM's default
	// GSI routing it is the GSI.
	IOAPICPin uint8
}

// PCIInterrupt returns the I/O interrupt entry routing INTx pin (1 = INTA to
// 4 = INTD) of PCI bus 0 device dev (0-31) to IOAPIC input ioapicPin, level
// triggered active low as PCI conforms to. dev and pin are masked to their
// ranges; WriteMPConfig validates ioapicPin.
func PCIInterrupt(dev, pin, ioapicPin uint8) MPInterrupt {
	return MPInterrupt{
		Type:      MPIntINT,
		Flags:     MPFlagsConforming,
		SourceBus: MPBusPCI,
		SourceIRQ: (dev&31)<<2 | (pin-1)&3,
		IOAPICPin: ioapicPin,
	}
}

// MPConfig describes the machine an MP table is written for.
type MPConfig struct {
	// CPUs is the number of vCPUs, 1 to MaxCPUs, with local APIC IDs 0 to
	// CPUs-1; vCPU 0 is the bootstrap processor.
	CPUs int
	// Interrupts are I/O interrupt entries added after the ones routing
	// ISA IRQ n to IOAPIC pin n (n = 0..15), typically PCI INTx routes.
	Interrupts []MPInterrupt
}

// MPTableSize returns the size of the MP configuration table for cfg, the
// floating pointer not included; it must not exceed 3 KiB
// (MPFloatingPointerAddr - MPTableAddr), room for more than 300 extra
// interrupt entries with 16 CPUs.
func MPTableSize(cfg MPConfig) uint64 {
	entries := 2 + 1 + isaIRQs + len(cfg.Interrupts) + 2 // buses, IOAPIC, I/O, local
	return mpHeaderSize + uint64(cfg.CPUs)*mpProcSize + uint64(entries)*mpEntrySize
}

// WriteMPTable writes the MP table for cpus vCPUs and no interrupt entries
// beyond the ISA ones: WriteMPConfig(mem, MPConfig{CPUs: cpus}).
func WriteMPTable(mem *memory.Memory, cpus int) error {
	return WriteMPConfig(mem, MPConfig{CPUs: cpus})
}

// WriteMPConfig writes an Intel MultiProcessor Specification 1.4 table: the
// floating pointer at MPFloatingPointerAddr (the last KiB of base memory,
// which Linux scans) and the configuration table at MPTableAddr, both
// checksummed, so that Linux finds every vCPU and routes interrupts through
// KVM's in-kernel IOAPIC. The configuration table holds:
//   - one processor entry per vCPU: local APIC ID i, enabled, BSP flag on 0;
//   - bus entries PCI (ID MPBusPCI) and ISA (ID MPBusISA);
//   - one IOAPIC, ID cfg.CPUs, version 0x11, at IOAPICAddr;
//   - I/O interrupt entries ISA IRQ n -> IOAPIC pin n for n = 0..15. IRQ 0
//     goes to pin 0, not pin 2 as on PCs with an interrupt source override:
//     KVM's default GSI routing connects GSI n to pin n and its in-kernel
//     PIT raises GSI 0, so Linux's timer check finds ticks on pin 0
//     (Firecracker does the same);
//   - cfg.Interrupts;
//   - local interrupt entries ExtINT -> LINT0 of the BSP and NMI -> LINT1
//     of every local APIC.
//
// The whole MP area [MPTableAddr, MPAreaEnd) is rewritten.
func WriteMPConfig(mem *memory.Memory, cfg MPConfig) error {
	if cfg.CPUs < 1 || cfg.CPUs > MaxCPUs {
		return fmt.Errorf("MP table: %d vCPUs, must be 1 to %d", cfg.CPUs, MaxCPUs)
	}
	for i, irq := range cfg.Interrupts {
		if err := irq.validate(); err != nil {
			return fmt.Errorf("MP table: interrupt entry %d: %w", i, err)
		}
	}
	if size := MPTableSize(cfg); size > mpMaxTableSize {
		return fmt.Errorf("MP table: %d bytes for %d vCPUs and %d extra interrupts, room for %d", size, cfg.CPUs, len(cfg.Interrupts), mpMaxTableSize)
	}

	ioapicID := uint8(cfg.CPUs)
	le := binary.LittleEndian
	t := make([]byte, mpHeaderSize, MPTableSize(cfg))
	count := 0
	for id := range cfg.CPUs {
		flags := uint8(1) // CPU enabled
		if id == 0 {
			flags |= 2 // bootstrap processor
		}
		t = append(t, mpEntryProcessor, uint8(id), lapicVersion, flags)
		t = le.AppendUint32(t, cpuSignature)
		t = le.AppendUint32(t, cpuFeatures)
		t = append(t, make([]byte, 8)...) // reserved
		count++
	}
	for _, b := range []struct {
		id   uint8
		name string
	}{{MPBusPCI, "PCI   "}, {MPBusISA, "ISA   "}} {
		t = append(t, mpEntryBus, b.id)
		t = append(t, b.name...)
		count++
	}
	t = append(t, mpEntryIOAPIC, ioapicID, ioapicVersion, 1) // enabled
	t = le.AppendUint32(t, IOAPICAddr)
	count++
	irqs := make([]MPInterrupt, 0, isaIRQs+len(cfg.Interrupts))
	for n := range uint8(isaIRQs) {
		irqs = append(irqs, MPInterrupt{Type: MPIntINT, SourceBus: MPBusISA, SourceIRQ: n, IOAPICPin: n})
	}
	for _, irq := range append(irqs, cfg.Interrupts...) {
		t = append(t, mpEntryIOInterrupt, irq.Type)
		t = le.AppendUint16(t, irq.Flags)
		t = append(t, irq.SourceBus, irq.SourceIRQ, ioapicID, irq.IOAPICPin)
		count++
	}
	for _, l := range []struct{ typ, lapic, lint uint8 }{
		{MPIntExtINT, 0, 0}, // PIC output to the BSP's LINT0 (virtual wire)
		{MPIntNMI, 0xff, 1}, // NMI to LINT1 of every local APIC
	} {
		t = append(t, mpEntryLocalInterrupt, l.typ)
		t = le.AppendUint16(t, MPFlagsConforming)
		t = append(t, MPBusISA, 0, l.lapic, l.lint)
		count++
	}

	// Header: struct mpc_table (MP spec 4.2, table 4-2).
	copy(t[0:4], "PCMP")
	le.PutUint16(t[4:], uint16(len(t))) // base table length
	t[6] = mpSpecRev
	copy(t[8:16], "GODWIT  ")      // OEM ID
	copy(t[16:28], "GODWIT VMM  ") // product ID
	// OEM table pointer and size stay zero.
	le.PutUint16(t[34:], uint16(count))
	le.PutUint32(t[36:], LAPICAddr)
	// Extended table length and checksum stay zero.
	t[7] = checksum(t)

	// Floating pointer: struct mpf_intel (MP spec 4.1, table 4-1).
	fp := make([]byte, mpFloatingSize)
	copy(fp[0:4], "_MP_")
	le.PutUint32(fp[4:], uint32(MPTableAddr))
	fp[8] = 1 // length in 16-byte paragraphs
	fp[9] = mpSpecRev
	// fp[11]: feature byte 1 zero = a configuration table is present;
	// fp[12]: bit 7 (IMCR) clear = virtual wire mode, no IMCR.
	fp[10] = checksum(fp)

	area := make([]byte, MPAreaEnd-MPTableAddr)
	copy(area, t)
	copy(area[MPFloatingPointerAddr-MPTableAddr:], fp)
	if err := mem.Write(MPTableAddr, area); err != nil {
		return fmt.Errorf("writing MP table: %w", err)
	}
	return nil
}

// validate checks an extra I/O interrupt entry.
func (irq MPInterrupt) validate() error {
	if irq.Type > MPIntExtINT {
		return fmt.Errorf("interrupt type %d unknown", irq.Type)
	}
	if irq.Flags&^0xf != 0 || irq.Flags&3 == 2 || irq.Flags>>2 == 2 {
		return fmt.Errorf("flags %#x invalid", irq.Flags)
	}
	switch irq.SourceBus {
	case MPBusISA:
		if irq.SourceIRQ >= isaIRQs {
			return fmt.Errorf("ISA IRQ %d out of range", irq.SourceIRQ)
		}
	case MPBusPCI:
		if irq.SourceIRQ >= 32<<2 {
			return fmt.Errorf("PCI source %#x out of range (device 0-31, pin INTA-INTD)", irq.SourceIRQ)
		}
	default:
		return fmt.Errorf("source bus %d unknown", irq.SourceBus)
	}
	if irq.IOAPICPin >= IOAPICPins {
		return fmt.Errorf("IOAPIC pin %d out of range (0-%d)", irq.IOAPICPin, IOAPICPins-1)
	}
	return nil
}

// checksum returns the byte that makes the bytes of b (with b's checksum
// field still zero) sum to zero.
func checksum(b []byte) byte {
	var sum byte
	for _, c := range b {
		sum += c
	}
	return -sum
}
