package kvm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// DevicePath is the KVM device node Open uses.
const DevicePath = "/dev/kvm"

// APIVersion is the only KVM API version (KVM_API_VERSION) this package
// speaks; every kernel since 2.6.22 reports it.
const APIVersion = 12

// System is an open /dev/kvm: the handle for system ioctls and for creating
// VMs. Its methods may be called from several goroutines, but Close must not
// race with other calls.
type System struct {
	fd int
}

// Open opens /dev/kvm read-write and close-on-exec and checks the API
// version. Without KVM it returns an error wrapping ErrNoKVM; if the process
// may not use the device, one wrapping ErrKVMPermission.
func Open() (*System, error) {
	return openPath(DevicePath)
}

// openPath is Open on an arbitrary device path (for tests).
func openPath(path string) (*System, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, classifyOpenError(path, err)
	}
	s := &System{fd: fd}
	v, err := s.APIVersion()
	if err != nil {
		s.Close()
		return nil, err
	}
	if v != APIVersion {
		s.Close()
		return nil, fmt.Errorf("%w: %s reports %d, want %d", ErrAPIVersion, path, v, APIVersion)
	}
	return s, nil
}

// Close closes /dev/kvm. VMs created from the System stay valid. A second
// Close returns ErrClosed.
func (s *System) Close() error {
	if s.fd < 0 {
		return opError("close /dev/kvm", ErrClosed)
	}
	err := unix.Close(s.fd)
	s.fd = -1
	if err != nil {
		return opError("close /dev/kvm", err)
	}
	return nil
}

// APIVersion returns KVM_GET_API_VERSION.
func (s *System) APIVersion() (int, error) {
	return ioctlVal(s.fd, kvmGetAPIVersion, "KVM_GET_API_VERSION", 0)
}

// CheckExtension returns KVM_CHECK_EXTENSION for c: 0 if unsupported, else
// 1 or a capability-specific value (e.g. a count for CapMaxVCPUs).
func (s *System) CheckExtension(c Cap) (int, error) {
	return ioctlVal(s.fd, kvmCheckExtension, "KVM_CHECK_EXTENSION", uintptr(c))
}

// VCPUMmapSize returns KVM_GET_VCPU_MMAP_SIZE, the size of each vCPU's
// kvm_run mapping; it is checked to cover at least struct kvm_run.
func (s *System) VCPUMmapSize() (int, error) {
	n, err := ioctlVal(s.fd, kvmGetVCPUMmapSize, "KVM_GET_VCPU_MMAP_SIZE", 0)
	if err != nil {
		return 0, err
	}
	if n < runSize {
		return 0, fmt.Errorf("kvm: KVM_GET_VCPU_MMAP_SIZE returned %d, smaller than struct kvm_run (%d)", n, runSize)
	}
	return n, nil
}

// MaxCPUIDEntries bounds the CPUID tables this package exchanges with KVM
// (the kernel's KVM_MAX_CPUID_ENTRIES).
const MaxCPUIDEntries = 256

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID: the CPUID leaves KVM can
// expose to a guest on this host. The buffer grows on E2BIG up to
// MaxCPUIDEntries.
func (s *System) SupportedCPUID() (*CPUID, error) {
	return getCPUID(s.fd, kvmGetSupportedCPUID, "KVM_GET_SUPPORTED_CPUID")
}

// getCPUID runs a kvm_cpuid2-filling ioctl, growing the buffer on E2BIG.
func getCPUID(fd int, req uint32, op string) (*CPUID, error) {
	var out *CPUID
	err := growOnE2BIG(64, MaxCPUIDEntries, func(n int) error {
		buf := marshalCPUID2(make([]CPUIDEntry2, n))
		if _, err := ioctlWords(fd, req, op, buf); err != nil {
			return err
		}
		c, err := unmarshalCPUID2(buf)
		if err != nil {
			return opError(op, err)
		}
		out = c
		return nil
	})
	return out, err
}

// growOnE2BIG calls try with capacity start, doubling up to max while try
// fails with E2BIG. It returns try's last error.
func growOnE2BIG(start, max int, try func(n int) error) error {
	n := start
	for {
		err := try(n)
		if err == nil || !errors.Is(err, unix.E2BIG) || n >= max {
			return err
		}
		n = min(2*n, max)
	}
}

// maxMSRIndices bounds the MSR index list; the kernel's list is a few
// hundred entries.
const maxMSRIndices = 4096

// MSRIndexList returns KVM_GET_MSR_INDEX_LIST: the MSRs KVM saves and
// restores for a vCPU (to migrate, read and write all of them).
func (s *System) MSRIndexList() ([]uint32, error) {
	const op = "KVM_GET_MSR_INDEX_LIST"
	n := 0 // ask for the count first: on E2BIG the kernel writes it back
	for range 4 {
		buf := marshalMSRList(n)
		_, err := ioctlWords(s.fd, kvmGetMSRIndexList, op, buf)
		if err == nil {
			l, err := unmarshalMSRList(buf, n)
			if err != nil {
				return nil, opError(op, err)
			}
			return l, nil
		}
		if !errors.Is(err, unix.E2BIG) {
			return nil, err
		}
		need := int(msrListCount(buf))
		if need <= n || need > maxMSRIndices {
			return nil, opError(op, fmt.Errorf("kernel asks for %d entries (had %d, limit %d)", need, n, maxMSRIndices))
		}
		n = need
	}
	return nil, opError(op, errors.New("MSR index list kept growing"))
}

// CreateVM returns KVM_CREATE_VM (type 0, the default x86 VM). The VM
// records the vCPU mmap size for CreateVCPU. The kernel creates the VM fd
// close-on-exec.
func (s *System) CreateVM() (*VM, error) {
	mmapSize, err := s.VCPUMmapSize()
	if err != nil {
		return nil, err
	}
	fd, err := ioctlVal(s.fd, kvmCreateVM, "KVM_CREATE_VM", 0)
	if err != nil {
		return nil, err
	}
	return newVM(fd, mmapSize), nil
}
