package kvm

import (
	"errors"
	"fmt"
	"math"
)

// GetRegs issues KVM_GET_REGS.
func (c *VCPU) GetRegs() (Regs, error) {
	var r Regs
	_, err := ioctlPtr(c.fd, kvmGetRegs, "KVM_GET_REGS", &r)
	return r, err
}

// SetRegs issues KVM_SET_REGS.
func (c *VCPU) SetRegs(r Regs) error {
	_, err := ioctlPtr(c.fd, kvmSetRegs, "KVM_SET_REGS", &r)
	return err
}

// GetSregs issues KVM_GET_SREGS.
func (c *VCPU) GetSregs() (Sregs, error) {
	var s Sregs
	_, err := ioctlPtr(c.fd, kvmGetSregs, "KVM_GET_SREGS", &s)
	return s, err
}

// SetSregs issues KVM_SET_SREGS.
func (c *VCPU) SetSregs(s Sregs) error {
	_, err := ioctlPtr(c.fd, kvmSetSregs, "KVM_SET_SREGS", &s)
	return err
}

// GetFPU issues KVM_GET_FPU.
func (c *VCPU) GetFPU() (FPU, error) {
	var f FPU
	_, err := ioctlPtr(c.fd, kvmGetFPU, "KVM_GET_FPU", &f)
	return f, err
}

// SetFPU issues KVM_SET_FPU.
func (c *VCPU) SetFPU(f FPU) error {
	_, err := ioctlPtr(c.fd, kvmSetFPU, "KVM_SET_FPU", &f)
	return err
}

// GetXSave issues KVM_GET_XSAVE (needs CapXSave). It returns only the
// first 4 KiB; if VM.CheckExtension(CapXSave2) reports more (dynamic
// features such as AMX enabled for the guest), that state is not captured.
func (c *VCPU) GetXSave() (*XSave, error) {
	x := &XSave{}
	if _, err := ioctlPtr(c.fd, kvmGetXSave, "KVM_GET_XSAVE", x); err != nil {
		return nil, err
	}
	return x, nil
}

// SetXSave issues KVM_SET_XSAVE.
func (c *VCPU) SetXSave(x *XSave) error {
	if x == nil {
		return opError("KVM_SET_XSAVE", errors.New("nil state"))
	}
	cp := *x
	_, err := ioctlPtr(c.fd, kvmSetXSave, "KVM_SET_XSAVE", &cp)
	return err
}

// GetXCRS issues KVM_GET_XCRS (needs CapXCRS).
func (c *VCPU) GetXCRS() (XCRS, error) {
	var x XCRS
	_, err := ioctlPtr(c.fd, kvmGetXCRS, "KVM_GET_XCRS", &x)
	return x, err
}

// SetXCRS issues KVM_SET_XCRS.
func (c *VCPU) SetXCRS(x XCRS) error {
	if x.NrXCRs > MaxXCRs {
		return opError("KVM_SET_XCRS", fmt.Errorf("%d XCRs, at most %d", x.NrXCRs, MaxXCRs))
	}
	_, err := ioctlPtr(c.fd, kvmSetXCRS, "KVM_SET_XCRS", &x)
	return err
}

// GetLAPIC issues KVM_GET_LAPIC (needs the in-kernel irqchip).
func (c *VCPU) GetLAPIC() (*LAPICState, error) {
	l := &LAPICState{}
	if _, err := ioctlPtr(c.fd, kvmGetLAPIC, "KVM_GET_LAPIC", l); err != nil {
		return nil, err
	}
	return l, nil
}

// SetLAPIC issues KVM_SET_LAPIC. Restore SREGS first: it carries the APIC
// base MSR.
func (c *VCPU) SetLAPIC(l *LAPICState) error {
	if l == nil {
		return opError("KVM_SET_LAPIC", errors.New("nil state"))
	}
	cp := *l
	_, err := ioctlPtr(c.fd, kvmSetLAPIC, "KVM_SET_LAPIC", &cp)
	return err
}

// GetVCPUEvents issues KVM_GET_VCPU_EVENTS (needs CapVCPUEvents).
func (c *VCPU) GetVCPUEvents() (VCPUEvents, error) {
	var e VCPUEvents
	_, err := ioctlPtr(c.fd, kvmGetVCPUEvents, "KVM_GET_VCPU_EVENTS", &e)
	return e, err
}

// SetVCPUEvents issues KVM_SET_VCPU_EVENTS.
func (c *VCPU) SetVCPUEvents(e VCPUEvents) error {
	_, err := ioctlPtr(c.fd, kvmSetVCPUEvents, "KVM_SET_VCPU_EVENTS", &e)
	return err
}

// GetMPState issues KVM_GET_MP_STATE (needs CapMPState).
func (c *VCPU) GetMPState() (MPState, error) {
	var m MPState
	_, err := ioctlPtr(c.fd, kvmGetMPState, "KVM_GET_MP_STATE", &m)
	return m, err
}

// SetMPState issues KVM_SET_MP_STATE.
func (c *VCPU) SetMPState(m MPState) error {
	_, err := ioctlPtr(c.fd, kvmSetMPState, "KVM_SET_MP_STATE", &m)
	return err
}

// GetDebugRegs issues KVM_GET_DEBUGREGS (needs CapDebugRegs).
func (c *VCPU) GetDebugRegs() (DebugRegs, error) {
	var d DebugRegs
	_, err := ioctlPtr(c.fd, kvmGetDebugRegs, "KVM_GET_DEBUGREGS", &d)
	return d, err
}

// SetDebugRegs issues KVM_SET_DEBUGREGS.
func (c *VCPU) SetDebugRegs(d DebugRegs) error {
	_, err := ioctlPtr(c.fd, kvmSetDebugRegs, "KVM_SET_DEBUGREGS", &d)
	return err
}

// GetMSRs issues KVM_GET_MSRS for the Index of each entry and fills Data in
// place. It returns how many MSRs were read: reading stops at the first MSR
// KVM refuses, so n < len(entries) means entries[n] failed. At most
// MaxMSREntries entries per call.
func (c *VCPU) GetMSRs(entries []MSREntry) (int, error) {
	const op = "KVM_GET_MSRS"
	if len(entries) > MaxMSREntries {
		return 0, opError(op, fmt.Errorf("%d MSRs, at most %d per call", len(entries), MaxMSREntries))
	}
	buf := marshalMSRs(entries)
	n, err := ioctlWords(c.fd, kvmGetMSRs, op, buf)
	if err != nil {
		return 0, err
	}
	if err := unmarshalMSRData(buf, entries, n); err != nil {
		return 0, opError(op, err)
	}
	return n, nil
}

// SetMSRs issues KVM_SET_MSRS. It returns how many MSRs were written:
// writing stops at the first MSR KVM refuses. At most MaxMSREntries entries
// per call.
func (c *VCPU) SetMSRs(entries []MSREntry) (int, error) {
	const op = "KVM_SET_MSRS"
	if len(entries) > MaxMSREntries {
		return 0, opError(op, fmt.Errorf("%d MSRs, at most %d per call", len(entries), MaxMSREntries))
	}
	n, err := ioctlWords(c.fd, kvmSetMSRs, op, marshalMSRs(entries))
	if err != nil {
		return 0, err
	}
	if n < 0 || n > len(entries) {
		return 0, opError(op, fmt.Errorf("kernel reports %d MSRs written of %d", n, len(entries)))
	}
	return n, nil
}

// SetCPUID2 issues KVM_SET_CPUID2: the CPUID table the guest sees. Call it
// before the first Run.
func (c *VCPU) SetCPUID2(cpuid *CPUID) error {
	const op = "KVM_SET_CPUID2"
	if cpuid == nil {
		return opError(op, errors.New("nil CPUID"))
	}
	if len(cpuid.Entries) > MaxCPUIDEntries {
		return opError(op, fmt.Errorf("%d entries, at most %d", len(cpuid.Entries), MaxCPUIDEntries))
	}
	_, err := ioctlWords(c.fd, kvmSetCPUID2, op, marshalCPUID2(cpuid.Entries))
	return err
}

// GetCPUID2 issues KVM_GET_CPUID2: the CPUID table set on this vCPU.
func (c *VCPU) GetCPUID2() (*CPUID, error) {
	return getCPUID(c.fd, kvmGetCPUID2, "KVM_GET_CPUID2")
}

// GetTSCKHz issues KVM_GET_TSC_KHZ: the guest TSC frequency in kHz (needs
// CapGetTSCKHz).
func (c *VCPU) GetTSCKHz() (uint32, error) {
	r, err := ioctlVal(c.fd, kvmGetTSCKHz, "KVM_GET_TSC_KHZ", 0)
	if err != nil {
		return 0, err
	}
	if r < 0 || r > math.MaxUint32 {
		return 0, opError("KVM_GET_TSC_KHZ", fmt.Errorf("bad frequency %d", r))
	}
	return uint32(r), nil
}

// SetTSCKHz issues KVM_SET_TSC_KHZ (needs CapTSCControl); 0 means the host
// frequency.
func (c *VCPU) SetTSCKHz(khz uint32) error {
	_, err := ioctlVal(c.fd, kvmSetTSCKHz, "KVM_SET_TSC_KHZ", uintptr(khz))
	return err
}

// KVMClockCtrl issues KVM_KVMCLOCK_CTRL: tells the guest's kvmclock that
// the vCPU was paused, so its soft-lockup watchdog does not fire. Call it
// after a pause, before resuming (needs CapKVMClockCtrl; EINVAL if the
// guest does not use kvmclock).
func (c *VCPU) KVMClockCtrl() error {
	_, err := ioctlVal(c.fd, kvmKVMClockCtrl, "KVM_KVMCLOCK_CTRL", 0)
	return err
}

// NMI issues KVM_NMI: queues an NMI on the vCPU. The kernel documents it
// as well defined only without KVM_CREATE_IRQCHIP.
func (c *VCPU) NMI() error {
	_, err := ioctlVal(c.fd, kvmNMI, "KVM_NMI", 0)
	return err
}
