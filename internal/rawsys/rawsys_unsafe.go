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

// Write issues write(2) of p to fd, which must not block.
func Write(fd int, p []byte) (int, error) {
	r, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(bufPtr(p)), uintptr(len(p)))
	return result(r, errno)
}

// Read issues read(2) of up to len(p) bytes from fd, which must not block
// (nonblocking, or known readable).
func Read(fd int, p []byte) (int, error) {
	r, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(bufPtr(p)), uintptr(len(p)))
	return result(r, errno)
}

// Writev issues writev(2) of iov to fd, which must not block. The iovecs
// point into memory the caller keeps alive for the call.
func Writev(fd int, iov []unix.Iovec) (int, error) {
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
