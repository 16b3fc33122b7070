package kvm

import "gvisor.dev/gvisor/pkg/abi/linux"

// kvmio is KVMIO, the ioctl type byte of every KVM ioctl.
const kvmio = 0xAE

// Header mirrors of the variable-length structs: their sizes (without the
// flexible array) are what the kernel encodes in the ioctl numbers.

// cpuid2Header mirrors the fixed part of struct kvm_cpuid2.
type cpuid2Header struct{ NEnt, Padding uint32 }

// msrsHeader mirrors the fixed part of struct kvm_msrs.
type msrsHeader struct{ NMSRs, Pad uint32 }

// msrListHeader mirrors the fixed part of struct kvm_msr_list.
type msrListHeader struct{ NMSRs uint32 }

// irqRoutingHeader mirrors the fixed part of struct kvm_irq_routing.
type irqRoutingHeader struct{ Nr, Flags uint32 }

// KVM ioctl numbers, built like the kernel's _IO/_IOR/_IOW/_IOWR macros in
// include/uapi/linux/kvm.h from the sizes of the Go mirrors. abi_test.go
// checks every one against the values of the installed kernel headers.
var (
	// System ioctls (on the /dev/kvm fd).
	kvmGetAPIVersion       = linux.IO(kvmio, 0x00)
	kvmCreateVM            = linux.IO(kvmio, 0x01)
	kvmGetMSRIndexList     = linux.IOWR(kvmio, 0x02, sizeOf[msrListHeader]())
	kvmCheckExtension      = linux.IO(kvmio, 0x03)
	kvmGetVCPUMmapSize     = linux.IO(kvmio, 0x04)
	kvmGetSupportedCPUID   = linux.IOWR(kvmio, 0x05, sizeOf[cpuid2Header]())
	kvmCreateVCPU          = linux.IO(kvmio, 0x41)
	kvmGetDirtyLog         = linux.IOW(kvmio, 0x42, sizeOf[dirtyLog]())
	kvmSetUserMemoryRegion = linux.IOW(kvmio, 0x46, sizeOf[UserspaceMemoryRegion]())
	kvmSetTSSAddr          = linux.IO(kvmio, 0x47)
	kvmSetIdentityMapAddr  = linux.IOW(kvmio, 0x48, sizeOf[uint64]())

	// VM ioctls.
	kvmCreateIRQChip = linux.IO(kvmio, 0x60)
	kvmIRQLine       = linux.IOW(kvmio, 0x61, sizeOf[irqLevel]())
	kvmGetIRQChip    = linux.IOWR(kvmio, 0x62, sizeOf[IRQChip]())
	kvmSetIRQChip    = linux.IOR(kvmio, 0x63, sizeOf[IRQChip]()) // _IOR in the kernel header, sic
	kvmSetGSIRouting = linux.IOW(kvmio, 0x6a, sizeOf[irqRoutingHeader]())
	kvmIRQFD         = linux.IOW(kvmio, 0x76, sizeOf[irqFD]())
	kvmCreatePIT2    = linux.IOW(kvmio, 0x77, sizeOf[pitConfig]())
	kvmIOEventFD     = linux.IOW(kvmio, 0x79, sizeOf[IOEventFD]())
	kvmSetClock      = linux.IOW(kvmio, 0x7b, sizeOf[ClockData]())
	kvmGetClock      = linux.IOR(kvmio, 0x7c, sizeOf[ClockData]())
	kvmGetPIT2       = linux.IOR(kvmio, 0x9f, sizeOf[PITState2]())
	kvmSetPIT2       = linux.IOW(kvmio, 0xa0, sizeOf[PITState2]())
	kvmEnableCap     = linux.IOW(kvmio, 0xa3, sizeOf[enableCap]())
	kvmSignalMSI     = linux.IOW(kvmio, 0xa5, sizeOf[MSI]())
	kvmClearDirtyLog = linux.IOWR(kvmio, 0xc0, sizeOf[clearDirtyLog]())

	// vCPU ioctls.
	kvmRun           = linux.IO(kvmio, 0x80)
	kvmGetRegs       = linux.IOR(kvmio, 0x81, sizeOf[Regs]())
	kvmSetRegs       = linux.IOW(kvmio, 0x82, sizeOf[Regs]())
	kvmGetSregs      = linux.IOR(kvmio, 0x83, sizeOf[Sregs]())
	kvmSetSregs      = linux.IOW(kvmio, 0x84, sizeOf[Sregs]())
	kvmGetMSRs       = linux.IOWR(kvmio, 0x88, sizeOf[msrsHeader]())
	kvmSetMSRs       = linux.IOW(kvmio, 0x89, sizeOf[msrsHeader]())
	kvmGetFPU        = linux.IOR(kvmio, 0x8c, sizeOf[FPU]())
	kvmSetFPU        = linux.IOW(kvmio, 0x8d, sizeOf[FPU]())
	kvmGetLAPIC      = linux.IOR(kvmio, 0x8e, sizeOf[LAPICState]())
	kvmSetLAPIC      = linux.IOW(kvmio, 0x8f, sizeOf[LAPICState]())
	kvmSetCPUID2     = linux.IOW(kvmio, 0x90, sizeOf[cpuid2Header]())
	kvmGetCPUID2     = linux.IOWR(kvmio, 0x91, sizeOf[cpuid2Header]())
	kvmGetMPState    = linux.IOR(kvmio, 0x98, sizeOf[MPState]())
	kvmSetMPState    = linux.IOW(kvmio, 0x99, sizeOf[MPState]())
	kvmNMI           = linux.IO(kvmio, 0x9a)
	kvmGetVCPUEvents = linux.IOR(kvmio, 0x9f, sizeOf[VCPUEvents]())
	kvmSetVCPUEvents = linux.IOW(kvmio, 0xa0, sizeOf[VCPUEvents]())
	kvmGetDebugRegs  = linux.IOR(kvmio, 0xa1, sizeOf[DebugRegs]())
	kvmSetDebugRegs  = linux.IOW(kvmio, 0xa2, sizeOf[DebugRegs]())
	kvmSetTSCKHz     = linux.IO(kvmio, 0xa2)
	kvmGetTSCKHz     = linux.IO(kvmio, 0xa3)
	kvmGetXSave      = linux.IOR(kvmio, 0xa4, sizeOf[XSave]())
	kvmSetXSave      = linux.IOW(kvmio, 0xa5, sizeOf[XSave]())
	kvmGetXCRS       = linux.IOR(kvmio, 0xa6, sizeOf[XCRS]())
	kvmSetXCRS       = linux.IOW(kvmio, 0xa7, sizeOf[XCRS]())
	kvmKVMClockCtrl  = linux.IO(kvmio, 0xad)
)
