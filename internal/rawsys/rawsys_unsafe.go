package rawsys

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file holds the package's pointer conversions: each pointer becomes
// a uintptr inside the unix.RawSyscall call expression, which keeps the
// pointee alive and unmoved for the call.

// bufPtr returns the address of p's first byte, or nil for an empty p.
func bufPtr[T any](p []T) unsafe.Pointer {
	if len(p) == 0 {
		return nil
	}
	return unsafe.Pointer(&p[0])
}

func write(fd int, p []byte) (int, error) {
	r, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(bufPtr(p)), uintptr(len(p)))
	return result(r, errno)
}

func read(fd int, p []byte) (int, error) {
	r, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(bufPtr(p)), uintptr(len(p)))
	return result(r, errno)
}

func writev(fd int, iov []unix.Iovec) (int, error) {
	r, _, errno := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(bufPtr(iov)), uintptr(len(iov)))
	return result(r, errno)
}

// epollPoll is epoll_wait(ep, events, len(events), 0), issued as
// epoll_pwait with a NULL signal mask (the same call, and one every
// architecture has).
func epollPoll(ep int, events []unix.EpollEvent) (int, error) {
	r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(bufPtr(events)), uintptr(len(events)), 0, 0, 0)
	return result(r, errno)
}
