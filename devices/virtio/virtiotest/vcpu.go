package virtiotest

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// VCPU plays the guest's vCPU thread in device benchmarks, so that every
// wake-up between driver and device crosses threads through the kernel,
// as in a VM, and none is a goroutine hand-off a VM never gets: the
// device's MSI-X messages signal an eventfd (as KVM's irqfds do), which
// WaitUsed reads blocked in read(2), like a halted vCPU; IOEventFD
// notifications are eventfd signals the transport's worker waits on (as
// KVM's ioeventfds are). The caller keeps the benchmark goroutine on its
// thread (runtime.LockOSThread) while it plays the vCPU.
type VCPU struct {
	t   testing.TB
	m   *Machine
	irq int // blocking eventfd the MSIs signal
}

// eventfdOne is the 8-byte eventfd increment.
var eventfdOne = binary.NativeEndian.AppendUint64(nil, 1)

// NewVCPU routes m's MSI-X messages to a new VCPU until the test ends.
func NewVCPU(t testing.TB, m *Machine) *VCPU {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	m.MSI.SetHook(func(MSIMessage) bool {
		_, _ = unix.Write(fd, eventfdOne)
		return true
	})
	t.Cleanup(func() {
		m.MSI.SetHook(nil)
		unix.Close(fd)
	})
	return &VCPU{t: t, m: m, irq: fd}
}

// IOEventFD returns queue q's notification through an eventfd the
// transport's worker watches (Transport.WatchNotifyFD), as KVM signals a
// registered ioeventfd when the guest writes the notify register.
func (v *VCPU) IOEventFD(q *Queue) func() {
	v.t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		v.t.Fatal(err)
	}
	if err := v.m.Transport.WatchNotifyFD(q.Index, fd); err != nil {
		unix.Close(fd)
		v.t.Fatal(err)
	}
	v.t.Cleanup(func() {
		v.m.Transport.UnwatchNotifyFD(q.Index, fd)
		unix.Close(fd)
	})
	return func() {
		if _, err := unix.Write(fd, eventfdOne); err != nil {
			v.t.Fatal(err)
		}
	}
}

// WaitUsed returns once q has n more used entries, sleeping in the kernel
// until an interrupt whenever there are too few (after asking for one
// with used_event, as Linux's driver does). It returns the entries.
func (v *VCPU) WaitUsed(q *Queue, n int) []UsedElem {
	var buf [8]byte
	return collectUsed(q, n, func() {
		if _, err := unix.Read(v.irq, buf[:]); err != nil {
			v.t.Fatal(err)
		}
	})
}
