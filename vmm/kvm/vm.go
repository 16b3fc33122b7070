package kvm

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine (the fd from KVM_CREATE_VM). Its methods may
// be called from several goroutines, but Close must not race with other
// calls; close the VCPUs first.
type VM struct {
	fd       int
	mmapSize int

	mu    sync.Mutex
	slots map[uint32]uint64 // memory slot -> size in bytes, for GetDirtyLog
}

func newVM(fd, mmapSize int) *VM {
	return &VM{fd: fd, mmapSize: mmapSize, slots: make(map[uint32]uint64)}
}

// Close closes the VM fd. A second Close returns ErrClosed.
func (v *VM) Close() error {
	if v.fd < 0 {
		return opError("close VM", ErrClosed)
	}
	err := unix.Close(v.fd)
	v.fd = -1
	if err != nil {
		return opError("close VM", err)
	}
	return nil
}

// FD returns the VM file descriptor (-1 after Close).
func (v *VM) FD() int { return v.fd }

// CheckExtension returns KVM_CHECK_EXTENSION on the VM fd, which answers
// for this VM (needs CapCheckExtensionVM; e.g. CapXSave2 only works here).
func (v *VM) CheckExtension(c Cap) (int, error) {
	return ioctlVal(v.fd, kvmCheckExtension, "KVM_CHECK_EXTENSION (VM)", uintptr(c))
}

// enableCap mirrors struct kvm_enable_cap.
type enableCap struct {
	Cap   uint32
	Flags uint32
	Args  [4]uint64
	Pad   [64]uint8
}

// EnableCap issues KVM_ENABLE_CAP on the VM (e.g. CapX86DisableExits).
func (v *VM) EnableCap(c Cap, flags uint32, args [4]uint64) error {
	e := enableCap{Cap: uint32(c), Flags: flags, Args: args}
	_, err := ioctlPtr(v.fd, kvmEnableCap, "KVM_ENABLE_CAP", &e)
	return err
}

// UserspaceMemoryRegion mirrors struct kvm_userspace_memory_region: it maps
// MemorySize bytes of this process at UserspaceAddr to guest physical
// address GuestPhysAddr as memory slot Slot.
type UserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32 // MemLogDirtyPages, MemReadonly
	GuestPhysAddr uint64
	MemorySize    uint64 // bytes; 0 deletes the slot
	UserspaceAddr uint64
}

// Memory region flags (KVM_MEM_*).
const (
	MemLogDirtyPages = 1 << 0 // KVM_MEM_LOG_DIRTY_PAGES: track writes for GetDirtyLog
	MemReadonly      = 1 << 1 // KVM_MEM_READONLY: guest writes exit as MMIO
)

// PageSize is the granularity of memory slots and of the dirty log.
const PageSize = 4096

// SetUserMemoryRegion issues KVM_SET_USER_MEMORY_REGION. Addresses and size
// must be page-aligned.
func (v *VM) SetUserMemoryRegion(r UserspaceMemoryRegion) error {
	const op = "KVM_SET_USER_MEMORY_REGION"
	if r.GuestPhysAddr%PageSize != 0 || r.MemorySize%PageSize != 0 || r.UserspaceAddr%PageSize != 0 {
		return opError(op, fmt.Errorf("slot %d: guest address %#x, size %#x and user address %#x must be multiples of %d",
			r.Slot, r.GuestPhysAddr, r.MemorySize, r.UserspaceAddr, PageSize))
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, err := ioctlPtr(v.fd, kvmSetUserMemoryRegion, op, &r); err != nil {
		return err
	}
	if r.MemorySize == 0 {
		delete(v.slots, r.Slot)
	} else {
		v.slots[r.Slot] = r.MemorySize
	}
	return nil
}

// DirtyBitmapWords returns how many uint64 words GetDirtyLog needs for a
// slot of memorySize bytes (one bit per page).
func DirtyBitmapWords(memorySize uint64) int {
	pages := (memorySize + PageSize - 1) / PageSize
	return int((pages + 63) / 64)
}

// GetDirtyLog issues KVM_GET_DIRTY_LOG: it fills bitmap with one bit per
// page of the slot (bit i of word j is page 64*j+i) for pages written since
// the previous call, and resets the log. The slot must have been set with
// SetUserMemoryRegion on this VM and bitmap must hold at least
// DirtyBitmapWords(slot size) words: the kernel writes that many.
func (v *VM) GetDirtyLog(slot uint32, bitmap []uint64) error {
	const op = "KVM_GET_DIRTY_LOG"
	if len(bitmap) == 0 {
		return opError(op, errors.New("empty bitmap"))
	}
	v.mu.Lock()
	size, ok := v.slots[slot]
	v.mu.Unlock()
	if !ok {
		return opError(op, fmt.Errorf("slot %d was not set on this VM", slot))
	}
	if need := DirtyBitmapWords(size); len(bitmap) < need {
		return opError(op, fmt.Errorf("slot %d has %d pages: bitmap needs %d words, got %d", slot, size/PageSize, need, len(bitmap)))
	}
	if v.fd < 0 {
		return opError(op, ErrClosed)
	}
	if err := rawGetDirtyLog(v.fd, slot, bitmap); err != nil {
		return opError(op, err)
	}
	return nil
}

// Manual dirty-log protection modes (KVM_DIRTY_LOG_* of
// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2).
const (
	// DirtyLogManualProtectEnable: KVM_GET_DIRTY_LOG neither clears the
	// log nor write-protects pages; ClearDirtyLog does both, for the
	// pages the caller names.
	DirtyLogManualProtectEnable = 1 << 0
	// DirtyLogInitiallySet: turning logging on for a slot marks every
	// page dirty instead of write-protecting all of them at once.
	DirtyLogInitiallySet = 1 << 1
)

// EnableManualDirtyLog enables KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with the
// modes in want that this kernel offers, and returns those modes (0 when
// the kernel offers none: the log then works as before, GetDirtyLog
// clearing it). Call it while no slot logs dirty pages.
func (v *VM) EnableManualDirtyLog(want uint64) (uint64, error) {
	offered, err := v.CheckExtension(CapManualDirtyLogProtect2)
	if err != nil {
		return 0, err
	}
	modes := want & uint64(max(offered, 0))
	if modes&DirtyLogManualProtectEnable == 0 {
		return 0, nil // INITIALLY_SET alone is not a mode
	}
	if err := v.EnableCap(CapManualDirtyLogProtect2, 0, [4]uint64{modes}); err != nil {
		return 0, err
	}
	return modes, nil
}

// ClearDirtyLog issues KVM_CLEAR_DIRTY_LOG (manual dirty-log protection,
// see EnableManualDirtyLog): for every bit set in bitmap (bit i of word j
// is page firstPage+64*j+i of the slot) it clears the page's dirty bit and
// write-protects it again, so the next write is logged. firstPage must be
// a multiple of 64 and numPages too, unless the range ends at the end of
// the slot; bitmap must cover numPages.
func (v *VM) ClearDirtyLog(slot uint32, firstPage uint64, numPages uint32, bitmap []uint64) error {
	const op = "KVM_CLEAR_DIRTY_LOG"
	v.mu.Lock()
	size, ok := v.slots[slot]
	v.mu.Unlock()
	if !ok {
		return opError(op, fmt.Errorf("slot %d was not set on this VM", slot))
	}
	pages := size / PageSize
	switch {
	case numPages == 0:
		return opError(op, errors.New("no pages"))
	case firstPage%64 != 0:
		return opError(op, fmt.Errorf("first page %d is not a multiple of 64", firstPage))
	case firstPage >= pages || uint64(numPages) > pages-firstPage:
		return opError(op, fmt.Errorf("pages [%d, +%d) outside slot %d (%d pages)", firstPage, numPages, slot, pages))
	case numPages%64 != 0 && firstPage+uint64(numPages) != pages:
		return opError(op, fmt.Errorf("%d pages: not a multiple of 64 and not up to the end of slot %d", numPages, slot))
	case len(bitmap) < int((numPages+63)/64):
		return opError(op, fmt.Errorf("%d pages need %d bitmap words, got %d", numPages, (numPages+63)/64, len(bitmap)))
	}
	if v.fd < 0 {
		return opError(op, ErrClosed)
	}
	if err := rawClearDirtyLog(v.fd, slot, firstPage, numPages, bitmap); err != nil {
		return opError(op, err)
	}
	return nil
}

// SetTSSAddr issues KVM_SET_TSS_ADDR: three pages at addr (below 4 GiB,
// outside guest RAM) for the TSS Intel VMX needs to run real mode.
func (v *VM) SetTSSAddr(addr uint64) error {
	if addr > 1<<32-3*PageSize {
		return opError("KVM_SET_TSS_ADDR", fmt.Errorf("address %#x: the three pages must lie below 4 GiB", addr))
	}
	_, err := ioctlVal(v.fd, kvmSetTSSAddr, "KVM_SET_TSS_ADDR", uintptr(addr))
	return err
}

// SetIdentityMapAddr issues KVM_SET_IDENTITY_MAP_ADDR: one page at addr
// (outside guest RAM) for the identity page table Intel VMX uses in real
// mode. Call it before creating vCPUs.
func (v *VM) SetIdentityMapAddr(addr uint64) error {
	_, err := ioctlPtr(v.fd, kvmSetIdentityMapAddr, "KVM_SET_IDENTITY_MAP_ADDR", &addr)
	return err
}

// CreateIRQChip issues KVM_CREATE_IRQCHIP: an in-kernel PIC pair, IOAPIC
// and a local APIC per vCPU. Call it before creating vCPUs.
func (v *VM) CreateIRQChip() error {
	_, err := ioctlVal(v.fd, kvmCreateIRQChip, "KVM_CREATE_IRQCHIP", 0)
	return err
}

// pitConfig mirrors struct kvm_pit_config.
type pitConfig struct {
	Flags uint32
	Pad   [15]uint32
}

// PITSpeakerDummy (KVM_PIT_SPEAKER_DUMMY) makes the in-kernel PIT emulate
// a dummy speaker port 0x61.
const PITSpeakerDummy = 1

// CreatePIT2 issues KVM_CREATE_PIT2: an in-kernel i8254 PIT (needs the
// in-kernel irqchip).
func (v *VM) CreatePIT2(flags uint32) error {
	c := pitConfig{Flags: flags}
	_, err := ioctlPtr(v.fd, kvmCreatePIT2, "KVM_CREATE_PIT2", &c)
	return err
}

// irqLevel mirrors struct kvm_irq_level.
type irqLevel struct {
	IRQ   uint32
	Level uint32
}

// IRQLine issues KVM_IRQ_LINE: sets the level of GSI irq on the in-kernel
// irqchip (PIC pins 0-15, IOAPIC pins 0-23).
func (v *VM) IRQLine(irq uint32, level bool) error {
	l := irqLevel{IRQ: irq}
	if level {
		l.Level = 1
	}
	_, err := ioctlPtr(v.fd, kvmIRQLine, "KVM_IRQ_LINE", &l)
	return err
}

// irqFD mirrors struct kvm_irqfd.
type irqFD struct {
	FD         uint32
	GSI        uint32
	Flags      uint32
	ResampleFD uint32
	Pad        [16]uint8
}

// IRQFD flags (KVM_IRQFD_FLAG_*).
const (
	IRQFDDeassign = 1 << 0 // KVM_IRQFD_FLAG_DEASSIGN: remove the binding
	IRQFDResample = 1 << 1 // KVM_IRQFD_FLAG_RESAMPLE: level-triggered, resampleFD is signalled on EOI
)

// IRQFD issues KVM_IRQFD: a write to eventfd fd raises GSI gsi. resampleFD
// is used only with IRQFDResample.
func (v *VM) IRQFD(fd int, gsi uint32, flags uint32, resampleFD int) error {
	const op = "KVM_IRQFD"
	if fd < 0 || fd > math.MaxInt32 {
		return opError(op, fmt.Errorf("bad eventfd %d", fd))
	}
	r := irqFD{FD: uint32(fd), GSI: gsi, Flags: flags}
	if flags&IRQFDResample != 0 {
		if resampleFD < 0 || resampleFD > math.MaxInt32 {
			return opError(op, fmt.Errorf("bad resample eventfd %d", resampleFD))
		}
		r.ResampleFD = uint32(resampleFD)
	}
	_, err := ioctlPtr(v.fd, kvmIRQFD, op, &r)
	return err
}

// IOEventFD mirrors struct kvm_ioeventfd: a guest write of Len bytes to
// Addr (a port with IOEventFDPIO, else MMIO) signals eventfd FD instead of
// exiting to userspace.
type IOEventFD struct {
	Datamatch uint64 // with IOEventFDDatamatch, only this value signals
	Addr      uint64
	Len       uint32 // 1, 2, 4 or 8; 0 matches any length
	FD        int32
	Flags     uint32
	_         [36]byte
}

// IOEventFD flags (KVM_IOEVENTFD_FLAG_*).
const (
	IOEventFDDatamatch = 1 << 0 // KVM_IOEVENTFD_FLAG_DATAMATCH
	IOEventFDPIO       = 1 << 1 // KVM_IOEVENTFD_FLAG_PIO
	IOEventFDDeassign  = 1 << 2 // KVM_IOEVENTFD_FLAG_DEASSIGN
)

// IOEventFD issues KVM_IOEVENTFD.
func (v *VM) IOEventFD(e IOEventFD) error {
	const op = "KVM_IOEVENTFD"
	switch e.Len {
	case 0, 1, 2, 4, 8:
	default:
		return opError(op, fmt.Errorf("bad length %d (want 0, 1, 2, 4 or 8)", e.Len))
	}
	if e.FD < 0 {
		return opError(op, fmt.Errorf("bad eventfd %d", e.FD))
	}
	_, err := ioctlPtr(v.fd, kvmIOEventFD, op, &e)
	return err
}

// ClockData mirrors struct kvm_clock_data: the VM's kvmclock.
type ClockData struct {
	Clock    uint64 // guest kvmclock in ns
	Flags    uint32 // ClockTSCStable, ClockRealtime, ClockHostTSC
	Pad0     uint32
	Realtime uint64 // host CLOCK_REALTIME in ns, valid with ClockRealtime
	HostTSC  uint64 // host TSC, valid with ClockHostTSC
	Pad      [4]uint32
}

// ClockData.Flags bits (KVM_CLOCK_*).
const (
	ClockTSCStable = 2      // KVM_CLOCK_TSC_STABLE
	ClockRealtime  = 1 << 2 // KVM_CLOCK_REALTIME
	ClockHostTSC   = 1 << 3 // KVM_CLOCK_HOST_TSC
)

// GetClock issues KVM_GET_CLOCK.
func (v *VM) GetClock() (ClockData, error) {
	var c ClockData
	_, err := ioctlPtr(v.fd, kvmGetClock, "KVM_GET_CLOCK", &c)
	return c, err
}

// SetClock issues KVM_SET_CLOCK. Set Flags to ClockRealtime (with Realtime)
// to have KVM advance the clock by the time elapsed since the save.
func (v *VM) SetClock(c ClockData) error {
	_, err := ioctlPtr(v.fd, kvmSetClock, "KVM_SET_CLOCK", &c)
	return err
}

// MSI mirrors struct kvm_msi: one message-signalled interrupt.
type MSI struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	Flags     uint32 // MSIValidDevID
	DevID     uint32
	Pad       [12]uint8
}

// MSIValidDevID (KVM_MSI_VALID_DEVID) marks MSI.DevID as valid.
const MSIValidDevID = 1

// SignalMSI issues KVM_SIGNAL_MSI. delivered is false when the guest
// blocked the interrupt.
func (v *VM) SignalMSI(m MSI) (delivered bool, err error) {
	r, err := ioctlPtr(v.fd, kvmSignalMSI, "KVM_SIGNAL_MSI", &m)
	if err != nil {
		return false, err
	}
	return r > 0, nil
}

// CreateVCPU issues KVM_CREATE_VCPU for vCPU id (the initial APIC ID) and
// maps its kvm_run area shared.
func (v *VM) CreateVCPU(id int) (*VCPU, error) {
	const op = "KVM_CREATE_VCPU"
	if id < 0 || id > math.MaxInt32 {
		return nil, opError(op, fmt.Errorf("bad vCPU id %d", id))
	}
	if v.mmapSize < runSize {
		return nil, opError(op, fmt.Errorf("vCPU mmap size %d is smaller than struct kvm_run", v.mmapSize))
	}
	fd, err := ioctlVal(v.fd, kvmCreateVCPU, op, uintptr(id))
	if err != nil {
		return nil, err
	}
	run, err := unix.Mmap(fd, 0, v.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, opError("mmap kvm_run", err)
	}
	return &VCPU{fd: fd, id: id, run: run}, nil
}
