package kvm

import (
	"encoding/binary"
	"fmt"
)

// Byte offsets into the shared kvm_run page (struct kvm_run in
// include/uapi/linux/kvm.h, x86-64 layout: no s390 psw fields, so the exit
// union starts at 32). abi_test.go checks each against offsetof() from the
// installed headers.
//
// The page is decoded with encoding/binary rather than by laying a Go struct
// over it: every read is bounds-checked against the mapping, and no unsafe
// code is needed.
const (
	runRequestInterruptWindow = 0  // __u8 request_interrupt_window (in)
	runImmediateExit          = 1  // __u8 immediate_exit (in)
	runExitReason             = 8  // __u32 exit_reason
	runReadyForInjection      = 12 // __u8 ready_for_interrupt_injection
	runIFFlag                 = 13 // __u8 if_flag
	runFlags                  = 14 // __u16 flags
	runCR8                    = 16 // __u64 cr8
	runAPICBase               = 24 // __u64 apic_base
	runExit                   = 32 // start of the exit union (256 bytes)

	runHWExitReason = runExit // hw.hardware_exit_reason (__u64)

	runFailEntryReason = runExit     // fail_entry.hardware_entry_failure_reason (__u64)
	runFailEntryCPU    = runExit + 8 // fail_entry.cpu (__u32)

	runExException = runExit     // ex.exception (__u32)
	runExErrorCode = runExit + 4 // ex.error_code (__u32)

	runIODirection  = runExit     // io.direction (__u8): 0 in, 1 out
	runIOSize       = runExit + 1 // io.size (__u8), bytes per access
	runIOPort       = runExit + 2 // io.port (__u16)
	runIOCount      = runExit + 4 // io.count (__u32)
	runIODataOffset = runExit + 8 // io.data_offset (__u64), from the start of kvm_run

	runMMIOPhysAddr = runExit      // mmio.phys_addr (__u64)
	runMMIOData     = runExit + 8  // mmio.data (__u8[8])
	runMMIOLen      = runExit + 16 // mmio.len (__u32)
	runMMIOIsWrite  = runExit + 20 // mmio.is_write (__u8)

	runInternalSuberror = runExit     // internal.suberror (__u32)
	runInternalNData    = runExit + 4 // internal.ndata (__u32)
	runInternalData     = runExit + 8 // internal.data (__u64[16])

	runSystemEventType  = runExit     // system_event.type (__u32)
	runSystemEventNData = runExit + 4 // system_event.ndata (__u32)
	runSystemEventData  = runExit + 8 // system_event.data (__u64[16])

	runKVMValidRegs = 288 // __u64 kvm_valid_regs
	runKVMDirtyRegs = 296 // __u64 kvm_dirty_regs
	runSyncRegs     = 304 // union s (2048 bytes)

	// runSize is sizeof(struct kvm_run). KVM_GET_VCPU_MMAP_SIZE is at least
	// this (it also covers the PIO data page and the coalesced MMIO ring).
	runSize = 2352

	// maxExitData is the length of internal.data and system_event.data.
	maxExitData = 16
)

// I/O exit directions (kvm_run.io.direction).
const (
	exitIOIn  = 0 // KVM_EXIT_IO_IN
	exitIOOut = 1 // KVM_EXIT_IO_OUT
)

// maxMMIOLen is the size of kvm_run.mmio.data.
const maxMMIOLen = 8

// runPage is a view of a vCPU's kvm_run mapping. It is a byte slice so a
// test can decode a synthetic page.
type runPage []byte

func (p runPage) u8(off int) uint8 {
	if off+1 > len(p) {
		return 0
	}
	return p[off]
}

func (p runPage) u16(off int) uint16 {
	if off+2 > len(p) {
		return 0
	}
	return binary.NativeEndian.Uint16(p[off:])
}

func (p runPage) u32(off int) uint32 {
	if off+4 > len(p) {
		return 0
	}
	return binary.NativeEndian.Uint32(p[off:])
}

func (p runPage) u64(off int) uint64 {
	if off+8 > len(p) {
		return 0
	}
	return binary.NativeEndian.Uint64(p[off:])
}

// u64s returns a copy of n (at most maxExitData) __u64 values at off.
func (p runPage) u64s(off int, n uint32) []uint64 {
	if n > maxExitData {
		n = maxExitData
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = p.u64(off + 8*i)
	}
	return out
}

// IOExit describes a KVM_EXIT_IO exit: a port I/O access by the guest,
// possibly a string instruction (Count > 1).
type IOExit struct {
	// In is true for IN/INS (the VMM fills Data), false for OUT/OUTS.
	In bool
	// Size is the width of one access in bytes: 1, 2 or 4.
	Size uint8
	// Port is the I/O port.
	Port uint16
	// Count is the number of accesses (more than 1 for REP INS/OUTS).
	Count uint32
	// Data aliases the kvm_run mapping at io.data_offset and is Size*Count
	// bytes long: for OUT it holds the guest's data, for IN the VMM writes
	// the result there before the next KVM_RUN. It is valid until the next
	// KVM_RUN or Close.
	Data []byte
}

// decodeIO decodes kvm_run.io, checking the data window against the page.
func (p runPage) decodeIO() (IOExit, error) {
	if len(p) < runSize {
		return IOExit{}, fmt.Errorf("kvm: IO exit: kvm_run mapping is %d bytes, need %d", len(p), runSize)
	}
	e := IOExit{
		Size:  p.u8(runIOSize),
		Port:  p.u16(runIOPort),
		Count: p.u32(runIOCount),
	}
	switch dir := p.u8(runIODirection); dir {
	case exitIOIn:
		e.In = true
	case exitIOOut:
	default:
		return IOExit{}, fmt.Errorf("kvm: IO exit: bad direction %d", dir)
	}
	switch e.Size {
	case 1, 2, 4:
	default:
		return IOExit{}, fmt.Errorf("kvm: IO exit: bad access size %d", e.Size)
	}
	if e.Count == 0 {
		return IOExit{}, fmt.Errorf("kvm: IO exit: zero access count")
	}
	off := p.u64(runIODataOffset)
	n := uint64(e.Size) * uint64(e.Count) // cannot overflow: 4 * 2^32
	if off < runSize || off > uint64(len(p)) || n > uint64(len(p))-off {
		return IOExit{}, fmt.Errorf("kvm: IO exit: data [%#x, +%d) outside the %d-byte kvm_run mapping", off, n, len(p))
	}
	e.Data = p[off : off+n : off+n]
	return e, nil
}

// MMIOExit describes a KVM_EXIT_MMIO exit: a guest access to a physical
// address with no memory slot.
type MMIOExit struct {
	// Addr is the guest physical address.
	Addr uint64
	// Data aliases kvm_run.mmio.data and is the access length (1 to 8
	// bytes) long: for a write it holds the guest's data, for a read the
	// VMM writes the result there before the next KVM_RUN.
	Data []byte
	// IsWrite is true for a guest store.
	IsWrite bool
}

// decodeMMIO decodes kvm_run.mmio, rejecting a length over 8.
func (p runPage) decodeMMIO() (MMIOExit, error) {
	if len(p) < runSize {
		return MMIOExit{}, fmt.Errorf("kvm: MMIO exit: kvm_run mapping is %d bytes, need %d", len(p), runSize)
	}
	n := p.u32(runMMIOLen)
	if n == 0 || n > maxMMIOLen {
		return MMIOExit{}, fmt.Errorf("kvm: MMIO exit: bad access length %d (want 1..%d)", n, maxMMIOLen)
	}
	return MMIOExit{
		Addr:    p.u64(runMMIOPhysAddr),
		Data:    p[runMMIOData : runMMIOData+int(n) : runMMIOData+int(n)],
		IsWrite: p.u8(runMMIOIsWrite) != 0,
	}, nil
}
