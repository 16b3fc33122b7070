package vmm

import (
	"os"
	"runtime"
)

// reserveProcs makes room in the Go scheduler for vcpus threads that
// spend their lives inside KVM_RUN. A goroutine in a system call keeps its
// P (the right to run Go code) until the runtime's monitor takes it back,
// which it does only after the call has lasted a monitor tick, and the
// monitor sleeps up to 10 ms when it has seen nothing to do. With one P
// per host CPU and every P held by a vCPU in KVM_RUN, a device worker or
// a notification reader woken by the poller waits that long for a P:
// latency on every queue notification and interrupt. With a P per host
// CPU plus one per vCPU there is always a free one. GOMAXPROCS in the
// environment wins; the count is never lowered.
func reserveProcs(vcpus int) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	if n := runtime.NumCPU() + vcpus; n > runtime.GOMAXPROCS(0) {
		runtime.GOMAXPROCS(n)
	}
}
