package vmm

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"godwit/vmm/api"
)

// Pausing works like this: Pause sets v.paused and, for every vCPU, sets
// kvm_run.immediate_exit and sends the vCPU thread a signal. A vCPU inside
// KVM_RUN leaves it with EINTR; one about to enter returns at once because of
// immediate_exit. Either way the loop reaches parkIfPaused, counts itself
// parked and sleeps on runCond until Resume. Pause returns once every running
// vCPU has parked, so after it no vCPU touches guest state.

// kickSignal interrupts KVM_RUN. The Go runtime uses SIGURG for preemption
// and tolerates spurious ones, so sending it needs no handler of our own.
const kickSignal = unix.SIGURG

// parkIfPaused parks the calling vCPU while the VM is paused. It returns
// false when the vCPU must leave its loop because the VM is stopping.
func (v *VM) parkIfPaused(c *vcpu) bool {
	v.runMu.Lock()
	defer v.runMu.Unlock()
	if (v.paused || v.throttled) && !v.isStopping() {
		v.parked++
		v.runCond.Broadcast()
		for (v.paused || v.throttled) && !v.isStopping() {
			v.runCond.Wait()
		}
		v.parked--
	}
	// A kick that found this vCPU busy (a throttle slice or a pause that
	// ended before it got here) left immediate_exit set: without clearing
	// it, every KVM_RUN would return EINTR at once and the guest would
	// never run again. Kicks set it under runMu together with the flags
	// checked above, so none is lost.
	if !v.isStopping() {
		c.kvm.SetImmediateExit(false)
	}
	return !v.isStopping()
}

// isStopping reports whether a stop was requested.
func (v *VM) isStopping() bool {
	select {
	case <-v.stopped:
		return true
	default:
		return false
	}
}

// kickAll makes every vCPU leave KVM_RUN soon and wakes parked vCPUs.
func (v *VM) kickAll() {
	v.runMu.Lock()
	defer v.runMu.Unlock()
	v.kickLocked()
	v.runCond.Broadcast()
}

func (v *VM) kickLocked() {
	pid := unix.Getpid()
	for _, c := range v.vcpus {
		c.kvm.SetImmediateExit(true)
		if tid := c.tid.Load(); tid != 0 {
			// ESRCH only means the thread already left its loop.
			_ = unix.Tgkill(pid, int(tid), kickSignal)
		}
	}
}

// vcpuExited records that a vCPU loop returned.
func (v *VM) vcpuExited() {
	v.runMu.Lock()
	v.exited++
	v.runCond.Broadcast()
	v.runMu.Unlock()
}

// waitVCPUsExited blocks until every vCPU loop has returned.
func (v *VM) waitVCPUsExited() {
	v.runMu.Lock()
	for v.exited < len(v.vcpus) {
		v.runCond.Wait()
	}
	v.runMu.Unlock()
}

// Pause stops every vCPU and returns once all are parked. Pausing a paused
// VM does nothing.
func (v *VM) Pause(ctx context.Context) error {
	v.runMu.Lock()
	defer v.runMu.Unlock()
	switch v.state {
	case "paused":
		return nil
	case "running":
	default:
		return fmt.Errorf("%w: cannot pause a VM that is %s%s", api.ErrInvalidState, v.state, v.stopSuffixLocked())
	}
	v.paused = true
	v.kickLocked()
	// A vCPU blocked waiting for a SIPI or in a halted state inside KVM_RUN
	// leaves it on the signal, so every live loop parks.
	stopWake := context.AfterFunc(ctx, func() {
		v.runMu.Lock()
		v.runCond.Broadcast()
		v.runMu.Unlock()
	})
	defer stopWake()
	for v.parked+v.exited < len(v.vcpus) {
		if err := ctx.Err(); err != nil {
			v.paused = false
			v.runCond.Broadcast()
			return fmt.Errorf("pausing: %w", err)
		}
		if v.isStopping() {
			return fmt.Errorf("%w: the VM stopped while pausing", api.ErrInvalidState)
		}
		v.runCond.Wait()
	}
	// Device workers stop after the vCPUs, which might still have been
	// notifying queues until they parked.
	if err := v.pauseDevices(ctx); err != nil {
		v.paused = false
		v.runCond.Broadcast()
		return err
	}
	v.state = "paused"
	if os.Getenv("GODWIT_DEBUG_REGS") != "" {
		for _, c := range v.vcpus {
			r, _ := c.kvm.GetRegs()
			s, _ := c.kvm.GetSregs()
			v.log.Warn("vcpu", "id", c.id, "rip", fmt.Sprintf("%#x", r.RIP), "rsp", fmt.Sprintf("%#x", r.RSP), "cr0", fmt.Sprintf("%#x", s.CR0), "cr3", fmt.Sprintf("%#x", s.CR3), "cr4", fmt.Sprintf("%#x", s.CR4), "efer", fmt.Sprintf("%#x", s.EFER), "cs", s.CS.Selector, "cr2", fmt.Sprintf("%#x", s.CR2), "idt", fmt.Sprintf("%#x/%d", s.IDT.Base, s.IDT.Limit), "rflags", fmt.Sprintf("%#x", r.RFLAGS))
		}
	}
	return nil
}

// Resume lets parked vCPUs run again. Resuming a running VM does nothing.
func (v *VM) Resume(ctx context.Context) error {
	v.runMu.Lock()
	defer v.runMu.Unlock()
	switch v.state {
	case "running":
		return nil
	case "paused":
	default:
		return fmt.Errorf("%w: cannot resume a VM that is %s%s", api.ErrInvalidState, v.state, v.stopSuffixLocked())
	}
	// Devices run again before the vCPUs, which may notify them at once.
	if err := v.resumeDevices(); err != nil {
		return err
	}
	v.paused = false
	v.state = "running"
	v.runCond.Broadcast()
	return nil
}

// stopSuffixLocked returns " (why it stopped)" for a VM that stopped, for
// errors about requests it can no longer serve; runMu is held.
func (v *VM) stopSuffixLocked() string {
	if !v.isStopping() || v.stop.What == "" {
		return ""
	}
	if v.stop.Err != nil {
		return fmt.Sprintf(" (%s: %v)", v.stop.What, v.stop.Err)
	}
	return " (" + v.stop.What + ")"
}
