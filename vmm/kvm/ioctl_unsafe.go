package kvm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file holds every raw ioctl(2) call of the package and the one place
// where Go memory is reinterpreted. Pointers are converted to uintptr inside
// the unix.Syscall call expression, which keeps the pointee alive and
// unmoved for the duration of the call.

// rawIoctl issues ioctl(fd, req, arg) with a scalar argument.
func rawIoctl(fd int, req uint32, arg uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), arg)
	if errno != 0 {
		return int(r), errno
	}
	return int(r), nil
}

// rawIoctlPtr issues ioctl(fd, req, p) where p points to a kernel ABI mirror.
func rawIoctlPtr[T any](fd int, req uint32, p *T) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(p)))
	if errno != 0 {
		return int(r), errno
	}
	return int(r), nil
}

// rawIoctlWords issues ioctl(fd, req, &w[0]); w holds a marshalled
// variable-length struct. w must not be empty.
func rawIoctlWords(fd int, req uint32, w []uint64) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&w[0])))
	if errno != 0 {
		return int(r), errno
	}
	return int(r), nil
}

// wordBytes returns the bytes of w. The []uint64 backing store guarantees
// the 8-byte alignment the kernel's variable-length structs need.
func wordBytes(w []uint64) []byte {
	if len(w) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), len(w)*8)
}

// dirtyLog mirrors struct kvm_dirty_log. Bitmap is an unsafe.Pointer (not a
// uintptr) so the garbage collector sees the reference while the kernel
// fills the bitmap.
type dirtyLog struct {
	Slot     uint32
	Padding1 uint32
	Bitmap   unsafe.Pointer
}

// rawGetDirtyLog issues KVM_GET_DIRTY_LOG for slot into bitmap, which must
// be non-empty and large enough for the slot (the caller checks).
func rawGetDirtyLog(fd int, slot uint32, bitmap []uint64) error {
	dl := dirtyLog{Slot: slot, Bitmap: unsafe.Pointer(&bitmap[0])}
	_, err := rawIoctlPtr(fd, kvmGetDirtyLog, &dl)
	return err
}

// clearDirtyLog mirrors struct kvm_clear_dirty_log. Bitmap is an
// unsafe.Pointer for the same reason as dirtyLog's.
type clearDirtyLog struct {
	Slot      uint32
	NumPages  uint32
	FirstPage uint64
	Bitmap    unsafe.Pointer
}

// rawClearDirtyLog issues KVM_CLEAR_DIRTY_LOG for numPages pages of slot
// from firstPage, with one bit per page in bitmap, which must be non-empty
// and hold at least numPages bits (the caller checks).
func rawClearDirtyLog(fd int, slot uint32, firstPage uint64, numPages uint32, bitmap []uint64) error {
	cl := clearDirtyLog{Slot: slot, NumPages: numPages, FirstPage: firstPage, Bitmap: unsafe.Pointer(&bitmap[0])}
	_, err := rawIoctlPtr(fd, kvmClearDirtyLog, &cl)
	return err
}
