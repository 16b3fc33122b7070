package kvm

import (
	"encoding/binary"
	"fmt"
)

// MSREntry mirrors struct kvm_msr_entry: one model-specific register.
type MSREntry struct {
	Index    uint32
	Reserved uint32
	Data     uint64
}

// msrEntrySize is sizeof(struct kvm_msr_entry).
const msrEntrySize = 16

// MaxMSREntries is the most MSRs one KVM_GET_MSRS/KVM_SET_MSRS call takes
// (the kernel's MAX_IO_MSRS); split longer lists.
const MaxMSREntries = 256

// marshalMSRs lays out struct kvm_msrs (nmsrs, pad, entries[]).
func marshalMSRs(entries []MSREntry) []uint64 {
	w := make([]uint64, 1+2*len(entries))
	b := wordBytes(w)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(entries)))
	for i, e := range entries {
		o := b[8+msrEntrySize*i:]
		binary.NativeEndian.PutUint32(o[0:], e.Index)
		binary.NativeEndian.PutUint32(o[4:], e.Reserved)
		binary.NativeEndian.PutUint64(o[8:], e.Data)
	}
	return w
}

// unmarshalMSRData copies the first n Data values of a struct kvm_msrs
// buffer back into entries.
func unmarshalMSRData(w []uint64, entries []MSREntry, n int) error {
	b := wordBytes(w)
	if n < 0 || n > len(entries) || len(b) < 8+msrEntrySize*n {
		return fmt.Errorf("kernel reports %d MSRs, %d were passed", n, len(entries))
	}
	for i := range n {
		o := b[8+msrEntrySize*i:]
		if idx := binary.NativeEndian.Uint32(o[0:]); idx != entries[i].Index {
			return fmt.Errorf("kvm_msrs entry %d changed index from %#x to %#x", i, entries[i].Index, idx)
		}
		entries[i].Data = binary.NativeEndian.Uint64(o[8:])
	}
	return nil
}

// marshalMSRList lays out an empty struct kvm_msr_list (nmsrs, indices[])
// with room for n indices.
func marshalMSRList(n int) []uint64 {
	w := make([]uint64, (4+4*n+7)/8)
	binary.NativeEndian.PutUint32(wordBytes(w), uint32(n))
	return w
}

// msrListCount returns kvm_msr_list.nmsrs.
func msrListCount(w []uint64) uint32 {
	return binary.NativeEndian.Uint32(wordBytes(w))
}

// unmarshalMSRList decodes a struct kvm_msr_list filled by the kernel into
// a buffer with room for capacity indices.
func unmarshalMSRList(w []uint64, capacity int) ([]uint32, error) {
	b := wordBytes(w)
	n := msrListCount(w)
	if uint64(n) > uint64(capacity) || len(b) < 4+4*int(n) {
		return nil, fmt.Errorf("kvm_msr_list reports %d entries, buffer holds %d", n, capacity)
	}
	out := make([]uint32, n)
	for i := range out {
		out[i] = binary.NativeEndian.Uint32(b[4+4*i:])
	}
	return out, nil
}
