package kvm

import (
	"errors"
	"reflect"

	"golang.org/x/sys/unix"
)

// sizeOf returns the size of T in bytes, for encoding it in an ioctl number.
func sizeOf[T any]() uint32 {
	return uint32(reflect.TypeFor[T]().Size())
}

// ioctlVal issues a scalar-argument ioctl named op on fd.
func ioctlVal(fd int, req uint32, op string, arg uintptr) (int, error) {
	if fd < 0 {
		return 0, opError(op, ErrClosed)
	}
	r, err := retryEINTR(req, func() (int, error) { return rawIoctl(fd, req, arg) })
	if err != nil {
		return r, opError(op, err)
	}
	return r, nil
}

// ioctlPtr issues a pointer-argument ioctl named op on fd.
func ioctlPtr[T any](fd int, req uint32, op string, p *T) (int, error) {
	if fd < 0 {
		return 0, opError(op, ErrClosed)
	}
	r, err := retryEINTR(req, func() (int, error) { return rawIoctlPtr(fd, req, p) })
	if err != nil {
		return r, opError(op, err)
	}
	return r, nil
}

// ioctlWords issues an ioctl named op whose argument is the marshalled
// variable-length struct in w.
func ioctlWords(fd int, req uint32, op string, w []uint64) (int, error) {
	if fd < 0 {
		return 0, opError(op, ErrClosed)
	}
	r, err := retryEINTR(req, func() (int, error) { return rawIoctlWords(fd, req, w) })
	if err != nil {
		return r, opError(op, err)
	}
	return r, nil
}

// retryEINTR issues an ioctl again while it fails with EINTR, as Go's os
// package does for its system calls: the Go runtime interrupts threads
// with signals (SIGURG for preemption), and KVM lets some ioctls, such as
// KVM_CREATE_VM, fail with EINTR when one arrives, having done nothing.
// KVM_RUN is the exception: its EINTR is how a vCPU is kicked out, and
// the caller must see it.
func retryEINTR(req uint32, call func() (int, error)) (int, error) {
	for {
		r, err := call()
		if req == kvmRun || !errors.Is(err, unix.EINTR) {
			return r, err
		}
	}
}
