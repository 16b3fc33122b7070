package kvm

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestClassifyOpenError checks the mapping of open(2) errors to ErrNoKVM and ErrKVMPermission.
func TestClassifyOpenError(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantIs   []error
		wantNot  []error
		contains string
	}{
		{"ENOENT", unix.ENOENT, []error{ErrNoKVM, unix.ENOENT}, []error{ErrKVMPermission}, ""},
		{"ENODEV", unix.ENODEV, []error{ErrNoKVM, unix.ENODEV}, []error{ErrKVMPermission}, ""},
		{"ENXIO", unix.ENXIO, []error{ErrNoKVM}, nil, ""},
		{"EACCES", unix.EACCES, []error{ErrKVMPermission, unix.EACCES}, []error{ErrNoKVM}, ""},
		{"EPERM", unix.EPERM, []error{ErrKVMPermission, unix.EPERM}, []error{ErrNoKVM}, ""},
		{"EMFILE", unix.EMFILE, []error{unix.EMFILE}, []error{ErrNoKVM, ErrKVMPermission}, ""},
		{"wrapped ENOENT", &os.PathError{Op: "open", Path: "/dev/kvm", Err: unix.ENOENT}, []error{ErrNoKVM}, nil, ""},
		{"not an errno", errors.New("odd"), nil, []error{ErrNoKVM, ErrKVMPermission}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := classifyOpenError("/dev/kvm", tt.err)
			if err == nil {
				t.Fatal("nil error")
			}
			for _, target := range tt.wantIs {
				if !errors.Is(err, target) {
					t.Errorf("errors.Is(%q, %v) = false", err, target)
				}
			}
			for _, target := range tt.wantNot {
				if errors.Is(err, target) {
					t.Errorf("errors.Is(%q, %v) = true", err, target)
				}
			}
		})
	}
}

// TestOpenPath checks Open on paths that are not a KVM device.
func TestOpenPath(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		path   string
		wantIs error
	}{
		{"missing node", filepath.Join(dir, "kvm"), ErrNoKVM},
		{"directory", dir, unix.EISDIR},
		// A regular file opens but KVM_GET_API_VERSION fails with ENOTTY.
		{"not a KVM device", regular, unix.ENOTTY},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := openPath(tt.path)
			if err == nil {
				s.Close()
				t.Fatal("openPath succeeded")
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("openPath(%s) = %v, want errors.Is %v", tt.path, err, tt.wantIs)
			}
		})
	}
}

// TestOpen checks Open against the host: without /dev/kvm it must fail
// with ErrNoKVM; with it, it must succeed or report a permission problem.
func TestOpen(t *testing.T) {
	s, err := Open()
	if _, statErr := os.Stat(DevicePath); errors.Is(statErr, os.ErrNotExist) {
		if !errors.Is(err, ErrNoKVM) {
			t.Fatalf("Open() without %s = %v, want ErrNoKVM", DevicePath, err)
		}
		if err.Error() == "" || !errors.Is(err, unix.ENOENT) {
			t.Errorf("Open() error %q does not carry ENOENT", err)
		}
		return
	}
	if errors.Is(err, ErrKVMPermission) {
		t.Skipf("no permission on %s: %v", DevicePath, err)
	}
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	defer s.Close()
	if v, err := s.APIVersion(); err != nil || v != APIVersion {
		t.Errorf("APIVersion() = %d, %v", v, err)
	}
}

// TestClosedHandles checks that calls on closed handles return ErrClosed
// instead of touching a stale (possibly reused) fd number.
func TestClosedHandles(t *testing.T) {
	s := &System{fd: -1}
	v := newVM(-1, 4096)
	v.slots[0] = 4096
	c := &VCPU{fd: -1}
	tests := []struct {
		name string
		err  error
	}{
		{"System.Close", s.Close()},
		{"System.APIVersion", func() error { _, err := s.APIVersion(); return err }()},
		{"System.CheckExtension", func() error { _, err := s.CheckExtension(CapIRQChip); return err }()},
		{"System.SupportedCPUID", func() error { _, err := s.SupportedCPUID(); return err }()},
		{"System.MSRIndexList", func() error { _, err := s.MSRIndexList(); return err }()},
		{"System.CreateVM", func() error { _, err := s.CreateVM(); return err }()},
		{"VM.Close", v.Close()},
		{"VM.CreateIRQChip", v.CreateIRQChip()},
		{"VM.GetDirtyLog", v.GetDirtyLog(0, make([]uint64, 1))},
		{"VM.ClearDirtyLog", v.ClearDirtyLog(0, 0, 1, make([]uint64, 1))},
		{"VM.SetUserMemoryRegion", v.SetUserMemoryRegion(UserspaceMemoryRegion{MemorySize: 4096})},
		{"VM.CreateVCPU", func() error { _, err := v.CreateVCPU(0); return err }()},
		{"VM.GetClock", func() error { _, err := v.GetClock(); return err }()},
		{"VM.SetGSIRouting", v.SetGSIRouting(nil)},
		{"VCPU.Run", c.Run()},
		{"VCPU.GetRegs", func() error { _, err := c.GetRegs(); return err }()},
		{"VCPU.GetMSRs", func() error { _, err := c.GetMSRs([]MSREntry{{Index: 0x10}}); return err }()},
		{"VCPU.SetCPUID2", c.SetCPUID2(&CPUID{})},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, ErrClosed) {
			t.Errorf("%s on a closed handle = %v, want ErrClosed", tt.name, tt.err)
		}
	}
}

// TestInputValidation checks that bad arguments are refused before any
// ioctl (the handles here are closed, so reaching the kernel would yield
// ErrClosed instead).
func TestInputValidation(t *testing.T) {
	v := newVM(-1, 4096)
	v.slots[3] = 65 * PageSize // needs 2 bitmap words
	c := &VCPU{fd: -1}
	tests := []struct {
		name string
		err  error
	}{
		{"unaligned guest address", v.SetUserMemoryRegion(UserspaceMemoryRegion{GuestPhysAddr: 0x1001, MemorySize: 4096, UserspaceAddr: 0x10000})},
		{"unaligned size", v.SetUserMemoryRegion(UserspaceMemoryRegion{MemorySize: 4095, UserspaceAddr: 0x10000})},
		{"unaligned user address", v.SetUserMemoryRegion(UserspaceMemoryRegion{MemorySize: 4096, UserspaceAddr: 0x10010})},
		{"empty dirty bitmap", v.GetDirtyLog(3, nil)},
		{"short dirty bitmap", v.GetDirtyLog(3, make([]uint64, 1))},
		{"unknown dirty slot", v.GetDirtyLog(4, make([]uint64, 8))},
		{"clear: unknown slot", v.ClearDirtyLog(4, 0, 64, make([]uint64, 1))},
		{"clear: no pages", v.ClearDirtyLog(3, 0, 0, make([]uint64, 1))},
		{"clear: unaligned first page", v.ClearDirtyLog(3, 1, 64, make([]uint64, 1))},
		{"clear: past the slot", v.ClearDirtyLog(3, 64, 2, make([]uint64, 1))},
		{"clear: first page past the slot", v.ClearDirtyLog(3, 128, 1, make([]uint64, 1))},
		{"clear: partial word inside the slot", v.ClearDirtyLog(3, 0, 63, make([]uint64, 1))},
		{"clear: short bitmap", v.ClearDirtyLog(3, 0, 65, make([]uint64, 1))},
		{"TSS above 4 GiB", v.SetTSSAddr(0xffffe000)},
		{"negative irqfd", v.IRQFD(-1, 5, 0, -1)},
		{"negative resample fd", v.IRQFD(3, 5, IRQFDResample, -1)},
		{"ioeventfd length 3", v.IOEventFD(IOEventFD{Addr: 0x10, Len: 3, FD: 4})},
		{"ioeventfd negative fd", v.IOEventFD(IOEventFD{Addr: 0x10, Len: 4, FD: -1})},
		{"irqchip id 3", func() error { _, err := v.GetIRQChip(3); return err }()},
		{"set irqchip nil", v.SetIRQChip(nil)},
		{"set irqchip id 9", v.SetIRQChip(&IRQChip{ChipID: 9})},
		{"set pit nil", v.SetPIT2(nil)},
		{"too many routes", v.SetGSIRouting(make([]IRQRoutingEntry, MaxIRQRoutes+1))},
		{"bad route type", v.SetGSIRouting([]IRQRoutingEntry{{GSI: 1, Type: 99}})},
		{"negative vcpu id", func() error { _, err := v.CreateVCPU(-1); return err }()},
		{"nil cpuid", c.SetCPUID2(nil)},
		{"too many cpuid entries", c.SetCPUID2(&CPUID{Entries: make([]CPUIDEntry2, MaxCPUIDEntries+1)})},
		{"too many msrs get", func() error { _, err := c.GetMSRs(make([]MSREntry, MaxMSREntries+1)); return err }()},
		{"too many msrs set", func() error { _, err := c.SetMSRs(make([]MSREntry, MaxMSREntries+1)); return err }()},
		{"nil xsave", c.SetXSave(nil)},
		{"nil lapic", c.SetLAPIC(nil)},
		{"too many xcrs", c.SetXCRS(XCRS{NrXCRs: MaxXCRs + 1})},
	}
	for _, tt := range tests {
		if tt.err == nil {
			t.Errorf("%s: accepted", tt.name)
		} else if errors.Is(tt.err, ErrClosed) {
			t.Errorf("%s: reached the ioctl (%v) instead of being refused", tt.name, tt.err)
		}
	}
	// A TSS just fitting below 4 GiB passes validation (and hits the closed fd).
	if err := v.SetTSSAddr(0xfffbd000); !errors.Is(err, ErrClosed) {
		t.Errorf("SetTSSAddr(0xfffbd000) = %v, want ErrClosed from the closed VM", err)
	}
	if err := v.SetTSSAddr(1<<32 - 3*PageSize); !errors.Is(err, ErrClosed) {
		t.Errorf("SetTSSAddr(highest valid) = %v, want ErrClosed from the closed VM", err)
	}
}
