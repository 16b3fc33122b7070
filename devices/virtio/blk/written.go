package blk

import (
	"fmt"
	"math/bits"
	"sync/atomic"
)

// WrittenBlockSize is the granularity of a disk's written-block bitmap:
// one bit covers 64 KiB of the image (bit i: bytes [i·64 KiB, (i+1)·64 KiB),
// the last block cut at the end of the disk). 64 KiB keeps the bitmap
// small (2 KiB per GiB of disk) while a storage migration resends little
// more than was written: Linux issues writes of 4 KiB and up, mostly
// clustered.
const WrittenBlockSize = 64 << 10

// WrittenBlocks is the set of blocks of a disk written since the set was
// last taken. The device marks a block after the write to the image has
// succeeded, so a reader that takes the set and then copies the marked
// blocks never misses data: a write that lands after the copy marks its
// block again for the next round (the same order as memory.Write and the
// VMM dirty bitmap).
//
// Marking and taking are atomic per 64-bit word and safe from any
// goroutine.
type WrittenBlocks struct {
	blocks uint64
	size   uint64 // disk size in bytes
	words  []atomic.Uint64
}

// newWrittenBlocks returns an empty set for a disk of size bytes.
func newWrittenBlocks(size uint64) *WrittenBlocks {
	n := (size + WrittenBlockSize - 1) / WrittenBlockSize
	return &WrittenBlocks{blocks: n, size: size, words: make([]atomic.Uint64, (n+63)/64)}
}

// Blocks returns the number of blocks (bits) of the set.
func (w *WrittenBlocks) Blocks() uint64 { return w.blocks }

// Words returns the number of 64-bit words Take needs.
func (w *WrittenBlocks) Words() int { return len(w.words) }

// BlockRange returns the byte range of the image block i covers; n is 0
// for a block beyond the disk.
func (w *WrittenBlocks) BlockRange(i uint64) (off, n uint64) {
	if i >= w.blocks {
		return 0, 0
	}
	off = i * WrittenBlockSize
	return off, min(WrittenBlockSize, w.size-off)
}

// Mark records a write of n bytes at byte offset off. Parts beyond the
// disk are ignored.
func (w *WrittenBlocks) Mark(off, n uint64) {
	if n == 0 || off >= w.size {
		return
	}
	n = min(n, w.size-off)
	first := off / WrittenBlockSize
	last := (off + n - 1) / WrittenBlockSize
	for b := first; b <= last; {
		bit := b % 64
		span := min(64-bit, last-b+1)
		mask := ^uint64(0) >> (64 - span) << bit
		word := &w.words[b/64]
		if word.Load()&mask != mask {
			word.Or(mask)
		}
		b += span
	}
}

// Take ORs the set into dst (bit i%64 of word i/64 is block i) and clears
// it; it returns the number of blocks that were set. dst must hold at
// least Words() words.
func (w *WrittenBlocks) Take(dst []uint64) (int, error) {
	if len(dst) < len(w.words) {
		return 0, fmt.Errorf("blk: written-block bitmap of %d words too small (%d needed)", len(dst), len(w.words))
	}
	count := 0
	for i := range w.words {
		if w.words[i].Load() == 0 {
			continue
		}
		v := w.words[i].Swap(0)
		dst[i] |= v
		count += bits.OnesCount64(v)
	}
	return count, nil
}

// Count returns the number of blocks set, without clearing them.
func (w *WrittenBlocks) Count() int {
	count := 0
	for i := range w.words {
		count += bits.OnesCount64(w.words[i].Load())
	}
	return count
}
