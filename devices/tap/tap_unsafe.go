package tap

import (
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/abi/linux"
)

// This file holds the package's only raw ioctl(2) with a pointer to a
// kernel ABI mirror, and the struct sizes the ioctl numbers encode. The
// pointer is converted to uintptr inside the unix.Syscall call
// expression, which keeps the pointee alive and unmoved for the call.

// ioctlIFReq issues ioctl(fd, req, ifr). linux.IFReq mirrors struct ifreq
// (include/uapi/linux/if.h): a 16-byte name and a 24-byte union, of which
// tun uses ifr_flags, a short at the start of the union.
func ioctlIFReq(fd int, req uint32, ifr *linux.IFReq) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(ifr)))
	if errno != 0 {
		return errno
	}
	return nil
}

// sizeOf returns the size of T, the size the kernel encodes in an ioctl
// number (_IOC_SIZE).
func sizeOf[T any]() uint32 {
	var v T
	return uint32(unsafe.Sizeof(v))
}

// ifreqSize is the size of the struct ifreq mirror.
var ifreqSize = sizeOf[linux.IFReq]()
