package migrate

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"slices"

	"github.com/pierrec/lz4/v4"
)

// This file holds the storage part of the wire format: the STORAGE frame
// that announces the disks, DISK_BATCH frames (encoder and hostile-input
// decoder), and the walk over a disk's block bitmap.

// diskDesc describes one disk in STORAGE.
type diskDesc struct {
	size      uint64
	blockSize uint32
}

// storageFlagIncluded is bit 0 of STORAGE's flags: the disks' contents
// travel in this migration.
const storageFlagIncluded uint32 = 1

const (
	storageFixed    = 4 + 4 // flags u32, disk_count u32
	storageDiskSize = 8 + 4 // size u64, block_size u32
	diskBatchHeader = 4 + 8 + 4
	blockHeader     = 1 + 4 // encoding u8, length u32
	// maxDiskBatchPayload is the largest DISK_BATCH payload: a batch
	// of MaxDiskBatchBlocks raw blocks (within MaxPayload).
	maxDiskBatchPayload = diskBatchHeader + 2*MaxDiskBatchBlocks/8 + MaxDiskBatchBlocks*(blockHeader+DiskBlockSize)
	// diskBatchBlocks is how many blocks the sender puts in one
	// DISK_BATCH at most: 1 MiB, so that disk and memory batches
	// interleave finely.
	diskBatchBlocks = 16
)

// storageInfo is the STORAGE payload:
//
//	flags u32 (bit 0: storage included) | disk_count u32 |
//	disk_count × {size u64 | block_size u32}
type storageInfo struct {
	flags uint32
	disks []diskDesc
}

// included reports whether the disks travel in the stream.
func (s storageInfo) included() bool { return s.flags&storageFlagIncluded != 0 }

func (s storageInfo) append(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, s.flags)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(s.disks)))
	for _, d := range s.disks {
		dst = binary.LittleEndian.AppendUint64(dst, d.size)
		dst = binary.LittleEndian.AppendUint32(dst, d.blockSize)
	}
	return dst
}

// parseStorage decodes and bounds-checks a STORAGE payload: known flags,
// no disks unless storage is included, at most MaxDisks disks, each of
// 1..MaxDiskSize bytes in whole 512-byte sectors with DiskBlockSize
// blocks.
func parseStorage(p []byte) (storageInfo, error) {
	d := decoder{b: p}
	s := storageInfo{flags: d.u32()}
	n := d.u32()
	if d.err != nil {
		return storageInfo{}, d.err
	}
	if s.flags&^storageFlagIncluded != 0 {
		return storageInfo{}, protoErr("STORAGE flags %#x: unknown bits", s.flags)
	}
	if n > MaxDisks {
		return storageInfo{}, protoErr("STORAGE describes %d disks, limit %d", n, MaxDisks)
	}
	if n > 0 && !s.included() {
		return storageInfo{}, protoErr("STORAGE describes %d disks without including storage", n)
	}
	for i := uint32(0); i < n; i++ {
		dd := diskDesc{size: d.u64(), blockSize: d.u32()}
		if d.err != nil {
			return storageInfo{}, d.err
		}
		if dd.size == 0 || dd.size > MaxDiskSize || dd.size%512 != 0 {
			return storageInfo{}, protoErr("STORAGE disk %d: size %d not a multiple of 512 in [512, %d]", i, dd.size, uint64(MaxDiskSize))
		}
		if dd.blockSize != DiskBlockSize {
			return storageInfo{}, protoErr("STORAGE disk %d: block size %d not supported (this side uses %d)", i, dd.blockSize, DiskBlockSize)
		}
		s.disks = append(s.disks, dd)
	}
	return s, d.end("STORAGE")
}

// diskBlocks returns the number of DiskBlockSize blocks of a disk of size
// bytes, the last one possibly short.
func diskBlocks(size uint64) uint64 { return (size + DiskBlockSize - 1) / DiskBlockSize }

// blockSpan returns the byte range of block i of a disk of size bytes.
func blockSpan(size, i uint64) (off, n uint64) {
	off = i * DiskBlockSize
	return off, min(DiskBlockSize, size-off)
}

// diskBatch names up to MaxDiskBatchBlocks blocks of one disk: block
// first+i is in the batch when bit i of present is set.
type diskBatch struct {
	disk    int
	first   uint64
	count   int
	present uint64
}

// nextDiskBatch fills b with the next run of set bits in bm (a bitmap of
// blocks bits) at or after block *pos, covering at most limit (≤ 64)
// blocks and trimmed to its last set bit, and advances *pos past it. It
// returns false when no bit is left.
func nextDiskBatch(bm []uint64, blocks uint64, pos *uint64, limit int, b *diskBatch) bool {
	p := *pos
	for p < blocks {
		w := p / 64
		word := bm[w] >> (p % 64)
		if word == 0 {
			p = (w + 1) * 64
			continue
		}
		p += uint64(bits.TrailingZeros64(word))
		break
	}
	if p >= blocks {
		*pos = blocks
		return false
	}
	count := int(min(uint64(limit), blocks-p))
	w, sh := p/64, p%64
	v := bm[w] >> sh
	if sh != 0 && w+1 < uint64(len(bm)) {
		v |= bm[w+1] << (64 - sh)
	}
	if count < 64 {
		v &= 1<<uint(count) - 1
	}
	b.first, b.present = p, v
	b.count = 64 - bits.LeadingZeros64(v)
	*pos = p + uint64(b.count)
	return true
}

var zeroBlock [DiskBlockSize]byte

// readBlock reads exactly len(p) bytes at off from disk.
func readBlock(disk SourceDisk, p []byte, off uint64) error {
	n, err := disk.ReadAt(p, int64(off))
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading %d bytes at %d: %w", len(p), off, err)
}

// lz4BlockRoom is what the encoder reserves for one LZ4 block.
var lz4BlockRoom = blockHeader + lz4.CompressBlockBound(DiskBlockSize)

// A DISK_BATCH fits in any frame buffer.
var _ = [1]int{}[max(0, maxDiskBatchPayload-MaxPayload)]

// appendDiskFrame appends the DISK_BATCH frame for b, reading its blocks
// from disk (of the given size), and returns what it sent. A block that
// reads as zeros travels as a bit; the rest raw, or LZ4-compressed when
// the encoder compresses and that shrinks the block.
//
// Payload layout: disk u32, first_block u64, count u32, present bitmap
// and zero bitmap of (count+7)/8 bytes each (bit i = block first+i, LSB
// first), then for every present non-zero block in order: encoding u8,
// length u32, data.
func (e *batchEncoder) appendDiskFrame(dst []byte, disk SourceDisk, size uint64, b *diskBatch) ([]byte, batchCounts, error) {
	var c batchCounts
	if e.block == nil {
		e.block = make([]byte, DiskBlockSize)
	}
	start := len(dst)
	dst = beginFrame(dst)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(b.disk))
	dst = binary.LittleEndian.AppendUint64(dst, b.first)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(b.count))
	bmBytes := (b.count + 7) / 8
	for i := 0; i < bmBytes; i++ {
		dst = append(dst, byte(b.present>>(8*i)))
	}
	zeroAt := len(dst)
	dst = append(dst, make([]byte, bmBytes)...)
	for word := b.present; word != 0; word &= word - 1 {
		i := bits.TrailingZeros64(word)
		off, n := blockSpan(size, b.first+uint64(i))
		blk := e.block[:n]
		if err := readBlock(disk, blk, off); err != nil {
			return dst[:start], c, fmt.Errorf("disk %d block %d: %w", b.disk, b.first+uint64(i), err)
		}
		if bytes.Equal(blk, zeroBlock[:n]) {
			dst[zeroAt+i/8] |= 1 << (i % 8)
			c.zero++
			continue
		}
		if e.comp == CompressionLZ4 {
			at := len(dst)
			dst = slices.Grow(dst, lz4BlockRoom)[:at+lz4BlockRoom]
			m, err := e.lz.CompressBlock(blk, dst[at+blockHeader:])
			if err == nil && m > 0 && uint64(m) < n {
				dst[at] = encLZ4
				binary.LittleEndian.PutUint32(dst[at+1:], uint32(m))
				dst = dst[:at+blockHeader+m]
				c.compressed++
				continue
			}
			dst = dst[:at]
		}
		dst = append(dst, encRaw)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
		dst = append(dst, blk...)
		c.normal++
	}
	return finishFrame(dst, start, frameDiskBatch, 0), c, nil
}

// diskSink is where received disk blocks go. prepare runs on the
// receiver's reading goroutine in stream order and owns the bitmaps; run
// may then proceed on several goroutines at once, since prepare refuses a
// block a round already delivered, so the batches of a round are
// disjoint.
type diskSink struct {
	disks   []TargetDisk
	sizes   []uint64
	round   [][]uint64 // blocks received in the current round
	touched []bool     // disks written in the current round
	number  uint32     // the current round
}

// newDiskSink returns a sink writing into disks.
func newDiskSink(disks []TargetDisk) *diskSink {
	s := &diskSink{disks: disks, touched: make([]bool, len(disks))}
	for _, d := range disks {
		s.sizes = append(s.sizes, d.Size())
		s.round = append(s.round, make([]uint64, (diskBlocks(d.Size())+63)/64))
	}
	return s
}

// newRound forgets which blocks the previous round delivered.
func (s *diskSink) newRound(round uint32) {
	for i, bm := range s.round {
		clear(bm)
		s.touched[i] = false
	}
	s.number = round
}

// preparedDiskBatch is a validated DISK_BATCH waiting for its blocks to
// be written: everything but the block records has been checked.
type preparedDiskBatch struct {
	disk    TargetDisk
	index   uint32
	size    uint64
	first   uint64
	count   int
	present []byte
	zero    []byte
	// punch: zero blocks must be cleared. A round-0 zero block lands
	// on a new image, which reads as zeros already.
	punch  bool
	blocks []byte // the block records
}

// prepare validates the header and bitmaps of a DISK_BATCH payload,
// records its blocks as received in this round (refusing a block the
// round already delivered), and fills b for run. It returns the number of
// blocks the batch carries. b aliases p.
func (s *diskSink) prepare(p []byte, b *preparedDiskBatch) (uint64, error) {
	d := decoder{b: p}
	disk := d.u32()
	first := d.u64()
	count := d.u32()
	if d.err != nil {
		return 0, d.err
	}
	if disk >= uint32(len(s.disks)) {
		return 0, protoErr("DISK_BATCH disk %d out of range (%d disks)", disk, len(s.disks))
	}
	if count == 0 || count > MaxDiskBatchBlocks {
		return 0, protoErr("DISK_BATCH block count %d outside [1, %d]", count, MaxDiskBatchBlocks)
	}
	blocks := diskBlocks(s.sizes[disk])
	if first >= blocks || uint64(count) > blocks-first {
		return 0, protoErr("DISK_BATCH blocks [%d, +%d) outside disk %d (%d blocks)", first, count, disk, blocks)
	}
	present, zero, n, err := batchBitmaps(&d, count, "DISK_BATCH", "block")
	if err != nil {
		return 0, err
	}
	if bn, dup := markRound(s.round[disk], present, first, count); dup {
		return 0, protoErr("block %d of disk %d sent twice in one round", bn, disk)
	}
	s.touched[disk] = true
	*b = preparedDiskBatch{disk: s.disks[disk], index: disk, size: s.sizes[disk], first: first, count: int(count),
		present: present, zero: zero, punch: s.number > 0, blocks: d.b}
	return n, nil
}

// run decodes the blocks of a prepared batch into its disk, using scratch
// (DiskBlockSize bytes) to decompress. It checks every block record as
// hostile: a known encoding, a raw block of exactly the block's length,
// an LZ4 block shorter than that which decompresses to exactly it, and
// nothing after the last record.
func (s *diskSink) run(b *preparedDiskBatch, scratch []byte) (batchCounts, error) {
	var c batchCounts
	d := decoder{b: b.blocks}
	for i := 0; i < b.count; i++ {
		if b.present[i/8]&(1<<(i%8)) == 0 {
			continue
		}
		bn := b.first + uint64(i)
		off, n := blockSpan(b.size, bn)
		if b.zero[i/8]&(1<<(i%8)) != 0 {
			if b.punch {
				if err := b.disk.Zero(off, n); err != nil {
					return c, fmt.Errorf("clearing block %d of disk %d: %w", bn, b.index, err)
				}
			}
			c.zero++
			continue
		}
		enc := d.take(1)
		m := d.u32()
		if d.err != nil {
			return c, d.err
		}
		var data []byte
		switch enc[0] {
		case encRaw:
			if uint64(m) != n {
				return c, protoErr("raw block %d of disk %d has length %d, want %d", bn, b.index, m, n)
			}
			data = d.take(int(m))
			c.normal++
		case encLZ4:
			if m == 0 || uint64(m) >= n {
				return c, protoErr("LZ4 block %d of disk %d has length %d, want 1..%d", bn, b.index, m, n-1)
			}
			src := d.take(int(m))
			if d.err != nil {
				return c, d.err
			}
			got, err := lz4.UncompressBlock(src, scratch[:n])
			if err != nil {
				return c, protoErr("LZ4 block %d of disk %d: %v", bn, b.index, err)
			}
			if uint64(got) != n {
				return c, protoErr("LZ4 block %d of disk %d decompressed to %d bytes, want %d", bn, b.index, got, n)
			}
			data = scratch[:n]
			c.compressed++
		default:
			return c, protoErr("block %d of disk %d has unknown encoding %d", bn, b.index, enc[0])
		}
		if d.err != nil {
			return c, d.err
		}
		if _, err := b.disk.WriteAt(data, int64(off)); err != nil {
			return c, fmt.Errorf("writing block %d of disk %d: %w", bn, b.index, err)
		}
	}
	return c, d.end("DISK_BATCH blocks")
}

// apply prepares and runs one DISK_BATCH payload on the calling goroutine.
func (s *diskSink) apply(p []byte) (batchCounts, error) {
	var b preparedDiskBatch
	if _, err := s.prepare(p, &b); err != nil {
		return batchCounts{}, err
	}
	return s.run(&b, make([]byte, DiskBlockSize))
}

// syncTouched syncs every disk the current round wrote.
func (s *diskSink) syncTouched() error {
	for i, d := range s.disks {
		if s.touched[i] {
			if err := d.Sync(); err != nil {
				return fmt.Errorf("syncing disk %d: %w", i, err)
			}
		}
	}
	return nil
}
