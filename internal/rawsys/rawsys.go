// Package rawsys makes the system calls of the device hot paths (reading
// and writing a tap, an eventfd, polling an epoll set without waiting)
// without the Go scheduler's system-call bookkeeping.
//
// A system call made through syscall.Syscall or golang.org/x/sys/unix
// enters and leaves the scheduler's "in a system call" state, so that the
// runtime can hand the caller's P to another thread if the call blocks.
// While every P is idle the runtime's monitor thread (sysmon) sleeps
// deeply, and entering or leaving that state wakes it: the first system
// call of every burst of device work (a guest's notification after a quiet
// moment) woke a thread on another CPU, which then slept 20 µs and woke
// again. In the nested host that was hundreds of cross-CPU wake-ups a
// second under guest network traffic (docs/benchmarks.md, session 12).
//
// The calls here use unix.RawSyscall instead, which skips that state: the
// caller keeps its P for the call. That is right only for calls that never
// block and return quickly: every function here is meant for descriptors
// that are nonblocking or known to be ready (an eventfd's write of 1, a
// tap, an epoll_wait with a zero timeout). A blocking call made this way
// would hold its P, and stop garbage collection, until it returned.
package rawsys

import "golang.org/x/sys/unix"

// result converts a raw system call's return to the (int, error) of the
// unix package's wrappers: 0 and the Errno on failure, so that callers can
// compare the error with unix.EAGAIN and the like.
func result(r uintptr, errno unix.Errno) (int, error) {
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// The calls themselves, which pass pointers, are in rawsys_unsafe.go.

// EpollPoll takes the ready events of the epoll set ep into events without
// waiting (epoll_wait(2) with a zero timeout), retrying on EINTR, and
// returns how many it took.
func EpollPoll(ep int, events []unix.EpollEvent) (int, error) {
	for {
		n, err := epollPoll(ep, events)
		if err != unix.EINTR {
			return n, err
		}
	}
}
