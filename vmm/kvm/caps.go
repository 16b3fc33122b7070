package kvm

// Cap is a KVM capability number for KVM_CHECK_EXTENSION and KVM_ENABLE_CAP
// (the KVM_CAP_* constants of include/uapi/linux/kvm.h).
type Cap uint32

// Capabilities godwit may probe. Values are the kernel's KVM_CAP_* numbers.
const (
	CapIRQChip                Cap = 0   // KVM_CAP_IRQCHIP
	CapHLT                    Cap = 1   // KVM_CAP_HLT
	CapUserMemory             Cap = 3   // KVM_CAP_USER_MEMORY
	CapSetTSSAddr             Cap = 4   // KVM_CAP_SET_TSS_ADDR
	CapExtCPUID               Cap = 7   // KVM_CAP_EXT_CPUID
	CapClockSource            Cap = 8   // KVM_CAP_CLOCKSOURCE
	CapNrVCPUs                Cap = 9   // KVM_CAP_NR_VCPUS: recommended maximum vCPUs per VM
	CapNrMemslots             Cap = 10  // KVM_CAP_NR_MEMSLOTS: memory slots per VM
	CapPIT                    Cap = 11  // KVM_CAP_PIT
	CapMPState                Cap = 14  // KVM_CAP_MP_STATE
	CapCoalescedMMIO          Cap = 15  // KVM_CAP_COALESCED_MMIO
	CapSyncMMU                Cap = 16  // KVM_CAP_SYNC_MMU
	CapUserNMI                Cap = 22  // KVM_CAP_USER_NMI
	CapSetGuestDebug          Cap = 23  // KVM_CAP_SET_GUEST_DEBUG
	CapIRQRouting             Cap = 25  // KVM_CAP_IRQ_ROUTING
	CapIRQInjectStatus        Cap = 26  // KVM_CAP_IRQ_INJECT_STATUS
	CapMCE                    Cap = 31  // KVM_CAP_MCE
	CapIRQFD                  Cap = 32  // KVM_CAP_IRQFD
	CapPIT2                   Cap = 33  // KVM_CAP_PIT2
	CapPITState2              Cap = 35  // KVM_CAP_PIT_STATE2
	CapIOEventFD              Cap = 36  // KVM_CAP_IOEVENTFD
	CapSetIdentityMapAddr     Cap = 37  // KVM_CAP_SET_IDENTITY_MAP_ADDR
	CapAdjustClock            Cap = 39  // KVM_CAP_ADJUST_CLOCK
	CapInternalErrorData      Cap = 40  // KVM_CAP_INTERNAL_ERROR_DATA
	CapVCPUEvents             Cap = 41  // KVM_CAP_VCPU_EVENTS
	CapDebugRegs              Cap = 50  // KVM_CAP_DEBUGREGS
	CapEnableCap              Cap = 54  // KVM_CAP_ENABLE_CAP
	CapXSave                  Cap = 55  // KVM_CAP_XSAVE
	CapXCRS                   Cap = 56  // KVM_CAP_XCRS
	CapAsyncPF                Cap = 59  // KVM_CAP_ASYNC_PF
	CapTSCControl             Cap = 60  // KVM_CAP_TSC_CONTROL
	CapGetTSCKHz              Cap = 61  // KVM_CAP_GET_TSC_KHZ
	CapMaxVCPUs               Cap = 66  // KVM_CAP_MAX_VCPUS: hard maximum vCPUs per VM
	CapTSCDeadlineTimer       Cap = 72  // KVM_CAP_TSC_DEADLINE_TIMER
	CapKVMClockCtrl           Cap = 76  // KVM_CAP_KVMCLOCK_CTRL
	CapSignalMSI              Cap = 77  // KVM_CAP_SIGNAL_MSI
	CapReadonlyMem            Cap = 81  // KVM_CAP_READONLY_MEM
	CapIRQFDResample          Cap = 82  // KVM_CAP_IRQFD_RESAMPLE
	CapCheckExtensionVM       Cap = 105 // KVM_CAP_CHECK_EXTENSION_VM
	CapX86SMM                 Cap = 117 // KVM_CAP_X86_SMM
	CapMultiAddressSpace      Cap = 118 // KVM_CAP_MULTI_ADDRESS_SPACE
	CapSplitIRQChip           Cap = 121 // KVM_CAP_SPLIT_IRQCHIP
	CapIOEventFDAnyLength     Cap = 122 // KVM_CAP_IOEVENTFD_ANY_LENGTH
	CapMaxVCPUID              Cap = 128 // KVM_CAP_MAX_VCPU_ID
	CapX2APICAPI              Cap = 129 // KVM_CAP_X2APIC_API
	CapImmediateExit          Cap = 136 // KVM_CAP_IMMEDIATE_EXIT
	CapX86DisableExits        Cap = 143 // KVM_CAP_X86_DISABLE_EXITS
	CapExceptionPayload       Cap = 164 // KVM_CAP_EXCEPTION_PAYLOAD
	CapManualDirtyLogProtect2 Cap = 168 // KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2
	CapSregs2                 Cap = 200 // KVM_CAP_SREGS2
	CapXSave2                 Cap = 208 // KVM_CAP_XSAVE2: size of the XSAVE area in bytes
	CapVMTSCControl           Cap = 214 // KVM_CAP_VM_TSC_CONTROL
	CapSystemEventData        Cap = 215 // KVM_CAP_SYSTEM_EVENT_DATA
)
