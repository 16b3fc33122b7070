package kvm

import "strconv"

// ExitReason is kvm_run.exit_reason: why KVM_RUN returned to userspace
// (the KVM_EXIT_* constants of include/uapi/linux/kvm.h).
type ExitReason uint32

// Exit reasons. Values are the kernel's KVM_EXIT_* numbers; s390, PowerPC,
// ARM and RISC-V only reasons are omitted.
const (
	ExitUnknown       ExitReason = 0  // KVM_EXIT_UNKNOWN
	ExitException     ExitReason = 1  // KVM_EXIT_EXCEPTION
	ExitIO            ExitReason = 2  // KVM_EXIT_IO
	ExitHypercall     ExitReason = 3  // KVM_EXIT_HYPERCALL
	ExitDebug         ExitReason = 4  // KVM_EXIT_DEBUG
	ExitHLT           ExitReason = 5  // KVM_EXIT_HLT
	ExitMMIO          ExitReason = 6  // KVM_EXIT_MMIO
	ExitIRQWindowOpen ExitReason = 7  // KVM_EXIT_IRQ_WINDOW_OPEN
	ExitShutdown      ExitReason = 8  // KVM_EXIT_SHUTDOWN
	ExitFailEntry     ExitReason = 9  // KVM_EXIT_FAIL_ENTRY
	ExitIntr          ExitReason = 10 // KVM_EXIT_INTR
	ExitSetTPR        ExitReason = 11 // KVM_EXIT_SET_TPR
	ExitTPRAccess     ExitReason = 12 // KVM_EXIT_TPR_ACCESS
	ExitNMI           ExitReason = 16 // KVM_EXIT_NMI
	ExitInternalError ExitReason = 17 // KVM_EXIT_INTERNAL_ERROR
	ExitSystemEvent   ExitReason = 24 // KVM_EXIT_SYSTEM_EVENT
	ExitIOAPICEOI     ExitReason = 26 // KVM_EXIT_IOAPIC_EOI
	ExitHyperV        ExitReason = 27 // KVM_EXIT_HYPERV
	ExitX86RDMSR      ExitReason = 29 // KVM_EXIT_X86_RDMSR
	ExitX86WRMSR      ExitReason = 30 // KVM_EXIT_X86_WRMSR
	ExitDirtyRingFull ExitReason = 31 // KVM_EXIT_DIRTY_RING_FULL
	ExitAPResetHold   ExitReason = 32 // KVM_EXIT_AP_RESET_HOLD
	ExitX86BusLock    ExitReason = 33 // KVM_EXIT_X86_BUS_LOCK
	ExitXen           ExitReason = 34 // KVM_EXIT_XEN
	ExitNotify        ExitReason = 37 // KVM_EXIT_NOTIFY
)

// exitNames maps the known exit reasons to their kernel names.
var exitNames = map[ExitReason]string{
	ExitUnknown:       "KVM_EXIT_UNKNOWN",
	ExitException:     "KVM_EXIT_EXCEPTION",
	ExitIO:            "KVM_EXIT_IO",
	ExitHypercall:     "KVM_EXIT_HYPERCALL",
	ExitDebug:         "KVM_EXIT_DEBUG",
	ExitHLT:           "KVM_EXIT_HLT",
	ExitMMIO:          "KVM_EXIT_MMIO",
	ExitIRQWindowOpen: "KVM_EXIT_IRQ_WINDOW_OPEN",
	ExitShutdown:      "KVM_EXIT_SHUTDOWN",
	ExitFailEntry:     "KVM_EXIT_FAIL_ENTRY",
	ExitIntr:          "KVM_EXIT_INTR",
	ExitSetTPR:        "KVM_EXIT_SET_TPR",
	ExitTPRAccess:     "KVM_EXIT_TPR_ACCESS",
	ExitNMI:           "KVM_EXIT_NMI",
	ExitInternalError: "KVM_EXIT_INTERNAL_ERROR",
	ExitSystemEvent:   "KVM_EXIT_SYSTEM_EVENT",
	ExitIOAPICEOI:     "KVM_EXIT_IOAPIC_EOI",
	ExitHyperV:        "KVM_EXIT_HYPERV",
	ExitX86RDMSR:      "KVM_EXIT_X86_RDMSR",
	ExitX86WRMSR:      "KVM_EXIT_X86_WRMSR",
	ExitDirtyRingFull: "KVM_EXIT_DIRTY_RING_FULL",
	ExitAPResetHold:   "KVM_EXIT_AP_RESET_HOLD",
	ExitX86BusLock:    "KVM_EXIT_X86_BUS_LOCK",
	ExitXen:           "KVM_EXIT_XEN",
	ExitNotify:        "KVM_EXIT_NOTIFY",
}

// String returns the kernel name of the exit reason, e.g. "KVM_EXIT_IO", or
// "KVM_EXIT(n)" for a number this package does not know.
func (e ExitReason) String() string {
	if s, ok := exitNames[e]; ok {
		return s
	}
	return "KVM_EXIT(" + strconv.FormatUint(uint64(e), 10) + ")"
}

// System event types (kvm_run.system_event.type, KVM_SYSTEM_EVENT_*).
const (
	SystemEventShutdown = 1 // KVM_SYSTEM_EVENT_SHUTDOWN
	SystemEventReset    = 2 // KVM_SYSTEM_EVENT_RESET
	SystemEventCrash    = 3 // KVM_SYSTEM_EVENT_CRASH
	SystemEventWakeup   = 4 // KVM_SYSTEM_EVENT_WAKEUP
	SystemEventSuspend  = 5 // KVM_SYSTEM_EVENT_SUSPEND
	SystemEventSEVTerm  = 6 // KVM_SYSTEM_EVENT_SEV_TERM
)

// Internal error suberrors (kvm_run.internal.suberror, KVM_INTERNAL_ERROR_*).
const (
	InternalErrorEmulation            = 1 // KVM_INTERNAL_ERROR_EMULATION
	InternalErrorSimulEx              = 2 // KVM_INTERNAL_ERROR_SIMUL_EX
	InternalErrorDeliveryEv           = 3 // KVM_INTERNAL_ERROR_DELIVERY_EV
	InternalErrorUnexpectedExitReason = 4 // KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON
)
