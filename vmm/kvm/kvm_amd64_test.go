package kvm

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// Tests in this file need /dev/kvm and skip cleanly without it.

// newTestVM opens /dev/kvm (or skips the test) and creates a VM, closed
// when the test ends; it also returns the CPUID the host supports.
func newTestVM(t *testing.T) (*System, *CPUID, *VM) {
	t.Helper()
	s := openOrSkip(t)
	cpuid, err := s.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	return s, cpuid, vm
}

// openOrSkip opens /dev/kvm or skips the test.
func openOrSkip(t *testing.T) *System {
	t.Helper()
	s, err := Open()
	if errors.Is(err, ErrNoKVM) || errors.Is(err, ErrKVMPermission) {
		t.Skipf("needs /dev/kvm: %v", err)
	}
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// guestRAM is guest memory backed by a memfd. It is mapped with a raw mmap
// syscall so the test knows its address without unsafe code, and written
// with pwrite.
type guestRAM struct {
	fd   int
	addr uintptr
	size int
}

func newGuestRAM(t *testing.T, size int) *guestRAM {
	t.Helper()
	fd, err := unix.MemfdCreate("kvm-test-ram", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatalf("memfd_create: %v", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		t.Fatalf("ftruncate: %v", err)
	}
	addr, _, errno := unix.Syscall6(unix.SYS_MMAP, 0, uintptr(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED, uintptr(fd), 0)
	if errno != 0 {
		t.Fatalf("mmap: %v", errno)
	}
	g := &guestRAM{fd: fd, addr: addr, size: size}
	t.Cleanup(func() {
		unix.Syscall(unix.SYS_MUNMAP, g.addr, uintptr(g.size), 0)
		unix.Close(g.fd)
	})
	return g
}

func (g *guestRAM) write(t *testing.T, gpa int64, b []byte) {
	t.Helper()
	if _, err := unix.Pwrite(g.fd, b, gpa); err != nil {
		t.Fatalf("pwrite: %v", err)
	}
}

// realModeGuest is 16-bit code loaded at 0x1000. RAM is 64 KiB at 0, so
// addresses from 0x10000 up have no memory slot and exit as MMIO.
var realModeGuest = []byte{
	0xC6, 0x06, 0x00, 0x30, 0x01, // mov byte [0x3000], 1   (dirties page 3)
	0xBA, 0xF8, 0x03, //             mov dx, 0x3f8
	0xB0, 0x41, //                   mov al, 'A'
	0xEE,             //             out dx, al             -> IO out 0x3f8
	0xB8, 0x00, 0x10, //             mov ax, 0x1000
	0x8E, 0xD8, //                   mov ds, ax
	0xA0, 0x00, 0x00, //             mov al, [0]            -> MMIO read 0x10000
	0xE6, 0x10, //                   out 0x10, al           -> IO out 0x10
	0xC6, 0x06, 0x04, 0x00, 0x77, // mov byte [4], 0x77     -> MMIO write 0x10004
	0xF4, //                         hlt                    -> HLT
}

// TestRunRealModeGuest runs a 16-bit guest and checks each IO, MMIO and HLT exit, immediate_exit and the dirty log.
func TestRunRealModeGuest(t *testing.T) {
	s := openOrSkip(t)
	for _, c := range []Cap{CapUserMemory, CapImmediateExit, CapSetTSSAddr} {
		if n, err := s.CheckExtension(c); err != nil || n == 0 {
			t.Fatalf("CheckExtension(%d) = %d, %v", c, n, err)
		}
	}
	cpuid, err := s.SupportedCPUID()
	if err != nil || len(cpuid.Entries) == 0 {
		t.Fatalf("SupportedCPUID() = %v, %v", cpuid, err)
	}
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.SetTSSAddr(0xfffbd000); err != nil {
		t.Fatal(err)
	}
	if err := vm.SetIdentityMapAddr(0xfffbc000); err != nil {
		t.Fatal(err)
	}
	const ramSize = 0x10000
	ram := newGuestRAM(t, ramSize)
	ram.write(t, 0x1000, realModeGuest)
	if err := vm.SetUserMemoryRegion(UserspaceMemoryRegion{Slot: 0, Flags: MemLogDirtyPages, MemorySize: ramSize, UserspaceAddr: uint64(ram.addr)}); err != nil {
		t.Fatal(err)
	}
	cpu := realModeVCPU(t, vm, cpuid)

	cpu.SetImmediateExit(true)
	if err := cpu.Run(); !errors.Is(err, unix.EINTR) {
		t.Fatalf("Run() with immediate_exit = %v, want EINTR", err)
	}
	cpu.SetImmediateExit(false)

	type exit struct {
		reason ExitReason
		addr   uint64 // port or MMIO address
		write  bool
		data   byte
	}
	want := []exit{
		{ExitIO, 0x3f8, true, 'A'},
		{ExitMMIO, 0x10000, false, 0},
		{ExitIO, 0x10, true, 0x5A},
		{ExitMMIO, 0x10004, true, 0x77},
		{ExitHLT, 0, false, 0},
	}
	for i, w := range want {
		if err := cpu.Run(); err != nil {
			t.Fatalf("exit %d: Run() = %v", i, err)
		}
		var got exit
		got.reason = cpu.ExitReason()
		switch got.reason {
		case ExitIO:
			io, err := cpu.IO()
			if err != nil {
				t.Fatal(err)
			}
			got.addr, got.write, got.data = uint64(io.Port), !io.In, io.Data[0]
		case ExitMMIO:
			m, err := cpu.MMIO()
			if err != nil {
				t.Fatal(err)
			}
			got.addr, got.write = m.Addr, m.IsWrite
			if m.IsWrite {
				got.data = m.Data[0]
			} else {
				m.Data[0] = 0x5A // the value the guest reads
			}
		}
		if got != w {
			t.Fatalf("exit %d = %+v, want %+v", i, got, w)
		}
	}
	bitmap := make([]uint64, DirtyBitmapWords(ramSize))
	if err := vm.GetDirtyLog(0, bitmap); err != nil {
		t.Fatal(err)
	}
	if bitmap[0]&(1<<3) == 0 {
		t.Errorf("dirty bitmap %#x lacks page 3 written by the guest", bitmap)
	}
}

// TestManualDirtyLog checks manual dirty-log protection with the log
// initially set: every page starts dirty, GetDirtyLog does not clear,
// ClearDirtyLog clears exactly the pages it names and re-arms them, so the
// guest's next write is logged again.
func TestManualDirtyLog(t *testing.T) {
	_, cpuid, vm := newTestVM(t)
	modes, err := vm.EnableManualDirtyLog(DirtyLogManualProtectEnable | DirtyLogInitiallySet)
	if err != nil {
		t.Fatalf("EnableManualDirtyLog: %v", err)
	}
	if modes != DirtyLogManualProtectEnable|DirtyLogInitiallySet {
		t.Skipf("KVM offers manual dirty-log modes %#x", modes)
	}
	if err := vm.SetTSSAddr(0xfffbd000); err != nil {
		t.Fatal(err)
	}
	const ramSize = 0x10000 // 16 pages: one partial bitmap word
	ram := newGuestRAM(t, ramSize)
	ram.write(t, 0x1000, realModeGuest)
	if err := vm.SetUserMemoryRegion(UserspaceMemoryRegion{Slot: 0, Flags: MemLogDirtyPages, MemorySize: ramSize, UserspaceAddr: uint64(ram.addr)}); err != nil {
		t.Fatal(err)
	}
	cpu := realModeVCPU(t, vm, cpuid)
	get := func() uint64 {
		t.Helper()
		bm := make([]uint64, 1)
		if err := vm.GetDirtyLog(0, bm); err != nil {
			t.Fatal(err)
		}
		return bm[0]
	}
	all := uint64(1)<<(ramSize/PageSize) - 1
	steps := []struct {
		name  string
		clear uint64 // pages to clear first
		run   bool   // run the guest to its first exit (it writes page 3)
		want  uint64
	}{
		{"initially set", 0, false, all},
		{"get does not clear", 0, false, all},
		{"clear some", 0b1010, false, all &^ 0b1010},
		{"clear the rest", all &^ 0b1010, false, 0},
		{"guest write logged", 0, true, 1 << 3},
		{"cleared again", 1 << 3, false, 0},
	}
	for _, st := range steps {
		if st.clear != 0 {
			if err := vm.ClearDirtyLog(0, 0, ramSize/PageSize, []uint64{st.clear}); err != nil {
				t.Fatalf("%s: ClearDirtyLog: %v", st.name, err)
			}
		}
		if st.run {
			if err := cpu.Run(); err != nil || cpu.ExitReason() != ExitIO {
				t.Fatalf("%s: Run() = %v, exit %v; want an I/O exit", st.name, err, cpu.ExitReason())
			}
		}
		if got := get(); got != st.want {
			t.Errorf("%s: dirty log %#x, want %#x", st.name, got, st.want)
		}
	}
}

// TestStateRoundTrip gets and sets every piece of vCPU and VM state and exercises the interrupt ioctls.
func TestStateRoundTrip(t *testing.T) {
	s, cpuid, vm := newTestVM(t)
	if n, err := s.VCPUMmapSize(); err != nil || n < runSize {
		t.Fatalf("VCPUMmapSize() = %d, %v", n, err)
	}
	msrs, err := s.MSRIndexList()
	if err != nil || len(msrs) == 0 {
		t.Fatalf("MSRIndexList() = %v, %v", msrs, err)
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must("SetTSSAddr", vm.SetTSSAddr(0xfffbd000))
	must("CreateIRQChip", vm.CreateIRQChip())
	must("CreatePIT2", vm.CreatePIT2(PITSpeakerDummy))
	cpu, err := vm.CreateVCPU(0)
	must("CreateVCPU", err)
	defer cpu.Close()
	must("SetCPUID2", cpu.SetCPUID2(cpuid))
	got, err := cpu.GetCPUID2()
	must("GetCPUID2", err)
	if len(got.Entries) != len(cpuid.Entries) {
		t.Errorf("GetCPUID2 returned %d entries, set %d", len(got.Entries), len(cpuid.Entries))
	}

	// vCPU state, in the restore order of state_amd64.go.
	mp, err := cpu.GetMPState()
	must("GetMPState", err)
	must("SetMPState", cpu.SetMPState(mp))
	regs, err := cpu.GetRegs()
	must("GetRegs", err)
	must("SetRegs", cpu.SetRegs(regs))
	sregs, err := cpu.GetSregs()
	must("GetSregs", err)
	must("SetSregs", cpu.SetSregs(sregs))
	xs, err := cpu.GetXSave()
	must("GetXSave", err)
	must("SetXSave", cpu.SetXSave(xs))
	fpu, err := cpu.GetFPU()
	must("GetFPU", err)
	must("SetFPU", cpu.SetFPU(fpu))
	xcrs, err := cpu.GetXCRS()
	must("GetXCRS", err)
	must("SetXCRS", cpu.SetXCRS(xcrs))
	dr, err := cpu.GetDebugRegs()
	must("GetDebugRegs", err)
	must("SetDebugRegs", cpu.SetDebugRegs(dr))
	lapic, err := cpu.GetLAPIC()
	must("GetLAPIC", err)
	must("SetLAPIC", cpu.SetLAPIC(lapic))
	entries := make([]MSREntry, min(len(msrs), MaxMSREntries))
	for i := range entries {
		entries[i].Index = msrs[i]
	}
	n, err := cpu.GetMSRs(entries)
	must("GetMSRs", err)
	if n == 0 {
		t.Errorf("GetMSRs read none of %d MSRs", len(entries))
	}
	if _, err := cpu.SetMSRs(entries[:n]); err != nil {
		t.Errorf("SetMSRs: %v", err)
	}
	ev, err := cpu.GetVCPUEvents()
	must("GetVCPUEvents", err)
	must("SetVCPUEvents", cpu.SetVCPUEvents(ev))

	// Values that must survive a set/get unchanged.
	regs2, _ := cpu.GetRegs()
	sregs2, _ := cpu.GetSregs()
	xcrs2, _ := cpu.GetXCRS()
	mp2, _ := cpu.GetMPState()
	if regs2 != regs || sregs2 != sregs || xcrs2 != xcrs || mp2 != mp {
		t.Error("register state changed across set/get")
	}
	if khz, err := cpu.GetTSCKHz(); err != nil || khz == 0 {
		t.Errorf("GetTSCKHz() = %d, %v", khz, err)
	}

	// VM-wide state.
	for _, id := range []uint32{IRQChipPICMaster, IRQChipPICSlave, IRQChipIOAPIC} {
		chip, err := vm.GetIRQChip(id)
		must("GetIRQChip", err)
		must("SetIRQChip", vm.SetIRQChip(chip))
	}
	pit, err := vm.GetPIT2()
	must("GetPIT2", err)
	must("SetPIT2", vm.SetPIT2(pit))
	clock, err := vm.GetClock()
	must("GetClock", err)
	must("SetClock", vm.SetClock(ClockData{Clock: clock.Clock}))

	// Interrupt plumbing.
	must("IRQLine high", vm.IRQLine(4, true))
	must("IRQLine low", vm.IRQLine(4, false))
	routes := []IRQRoutingEntry{MSIRoute(24, 0xfee00000, 0, 0x30)}
	for pin := uint32(0); pin < 24; pin++ {
		if pin < 16 && pin != 2 {
			routes = append(routes, IRQChipRoute(pin, IRQChipPICMaster+pin/8, pin%8))
		}
		routes = append(routes, IRQChipRoute(pin, IRQChipIOAPIC, pin))
	}
	must("SetGSIRouting", vm.SetGSIRouting(routes))
	if _, err := vm.SignalMSI(MSI{AddressLo: 0xfee00000, Data: 0x31}); err != nil {
		t.Errorf("SignalMSI: %v", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	must("eventfd", err)
	defer unix.Close(efd)
	must("IRQFD assign", vm.IRQFD(efd, 24, 0, -1))
	must("IRQFD deassign", vm.IRQFD(efd, 24, IRQFDDeassign, -1))
	io := IOEventFD{Addr: 0x5000, Len: 2, FD: int32(efd), Flags: IOEventFDPIO}
	must("IOEventFD assign", vm.IOEventFD(io))
	io.Flags |= IOEventFDDeassign
	must("IOEventFD deassign", vm.IOEventFD(io))
}

// ioEventGuest is 16-bit code loaded at 0x1000: a dword write to 0x10008
// (an ioeventfd catches it, as a virtio queue notification), a byte write
// to 0x1000C (an MMIO exit), then hlt.
var ioEventGuest = []byte{
	0xB8, 0x00, 0x10, //                                   mov ax, 0x1000
	0x8E, 0xD8, //                                         mov ds, ax
	0x66, 0xC7, 0x06, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, // mov dword [8], 1   -> eventfd
	0xC6, 0x06, 0x0C, 0x00, 0x77, //                       mov byte [0xc], 0x77 -> MMIO write 0x1000C
	0xF4, //                                               hlt
}

// TestIOEventFDMMIO registers a 4-byte MMIO ioeventfd and checks that the
// guest's write signals the eventfd instead of exiting, that a second
// registration of the same address is refused, and that it deregisters.
func TestIOEventFDMMIO(t *testing.T) {
	s := openOrSkip(t)
	if n, err := s.CheckExtension(CapIOEventFD); err != nil || n == 0 {
		t.Skipf("no KVM_CAP_IOEVENTFD: %d, %v", n, err)
	}
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.SetTSSAddr(0xfffbd000); err != nil {
		t.Fatal(err)
	}
	const ramSize = 0x10000
	ram := newGuestRAM(t, ramSize)
	ram.write(t, 0x1000, ioEventGuest)
	if err := vm.SetUserMemoryRegion(UserspaceMemoryRegion{Slot: 0, MemorySize: ramSize, UserspaceAddr: uint64(ram.addr)}); err != nil {
		t.Fatal(err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	efd2, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd2)
	io := IOEventFD{Addr: 0x10008, Len: 4, FD: int32(efd)}
	if err := vm.IOEventFD(io); err != nil {
		t.Fatalf("assign: %v", err)
	}
	if err := vm.IOEventFD(IOEventFD{Addr: 0x10008, Len: 4, FD: int32(efd2)}); !errors.Is(err, unix.EEXIST) {
		t.Errorf("second assign at the same address = %v, want EEXIST", err)
	}

	cpu := realModeVCPU(t, vm, nil)
	if err := cpu.Run(); err != nil {
		t.Fatal(err)
	}
	if r := cpu.ExitReason(); r != ExitMMIO {
		t.Fatalf("first exit %v, want the MMIO write to 0x1000C", r)
	}
	if m, err := cpu.MMIO(); err != nil || m.Addr != 0x1000c || !m.IsWrite {
		t.Fatalf("first exit MMIO %+v, %v, want the write to 0x1000C", m, err)
	}
	var buf [8]byte
	if _, err := unix.Read(efd, buf[:]); err != nil {
		t.Fatalf("eventfd not signalled: %v", err)
	}
	if n := binary.NativeEndian.Uint64(buf[:]); n != 1 {
		t.Errorf("eventfd count %d, want 1", n)
	}
	if err := cpu.Run(); err != nil {
		t.Fatal(err)
	}
	if r := cpu.ExitReason(); r != ExitHLT {
		t.Fatalf("second exit %v, want HLT", r)
	}

	io.Flags = IOEventFDDeassign
	if err := vm.IOEventFD(io); err != nil {
		t.Fatalf("deassign: %v", err)
	}
	if err := vm.IOEventFD(io); err == nil {
		t.Error("deassigning twice succeeded")
	}
}

// realModeVCPU creates vCPU 0 of vm in real mode at 0000:1000 (with cpuid
// when not nil), closed when the test ends.
func realModeVCPU(t *testing.T, vm *VM, cpuid *CPUID) *VCPU {
	t.Helper()
	cpu, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cpu.Close() })
	if cpuid != nil {
		if err := cpu.SetCPUID2(cpuid); err != nil {
			t.Fatal(err)
		}
	}
	sregs, err := cpu.GetSregs()
	if err != nil {
		t.Fatal(err)
	}
	sregs.CS.Base, sregs.CS.Selector = 0, 0
	if err := cpu.SetSregs(sregs); err != nil {
		t.Fatal(err)
	}
	if err := cpu.SetRegs(Regs{RIP: 0x1000, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
	return cpu
}
