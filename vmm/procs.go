package vmm

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
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

// monitorSlackNS is the timer slack given to the Go runtime's monitor
// thread (sysmon): one tick of a 250 Hz host kernel.
const monitorSlackNS = 4_000_000

// slackenMonitor lets the Go runtime's monitor thread (sysmon) sleep with
// a coarse timer. The monitor falls into a deep sleep whenever every P is
// idle, and any thread entering or leaving a system call wakes it again;
// it then sleeps 20 µs before looking around. Under guest I/O (device
// workers writing to images and taps, vCPUs leaving KVM_RUN) that is about
// a thousand wake-ups a second, and each 20 µs sleep ends with a timer
// interrupt of its own on a host CPU, which takes a vCPU running there out
// of the guest (KVM's irq_exits). With a slack of a host tick the kernel
// ends those sleeps with an interrupt that comes anyway. Measured in the
// nested host under a guest writing its disk: 1,600-1,850 host timer
// interrupts a second without, 830-840 with (QEMU: 500-770), and the
// monitor's context switches from 1,170-1,450 to 370-380 a second. Its
// duties (taking Ps back from long system calls, preempting goroutines
// that ran 10 ms, polling the network when nobody did for 10 ms) work at
// 10 ms granularity, so a few ms of lateness costs nothing.
//
// The monitor is the first thread the runtime starts (runtime.main, before
// any package initialisation), so it is the process's lowest thread ID
// after the main thread's. Setting another thread's slack needs
// CAP_SYS_NICE: without it the monitor keeps its slack and the returned
// error says why. If the guess were ever wrong, another runtime thread's
// timed waits would end up to monitorSlackNS late, nothing worse.
func slackenMonitor() error {
	tid, err := findMonitorThread()
	if err != nil {
		return err
	}
	if err := os.WriteFile(timerSlackPath(tid), []byte(strconv.Itoa(monitorSlackNS)), 0); err != nil {
		return fmt.Errorf("setting the timer slack of thread %d: %w", tid, err)
	}
	return nil
}

// findMonitorThread returns the thread ID of this process's Go runtime
// monitor (see monitorThread).
func findMonitorThread() (int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, fmt.Errorf("listing threads: %w", err)
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	tid, ok := monitorThread(os.Getpid(), tids)
	if !ok {
		return 0, errors.New("no thread but the main one")
	}
	return tid, nil
}

// timerSlackPath is the file holding thread tid's timer slack in ns:
// /proc/TID, not /proc/self/task/TID, which lacks it.
func timerSlackPath(tid int) string {
	return "/proc/" + strconv.Itoa(tid) + "/timerslack_ns"
}

// monitorThread picks the runtime monitor's thread among a process's
// thread IDs: the lowest one that is not the main thread (pid).
func monitorThread(pid int, tids []int) (int, bool) {
	best, ok := 0, false
	for _, tid := range tids {
		if tid != pid && tid > 0 && (!ok || tid < best) {
			best, ok = tid, true
		}
	}
	return best, ok
}
