package kvm

import (
	"reflect"
	"strings"
	"testing"
)

// The expected values in this file are the output of testdata/kvmabi.c,
// compiled with gcc against the installed kernel headers
// (/usr/include/linux/kvm.h and /usr/include/x86_64-linux-gnu/asm/kvm.h):
//
//	gcc -o /tmp/kvmabi testdata/kvmabi.c && /tmp/kvmabi

// TestIoctlNumbers checks every ioctl number the package defines against
// the kernel's value.
func TestIoctlNumbers(t *testing.T) {
	tests := []struct {
		name string
		got  uint32
		want uint32
	}{
		{"KVM_GET_API_VERSION", kvmGetAPIVersion, 0x0000ae00},
		{"KVM_CREATE_VM", kvmCreateVM, 0x0000ae01},
		{"KVM_GET_MSR_INDEX_LIST", kvmGetMSRIndexList, 0xc004ae02},
		{"KVM_CHECK_EXTENSION", kvmCheckExtension, 0x0000ae03},
		{"KVM_GET_VCPU_MMAP_SIZE", kvmGetVCPUMmapSize, 0x0000ae04},
		{"KVM_GET_SUPPORTED_CPUID", kvmGetSupportedCPUID, 0xc008ae05},
		{"KVM_CREATE_VCPU", kvmCreateVCPU, 0x0000ae41},
		{"KVM_GET_DIRTY_LOG", kvmGetDirtyLog, 0x4010ae42},
		{"KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion, 0x4020ae46},
		{"KVM_SET_TSS_ADDR", kvmSetTSSAddr, 0x0000ae47},
		{"KVM_SET_IDENTITY_MAP_ADDR", kvmSetIdentityMapAddr, 0x4008ae48},
		{"KVM_CREATE_IRQCHIP", kvmCreateIRQChip, 0x0000ae60},
		{"KVM_IRQ_LINE", kvmIRQLine, 0x4008ae61},
		{"KVM_GET_IRQCHIP", kvmGetIRQChip, 0xc208ae62},
		{"KVM_SET_IRQCHIP", kvmSetIRQChip, 0x8208ae63},
		{"KVM_CREATE_PIT2", kvmCreatePIT2, 0x4040ae77},
		{"KVM_GET_PIT2", kvmGetPIT2, 0x8070ae9f},
		{"KVM_SET_PIT2", kvmSetPIT2, 0x4070aea0},
		{"KVM_IRQFD", kvmIRQFD, 0x4020ae76},
		{"KVM_IOEVENTFD", kvmIOEventFD, 0x4040ae79},
		{"KVM_SET_CLOCK", kvmSetClock, 0x4030ae7b},
		{"KVM_GET_CLOCK", kvmGetClock, 0x8030ae7c},
		{"KVM_SET_GSI_ROUTING", kvmSetGSIRouting, 0x4008ae6a},
		{"KVM_SIGNAL_MSI", kvmSignalMSI, 0x4020aea5},
		{"KVM_ENABLE_CAP", kvmEnableCap, 0x4068aea3},
		{"KVM_RUN", kvmRun, 0x0000ae80},
		{"KVM_GET_REGS", kvmGetRegs, 0x8090ae81},
		{"KVM_SET_REGS", kvmSetRegs, 0x4090ae82},
		{"KVM_GET_SREGS", kvmGetSregs, 0x8138ae83},
		{"KVM_SET_SREGS", kvmSetSregs, 0x4138ae84},
		{"KVM_GET_MSRS", kvmGetMSRs, 0xc008ae88},
		{"KVM_SET_MSRS", kvmSetMSRs, 0x4008ae89},
		{"KVM_GET_FPU", kvmGetFPU, 0x81a0ae8c},
		{"KVM_SET_FPU", kvmSetFPU, 0x41a0ae8d},
		{"KVM_GET_LAPIC", kvmGetLAPIC, 0x8400ae8e},
		{"KVM_SET_LAPIC", kvmSetLAPIC, 0x4400ae8f},
		{"KVM_SET_CPUID2", kvmSetCPUID2, 0x4008ae90},
		{"KVM_GET_CPUID2", kvmGetCPUID2, 0xc008ae91},
		{"KVM_GET_MP_STATE", kvmGetMPState, 0x8004ae98},
		{"KVM_SET_MP_STATE", kvmSetMPState, 0x4004ae99},
		{"KVM_GET_VCPU_EVENTS", kvmGetVCPUEvents, 0x8040ae9f},
		{"KVM_SET_VCPU_EVENTS", kvmSetVCPUEvents, 0x4040aea0},
		{"KVM_GET_DEBUGREGS", kvmGetDebugRegs, 0x8080aea1},
		{"KVM_SET_DEBUGREGS", kvmSetDebugRegs, 0x4080aea2},
		{"KVM_GET_XSAVE", kvmGetXSave, 0x9000aea4},
		{"KVM_SET_XSAVE", kvmSetXSave, 0x5000aea5},
		{"KVM_GET_XCRS", kvmGetXCRS, 0x8188aea6},
		{"KVM_SET_XCRS", kvmSetXCRS, 0x4188aea7},
		{"KVM_SET_TSC_KHZ", kvmSetTSCKHz, 0x0000aea2},
		{"KVM_GET_TSC_KHZ", kvmGetTSCKHz, 0x0000aea3},
		{"KVM_KVMCLOCK_CTRL", kvmKVMClockCtrl, 0x0000aead},
		{"KVM_NMI", kvmNMI, 0x0000ae9a},
		{"KVM_CLEAR_DIRTY_LOG", kvmClearDirtyLog, 0xc018aec0},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %#08x, kernel has %#08x", tt.name, tt.got, tt.want)
		}
	}
}

// TestStructSizes checks the size of every Go mirror against sizeof() of
// the kernel struct.
func TestStructSizes(t *testing.T) {
	tests := []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"struct kvm_regs", reflect.TypeFor[Regs]().Size(), 144},
		{"struct kvm_segment", reflect.TypeFor[Segment]().Size(), 24},
		{"struct kvm_dtable", reflect.TypeFor[DTable]().Size(), 16},
		{"struct kvm_sregs", reflect.TypeFor[Sregs]().Size(), 312},
		{"struct kvm_fpu", reflect.TypeFor[FPU]().Size(), 416},
		{"struct kvm_xsave", reflect.TypeFor[XSave]().Size(), 4096},
		{"struct kvm_xcr", reflect.TypeFor[XCR]().Size(), 16},
		{"struct kvm_xcrs", reflect.TypeFor[XCRS]().Size(), 392},
		{"struct kvm_lapic_state", reflect.TypeFor[LAPICState]().Size(), 1024},
		{"struct kvm_vcpu_events", reflect.TypeFor[VCPUEvents]().Size(), 64},
		{"struct kvm_mp_state", reflect.TypeFor[MPState]().Size(), 4},
		{"struct kvm_debugregs", reflect.TypeFor[DebugRegs]().Size(), 128},
		{"struct kvm_msr_entry", reflect.TypeFor[MSREntry]().Size(), 16},
		{"struct kvm_msrs", reflect.TypeFor[msrsHeader]().Size(), 8},
		{"struct kvm_msr_list", reflect.TypeFor[msrListHeader]().Size(), 4},
		{"struct kvm_cpuid_entry2", reflect.TypeFor[CPUIDEntry2]().Size(), 40},
		{"struct kvm_cpuid2", reflect.TypeFor[cpuid2Header]().Size(), 8},
		{"struct kvm_userspace_memory_region", reflect.TypeFor[UserspaceMemoryRegion]().Size(), 32},
		{"struct kvm_dirty_log", reflect.TypeFor[dirtyLog]().Size(), 16},
		{"struct kvm_clear_dirty_log", reflect.TypeFor[clearDirtyLog]().Size(), 24},
		{"struct kvm_irq_level", reflect.TypeFor[irqLevel]().Size(), 8},
		{"struct kvm_irqchip", reflect.TypeFor[IRQChip]().Size(), 520},
		{"struct kvm_pit_config", reflect.TypeFor[pitConfig]().Size(), 64},
		{"struct kvm_pit_channel_state", reflect.TypeFor[PITChannelState]().Size(), 24},
		{"struct kvm_pit_state2", reflect.TypeFor[PITState2]().Size(), 112},
		{"struct kvm_clock_data", reflect.TypeFor[ClockData]().Size(), 48},
		{"struct kvm_irqfd", reflect.TypeFor[irqFD]().Size(), 32},
		{"struct kvm_ioeventfd", reflect.TypeFor[IOEventFD]().Size(), 64},
		{"struct kvm_irq_routing_entry", reflect.TypeFor[IRQRoutingEntry]().Size(), 48},
		{"struct kvm_irq_routing", reflect.TypeFor[irqRoutingHeader]().Size(), 8},
		{"struct kvm_msi", reflect.TypeFor[MSI]().Size(), 32},
		{"struct kvm_enable_cap", reflect.TypeFor[enableCap]().Size(), 104},
		{"struct kvm_run", runSize, 2352},
		{"kvm_cpuid_entry2 (marshalling)", cpuidEntrySize, 40},
		{"kvm_msr_entry (marshalling)", msrEntrySize, 16},
		{"kvm_irq_routing_entry (marshalling)", irqRoutingEntrySize, 48},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: Go size %d, kernel size %d", tt.name, tt.got, tt.want)
		}
	}
}

// TestRunOffsets checks the kvm_run offsets against offsetof().
func TestRunOffsets(t *testing.T) {
	tests := []struct {
		field string
		got   int
		want  int
	}{
		{"request_interrupt_window", runRequestInterruptWindow, 0},
		{"immediate_exit", runImmediateExit, 1},
		{"exit_reason", runExitReason, 8},
		{"ready_for_interrupt_injection", runReadyForInjection, 12},
		{"if_flag", runIFFlag, 13},
		{"flags", runFlags, 14},
		{"cr8", runCR8, 16},
		{"apic_base", runAPICBase, 24},
		{"hw.hardware_exit_reason", runHWExitReason, 32},
		{"fail_entry.hardware_entry_failure_reason", runFailEntryReason, 32},
		{"fail_entry.cpu", runFailEntryCPU, 40},
		{"ex.exception", runExException, 32},
		{"ex.error_code", runExErrorCode, 36},
		{"io.direction", runIODirection, 32},
		{"io.size", runIOSize, 33},
		{"io.port", runIOPort, 34},
		{"io.count", runIOCount, 36},
		{"io.data_offset", runIODataOffset, 40},
		{"mmio.phys_addr", runMMIOPhysAddr, 32},
		{"mmio.data", runMMIOData, 40},
		{"mmio.len", runMMIOLen, 48},
		{"mmio.is_write", runMMIOIsWrite, 52},
		{"internal.suberror", runInternalSuberror, 32},
		{"internal.ndata", runInternalNData, 36},
		{"internal.data", runInternalData, 40},
		{"system_event.type", runSystemEventType, 32},
		{"system_event.ndata", runSystemEventNData, 36},
		{"system_event.data", runSystemEventData, 40},
		{"kvm_valid_regs", runKVMValidRegs, 288},
		{"kvm_dirty_regs", runKVMDirtyRegs, 296},
		{"s", runSyncRegs, 304},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("kvm_run.%s: Go offset %d, kernel offset %d", tt.field, tt.got, tt.want)
		}
	}
}

// TestConstants checks capability numbers, exit reasons and flag values
// against the kernel's.
func TestConstants(t *testing.T) {
	tests := []struct {
		name string
		got  int64
		want int64
	}{
		{"KVM_CAP_IRQCHIP", int64(CapIRQChip), 0},
		{"KVM_CAP_HLT", int64(CapHLT), 1},
		{"KVM_CAP_USER_MEMORY", int64(CapUserMemory), 3},
		{"KVM_CAP_SET_TSS_ADDR", int64(CapSetTSSAddr), 4},
		{"KVM_CAP_EXT_CPUID", int64(CapExtCPUID), 7},
		{"KVM_CAP_CLOCKSOURCE", int64(CapClockSource), 8},
		{"KVM_CAP_NR_VCPUS", int64(CapNrVCPUs), 9},
		{"KVM_CAP_NR_MEMSLOTS", int64(CapNrMemslots), 10},
		{"KVM_CAP_PIT", int64(CapPIT), 11},
		{"KVM_CAP_MP_STATE", int64(CapMPState), 14},
		{"KVM_CAP_COALESCED_MMIO", int64(CapCoalescedMMIO), 15},
		{"KVM_CAP_SYNC_MMU", int64(CapSyncMMU), 16},
		{"KVM_CAP_USER_NMI", int64(CapUserNMI), 22},
		{"KVM_CAP_SET_GUEST_DEBUG", int64(CapSetGuestDebug), 23},
		{"KVM_CAP_IRQ_ROUTING", int64(CapIRQRouting), 25},
		{"KVM_CAP_IRQ_INJECT_STATUS", int64(CapIRQInjectStatus), 26},
		{"KVM_CAP_MCE", int64(CapMCE), 31},
		{"KVM_CAP_IRQFD", int64(CapIRQFD), 32},
		{"KVM_CAP_PIT2", int64(CapPIT2), 33},
		{"KVM_CAP_PIT_STATE2", int64(CapPITState2), 35},
		{"KVM_CAP_IOEVENTFD", int64(CapIOEventFD), 36},
		{"KVM_CAP_SET_IDENTITY_MAP_ADDR", int64(CapSetIdentityMapAddr), 37},
		{"KVM_CAP_ADJUST_CLOCK", int64(CapAdjustClock), 39},
		{"KVM_CAP_INTERNAL_ERROR_DATA", int64(CapInternalErrorData), 40},
		{"KVM_CAP_VCPU_EVENTS", int64(CapVCPUEvents), 41},
		{"KVM_CAP_DEBUGREGS", int64(CapDebugRegs), 50},
		{"KVM_CAP_ENABLE_CAP", int64(CapEnableCap), 54},
		{"KVM_CAP_XSAVE", int64(CapXSave), 55},
		{"KVM_CAP_XCRS", int64(CapXCRS), 56},
		{"KVM_CAP_ASYNC_PF", int64(CapAsyncPF), 59},
		{"KVM_CAP_TSC_CONTROL", int64(CapTSCControl), 60},
		{"KVM_CAP_GET_TSC_KHZ", int64(CapGetTSCKHz), 61},
		{"KVM_CAP_MAX_VCPUS", int64(CapMaxVCPUs), 66},
		{"KVM_CAP_TSC_DEADLINE_TIMER", int64(CapTSCDeadlineTimer), 72},
		{"KVM_CAP_KVMCLOCK_CTRL", int64(CapKVMClockCtrl), 76},
		{"KVM_CAP_SIGNAL_MSI", int64(CapSignalMSI), 77},
		{"KVM_CAP_READONLY_MEM", int64(CapReadonlyMem), 81},
		{"KVM_CAP_IRQFD_RESAMPLE", int64(CapIRQFDResample), 82},
		{"KVM_CAP_CHECK_EXTENSION_VM", int64(CapCheckExtensionVM), 105},
		{"KVM_CAP_X86_SMM", int64(CapX86SMM), 117},
		{"KVM_CAP_MULTI_ADDRESS_SPACE", int64(CapMultiAddressSpace), 118},
		{"KVM_CAP_SPLIT_IRQCHIP", int64(CapSplitIRQChip), 121},
		{"KVM_CAP_IOEVENTFD_ANY_LENGTH", int64(CapIOEventFDAnyLength), 122},
		{"KVM_CAP_MAX_VCPU_ID", int64(CapMaxVCPUID), 128},
		{"KVM_CAP_X2APIC_API", int64(CapX2APICAPI), 129},
		{"KVM_CAP_IMMEDIATE_EXIT", int64(CapImmediateExit), 136},
		{"KVM_CAP_X86_DISABLE_EXITS", int64(CapX86DisableExits), 143},
		{"KVM_CAP_EXCEPTION_PAYLOAD", int64(CapExceptionPayload), 164},
		{"KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2", int64(CapManualDirtyLogProtect2), 168},
		{"KVM_CAP_SREGS2", int64(CapSregs2), 200},
		{"KVM_CAP_XSAVE2", int64(CapXSave2), 208},
		{"KVM_CAP_VM_TSC_CONTROL", int64(CapVMTSCControl), 214},
		{"KVM_CAP_SYSTEM_EVENT_DATA", int64(CapSystemEventData), 215},
		{"KVM_EXIT_UNKNOWN", int64(ExitUnknown), 0},
		{"KVM_EXIT_EXCEPTION", int64(ExitException), 1},
		{"KVM_EXIT_IO", int64(ExitIO), 2},
		{"KVM_EXIT_HYPERCALL", int64(ExitHypercall), 3},
		{"KVM_EXIT_DEBUG", int64(ExitDebug), 4},
		{"KVM_EXIT_HLT", int64(ExitHLT), 5},
		{"KVM_EXIT_MMIO", int64(ExitMMIO), 6},
		{"KVM_EXIT_IRQ_WINDOW_OPEN", int64(ExitIRQWindowOpen), 7},
		{"KVM_EXIT_SHUTDOWN", int64(ExitShutdown), 8},
		{"KVM_EXIT_FAIL_ENTRY", int64(ExitFailEntry), 9},
		{"KVM_EXIT_INTR", int64(ExitIntr), 10},
		{"KVM_EXIT_SET_TPR", int64(ExitSetTPR), 11},
		{"KVM_EXIT_TPR_ACCESS", int64(ExitTPRAccess), 12},
		{"KVM_EXIT_NMI", int64(ExitNMI), 16},
		{"KVM_EXIT_INTERNAL_ERROR", int64(ExitInternalError), 17},
		{"KVM_EXIT_SYSTEM_EVENT", int64(ExitSystemEvent), 24},
		{"KVM_EXIT_IOAPIC_EOI", int64(ExitIOAPICEOI), 26},
		{"KVM_EXIT_HYPERV", int64(ExitHyperV), 27},
		{"KVM_EXIT_X86_RDMSR", int64(ExitX86RDMSR), 29},
		{"KVM_EXIT_X86_WRMSR", int64(ExitX86WRMSR), 30},
		{"KVM_EXIT_DIRTY_RING_FULL", int64(ExitDirtyRingFull), 31},
		{"KVM_EXIT_AP_RESET_HOLD", int64(ExitAPResetHold), 32},
		{"KVM_EXIT_X86_BUS_LOCK", int64(ExitX86BusLock), 33},
		{"KVM_EXIT_XEN", int64(ExitXen), 34},
		{"KVM_EXIT_NOTIFY", int64(ExitNotify), 37},
		{"KVM_API_VERSION", int64(APIVersion), 12},
		{"KVM_MEM_LOG_DIRTY_PAGES", int64(MemLogDirtyPages), 1},
		{"KVM_MEM_READONLY", int64(MemReadonly), 2},
		{"KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE", int64(DirtyLogManualProtectEnable), 1},
		{"KVM_DIRTY_LOG_INITIALLY_SET", int64(DirtyLogInitiallySet), 2},
		{"KVM_PIT_SPEAKER_DUMMY", int64(PITSpeakerDummy), 1},
		{"KVM_IRQFD_FLAG_DEASSIGN", int64(IRQFDDeassign), 1},
		{"KVM_IRQFD_FLAG_RESAMPLE", int64(IRQFDResample), 2},
		{"KVM_IOEVENTFD_FLAG_DATAMATCH", int64(IOEventFDDatamatch), 1},
		{"KVM_IOEVENTFD_FLAG_PIO", int64(IOEventFDPIO), 2},
		{"KVM_IOEVENTFD_FLAG_DEASSIGN", int64(IOEventFDDeassign), 4},
		{"KVM_IRQCHIP_PIC_MASTER", int64(IRQChipPICMaster), 0},
		{"KVM_IRQCHIP_PIC_SLAVE", int64(IRQChipPICSlave), 1},
		{"KVM_IRQCHIP_IOAPIC", int64(IRQChipIOAPIC), 2},
		{"KVM_MP_STATE_RUNNABLE", int64(MPStateRunnable), 0},
		{"KVM_MP_STATE_UNINITIALIZED", int64(MPStateUninitialized), 1},
		{"KVM_MP_STATE_INIT_RECEIVED", int64(MPStateInitReceived), 2},
		{"KVM_MP_STATE_HALTED", int64(MPStateHalted), 3},
		{"KVM_MP_STATE_SIPI_RECEIVED", int64(MPStateSIPIReceived), 4},
		{"KVM_MP_STATE_STOPPED", int64(MPStateStopped), 5},
		{"KVM_MP_STATE_CHECK_STOP", int64(MPStateCheckStop), 6},
		{"KVM_MP_STATE_OPERATING", int64(MPStateOperating), 7},
		{"KVM_MP_STATE_LOAD", int64(MPStateLoad), 8},
		{"KVM_MP_STATE_AP_RESET_HOLD", int64(MPStateAPResetHold), 9},
		{"KVM_MP_STATE_SUSPENDED", int64(MPStateSuspended), 10},
		{"KVM_SYSTEM_EVENT_SHUTDOWN", int64(SystemEventShutdown), 1},
		{"KVM_SYSTEM_EVENT_RESET", int64(SystemEventReset), 2},
		{"KVM_SYSTEM_EVENT_CRASH", int64(SystemEventCrash), 3},
		{"KVM_SYSTEM_EVENT_WAKEUP", int64(SystemEventWakeup), 4},
		{"KVM_SYSTEM_EVENT_SUSPEND", int64(SystemEventSuspend), 5},
		{"KVM_SYSTEM_EVENT_SEV_TERM", int64(SystemEventSEVTerm), 6},
		{"KVM_INTERNAL_ERROR_EMULATION", int64(InternalErrorEmulation), 1},
		{"KVM_INTERNAL_ERROR_SIMUL_EX", int64(InternalErrorSimulEx), 2},
		{"KVM_INTERNAL_ERROR_DELIVERY_EV", int64(InternalErrorDeliveryEv), 3},
		{"KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON", int64(InternalErrorUnexpectedExitReason), 4},
		{"KVM_EXIT_IO_IN", int64(exitIOIn), 0},
		{"KVM_EXIT_IO_OUT", int64(exitIOOut), 1},
		{"KVM_IRQ_ROUTING_IRQCHIP", int64(IRQRoutingIRQChip), 1},
		{"KVM_IRQ_ROUTING_MSI", int64(IRQRoutingMSI), 2},
		{"KVM_MSI_VALID_DEVID", int64(MSIValidDevID), 1},
		{"KVM_CLOCK_TSC_STABLE", int64(ClockTSCStable), 2},
		{"KVM_CLOCK_REALTIME", int64(ClockRealtime), 4},
		{"KVM_CLOCK_HOST_TSC", int64(ClockHostTSC), 8},
		{"KVM_VCPUEVENT_VALID_NMI_PENDING", int64(VCPUEventValidNMIPending), 1},
		{"KVM_VCPUEVENT_VALID_SIPI_VECTOR", int64(VCPUEventValidSIPIVector), 2},
		{"KVM_VCPUEVENT_VALID_SHADOW", int64(VCPUEventValidShadow), 4},
		{"KVM_VCPUEVENT_VALID_SMM", int64(VCPUEventValidSMM), 8},
		{"KVM_VCPUEVENT_VALID_PAYLOAD", int64(VCPUEventValidPayload), 16},
		{"KVM_VCPUEVENT_VALID_TRIPLE_FAULT", int64(VCPUEventValidTripleFault), 32},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: Go value %d, kernel value %d", tt.name, tt.got, tt.want)
		}
	}
}

// TestFieldOffsets checks the offsets of fields of the Go mirrors where
// padding or flattened nesting could shift them.
func TestFieldOffsets(t *testing.T) {
	tests := []struct {
		cField string
		typ    reflect.Type
		field  string
		want   uintptr
	}{
		{"kvm_vcpu_events.exception.error_code", reflect.TypeFor[VCPUEvents](), "ExceptionErrorCode", 4},
		{"kvm_vcpu_events.interrupt", reflect.TypeFor[VCPUEvents](), "InterruptInjected", 8},
		{"kvm_vcpu_events.nmi", reflect.TypeFor[VCPUEvents](), "NMIInjected", 12},
		{"kvm_vcpu_events.sipi_vector", reflect.TypeFor[VCPUEvents](), "SIPIVector", 16},
		{"kvm_vcpu_events.flags", reflect.TypeFor[VCPUEvents](), "Flags", 20},
		{"kvm_vcpu_events.smi", reflect.TypeFor[VCPUEvents](), "SMISMM", 24},
		{"kvm_vcpu_events.triple_fault", reflect.TypeFor[VCPUEvents](), "TripleFaultPending", 28},
		{"kvm_vcpu_events.reserved", reflect.TypeFor[VCPUEvents](), "Reserved", 29},
		{"kvm_vcpu_events.exception_has_payload", reflect.TypeFor[VCPUEvents](), "ExceptionHasPayload", 55},
		{"kvm_vcpu_events.exception_payload", reflect.TypeFor[VCPUEvents](), "ExceptionPayload", 56},
		{"kvm_fpu.fcw", reflect.TypeFor[FPU](), "FCW", 128},
		{"kvm_fpu.ftwx", reflect.TypeFor[FPU](), "FTWX", 132},
		{"kvm_fpu.last_opcode", reflect.TypeFor[FPU](), "LastOpcode", 134},
		{"kvm_fpu.last_ip", reflect.TypeFor[FPU](), "LastIP", 136},
		{"kvm_fpu.xmm", reflect.TypeFor[FPU](), "XMM", 152},
		{"kvm_fpu.mxcsr", reflect.TypeFor[FPU](), "MXCSR", 408},
		{"kvm_xcrs.xcrs", reflect.TypeFor[XCRS](), "XCRs", 8},
		{"kvm_xcrs.padding", reflect.TypeFor[XCRS](), "Padding", 264},
		{"kvm_pit_channel_state.latched_count", reflect.TypeFor[PITChannelState](), "LatchedCount", 4},
		{"kvm_pit_channel_state.gate", reflect.TypeFor[PITChannelState](), "Gate", 15},
		{"kvm_pit_channel_state.count_load_time", reflect.TypeFor[PITChannelState](), "CountLoadTime", 16},
		{"kvm_pit_state2.flags", reflect.TypeFor[PITState2](), "Flags", 72},
		{"kvm_pit_state2.reserved", reflect.TypeFor[PITState2](), "Reserved", 76},
		{"kvm_clock_data.flags", reflect.TypeFor[ClockData](), "Flags", 8},
		{"kvm_clock_data.realtime", reflect.TypeFor[ClockData](), "Realtime", 16},
		{"kvm_clock_data.host_tsc", reflect.TypeFor[ClockData](), "HostTSC", 24},
		{"kvm_clock_data.pad", reflect.TypeFor[ClockData](), "Pad", 32},
		{"kvm_ioeventfd.len", reflect.TypeFor[IOEventFD](), "Len", 16},
		{"kvm_ioeventfd.fd", reflect.TypeFor[IOEventFD](), "FD", 20},
		{"kvm_ioeventfd.flags", reflect.TypeFor[IOEventFD](), "Flags", 24},
		{"kvm_irqchip.chip", reflect.TypeFor[IRQChip](), "Chip", 8},
		{"kvm_irqfd.resamplefd", reflect.TypeFor[irqFD](), "ResampleFD", 12},
		{"kvm_irq_routing_entry.u", reflect.TypeFor[IRQRoutingEntry](), "U", 16},
		{"kvm_msi.devid", reflect.TypeFor[MSI](), "DevID", 16},
		{"kvm_enable_cap.args", reflect.TypeFor[enableCap](), "Args", 8},
		{"kvm_dirty_log.dirty_bitmap", reflect.TypeFor[dirtyLog](), "Bitmap", 8},
		{"kvm_clear_dirty_log.first_page", reflect.TypeFor[clearDirtyLog](), "FirstPage", 8},
		{"kvm_clear_dirty_log.dirty_bitmap", reflect.TypeFor[clearDirtyLog](), "Bitmap", 16},
		{"kvm_debugregs.flags", reflect.TypeFor[DebugRegs](), "Flags", 48},
		{"kvm_userspace_memory_region.userspace_addr", reflect.TypeFor[UserspaceMemoryRegion](), "UserspaceAddr", 24},
	}
	for _, tt := range tests {
		f, ok := tt.typ.FieldByName(tt.field)
		if !ok {
			t.Errorf("%s: %v has no field %s", tt.cField, tt.typ, tt.field)
			continue
		}
		if f.Offset != tt.want {
			t.Errorf("%s: %v.%s at offset %d, kernel offset %d", tt.cField, tt.typ, tt.field, f.Offset, tt.want)
		}
	}
}

// TestExitReasonString checks the names of known and unknown exit reasons.
func TestExitReasonString(t *testing.T) {
	tests := []struct {
		e    ExitReason
		want string
	}{
		{ExitIO, "KVM_EXIT_IO"},
		{ExitHLT, "KVM_EXIT_HLT"},
		{ExitInternalError, "KVM_EXIT_INTERNAL_ERROR"},
		{ExitReason(13), "KVM_EXIT(13)"},
		{ExitReason(1000), "KVM_EXIT(1000)"},
	}
	for _, tt := range tests {
		if got := tt.e.String(); got != tt.want {
			t.Errorf("ExitReason(%d).String() = %q, want %q", uint32(tt.e), got, tt.want)
		}
	}
	for e, name := range exitNames {
		if !strings.HasPrefix(name, "KVM_EXIT_") || e.String() != name {
			t.Errorf("exitNames[%d] = %q", uint32(e), name)
		}
	}
}
