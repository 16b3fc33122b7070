package integration

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// ioctl numbers from <linux/kvm.h>: _IO(KVMIO=0xAE, nr).
const (
	kvmGetAPIVersion  = 0xAE00
	kvmCheckExtension = 0xAE03
	kvmCapUserMemory  = 3
	kvmCapIRQChip     = 0
)

// TestNestedKVMAvailable proves the pipeline end to end: /dev/kvm opens and
// answers the basic system ioctls the way the KVM API documents.
func TestNestedKVMAvailable(t *testing.T) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("needs /dev/kvm: %v", err)
	}
	defer f.Close()
	tests := []struct {
		name string
		req  uint
		arg  int
		ok   func(int) bool
		want string
	}{
		{"KVM_GET_API_VERSION", kvmGetAPIVersion, 0, func(v int) bool { return v == 12 }, "12"},
		{"KVM_CHECK_EXTENSION(KVM_CAP_USER_MEMORY)", kvmCheckExtension, kvmCapUserMemory, func(v int) bool { return v > 0 }, "> 0"},
		{"KVM_CHECK_EXTENSION(KVM_CAP_IRQCHIP)", kvmCheckExtension, kvmCapIRQChip, func(v int) bool { return v > 0 }, "> 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := ioctlArg(int(f.Fd()), tt.req, tt.arg)
			if err != nil {
				t.Fatalf("ioctl: %v", err)
			}
			if !tt.ok(v) {
				t.Errorf("= %d, want %s", v, tt.want)
			}
		})
	}
}

// ioctlArg issues an ioctl whose argument is a plain integer.
func ioctlArg(fd int, req uint, arg int) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}
