package vmm

import "fmt"

// faultReport describes the vCPU's registers after a fatal guest stop
// (a triple fault), for the stop reason: where the guest was, its paging
// and descriptor-table registers and any event KVM had in flight. It is
// best effort: a register set that cannot be read is reported as such.
// On AMD, KVM INITs a vCPU after a shutdown intercept (the VMCB is
// undefined then), so there the registers show the reset state; the
// report says so when RIP is the reset vector.
func (c *vcpu) faultReport() string {
	r, err := c.kvm.GetRegs()
	if err != nil {
		return fmt.Sprintf("registers unreadable: %v", err)
	}
	s, err := c.kvm.GetSregs()
	if err != nil {
		return fmt.Sprintf("rip=%#x rsp=%#x; special registers unreadable: %v", r.RIP, r.RSP, err)
	}
	out := fmt.Sprintf("rip=%#x rsp=%#x rflags=%#x cs=%#x cr0=%#x cr2=%#x cr3=%#x cr4=%#x efer=%#x idt=%#x/%#x gdt=%#x/%#x",
		r.RIP, r.RSP, r.RFLAGS, s.CS.Selector, s.CR0, s.CR2, s.CR3, s.CR4, s.EFER,
		s.IDT.Base, s.IDT.Limit, s.GDT.Base, s.GDT.Limit)
	if r.RIP == 0xfff0 && s.CS.Selector == 0xf000 {
		out += " (the reset state: KVM re-initialised the vCPU, the faulting state is lost)"
	}
	if ev, err := c.kvm.GetVCPUEvents(); err == nil {
		out += fmt.Sprintf(" exception(injected=%d pending=%d nr=%d err=%#x) interrupt(injected=%d nr=%d) nmi(injected=%d pending=%d)",
			ev.ExceptionInjected, ev.ExceptionPending, ev.ExceptionNr, ev.ExceptionErrorCode,
			ev.InterruptInjected, ev.InterruptNr, ev.NMIInjected, ev.NMIPending)
	}
	return out
}
