package boot

import "godwit/vmm/kvm"

// Control-register and EFER bits (Intel SDM vol. 3A, 2.5 and 2.2.1).
const (
	cr0PE = 1 << 0  // protection enable
	cr0ET = 1 << 4  // extension type (always one)
	cr0NE = 1 << 5  // numeric error
	cr0NW = 1 << 29 // not write-through
	cr0CD = 1 << 30 // cache disable
	cr0PG = 1 << 31 // paging

	cr4PAE = 1 << 5

	eferLME = 1 << 8  // long mode enable
	eferLMA = 1 << 10 // long mode active
)

// Segment types (Intel SDM vol. 3A, 3.4.5.1 and 3.5).
const (
	segTypeDataRWA  = 0x3 // read/write, accessed
	segTypeCodeXRA  = 0xb // execute/read, accessed
	segTypeLDT      = 0x2 // system: LDT
	segTypeTSSBusy  = 0xb // system: busy 32/64-bit TSS
	realModeLimit   = 0xffff
	flatLimit       = 0xffffffff // byte-granular limit of a G=1, 0xfffff segment
	realModeIVTSize = 0x400
)

// SetupSregs adjusts special registers obtained from KVM_GET_SREGS for mode.
//
// RealMode: CS, DS, ES, FS, GS and SS have selector 0, base 0 and a 64 KiB
// limit (CS execute/read, the rest read/write data); CR0.PE and CR0.PG and
// EFER.LME/LMA are cleared; the IDT is the real-mode IVT at 0.
//
// LongMode: CR0 gets PE, ET, NE and PG (CD and NW are cleared so the guest
// runs with caches on), CR4 gets PAE, EFER gets LME and LMA, CR3 points at
// PML4Addr, GDTR at the GDT written by WriteLongModeSetup. CS is
// CodeSelector, a 64-bit code segment (L=1, D=0, type 0xb); DS, ES, FS, GS
// and SS are DataSelector, flat read/write data (type 3). Segment limits are
// given as KVM wants them, byte-granular: the GDT's limit 0xfffff with G=1 is
// 0xffffffff here. The IDT is empty (limit 0): an exception before the guest
// loads its own IDT shuts the VM down instead of running garbage.
//
// In both modes TR is a present busy TSS (type 0xb) with selector 0 and LDTR
// is unusable, which is what KVM's entry checks need. Everything else (APIC
// base, CR8, the interrupt bitmap) is left as KVM reported it. An unknown
// mode leaves s unchanged.
func SetupSregs(s *kvm.Sregs, mode Mode) {
	switch mode {
	case LongMode:
		code := kvm.Segment{
			Limit: flatLimit, Selector: CodeSelector, Type: segTypeCodeXRA,
			Present: 1, S: 1, L: 1, G: 1,
		}
		data := kvm.Segment{
			Limit: flatLimit, Selector: DataSelector, Type: segTypeDataRWA,
			Present: 1, DB: 1, S: 1, G: 1,
		}
		s.CS = code
		s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
		s.GDT = kvm.DTable{Base: GDTAddr, Limit: uint16(GDTSize - 1)}
		s.IDT = kvm.DTable{}
		s.CR3 = PML4Addr
		s.CR4 |= cr4PAE
		s.CR0 = s.CR0&^(cr0CD|cr0NW) | cr0PE | cr0ET | cr0NE | cr0PG
		s.EFER |= eferLME | eferLMA
	case RealMode:
		code := kvm.Segment{Limit: realModeLimit, Type: segTypeCodeXRA, Present: 1, S: 1}
		data := kvm.Segment{Limit: realModeLimit, Type: segTypeDataRWA, Present: 1, S: 1}
		s.CS = code
		s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
		s.IDT = kvm.DTable{Limit: realModeIVTSize - 1}
		s.CR0 &^= cr0PE | cr0PG
		s.EFER &^= eferLME | eferLMA
	default:
		return
	}
	s.TR = kvm.Segment{Limit: realModeLimit, Type: segTypeTSSBusy, Present: 1}
	s.LDT = kvm.Segment{Type: segTypeLDT, Unusable: 1}
}
