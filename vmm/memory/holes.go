package memory

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// DataPages sets in dst bit k (bit k%64 of word k/64) for every page
// first+k of region i, k < n, that the memfd has allocated: a page left
// clear is a hole, which reads as zeros and was never written. Reading a
// hole through the shared mapping would allocate and zero it, so a
// migration that learns the holes here sends them as zero pages without
// touching them. dst must hold n bits; bits past n are left alone.
//
// The answer is a snapshot: a page written afterwards is data even though
// its bit is clear, so callers pair it with a dirty log started before
// the call. A page reported as data stays data (guest RAM is never
// deallocated while the VM runs).
//
// It returns through: the last data run found in the range extends up to
// page through (exclusive, at most the region's end; first when the range
// has no data). The pages from first+n to through are data too, so a
// caller walking the region in windows can start its next scan there: the
// kernel finds the end of a run by walking it, and scanning window by
// window inside one long run would walk it again for every window.
func (m *Memory) DataPages(i int, first, n uint64, dst []uint64) (through uint64, err error) {
	r, err := m.pageRange(i, first, n)
	if err != nil {
		return 0, err
	}
	if uint64(len(dst))*64 < n {
		return 0, fmt.Errorf("pages [%d, +%d) of region %d with a bitmap of %d words", first, n, i, len(dst))
	}
	start := int64(r.Offset + first*PageSize)
	end := start + int64(n*PageSize)
	regionEnd := int64(r.Offset + r.Size)
	through = first
	for off := start; off < end; {
		data, err := unix.Seek(m.fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data at or after off
		}
		if err != nil {
			return 0, fmt.Errorf("SEEK_DATA in guest RAM: %w", err)
		}
		if data >= end {
			break
		}
		hole, err := unix.Seek(m.fd, data, unix.SEEK_HOLE)
		if err != nil {
			return 0, fmt.Errorf("SEEK_HOLE in guest RAM: %w", err)
		}
		hole = min(hole, regionEnd)
		through = (uint64(hole) - r.Offset + PageSize - 1) / PageSize
		stop := min(hole, end)
		for p := uint64(data-start) / PageSize; p < uint64(stop-start+PageSize-1)/PageSize; p++ {
			dst[p/64] |= 1 << (p % 64)
		}
		off = hole
	}
	return through, nil
}
