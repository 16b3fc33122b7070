package vmm

import (
	"encoding/binary"
	"fmt"

	"godwit/vmm/kvm"
)

// Local APIC register offsets and LVT delivery modes (Intel SDM vol. 3, 11.5.1).
const (
	apicLVT0         = 0x350
	apicLVT1         = 0x360
	apicDeliveryMask = 0x700
	apicModeExtINT   = 0x700
	apicModeNMI      = 0x400
)

// CPUID bits godwit sets for the guest.
const (
	cpuidHypervisorBit = 1 << 31 // leaf 1 ECX: running under a hypervisor
)

// setup gives a new vCPU its CPUID, LAPIC wiring and a sane FPU state.
func (c *vcpu) setup(supported *kvm.CPUID) error {
	c.cpuid = patchCPUID(supported, c.id, c.vm.cfg.CPUs)
	if err := c.kvm.SetCPUID2(c.cpuid); err != nil {
		return fmt.Errorf("setting CPUID: %w", err)
	}
	lapic, err := c.kvm.GetLAPIC()
	if err != nil {
		return fmt.Errorf("reading LAPIC: %w", err)
	}
	// Only the boot CPU takes the PIC's ExtINT on LINT0, as firmware leaves
	// it: an AP with an unmasked ExtINT LINT0 accepts PIC interrupts too,
	// and one arriving while the AP is still in its real-mode trampoline
	// triple-faults it. APs keep their reset state (masked) until Linux
	// programs them.
	if c.id == 0 {
		setLVT(lapic, apicLVT0, apicModeExtINT)
	}
	setLVT(lapic, apicLVT1, apicModeNMI)
	if err := c.kvm.SetLAPIC(lapic); err != nil {
		return fmt.Errorf("setting LAPIC: %w", err)
	}
	if n, err := c.kvm.SetMSRs(bootMSRs()); err != nil || n != len(bootMSRs()) {
		return fmt.Errorf("setting boot MSRs (%d of %d set): %v", n, len(bootMSRs()), err)
	}
	// x87 control word and MXCSR as after FNINIT / reset.
	if err := c.kvm.SetFPU(kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}); err != nil {
		return fmt.Errorf("setting FPU: %w", err)
	}
	return nil
}

// MSRs set at boot, as firmware leaves them (Intel SDM vol. 4).
const (
	msrIA32MiscEnable = 0x1a0
	msrMTRRDefType    = 0x2ff

	miscEnableFastStrings = 1 << 0
	mtrrEnable            = 1 << 11
	mtrrTypeWriteBack     = 6
)

// bootMSRs returns the MSRs firmware would have set: MTRRs enabled with
// write-back as the default type (with MTRRs disabled all memory is
// uncacheable, and a hypervisor that honours guest MTRRs runs the guest many
// times slower), and fast string operations.
func bootMSRs() []kvm.MSREntry {
	return []kvm.MSREntry{
		{Index: msrIA32MiscEnable, Data: miscEnableFastStrings},
		{Index: msrMTRRDefType, Data: mtrrEnable | mtrrTypeWriteBack},
	}
}

// setLVT sets the delivery mode of one local vector table entry (LINT0 as
// ExtINT so the PIC reaches the BSP, LINT1 as NMI), keeping its mask bit.
func setLVT(l *kvm.LAPICState, off int, mode uint32) {
	v := binary.LittleEndian.Uint32(l.Regs[off:])
	v = v&^apicDeliveryMask | mode
	binary.LittleEndian.PutUint32(l.Regs[off:], v)
}

// patchCPUID returns the CPUID table for vCPU id: KVM's supported set with
// the APIC ID fields and the hypervisor bit filled in.
func patchCPUID(supported *kvm.CPUID, id, cpus int) *kvm.CPUID {
	out := &kvm.CPUID{Entries: append([]kvm.CPUIDEntry2(nil), supported.Entries...)}
	for i := range out.Entries {
		e := &out.Entries[i]
		switch e.Function {
		case 1:
			e.EBX = e.EBX&0x0000ffff | uint32(id)<<24 | uint32(cpus)<<16
			e.ECX |= cpuidHypervisorBit
		case 0xb, 0x1f:
			e.EDX = uint32(id)
		case 0x8000001e:
			e.EAX = uint32(id)
		}
	}
	return out
}
