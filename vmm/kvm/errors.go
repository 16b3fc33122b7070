package kvm

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrNoKVM reports that the host has no usable /dev/kvm (the device node is
// missing, or the kvm module is not loaded). Test for it with errors.Is.
var ErrNoKVM = errors.New("no /dev/kvm: KVM is not available on this host")

// ErrKVMPermission reports that /dev/kvm exists but the process may not open
// it read-write. Test for it with errors.Is.
var ErrKVMPermission = errors.New("permission denied on /dev/kvm: add the user to the group owning /dev/kvm (usually kvm) or run as root")

// ErrAPIVersion reports that KVM_GET_API_VERSION returned something other
// than APIVersion.
var ErrAPIVersion = errors.New("unsupported KVM API version")

// ErrClosed reports a call on a System, VM or VCPU that was already closed.
var ErrClosed = errors.New("kvm: file descriptor already closed")

// classifyOpenError maps the error of opening the KVM device at path to
// ErrNoKVM or ErrKVMPermission where it can, keeping the original error
// reachable through errors.Is / errors.As.
func classifyOpenError(path string, err error) error {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("kvm: open %s: %w", path, err)
	}
	switch errno {
	case unix.ENOENT, unix.ENODEV, unix.ENXIO:
		return fmt.Errorf("%w (open %s: %w)", ErrNoKVM, path, errno)
	case unix.EACCES, unix.EPERM:
		return fmt.Errorf("%w (open %s: %w)", ErrKVMPermission, path, errno)
	default:
		return fmt.Errorf("kvm: open %s: %w", path, os.NewSyscallError("open", errno))
	}
}

// opError wraps err, the failure of the named ioctl or operation.
func opError(op string, err error) error {
	return fmt.Errorf("kvm: %s: %w", op, err)
}
