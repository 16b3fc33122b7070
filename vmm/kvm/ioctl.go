package kvm

import "reflect"

// sizeOf returns the size of T in bytes, for encoding it in an ioctl number.
func sizeOf[T any]() uint32 {
	return uint32(reflect.TypeFor[T]().Size())
}

// ioctlVal issues a scalar-argument ioctl named op on fd.
func ioctlVal(fd int, req uint32, op string, arg uintptr) (int, error) {
	if fd < 0 {
		return 0, opError(op, ErrClosed)
	}
	r, err := rawIoctl(fd, req, arg)
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
	r, err := rawIoctlPtr(fd, req, p)
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
	r, err := rawIoctlWords(fd, req, w)
	if err != nil {
		return r, opError(op, err)
	}
	return r, nil
}
