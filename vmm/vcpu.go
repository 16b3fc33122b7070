package vmm

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"godwit/devices"
	"godwit/vmm/boot"
	"godwit/vmm/kvm"
)

// vcpu is one virtual CPU and the OS thread that runs it.
type vcpu struct {
	vm  *VM
	id  int
	kvm *kvm.VCPU
	tid atomic.Int32 // OS thread id while the loop runs, for kicks
	// cpuid is the table given to KVM_SET_CPUID2; it is what migrates
	// (KVM_GET_CPUID2 need not return it unchanged on every host).
	cpuid *kvm.CPUID
}

// createVCPUs creates every vCPU and gives it its CPUID, LAPIC and FPU state.
func (v *VM) createVCPUs() error {
	cpuid, err := v.sys.SupportedCPUID()
	if err != nil {
		return fmt.Errorf("reading supported CPUID: %w", err)
	}
	reserveProcs(v.cfg.CPUs)
	if err := slackenMonitor(); err != nil {
		v.log.Debug("the Go runtime monitor keeps its timer slack", "err", err)
	}
	for i := 0; i < v.cfg.CPUs; i++ {
		k, err := v.vm.CreateVCPU(i)
		if err != nil {
			return fmt.Errorf("creating vCPU %d: %w", i, err)
		}
		c := &vcpu{vm: v, id: i, kvm: k}
		v.vcpus = append(v.vcpus, c)
		if err := c.setup(cpuid); err != nil {
			return fmt.Errorf("setting up vCPU %d: %w", i, err)
		}
	}
	// Find the MSRs that migrate now, while no vCPU runs: a vCPU ioctl
	// waits for the vCPU to leave KVM_RUN, which an idle guest halted
	// inside KVM may not do for a long time, so probing when a migration
	// starts could stall it for seconds. An incoming VM takes the list
	// from the state it restores instead (RestoreState). A failure here
	// only postpones the probe to the first migration.
	if !v.cfg.Incoming {
		if err := v.probeMSRs(); err != nil {
			v.log.Debug("probing the MSRs that migrate; retrying when a migration starts", "err", err)
		}
	}
	return nil
}

// setBootState puts the boot vCPU into the loader's entry state.
func (c *vcpu) setBootState(e boot.Entry) error {
	sregs, err := c.kvm.GetSregs()
	if err != nil {
		return fmt.Errorf("reading vCPU %d sregs: %w", c.id, err)
	}
	boot.SetupSregs(&sregs, e.Mode)
	if err := c.kvm.SetSregs(sregs); err != nil {
		return fmt.Errorf("setting vCPU %d sregs: %w", c.id, err)
	}
	if err := c.kvm.SetRegs(e.Regs); err != nil {
		return fmt.Errorf("setting vCPU %d regs: %w", c.id, err)
	}
	return nil
}

// loop runs the vCPU on a locked OS thread until the VM stops.
func (c *vcpu) loop() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c.tid.Store(int32(unix.Gettid()))
	defer func() {
		c.tid.Store(0)
		c.vm.vcpuExited()
	}()
	// KVM finishes an I/O or MMIO exit (stores the data an IN read,
	// advances RIP past the instruction) only on the next KVM_RUN, and
	// that pending work is in no state userspace can save (KVM API,
	// "immediate_exit"). So after such an exit the vCPU re-enters before it
	// may park: with immediate_exit set by the pause, KVM completes the
	// instruction and returns EINTR without running the guest further.
	// Parking earlier would save a RIP still at the instruction, which the
	// destination of a migration would execute a second time.
	pending := false
	for {
		if !pending && !c.vm.parkIfPaused(c) {
			return
		}
		err := c.kvm.Run()
		pending = false
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				c.vm.exits.intr.Add(1)
				continue
			}
			c.vm.requestStop(StopReason{What: fmt.Sprintf("vCPU %d: KVM_RUN failed", c.id), Err: err})
			return
		}
		stop := c.handleExit()
		if stop != nil {
			c.vm.requestStop(*stop)
			return
		}
		switch c.kvm.ExitReason() {
		case kvm.ExitIO, kvm.ExitMMIO:
			pending = true
		}
	}
}

// handleExit dispatches one VM exit; a non-nil result stops the VM.
func (c *vcpu) handleExit() *StopReason {
	v := c.vm
	switch reason := c.kvm.ExitReason(); reason {
	case kvm.ExitIO:
		v.exits.io.Add(1)
		io, err := c.kvm.IO()
		if err != nil {
			return &StopReason{What: fmt.Sprintf("vCPU %d: bad I/O exit", c.id), Err: err}
		}
		size := int(io.Size)
		for i := 0; i+size <= len(io.Data); i += size {
			chunk := io.Data[i : i+size]
			if io.In {
				if !v.pio.Read(uint64(io.Port), chunk) {
					devices.FillOnes(chunk)
				}
			} else {
				v.pio.Write(uint64(io.Port), chunk)
			}
		}
	case kvm.ExitMMIO:
		v.exits.mmio.Add(1)
		m, err := c.kvm.MMIO()
		if err != nil {
			return &StopReason{What: fmt.Sprintf("vCPU %d: bad MMIO exit", c.id), Err: err}
		}
		if m.IsWrite {
			v.mmio.Write(m.Addr, m.Data)
		} else if !v.mmio.Read(m.Addr, m.Data) {
			devices.FillOnes(m.Data)
		}
	case kvm.ExitIntr:
		v.exits.intr.Add(1)
	case kvm.ExitHLT:
		// With the in-kernel LAPIC, HLT is handled by KVM; an exit here
		// means the guest halted for good.
		v.exits.hlt.Add(1)
		return &StopReason{Clean: true, What: fmt.Sprintf("vCPU %d halted", c.id)}
	case kvm.ExitShutdown:
		return &StopReason{What: fmt.Sprintf("vCPU %d: guest triple fault (KVM_EXIT_SHUTDOWN)", c.id), Err: fmt.Errorf("triple fault: %s", c.faultReport())}
	case kvm.ExitSystemEvent:
		typ, _ := c.kvm.SystemEvent()
		switch typ {
		case kvm.SystemEventShutdown:
			return &StopReason{Clean: true, What: "guest powered off"}
		case kvm.SystemEventReset:
			return &StopReason{Clean: true, What: "guest requested a reset"}
		}
		return &StopReason{What: fmt.Sprintf("vCPU %d: system event %d", c.id, typ), Err: errors.New("guest crashed")}
	case kvm.ExitFailEntry:
		hw, cpu := c.kvm.FailEntry()
		return &StopReason{What: fmt.Sprintf("vCPU %d: VM entry failed", c.id), Err: fmt.Errorf("hardware entry failure reason %#x on host CPU %d", hw, cpu)}
	case kvm.ExitInternalError:
		sub, data := c.kvm.InternalError()
		return &StopReason{What: fmt.Sprintf("vCPU %d: KVM internal error", c.id), Err: fmt.Errorf("suberror %d, data %#x", sub, data)}
	default:
		v.exits.other.Add(1)
		return &StopReason{What: fmt.Sprintf("vCPU %d: unexpected exit %v", c.id, reason), Err: errors.New("unhandled VM exit")}
	}
	return nil
}
