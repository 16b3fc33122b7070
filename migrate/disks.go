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

// vectorReader is a SourceDisk that reads into several buffers with one
// call, as preadv(2) does (storage.Source): the encoder then reads a run
// of blocks with one call, straight into the frame. Other disks are read
// a block at a time (ReadAt), also into the frame.
type vectorReader interface {
	ReadvAt(bufs [][]byte, off int64) (int, error)
}

// vectorWriter is a TargetDisk that writes several buffers with one
// call, as pwritev(2) does (storage.Image): the receiver then writes a
// run of adjacent blocks of a batch with one call, straight from the
// frame. Other disks are written a block at a time (WriteAt).
type vectorWriter interface {
	WritevAt(bufs [][]byte, off int64) (int, error)
}

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

// readRun fills bufs, in order, with the bytes of disk from off on:
// with one ReadvAt call (more after a short read) when the disk has it,
// else a ReadAt per buffer.
func readRun(disk SourceDisk, bufs [][]byte, off uint64) error {
	vr, ok := disk.(vectorReader)
	if !ok {
		for _, p := range bufs {
			if err := readBlock(disk, p, off); err != nil {
				return err
			}
			off += uint64(len(p))
		}
		return nil
	}
	for len(bufs) > 0 {
		n, err := vr.ReadvAt(bufs, int64(off))
		if n < 0 {
			n = 0
		}
		off += uint64(n)
		for len(bufs) > 0 && n >= len(bufs[0]) {
			n -= len(bufs[0])
			bufs = bufs[1:]
		}
		if len(bufs) == 0 {
			return nil
		}
		if n > 0 {
			bufs[0] = bufs[0][n:]
			continue
		}
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("reading at %d: %w", off, err)
	}
	return nil
}

// A DISK_BATCH fits in any frame buffer.
var _ = [1]int{}[max(0, maxDiskBatchPayload-MaxPayload)]

// Adaptive LZ4 for disk blocks: compressing a block LZ4 cannot shrink
// (random or already compressed data) costs more than sending it, so
// after lz4GiveUpBlocks blocks in a row did not shrink, the encoder tries
// only every lz4ProbeBlocks-th block and sends the others raw; a block
// that shrinks makes it try every block again. The wire format is the
// same: a compressing encoder may always send a raw block. It is the
// pages' lz4Skip with a fixed gap.
const (
	lz4GiveUpBlocks = 16
	lz4ProbeBlocks  = 16
)

// diskLZ4Skip is the schedule for disk blocks: lz4ProbeBlocks-1 blocks
// sent untried between two tries.
var diskLZ4Skip = lz4SkipSchedule{lz4GiveUpBlocks, lz4ProbeBlocks - 1, lz4ProbeBlocks - 1}

// diskEncoder is a batchEncoder's state for disk blocks.
type diskEncoder struct {
	lz4Out []byte // LZ4 output of one block, allocated on first use
	skip   lz4Skip
	iov    [diskBatchBlocks][]byte
}

// appendDiskFrame appends the DISK_BATCH frame for b, reading its blocks
// from disk (of the given size), and returns what it sent. A block that
// reads as zeros travels as a bit; the rest raw, or LZ4-compressed when
// the encoder compresses and that shrinks the block (see lz4GiveUpBlocks).
//
// Each run of adjacent blocks is read with one call where the disk
// allows (vectorReader), into the places its raw records take in the
// frame; a zero or compressed block then moves the records after it
// down, so incompressible data is never copied within the sender.
//
// Payload layout: disk u32, first_block u64, count u32, present bitmap
// and zero bitmap of (count+7)/8 bytes each (bit i = block first+i, LSB
// first), then for every present non-zero block in order: encoding u8,
// length u32, data.
func (e *batchEncoder) appendDiskFrame(dst []byte, disk SourceDisk, size uint64, b *diskBatch) ([]byte, batchCounts, error) {
	var c batchCounts
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
	for word := b.present; word != 0; {
		i := bits.TrailingZeros64(word)
		k := min(bits.TrailingZeros64(^(word >> i)), 64-i) // the run's length
		for j := i; j < i+k; j += len(e.disk.iov) {
			var err error
			if dst, err = e.appendDiskRun(dst, zeroAt, disk, size, b, j, min(len(e.disk.iov), i+k-j), &c); err != nil {
				return dst[:start], c, err
			}
		}
		if i+k == 64 {
			break
		}
		word &^= (1<<uint(k) - 1) << uint(i)
	}
	return finishFrame(dst, start, frameDiskBatch, e.flags), c, nil
}

// appendDiskRun appends the records of the k (at most diskBatchBlocks)
// adjacent blocks from block b.first+i on, and sets the zero bits of
// those that read as zeros at zeroAt.
func (e *batchEncoder) appendDiskRun(dst []byte, zeroAt int, disk SourceDisk, size uint64, b *diskBatch, i, k int, c *batchCounts) ([]byte, error) {
	at := len(dst)
	off, _ := blockSpan(size, b.first+uint64(i))
	need := 0
	for j := range k {
		_, n := blockSpan(size, b.first+uint64(i+j))
		need += blockHeader + int(n)
	}
	dst = slices.Grow(dst, need)[:at+need]
	iov := e.disk.iov[:k]
	for j, p := 0, at; j < k; j++ {
		_, n := blockSpan(size, b.first+uint64(i+j))
		iov[j] = dst[p+blockHeader : p+blockHeader+int(n)]
		p += blockHeader + int(n)
	}
	// readRun trims iov's slices as it reads: take the places again.
	slot := at
	if err := readRun(disk, iov, off); err != nil {
		clear(iov)
		return dst[:at], fmt.Errorf("disk %d blocks %d..%d: %w", b.disk, b.first+uint64(i), b.first+uint64(i+k-1), err)
	}
	w := at // where the next record goes: never after slot
	for j := range k {
		_, n := blockSpan(size, b.first+uint64(i+j))
		blk := dst[slot+blockHeader : slot+blockHeader+int(n)]
		slot += blockHeader + int(n)
		if bytes.Equal(blk, zeroBlock[:n]) {
			dst[zeroAt+(i+j)/8] |= 1 << ((i + j) % 8)
			c.zero++
			continue
		}
		if e.comp == CompressionLZ4 && e.disk.skip.try() {
			if e.disk.lz4Out == nil {
				e.disk.lz4Out = make([]byte, lz4.CompressBlockBound(DiskBlockSize))
			}
			m, err := e.lz.CompressBlock(blk, e.disk.lz4Out)
			shrank := err == nil && m > 0 && uint64(m) < n
			e.disk.skip.result(shrank, diskLZ4Skip)
			if shrank {
				// The record ends inside blk's place, which is read.
				dst[w] = encLZ4
				binary.LittleEndian.PutUint32(dst[w+1:], uint32(m))
				copy(dst[w+blockHeader:], e.disk.lz4Out[:m])
				w += blockHeader + m
				c.compressed++
				continue
			}
		}
		dst[w] = encRaw
		binary.LittleEndian.PutUint32(dst[w+1:], uint32(n))
		if w+blockHeader != slot-int(n) {
			copy(dst[w+blockHeader:], blk)
		}
		w += blockHeader + int(n)
		c.normal++
	}
	clear(iov)
	return dst[:w], nil
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
// nothing after the last record. Adjacent blocks go to the disk with one
// write where it allows (vectorWriter), raw ones straight from the frame.
func (s *diskSink) run(b *preparedDiskBatch, scratch []byte) (batchCounts, error) {
	var c batchCounts
	w := blockWriter{disk: b.disk}
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
			// scratch holds one block: write out the one it holds.
			if w.scratch {
				if err := w.flush(); err != nil {
					return c, fmt.Errorf("writing disk %d: %w", b.index, err)
				}
			}
			got, err := lz4.UncompressBlock(src, scratch[:n])
			if err != nil {
				return c, protoErr("LZ4 block %d of disk %d: %v", bn, b.index, err)
			}
			if uint64(got) != n {
				return c, protoErr("LZ4 block %d of disk %d decompressed to %d bytes, want %d", bn, b.index, got, n)
			}
			data = scratch[:n]
			w.scratch = true
			c.compressed++
		default:
			return c, protoErr("block %d of disk %d has unknown encoding %d", bn, b.index, enc[0])
		}
		if d.err != nil {
			return c, d.err
		}
		if err := w.add(data, off); err != nil {
			return c, fmt.Errorf("writing disk %d before block %d: %w", b.index, bn, err)
		}
	}
	if err := d.end("DISK_BATCH blocks"); err != nil {
		return c, err
	}
	if err := w.flush(); err != nil {
		return c, fmt.Errorf("writing disk %d: %w", b.index, err)
	}
	return c, nil
}

// blockWriter gathers the blocks of one batch that lie end to end on the
// disk and writes each such run with one call.
type blockWriter struct {
	disk    TargetDisk
	off     uint64 // where the run starts
	n       uint64 // its bytes
	bufs    [MaxDiskBatchBlocks][]byte
	k       int  // its blocks
	scratch bool // one of them is the decompression scratch
}

// add appends p, the block at off, writing out the run first when p does
// not continue it.
func (w *blockWriter) add(p []byte, off uint64) error {
	if w.k > 0 && off != w.off+w.n {
		if err := w.flush(); err != nil {
			return err
		}
	}
	if w.k == 0 {
		w.off = off
	}
	w.bufs[w.k] = p
	w.k++
	w.n += uint64(len(p))
	return nil
}

// flush writes the run out.
func (w *blockWriter) flush() error {
	bufs := w.bufs[:w.k]
	off := w.off
	w.k, w.n, w.scratch = 0, 0, false
	defer clear(bufs)
	vw, ok := w.disk.(vectorWriter)
	if !ok || len(bufs) == 1 {
		for _, p := range bufs {
			if _, err := w.disk.WriteAt(p, int64(off)); err != nil {
				return err
			}
			off += uint64(len(p))
		}
		return nil
	}
	_, err := vw.WritevAt(bufs, int64(off))
	return err
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
