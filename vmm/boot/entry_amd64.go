package boot

import "godwit/vmm/kvm"

// Entry is the boot vCPU's initial state produced by a loader: the mode to
// pass to SetupSregs and the general registers to set with KVM_SET_REGS.
type Entry struct {
	// Mode is the CPU mode the vCPU starts in.
	Mode Mode
	// Regs holds the initial general registers, RIP and RFLAGS.
	Regs kvm.Regs
}

// rflagsReserved is RFLAGS bit 1, which always reads as one; interrupts are
// off.
const rflagsReserved = 2
