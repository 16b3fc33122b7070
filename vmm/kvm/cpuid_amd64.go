package kvm

import (
	"encoding/binary"
	"fmt"
)

// CPUIDEntry2 mirrors struct kvm_cpuid_entry2: one CPUID leaf (Function)
// and subleaf (Index) with its register values.
type CPUIDEntry2 struct {
	Function uint32
	Index    uint32
	Flags    uint32 // CPUIDFlag* bits
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

// CPUIDEntry2.Flags bits (KVM_CPUID_FLAG_*).
const (
	CPUIDFlagSignificantIndex = 1 << 0 // KVM_CPUID_FLAG_SIGNIFCANT_INDEX: Index selects a subleaf
	CPUIDFlagStatefulFunc     = 1 << 1 // KVM_CPUID_FLAG_STATEFUL_FUNC (obsolete)
	CPUIDFlagStateReadNext    = 1 << 2 // KVM_CPUID_FLAG_STATE_READ_NEXT (obsolete)
)

// cpuidEntrySize is sizeof(struct kvm_cpuid_entry2).
const cpuidEntrySize = 40

// CPUID is a CPUID table for a vCPU. It is marshalled into struct
// kvm_cpuid2 (nent, padding, entries[]) for the ioctls.
type CPUID struct {
	Entries []CPUIDEntry2
}

// Find returns the entry for function and index, or nil. The index is
// ignored for leaves without CPUIDFlagSignificantIndex.
func (c *CPUID) Find(function, index uint32) *CPUIDEntry2 {
	if c == nil {
		return nil
	}
	for i := range c.Entries {
		e := &c.Entries[i]
		if e.Function == function && (e.Flags&CPUIDFlagSignificantIndex == 0 || e.Index == index) {
			return e
		}
	}
	return nil
}

// marshalCPUID2 lays out struct kvm_cpuid2 with the entries in an 8-byte
// aligned buffer.
func marshalCPUID2(entries []CPUIDEntry2) []uint64 {
	w := make([]uint64, (8+cpuidEntrySize*len(entries)+7)/8)
	b := wordBytes(w)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(entries)))
	for i, e := range entries {
		o := b[8+cpuidEntrySize*i:]
		for j, v := range [7]uint32{e.Function, e.Index, e.Flags, e.EAX, e.EBX, e.ECX, e.EDX} {
			binary.NativeEndian.PutUint32(o[4*j:], v)
		}
	}
	return w
}

// unmarshalCPUID2 decodes a struct kvm_cpuid2 the kernel filled, checking
// nent against the buffer.
func unmarshalCPUID2(w []uint64) (*CPUID, error) {
	b := wordBytes(w)
	if len(b) < 8 {
		return nil, fmt.Errorf("kvm_cpuid2 buffer of %d bytes has no header", len(b))
	}
	n := binary.NativeEndian.Uint32(b[0:])
	if capacity := (len(b) - 8) / cpuidEntrySize; uint64(n) > uint64(capacity) {
		return nil, fmt.Errorf("kvm_cpuid2 reports %d entries, buffer holds %d", n, capacity)
	}
	c := &CPUID{Entries: make([]CPUIDEntry2, n)}
	for i := range c.Entries {
		o := b[8+cpuidEntrySize*i:]
		u := func(j int) uint32 { return binary.NativeEndian.Uint32(o[4*j:]) }
		c.Entries[i] = CPUIDEntry2{Function: u(0), Index: u(1), Flags: u(2), EAX: u(3), EBX: u(4), ECX: u(5), EDX: u(6)}
	}
	return c, nil
}
