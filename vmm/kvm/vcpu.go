package kvm

import "golang.org/x/sys/unix"

// VCPU is a virtual CPU (the fd from KVM_CREATE_VCPU) with its kvm_run
// mapping. Run and the exit accessors belong to one goroutine, ideally
// locked to its OS thread; SetImmediateExit may be called from any
// goroutine while the VCPU is open. Close must not race with other calls.
type VCPU struct {
	fd  int
	id  int
	run runPage
}

// Close unmaps kvm_run and closes the vCPU fd. A second Close returns
// ErrClosed.
func (c *VCPU) Close() error {
	if c.fd < 0 {
		return opError("close vCPU", ErrClosed)
	}
	var errUnmap error
	if c.run != nil {
		errUnmap = unix.Munmap(c.run)
		c.run = nil
	}
	errClose := unix.Close(c.fd)
	c.fd = -1
	if errUnmap != nil {
		return opError("munmap kvm_run", errUnmap)
	}
	if errClose != nil {
		return opError("close vCPU", errClose)
	}
	return nil
}

// ID returns the vCPU id given to CreateVCPU.
func (c *VCPU) ID() int { return c.id }

// FD returns the vCPU file descriptor (-1 after Close).
func (c *VCPU) FD() int { return c.fd }

// Run issues KVM_RUN and returns when the guest exits to userspace; read
// ExitReason and the matching accessor. A signal or SetImmediateExit makes
// it fail with an error for which errors.Is(err, unix.EINTR) holds;
// errors.Is(err, unix.EAGAIN) can also occur. Both mean "call Run again".
func (c *VCPU) Run() error {
	_, err := ioctlVal(c.fd, kvmRun, "KVM_RUN", 0)
	return err
}

// ExitReason returns kvm_run.exit_reason from the last Run.
func (c *VCPU) ExitReason() ExitReason {
	return ExitReason(c.run.u32(runExitReason))
}

// SetImmediateExit sets kvm_run.immediate_exit: while on, KVM_RUN returns
// EINTR at once instead of entering the guest (how another goroutine kicks
// a vCPU out, together with a signal). It is a single byte store.
func (c *VCPU) SetImmediateExit(on bool) {
	if len(c.run) <= runImmediateExit {
		return
	}
	var b byte
	if on {
		b = 1
	}
	c.run[runImmediateExit] = b
}

// SetRequestInterruptWindow sets kvm_run.request_interrupt_window (only
// meaningful without the in-kernel irqchip).
func (c *VCPU) SetRequestInterruptWindow(on bool) {
	if len(c.run) <= runRequestInterruptWindow {
		return
	}
	var b byte
	if on {
		b = 1
	}
	c.run[runRequestInterruptWindow] = b
}

// ReadyForInterruptInjection returns kvm_run.ready_for_interrupt_injection.
func (c *VCPU) ReadyForInterruptInjection() bool {
	return c.run.u8(runReadyForInjection) != 0
}

// IO decodes a KVM_EXIT_IO exit. Data aliases the kvm_run mapping; the
// data window is checked to lie inside the mapping.
func (c *VCPU) IO() (IOExit, error) {
	return c.run.decodeIO()
}

// MMIO decodes a KVM_EXIT_MMIO exit. Data aliases kvm_run.mmio.data; an
// access length outside 1..8 is an error.
func (c *VCPU) MMIO() (MMIOExit, error) {
	return c.run.decodeMMIO()
}

// SystemEvent decodes a KVM_EXIT_SYSTEM_EVENT exit: the type
// (SystemEventShutdown, SystemEventReset, ...) and a copy of the ndata
// (at most 16) data words.
func (c *VCPU) SystemEvent() (typ uint32, data []uint64) {
	return c.run.u32(runSystemEventType), c.run.u64s(runSystemEventData, c.run.u32(runSystemEventNData))
}

// FailEntry decodes a KVM_EXIT_FAIL_ENTRY exit: the hardware's entry
// failure reason (VMX exit qualification) and the host CPU.
func (c *VCPU) FailEntry() (hardwareReason uint64, cpu uint32) {
	return c.run.u64(runFailEntryReason), c.run.u32(runFailEntryCPU)
}

// InternalError decodes a KVM_EXIT_INTERNAL_ERROR exit: the suberror
// (InternalErrorEmulation, ...) and a copy of the ndata (at most 16) data
// words.
func (c *VCPU) InternalError() (suberror uint32, data []uint64) {
	return c.run.u32(runInternalSuberror), c.run.u64s(runInternalData, c.run.u32(runInternalNData))
}

// HardwareExitReason decodes a KVM_EXIT_UNKNOWN exit.
func (c *VCPU) HardwareExitReason() uint64 {
	return c.run.u64(runHWExitReason)
}

// Exception decodes a KVM_EXIT_EXCEPTION exit: vector and error code.
func (c *VCPU) Exception() (vector, errorCode uint32) {
	return c.run.u32(runExException), c.run.u32(runExErrorCode)
}
