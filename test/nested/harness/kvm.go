package harness

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// CPUHasVirt reports whether /proc/cpuinfo content lists the vmx (Intel
// VT-x) or svm (AMD-V) flag.
func CPUHasVirt(cpuinfo string) bool {
	sc := bufio.NewScanner(strings.NewReader(cpuinfo))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, f := range strings.Fields(val) {
			if f == "vmx" || f == "svm" {
				return true
			}
		}
	}
	return false
}

// KVMUsable decides whether tests can use this machine's /dev/kvm directly:
// it must open read-write, answer KVM_GET_API_VERSION with 12, and the CPU
// must advertise vmx or svm. The last check matters: some sandboxes expose a
// /dev/kvm that answers ioctls but cannot boot a Linux guest. The reason
// explains a negative answer.
func KVMUsable() (ok bool, reason string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err.Error()
	}
	defer f.Close()
	v, err := unix.IoctlRetInt(int(f.Fd()), 0xAE00) // KVM_GET_API_VERSION
	if err != nil {
		return false, fmt.Sprintf("KVM_GET_API_VERSION: %v", err)
	}
	if v != 12 {
		return false, fmt.Sprintf("KVM API version %d, want 12", v)
	}
	ci, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false, err.Error()
	}
	if !CPUHasVirt(string(ci)) {
		return false, "/dev/kvm exists but the CPU flags lack vmx/svm (not trusted to run guests)"
	}
	return true, "/dev/kvm usable"
}
