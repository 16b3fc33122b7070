package kvm

// Mirrors of the x86 vCPU state structs of arch/x86/include/uapi/asm/kvm.h.
//
// Restore order for a migrated vCPU (godwit design notes): CPUID, MP state,
// REGS, SREGS, XSAVE (or FPU), XCRS, DEBUGREGS, LAPIC (after SREGS, which
// restores the APIC base MSR), MSRS (every index of MSRIndexList, including
// TSC and kvmclock), VCPU_EVENTS last. VM-wide: IRQCHIP (PIC master, PIC
// slave, IOAPIC), PIT2, CLOCK.

// FPU mirrors struct kvm_fpu: the legacy x87/SSE state (FXSAVE layout).
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8 // abridged tag word, FXSAVE format
	Pad1       uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	Pad2       uint32
}

// XSave mirrors struct kvm_xsave without its flexible array: the 4 KiB
// XSAVE area (legacy region, XSAVE header, extended components at the
// offsets of the host's CPUID leaf 0xD).
type XSave struct {
	Region [1024]uint32
}

// MaxXCRs is KVM_MAX_XCRS, the capacity of XCRS.XCRs.
const MaxXCRs = 16

// XCR mirrors struct kvm_xcr: one extended control register.
type XCR struct {
	XCR      uint32 // register number (0 for XCR0)
	Reserved uint32
	Value    uint64
}

// XCRS mirrors struct kvm_xcrs.
type XCRS struct {
	NrXCRs  uint32
	Flags   uint32
	XCRs    [MaxXCRs]XCR
	Padding [16]uint64
}

// LAPICRegSize is KVM_APIC_REG_SIZE.
const LAPICRegSize = 0x400

// LAPICState mirrors struct kvm_lapic_state: the local APIC register page.
type LAPICState struct {
	Regs [LAPICRegSize]byte
}

// VCPUEvents mirrors struct kvm_vcpu_events: pending and injected
// exceptions, interrupts, NMIs and SMIs. The kernel's nested anonymous
// structs (exception, interrupt, nmi, smi, triple_fault) are flattened with
// a prefix; the layout is identical.
type VCPUEvents struct {
	ExceptionInjected     uint8
	ExceptionNr           uint8
	ExceptionHasErrorCode uint8
	ExceptionPending      uint8
	ExceptionErrorCode    uint32

	InterruptInjected uint8
	InterruptNr       uint8
	InterruptSoft     uint8
	InterruptShadow   uint8

	NMIInjected uint8
	NMIPending  uint8
	NMIMasked   uint8
	NMIPad      uint8

	SIPIVector uint32
	Flags      uint32 // VCPUEventValid* bits

	SMISMM         uint8
	SMIPending     uint8
	SMIInsideNMI   uint8
	SMILatchedInit uint8

	TripleFaultPending uint8

	Reserved            [26]uint8
	ExceptionHasPayload uint8
	ExceptionPayload    uint64
}

// VCPUEvents.Flags bits (KVM_VCPUEVENT_VALID_*): which optional fields
// KVM_SET_VCPU_EVENTS applies.
const (
	VCPUEventValidNMIPending  = 0x01 // KVM_VCPUEVENT_VALID_NMI_PENDING
	VCPUEventValidSIPIVector  = 0x02 // KVM_VCPUEVENT_VALID_SIPI_VECTOR
	VCPUEventValidShadow      = 0x04 // KVM_VCPUEVENT_VALID_SHADOW
	VCPUEventValidSMM         = 0x08 // KVM_VCPUEVENT_VALID_SMM
	VCPUEventValidPayload     = 0x10 // KVM_VCPUEVENT_VALID_PAYLOAD
	VCPUEventValidTripleFault = 0x20 // KVM_VCPUEVENT_VALID_TRIPLE_FAULT
)

// MPState mirrors struct kvm_mp_state: the vCPU's multiprocessing state.
type MPState struct {
	State uint32
}

// MPState.State values (KVM_MP_STATE_*).
const (
	MPStateRunnable      = 0  // KVM_MP_STATE_RUNNABLE
	MPStateUninitialized = 1  // KVM_MP_STATE_UNINITIALIZED: AP waiting for INIT
	MPStateInitReceived  = 2  // KVM_MP_STATE_INIT_RECEIVED
	MPStateHalted        = 3  // KVM_MP_STATE_HALTED
	MPStateSIPIReceived  = 4  // KVM_MP_STATE_SIPI_RECEIVED
	MPStateStopped       = 5  // KVM_MP_STATE_STOPPED (s390)
	MPStateCheckStop     = 6  // KVM_MP_STATE_CHECK_STOP (s390)
	MPStateOperating     = 7  // KVM_MP_STATE_OPERATING (s390)
	MPStateLoad          = 8  // KVM_MP_STATE_LOAD (s390)
	MPStateAPResetHold   = 9  // KVM_MP_STATE_AP_RESET_HOLD (SEV-ES)
	MPStateSuspended     = 10 // KVM_MP_STATE_SUSPENDED (arm64)
)

// DebugRegs mirrors struct kvm_debugregs: DR0-DR3, DR6 and DR7.
type DebugRegs struct {
	DB       [4]uint64
	DR6      uint64
	DR7      uint64
	Flags    uint64
	Reserved [9]uint64
}
