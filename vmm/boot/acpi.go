package boot

import (
	"encoding/binary"
	"fmt"

	"godwit/vmm/memory"
)

// ACPI tables (ACPI Specification 6.5, chapter 5). godwit describes just
// enough of the machine for a stock Linux kernel to power it off: the
// tables below, written by WriteACPI into the BIOS area, and the PM1 event
// and control blocks of package devices (ACPIPM) at ACPIPM1aEventBlock.
//
//	0xe0000 RSDP   "RSD PTR ", revision 2 (ACPI 2.0+), points at RSDT and XSDT
//	0xe0040 FACS   firmware ACPI control structure (64-byte aligned; no waking vector)
//	0xe0080 XSDT   FADT, MADT (64-bit pointers)
//	0xe00c0 RSDT   FADT, MADT (32-bit pointers, for ACPI 1.0 readers)
//	0xe0100 FADT   revision 6.4, hardware-full, SCI_INT 9, SMI_CMD 0 (ACPI
//	               always enabled), PM1a_EVT_BLK 0x600 (4 ports),
//	               PM1a_CNT_BLK 0x604 (2 ports), no PM timer, no GPE block
//	0xe0300 MADT   local APICs, the IOAPIC, the SCI override, LINT1 NMI
//	0xe0400 DSDT   \_S5_ and, with PCI, \_SB_.PCI0 (PNP0A03: _CRS, _PRT)
//	        up to ACPIAreaEnd (0xe2000)
//
// Linux finds the RSDP by scanning [0xe0000, 0x100000) on 16-byte
// boundaries; the area lies in the legacy ROM hole, which the e820 map
// leaves out, so the guest never takes it for RAM.
//
// Why a MADT: with ACPI present and no MADT, Linux assumes a uniprocessor
// PIC machine and discards the MP table ("No APIC-table, disabling MPS"),
// so the MADT repeats what the MP table says: the vCPUs, the IOAPIC and
// the ISA IRQ n -> GSI n routing (IRQ 0 included: KVM's PIT raises GSI 0).
//
// Why a PCI host bridge in the DSDT: with ACPI interrupt routing Linux
// scans PCI only below host bridges the namespace declares, and takes INTx
// routes from their _PRT, not from the MP table.

// Guest-physical addresses of the ACPI tables; see the map above.
const (
	// ACPIAreaStart is the first address of the ACPI area, where the RSDP
	// goes: the start of the range Linux scans for "RSD PTR ".
	ACPIAreaStart uint64 = 0xe0000
	// ACPIRSDPAddr is the Root System Description Pointer (§5.2.5).
	ACPIRSDPAddr = ACPIAreaStart
	// ACPIFACSAddr is the Firmware ACPI Control Structure (§5.2.10).
	ACPIFACSAddr uint64 = 0xe0040
	// ACPIXSDTAddr is the Extended System Description Table (§5.2.8).
	ACPIXSDTAddr uint64 = 0xe0080
	// ACPIRSDTAddr is the Root System Description Table (§5.2.7).
	ACPIRSDTAddr uint64 = 0xe00c0
	// ACPIFADTAddr is the Fixed ACPI Description Table (§5.2.9).
	ACPIFADTAddr uint64 = 0xe0100
	// ACPIMADTAddr is the Multiple APIC Description Table (§5.2.12).
	ACPIMADTAddr uint64 = 0xe0300
	// ACPIDSDTAddr is the Differentiated System Description Table
	// (§5.2.11.1); it may run up to ACPIAreaEnd.
	ACPIDSDTAddr uint64 = 0xe0400
	// ACPIAreaEnd is the end of the ACPI area.
	ACPIAreaEnd uint64 = 0xe2000
)

// ACPI fixed hardware godwit provides (package devices, ACPIPM).
const (
	// ACPIPM1aEventBlock is the I/O port of PM1a_EVT_BLK: PM1_STS at +0,
	// PM1_EN at +2 (§4.8.3.1).
	ACPIPM1aEventBlock uint16 = 0x600
	// ACPIPM1EventLen is PM1_EVT_LEN, the event block's size in ports.
	ACPIPM1EventLen = 4
	// ACPIPM1aControlBlock is the I/O port of PM1a_CNT_BLK, PM1_CNT
	// (§4.8.3.2).
	ACPIPM1aControlBlock uint16 = 0x604
	// ACPIPM1ControlLen is PM1_CNT_LEN, the control block's size in ports.
	ACPIPM1ControlLen = 2
	// ACPISCI is the ISA IRQ (and GSI) of the system control interrupt.
	ACPISCI = 9
	// ACPISleepTypeS5 is the SLP_TYP value the DSDT's \_S5_ object gives
	// for the soft-off state: the guest writes it with SLP_EN to power off.
	ACPISleepTypeS5 = 5
)

// ACPIPCIHost describes PCI bus 0 for the DSDT's host bridge.
type ACPIPCIHost struct {
	// MemBase and MemEnd bound the 32-bit memory window [MemBase, MemEnd)
	// in which the bus places BARs; the host bridge's _CRS produces it.
	MemBase, MemEnd uint64
	// Routes are the INTx routes, one _PRT entry each.
	Routes []ACPIPCIRoute
}

// ACPIPCIRoute routes one INTx pin of a bus-0 device to a GSI (a _PRT
// entry, §6.2.13).
type ACPIPCIRoute struct {
	// Slot is the device number, 0-31.
	Slot uint8
	// Pin is the interrupt pin as in the configuration header: 1 (INTA)
	// to 4 (INTD).
	Pin uint8
	// GSI is the IOAPIC input, below IOAPICPins.
	GSI uint8
}

// ACPIConfig describes the machine WriteACPI writes tables for.
type ACPIConfig struct {
	// CPUs is the number of vCPUs, 1 to MaxCPUs, local APIC IDs 0 to
	// CPUs-1 (as in the MP table).
	CPUs int
	// PCI describes PCI bus 0; nil when the VM has no PCI bus, and the
	// DSDT then declares no host bridge.
	PCI *ACPIPCIHost
}

// Table sizes and revisions.
const (
	acpiHeaderSize = 36  // System Description Table Header (§5.2.6, table 5.4)
	rsdpSize       = 36  // ACPI 2.0+ RSDP (§5.2.5.3, table 5.3)
	rsdpV1Size     = 20  // the part the first checksum covers
	facsSize       = 64  // §5.2.10, table 5.14
	fadtSize       = 276 // FADT revision 6 (§5.2.9, table 5.9)
	fadtRevision   = 6
	fadtMinor      = 4 // ACPI 6.4
	madtRevision   = 5
	dsdtRevision   = 2 // 2 and above: AML integers are 64-bit
	xsdtRevision   = 1
	rsdtRevision   = 1
	acpiOEMID      = "GODWIT"
	acpiOEMTableID = "GODWITVM"
	acpiCreatorID  = "GDWT"
)

// FADT field offsets (§5.2.9, table 5.9).
const (
	fadtFirmwareCtrl  = 36
	fadtDSDT          = 40
	fadtPMProfile     = 45
	fadtSCIInt        = 46
	fadtSMICmd        = 48
	fadtPM1aEvtBlk    = 56
	fadtPM1aCntBlk    = 64
	fadtPMTmrBlk      = 76
	fadtPM1EvtLen     = 88
	fadtPM1CntLen     = 89
	fadtPLvl2Lat      = 96
	fadtPLvl3Lat      = 98
	fadtIAPCBootArch  = 109
	fadtFlags         = 112
	fadtMinorRevision = 131
	fadtXDSDT         = 140
	fadtXPM1aEvtBlk   = 148
	fadtXPM1aCntBlk   = 172
)

// FADT IA-PC boot architecture flags (§5.2.9.3, table 5.11).
const (
	bootArchLegacyDevices = 1 << 0 // ISA devices not enumerated in ACPI (COM1, CMOS, ...)
	bootArch8042          = 1 << 1 // an 8042 at 0x60/0x64 (godwit's reset line)
	bootArchNoVGA         = 1 << 2 // no VGA hardware
	bootArchNoASPM        = 1 << 4 // conventional PCI: OSPM must not touch ASPM
	// Bit 3 (MSI not supported) stays clear: virtio-pci uses MSI-X.
	// Bit 5 (CMOS RTC not present) stays clear: devices.CMOS is at 0x70.
)

// FADT feature flags (§5.2.9, table 5.10).
const (
	fadtWBINVD    = 1 << 0 // WBINVD flushes caches correctly
	fadtProcC1    = 1 << 2 // C1 (HLT) works on every processor
	fadtSlpButton = 1 << 5 // no fixed-feature sleep button
	// Bit 4 (PWR_BUTTON) stays clear: the power button is a fixed feature
	// (PWRBTN_STS/PWRBTN_EN in PM1), which devices.ACPIPM implements.
	// Bit 20 (HW_REDUCED_ACPI) stays clear: PM1 blocks and the SCI exist.
)

// MADT structure types and sizes (§5.2.12, table 5.21).
const (
	madtLocalAPIC     = 0 // §5.2.12.2, 8 bytes
	madtIOAPIC        = 1 // §5.2.12.3, 12 bytes
	madtIntOverride   = 2 // §5.2.12.5, 10 bytes
	madtLocalAPICNMI  = 4 // §5.2.12.7, 6 bytes
	madtHeaderSize    = acpiHeaderSize + 8
	madtPCATCompat    = 1      // MADT flags: dual 8259s present (KVM's PIC)
	madtLAPICEnabled  = 1      // local APIC flags: enabled
	madtAllProcessors = 0xff   // ACPI processor UID meaning "all"
	madtSCIFlags      = 0x000d // MPS INTI flags: level triggered (3<<2), active high (1)
)

// Generic Address Structure address space IDs and access sizes (§5.2.3.2).
const (
	gasSystemIO = 1
	gasWord     = 2 // access size: 16-bit
)

// WriteACPI writes the ACPI tables for cfg into [ACPIAreaStart,
// ACPIAreaEnd), each with a correct checksum (see the map at the top of
// this file). The whole area is rewritten, zero-filled around the tables.
func WriteACPI(mem *memory.Memory, cfg ACPIConfig) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("ACPI tables: %w", err)
	}
	dsdt := buildDSDT(cfg)
	if uint64(len(dsdt)) > ACPIAreaEnd-ACPIDSDTAddr {
		return fmt.Errorf("ACPI tables: DSDT is %d bytes, room for %d", len(dsdt), ACPIAreaEnd-ACPIDSDTAddr)
	}
	area := make([]byte, ACPIAreaEnd-ACPIAreaStart)
	place := func(addr uint64, b []byte) { copy(area[addr-ACPIAreaStart:], b) }
	place(ACPIRSDPAddr, buildRSDP())
	place(ACPIFACSAddr, buildFACS())
	place(ACPIXSDTAddr, buildXSDT([]uint64{ACPIFADTAddr, ACPIMADTAddr}))
	place(ACPIRSDTAddr, buildRSDT([]uint32{uint32(ACPIFADTAddr), uint32(ACPIMADTAddr)}))
	place(ACPIFADTAddr, buildFADT())
	place(ACPIMADTAddr, buildMADT(cfg.CPUs))
	place(ACPIDSDTAddr, dsdt)
	if err := mem.Write(ACPIAreaStart, area); err != nil {
		return fmt.Errorf("writing ACPI tables: %w", err)
	}
	return nil
}

// validate checks cfg against what the tables can describe.
func (c ACPIConfig) validate() error {
	if c.CPUs < 1 || c.CPUs > MaxCPUs {
		return fmt.Errorf("%d vCPUs, must be 1 to %d", c.CPUs, MaxCPUs)
	}
	if c.PCI == nil {
		return nil
	}
	if c.PCI.MemBase >= c.PCI.MemEnd || c.PCI.MemEnd > 1<<32 {
		return fmt.Errorf("PCI memory window [%#x, %#x) is empty or above 4 GiB", c.PCI.MemBase, c.PCI.MemEnd)
	}
	for i, r := range c.PCI.Routes {
		if r.Slot > 31 || r.Pin < 1 || r.Pin > 4 || r.GSI >= IOAPICPins {
			return fmt.Errorf("PCI route %d: slot %d pin %d GSI %d out of range (slot 0-31, pin 1-4, GSI 0-%d)", i, r.Slot, r.Pin, r.GSI, IOAPICPins-1)
		}
	}
	return nil
}

// sdtHeader returns a System Description Table of size bytes whose header
// (§5.2.6, table 5.4) is filled but for the checksum; sealSDT sets it.
func sdtHeader(sig string, size int, revision byte) []byte {
	t := make([]byte, size)
	copy(t[0:4], sig)
	binary.LittleEndian.PutUint32(t[4:], uint32(size))
	t[8] = revision
	copy(t[10:16], acpiOEMID)
	copy(t[16:24], acpiOEMTableID)
	binary.LittleEndian.PutUint32(t[24:], 1) // OEM revision
	copy(t[28:32], acpiCreatorID)
	binary.LittleEndian.PutUint32(t[32:], 1) // creator revision
	return t
}

// sealSDT sets the checksum byte (offset 9) so that the table sums to zero.
func sealSDT(t []byte) []byte {
	t[9] = 0
	t[9] = checksum(t)
	return t
}

// buildRSDP returns the RSDP (§5.2.5.3, table 5.3).
func buildRSDP() []byte {
	le := binary.LittleEndian
	r := make([]byte, rsdpSize)
	copy(r[0:8], "RSD PTR ")
	copy(r[9:15], acpiOEMID)
	r[15] = 2 // revision: ACPI 2.0 and later (XSDT present)
	le.PutUint32(r[16:], uint32(ACPIRSDTAddr))
	le.PutUint32(r[20:], rsdpSize)
	le.PutUint64(r[24:], ACPIXSDTAddr)
	r[8] = checksum(r[:rsdpV1Size])
	r[32] = checksum(r)
	return r
}

// buildFACS returns the FACS (§5.2.10, table 5.14). It has no checksum.
// godwit has no S3 or S4, so the waking vectors stay zero.
func buildFACS() []byte {
	f := make([]byte, facsSize)
	copy(f[0:4], "FACS")
	binary.LittleEndian.PutUint32(f[4:], facsSize)
	f[32] = 2 // version
	return f
}

// buildXSDT returns the XSDT (§5.2.8) listing tables.
func buildXSDT(tables []uint64) []byte {
	t := sdtHeader("XSDT", acpiHeaderSize+8*len(tables), xsdtRevision)
	for i, a := range tables {
		binary.LittleEndian.PutUint64(t[acpiHeaderSize+8*i:], a)
	}
	return sealSDT(t)
}

// buildRSDT returns the RSDT (§5.2.7) listing tables.
func buildRSDT(tables []uint32) []byte {
	t := sdtHeader("RSDT", acpiHeaderSize+4*len(tables), rsdtRevision)
	for i, a := range tables {
		binary.LittleEndian.PutUint32(t[acpiHeaderSize+4*i:], a)
	}
	return sealSDT(t)
}

// gas writes a Generic Address Structure (§5.2.3.2, table 5.2) for an I/O
// port range of width bits at b.
func gas(b []byte, port uint16, bits, accessSize byte) {
	b[0] = gasSystemIO
	b[1] = bits
	b[2] = 0 // bit offset
	b[3] = accessSize
	binary.LittleEndian.PutUint64(b[4:], uint64(port))
}

// buildFADT returns the FADT (§5.2.9, table 5.9).
func buildFADT() []byte {
	le := binary.LittleEndian
	f := sdtHeader("FACP", fadtSize, fadtRevision)
	le.PutUint32(f[fadtFirmwareCtrl:], uint32(ACPIFACSAddr))
	le.PutUint32(f[fadtDSDT:], uint32(ACPIDSDTAddr))
	f[fadtPMProfile] = 0 // unspecified
	le.PutUint16(f[fadtSCIInt:], ACPISCI)
	le.PutUint32(f[fadtSMICmd:], 0) // no SMI command port: ACPI mode is fixed on
	le.PutUint32(f[fadtPM1aEvtBlk:], uint32(ACPIPM1aEventBlock))
	le.PutUint32(f[fadtPM1aCntBlk:], uint32(ACPIPM1aControlBlock))
	le.PutUint32(f[fadtPMTmrBlk:], 0) // no PM timer
	f[fadtPM1EvtLen] = ACPIPM1EventLen
	f[fadtPM1CntLen] = ACPIPM1ControlLen
	le.PutUint16(f[fadtPLvl2Lat:], 101)  // > 100: C2 not supported
	le.PutUint16(f[fadtPLvl3Lat:], 1001) // > 1000: C3 not supported
	le.PutUint16(f[fadtIAPCBootArch:], bootArchLegacyDevices|bootArch8042|bootArchNoVGA|bootArchNoASPM)
	le.PutUint32(f[fadtFlags:], fadtWBINVD|fadtProcC1|fadtSlpButton)
	f[fadtMinorRevision] = fadtMinor
	// X_FIRMWARE_CTRL stays zero: ACPI 6.5 table 5.9 requires it when
	// FIRMWARE_CTRL is set (the FACS is below 4 GiB).
	le.PutUint64(f[fadtXDSDT:], ACPIDSDTAddr)
	gas(f[fadtXPM1aEvtBlk:], ACPIPM1aEventBlock, 8*ACPIPM1EventLen, gasWord)
	gas(f[fadtXPM1aCntBlk:], ACPIPM1aControlBlock, 8*ACPIPM1ControlLen, gasWord)
	return sealSDT(f)
}

// madtSize returns the size of the MADT for cpus vCPUs.
func madtSize(cpus int) int { return madtHeaderSize + 8*cpus + 12 + 10 + 6 }

// buildMADT returns the MADT (§5.2.12): one enabled local APIC per vCPU
// (ACPI processor UID = APIC ID = vCPU index), the IOAPIC (ID cpus, as in
// the MP table, GSI base 0), an interrupt source override giving the SCI
// its level trigger, and LINT1 of every local APIC as NMI. ISA IRQs
// without an override map to the GSI of the same number, as the MP table
// routes them.
func buildMADT(cpus int) []byte {
	le := binary.LittleEndian
	t := sdtHeader("APIC", madtSize(cpus), madtRevision)
	le.PutUint32(t[36:], LAPICAddr)
	le.PutUint32(t[40:], madtPCATCompat)
	e := t[madtHeaderSize:]
	for id := range cpus {
		// Processor Local APIC structure (§5.2.12.2, table 5.23).
		e[0], e[1], e[2], e[3] = madtLocalAPIC, 8, byte(id), byte(id)
		le.PutUint32(e[4:], madtLAPICEnabled)
		e = e[8:]
	}
	// I/O APIC structure (§5.2.12.3, table 5.25).
	e[0], e[1], e[2], e[3] = madtIOAPIC, 12, byte(cpus), 0
	le.PutUint32(e[4:], IOAPICAddr)
	le.PutUint32(e[8:], 0) // global system interrupt base
	e = e[12:]
	// Interrupt Source Override (§5.2.12.5, table 5.26): ISA IRQ 9 -> GSI 9.
	e[0], e[1], e[2], e[3] = madtIntOverride, 10, 0, ACPISCI
	le.PutUint32(e[4:], ACPISCI)
	le.PutUint16(e[8:], madtSCIFlags)
	e = e[10:]
	// Local APIC NMI structure (§5.2.12.7, table 5.29): LINT1 of all.
	e[0], e[1], e[2] = madtLocalAPICNMI, 6, madtAllProcessors
	le.PutUint16(e[3:], 0) // flags: conforming
	e[5] = 1               // LINT1
	return sealSDT(t)
}

// buildDSDT returns the DSDT (§5.2.11.1): a header and an AML definition
// block (chapter 20) holding
//
//	Name (\_S5_, Package () { ACPISleepTypeS5, ACPISleepTypeS5, Zero, Zero })
//	Scope (\_SB_) {                       // only with cfg.PCI
//	    Device (PCI0) {
//	        Name (_HID, EisaId ("PNP0A03"))
//	        Name (_UID, Zero)
//	        Name (_CRS, ResourceTemplate () { bus 0; the memory window })
//	        Name (_PRT, Package () { Package () { slot<<16|0xFFFF, pin-1, Zero, GSI }, ... })
//	    }
//	}
//
// \_S5_ (§7.4.2) gives SLP_TYPa and SLP_TYPb for soft-off.
func buildDSDT(cfg ACPIConfig) []byte {
	body := amlName("\\_S5_", amlPackage(amlInt(ACPISleepTypeS5), amlInt(ACPISleepTypeS5), amlInt(0), amlInt(0)))
	if cfg.PCI != nil {
		dev := amlName("_HID", amlInt(eisaID("PNP0A03")))
		dev = append(dev, amlName("_UID", amlInt(0))...)
		dev = append(dev, amlName("_CRS", amlBuffer(pciHostResources(cfg.PCI)))...)
		if len(cfg.PCI.Routes) > 0 {
			var prt [][]byte
			for _, r := range cfg.PCI.Routes {
				// _PRT entry (§6.2.13, table 6.2): address (device in the
				// high word, any function), pin (0 = INTA), source (Zero:
				// the fourth field is a GSI), source index.
				prt = append(prt, amlPackage(amlInt(uint64(r.Slot)<<16|0xffff), amlInt(uint64(r.Pin-1)), amlInt(0), amlInt(uint64(r.GSI))))
			}
			dev = append(dev, amlName("_PRT", amlPackage(prt...))...)
		}
		body = append(body, amlScope("\\_SB_", amlDevice("PCI0", dev))...)
	}
	t := sdtHeader("DSDT", acpiHeaderSize+len(body), dsdtRevision)
	copy(t[acpiHeaderSize:], body)
	return sealSDT(t)
}

// pciHostResources returns the host bridge's _CRS resource template
// (§6.4): bus numbers 0-0 and the 32-bit memory window, both produced for
// the bus below, and the end tag. The bus has no I/O BARs, so no I/O
// window.
func pciHostResources(p *ACPIPCIHost) []byte {
	le := binary.LittleEndian
	// Word Address Space Descriptor (§6.4.3.5.3, table 6.48), bus numbers.
	bus := []byte{0x88, 13, 0, // large item 0x08, length 13
		2,    // resource type: bus number range
		0x0c, // general flags: min and max fixed, positive decode, producer
		0}    // type-specific flags
	bus = le.AppendUint16(bus, 0) // granularity
	bus = le.AppendUint16(bus, 0) // minimum
	bus = le.AppendUint16(bus, 0) // maximum
	bus = le.AppendUint16(bus, 0) // translation offset
	bus = le.AppendUint16(bus, 1) // length
	// DWord Address Space Descriptor (§6.4.3.5.2, table 6.47), memory.
	mem := []byte{0x87, 23, 0, // large item 0x07, length 23
		0,    // resource type: memory range
		0x0c, // general flags as above
		0x01} // memory flags: read-write, non-cacheable
	mem = le.AppendUint32(mem, 0)                          // granularity
	mem = le.AppendUint32(mem, uint32(p.MemBase))          // minimum
	mem = le.AppendUint32(mem, uint32(p.MemEnd-1))         // maximum
	mem = le.AppendUint32(mem, 0)                          // translation offset
	mem = le.AppendUint32(mem, uint32(p.MemEnd-p.MemBase)) // length
	// End Tag (§6.4.2.9): checksum 0 means "treat as correct".
	end := []byte{0x79, 0}
	out := append(bus, mem...)
	return append(out, end...)
}

// AML encoding (ACPI 6.5 chapter 20, "ACPI Machine Language
// Specification"). Only the constructs the DSDT needs.
const (
	amlZeroOp     = 0x00
	amlOneOp      = 0x01
	amlNameOp     = 0x08
	amlBytePrefix = 0x0a
	amlWordPrefix = 0x0b
	amlDWord      = 0x0c
	amlQWord      = 0x0e
	amlScopeOp    = 0x10
	amlBufferOp   = 0x11
	amlPackageOp  = 0x12
	amlExtOp      = 0x5b
	amlDeviceOp   = 0x82 // after amlExtOp
	amlRootChar   = '\\'
)

// amlPkgLength returns the PkgLength encoding (§20.2.4) for a package
// whose contents after the PkgLength are n bytes: the encoded value counts
// the PkgLength bytes too.
func amlPkgLength(n int) []byte {
	if n+1 <= 0x3f {
		return []byte{byte(n + 1)}
	}
	for extra := 1; extra <= 3; extra++ {
		total := n + 1 + extra
		if total < 1<<(4+8*extra) {
			b := []byte{byte(extra<<6 | total&0xf)}
			for i := range extra {
				b = append(b, byte(total>>(4+8*i)))
			}
			return b
		}
	}
	panic("AML package longer than 2^28 bytes") // never: the DSDT area is 7 KiB
}

// amlNameString encodes a name (§20.2.2): an optional leading backslash and
// one 4-character NameSeg (the tables need no multi-segment paths).
func amlNameString(name string) []byte {
	var b []byte
	if len(name) > 0 && name[0] == amlRootChar {
		b = append(b, amlRootChar)
		name = name[1:]
	}
	if len(name) != 4 {
		panic("AML NameSeg must be 4 characters: " + name) // never: names are constants
	}
	return append(b, name...)
}

// amlInt encodes an integer as the shortest ComputationalData (§20.2.3).
func amlInt(v uint64) []byte {
	switch {
	case v == 0:
		return []byte{amlZeroOp}
	case v == 1:
		return []byte{amlOneOp}
	case v <= 0xff:
		return []byte{amlBytePrefix, byte(v)}
	case v <= 0xffff:
		return binary.LittleEndian.AppendUint16([]byte{amlWordPrefix}, uint16(v))
	case v <= 0xffffffff:
		return binary.LittleEndian.AppendUint32([]byte{amlDWord}, uint32(v))
	}
	return binary.LittleEndian.AppendUint64([]byte{amlQWord}, v)
}

// amlName encodes DefName: NameOp NameString DataRefObject.
func amlName(name string, value []byte) []byte {
	b := append([]byte{amlNameOp}, amlNameString(name)...)
	return append(b, value...)
}

// amlPackage encodes DefPackage: PackageOp PkgLength NumElements elements.
func amlPackage(elems ...[]byte) []byte {
	body := []byte{byte(len(elems))}
	for _, e := range elems {
		body = append(body, e...)
	}
	return append(append([]byte{amlPackageOp}, amlPkgLength(len(body))...), body...)
}

// amlBuffer encodes DefBuffer: BufferOp PkgLength BufferSize bytes.
func amlBuffer(data []byte) []byte {
	body := append(amlInt(uint64(len(data))), data...)
	return append(append([]byte{amlBufferOp}, amlPkgLength(len(body))...), body...)
}

// amlScope encodes DefScope: ScopeOp PkgLength NameString TermList.
func amlScope(name string, terms []byte) []byte {
	body := append(amlNameString(name), terms...)
	return append(append([]byte{amlScopeOp}, amlPkgLength(len(body))...), body...)
}

// amlDevice encodes DefDevice: ExtOpPrefix DeviceOp PkgLength NameString
// TermList.
func amlDevice(name string, terms []byte) []byte {
	body := append(amlNameString(name), terms...)
	return append(append([]byte{amlExtOp, amlDeviceOp}, amlPkgLength(len(body))...), body...)
}

// eisaID returns the compressed EISA ID of a 7-character PNP ID such as
// "PNP0A03" (§6.1.5): three letters of 5 bits each and four hex digits,
// stored big-endian, as the 32-bit integer AML holds.
func eisaID(id string) uint64 {
	if len(id) != 7 {
		panic("EISA ID must be 7 characters: " + id) // never: IDs are constants
	}
	hex := func(c byte) uint32 {
		switch {
		case c >= '0' && c <= '9':
			return uint32(c - '0')
		case c >= 'A' && c <= 'F':
			return uint32(c-'A') + 10
		}
		panic("EISA ID product number must be hex: " + id)
	}
	v := uint32(id[0]-'@')<<26 | uint32(id[1]-'@')<<21 | uint32(id[2]-'@')<<16
	for i := 3; i < 7; i++ {
		v |= hex(id[i]) << (4 * (6 - i))
	}
	// The bytes go into memory big-endian; the AML integer is read
	// little-endian.
	return uint64(v>>24 | v>>8&0xff00 | v<<8&0xff0000 | v<<24)
}
