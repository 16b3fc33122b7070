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

// writev issues writev(fd, iov). The iovecs point into Go memory that the
// caller keeps alive for the call; the pointer to the array is converted
// to uintptr inside the unix.Syscall call expression.
func writev(fd int, iov []unix.Iovec) (int, error) {
	var p unsafe.Pointer
	if len(iov) > 0 {
		p = unsafe.Pointer(&iov[0])
	}
	n, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(p), uintptr(len(iov)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
