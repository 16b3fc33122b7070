package migrate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/pierrec/lz4/v4"
	"golang.org/x/sys/unix"

	"godwit/vmm/memory"
)

// Compression selects how the source encodes non-zero pages. Zero pages
// always travel as a bit.
type Compression int

// Compression modes.
const (
	// CompressionNone sends non-zero pages raw.
	CompressionNone Compression = iota
	// CompressionLZ4 sends a page LZ4-compressed when that makes it
	// smaller, raw otherwise.
	CompressionLZ4
)

// String returns "none" or "lz4".
func (c Compression) String() string {
	switch c {
	case CompressionNone:
		return "none"
	case CompressionLZ4:
		return "lz4"
	}
	return fmt.Sprintf("compression(%d)", int(c))
}

// ParseCompression parses "none" or "lz4".
func ParseCompression(s string) (Compression, error) {
	switch s {
	case "none", "":
		return CompressionNone, nil
	case "lz4":
		return CompressionLZ4, nil
	}
	return 0, fmt.Errorf("unknown compression %q (want none or lz4)", s)
}

// Page encodings inside a PAGE_BATCH.
const (
	encRaw byte = 0
	encLZ4 byte = 1
	// encCopy (protocol version 4): the page equals another page this
	// round sent with data; the record's data is copyRecordLen bytes:
	// region u32, page u64 of that page.
	encCopy byte = 2
)

// copyRecordLen is the length of an encCopy record's data.
const copyRecordLen = 4 + 8

const (
	pageSize    = memory.PageSize
	batchWords  = MaxBatchPages / 64
	batchHeader = 4 + 8 + 4 // region u32, first page u64, count u32
	pageHeader  = 1 + 2     // encoding u8, length u16
)

// maxBatchFrame is the largest PAGE_BATCH frame the encoder produces.
const maxBatchFrame = headerSize + batchHeader + 2*MaxBatchPages/8 +
	MaxBatchPages*(pageHeader+pageSize) + trailerSize

// lz4Room is what the encoder reserves for one LZ4 page: header and the
// worst-case compressed size, so CompressBlock never fails for lack of room.
var lz4Room = pageHeader + lz4.CompressBlockBound(pageSize)

var zeroPage [pageSize]byte

// isZero reports whether page is all zero bytes. bytes.Equal compiles to
// the runtime's vectorised memequal, which beats a word loop
// (BenchmarkIsZero).
func isZero(page []byte) bool { return bytes.Equal(page, zeroPage[:]) }

// batchCounts counts the pages of one or more batches by how they
// travelled (disk blocks are never deduplicated).
type batchCounts struct {
	normal, zero, compressed, deduplicated uint64
}

func (c *batchCounts) add(o batchCounts) {
	c.normal += o.normal
	c.zero += o.zero
	c.compressed += o.compressed
	c.deduplicated += o.deduplicated
}

func (c batchCounts) pages() uint64 { return c.normal + c.zero + c.compressed + c.deduplicated }

// batch names up to MaxBatchPages pages of one region: page first+i is in
// the batch when bit i of present is set.
type batch struct {
	region  int
	first   uint64
	count   int
	present [batchWords]uint64
	// holes marks present pages known to read as zeros without being
	// read (holes of the RAM's memfd, see sender.prepareUpTo): they
	// travel as zero pages, untouched.
	holes [batchWords]uint64
}

// batchEncoder encodes PAGE_BATCH frames. It owns its LZ4 state and a page
// snapshot buffer, so use one per goroutine.
type batchEncoder struct {
	comp    Compression
	flags   uint16      // frame flags: flagXXH64 or 0 (CRC-32C trailers)
	dedup   *dedupTable // shared by a round's encoders; nil: no encCopy
	lz      lz4.Compressor
	scratch [pageSize]byte
	disk    diskEncoder // DISK_BATCH state (disks.go)
	skip    lz4Skip
}

// Adaptive LZ4 skipping: compressing a page that does not shrink costs
// about as much as sending it (BenchmarkEncodeBatch/random), so after
// failRun pages in a row failed to shrink, the encoder sends the next
// pages raw without trying, and tries LZ4 only on a sample: one page
// after a gap that starts at minGap pages and doubles with each sampled
// page that still does not shrink, up to maxGap. A page that shrinks ends
// the skipping. The wire format does not change: a skipped page is a raw
// page, which a compressing encoder may always send. Disk blocks use the
// same mechanism with a fixed gap (diskLZ4Skip in disks.go).
const (
	lz4FailRun = 16
	lz4MinGap  = 8
	lz4MaxGap  = 64
)

// lz4SkipSchedule is when an lz4Skip stops trying and how it samples.
type lz4SkipSchedule struct{ failRun, minGap, maxGap int }

// pageLZ4Skip is the schedule for pages.
var pageLZ4Skip = lz4SkipSchedule{lz4FailRun, lz4MinGap, lz4MaxGap}

// lz4Skip is the state of the adaptive skip of one encoder.
type lz4Skip struct {
	fails int // pages in a row that did not shrink
	gap   int // current gap between sampled pages; 0 while not skipping
	left  int // pages still to send raw before the next sample
	tries uint64
}

// try reports whether the next page should be tried with LZ4.
func (k *lz4Skip) try() bool {
	if k.left > 0 {
		k.left--
		return false
	}
	k.tries++
	return true
}

// result records whether the page just tried shrank, under schedule s.
func (k *lz4Skip) result(shrank bool, s lz4SkipSchedule) {
	if shrank {
		*k = lz4Skip{tries: k.tries}
		return
	}
	k.fails++
	switch {
	case k.gap > 0:
		k.gap = min(2*k.gap, s.maxGap)
	case k.fails >= s.failRun:
		k.gap = s.minGap
	default:
		return
	}
	k.left = k.gap
}

// appendFrame appends the PAGE_BATCH frame for b, reading the pages from
// host (the region's mapping), and returns what it sent.
//
// Payload layout: region u32, first u64, count u32, present bitmap and
// zero bitmap of (count+7)/8 bytes each (bit i = page first+i, LSB
// first), then for every present non-zero page in order: encoding u8,
// length u16, data.
func (e *batchEncoder) appendFrame(dst []byte, host []byte, b *batch) ([]byte, batchCounts) {
	var c batchCounts
	start := len(dst)
	dst = beginFrame(dst)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(b.region))
	dst = binary.LittleEndian.AppendUint64(dst, b.first)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(b.count))
	bmBytes := (b.count + 7) / 8
	for i := 0; i < bmBytes; i++ {
		dst = append(dst, byte(b.present[i/8]>>(8*(i%8))))
	}
	zeroAt := len(dst)
	dst = append(dst, make([]byte, bmBytes)...)
	for w, word := range b.present {
		for word != 0 {
			bit := bits.TrailingZeros64(word)
			word &= word - 1
			i := w*64 + bit
			if b.holes[w]&(1<<bit) != 0 {
				dst[zeroAt+i/8] |= 1 << (i % 8)
				c.zero++
				continue
			}
			off := (b.first + uint64(i)) * pageSize
			page := host[off : off+pageSize]
			if isZero(page) {
				dst[zeroAt+i/8] |= 1 << (i % 8)
				c.zero++
				continue
			}
			if e.comp == CompressionLZ4 || e.dedup != nil {
				// Snapshot the page: the guest may write it while
				// we hash and compress it, and the hash, LZ4 and
				// the bytes sent must all see the same content.
				copy(e.scratch[:], page)
				page = e.scratch[:]
			}
			if e.dedup != nil {
				ref := pageRef{region: uint32(b.region), page: b.first + uint64(i)}
				if src, ok := e.dedup.match(page, ref); ok {
					dst = append(dst, encCopy, copyRecordLen, 0)
					dst = binary.LittleEndian.AppendUint32(dst, src.region)
					dst = binary.LittleEndian.AppendUint64(dst, src.page)
					c.deduplicated++
					continue
				}
			}
			if e.comp == CompressionLZ4 && e.skip.try() {
				at := len(dst)
				dst = slices.Grow(dst, lz4Room)[:at+lz4Room]
				n, err := e.lz.CompressBlock(page, dst[at+pageHeader:])
				shrank := err == nil && n > 0 && n < pageSize
				e.skip.result(shrank, pageLZ4Skip)
				if shrank {
					dst[at] = encLZ4
					binary.LittleEndian.PutUint16(dst[at+1:], uint16(n))
					dst = dst[:at+pageHeader+n]
					c.compressed++
					continue
				}
				dst = dst[:at]
			}
			dst = append(dst, encRaw, pageSize&0xff, pageSize>>8)
			dst = append(dst, page...)
			c.normal++
		}
	}
	return finishFrame(dst, start, framePageBatch, e.flags), c
}

// batchSink is where decoded pages go: the destination's RAM, the record
// of which pages have been received at least once, which pages the
// current round has delivered, and which pages hold data written by the
// migration (so that a zero page only costs work when it overwrites one).
//
// prepare runs on one goroutine in stream order and owns the bitmaps;
// the run of prepared batches may then proceed on several goroutines at
// once, since prepare guarantees the batches of a round are disjoint.
type batchSink struct {
	mem     *memory.Memory
	regions []memory.Region
	seen    [][]uint64 // received at least once
	round   [][]uint64 // received in the current round
	written [][]uint64 // may hold non-zero bytes

	mu     sync.Mutex
	copies []pageCopy // the round's encCopy records, run by copyPages

	noPopulate atomic.Bool // huge pages, or the kernel refused MADV_POPULATE_WRITE
}

// newBatchSink returns a sink writing into mem. With zeroed set, mem is
// known to be zero-filled (fresh memfd RAM), so a zero page for a page
// that no batch has written needs no work at all; without it, every page
// is assumed to hold junk.
func newBatchSink(mem *memory.Memory, zeroed bool) *batchSink {
	s := &batchSink{mem: mem, regions: mem.Regions()}
	for _, r := range s.regions {
		words := (r.Pages() + 63) / 64
		s.seen = append(s.seen, make([]uint64, words))
		s.round = append(s.round, make([]uint64, words))
		w := make([]uint64, words)
		if !zeroed {
			for i := range w {
				w[i] = ^uint64(0)
			}
		}
		s.written = append(s.written, w)
	}
	s.noPopulate.Store(mem.HugePages())
	return s
}

// newRound forgets which pages the previous round delivered.
func (s *batchSink) newRound() {
	for _, bm := range s.round {
		clear(bm)
	}
	s.mu.Lock()
	s.copies = nil
	s.mu.Unlock()
}

// preparedBatch is a validated PAGE_BATCH waiting for its pages to be
// decoded: everything but the page data has been checked.
type preparedBatch struct {
	host    []byte // the region's RAM
	first   uint64
	count   int
	region  uint32
	present []byte
	zero    []byte
	clear   [batchWords]uint64 // zero pages that may hold data: clear them
	fresh   [batchWords]uint64 // data pages no batch wrote before: populate them
	pages   []byte             // the page records
}

// prepare validates the header and bitmaps of a PAGE_BATCH payload,
// records its pages as received (refusing a page the current round
// already delivered), and fills b for run. It returns the number of pages
// the batch carries. b aliases p.
func (s *batchSink) prepare(p []byte, b *preparedBatch) (uint64, error) {
	d := decoder{b: p}
	region := d.u32()
	first := d.u64()
	count := d.u32()
	if d.err != nil {
		return 0, d.err
	}
	if region >= uint32(len(s.regions)) {
		return 0, protoErr("PAGE_BATCH region %d out of range (VM has %d)", region, len(s.regions))
	}
	if count == 0 || count > MaxBatchPages {
		return 0, protoErr("PAGE_BATCH page count %d outside [1, %d]", count, MaxBatchPages)
	}
	pages := s.regions[region].Pages()
	if first >= pages || uint64(count) > pages-first {
		return 0, protoErr("PAGE_BATCH pages [%d, +%d) outside region %d (%d pages)", first, count, region, pages)
	}
	present, zero, _, err := batchBitmaps(&d, count, "PAGE_BATCH", "page")
	if err != nil {
		return 0, err
	}
	seen, round, written := s.seen[region], s.round[region], s.written[region]
	if pn, dup := markRound(round, present, first, count); dup {
		return 0, protoErr("page %d of region %d sent twice in one round", pn, region)
	}
	// Only a valid batch changes the bitmaps (a batch that repeats a
	// page fails the migration, so the round bits set above are moot).
	*b = preparedBatch{host: s.mem.RegionHost(int(region)), first: first, count: int(count), region: region,
		present: present, zero: zero, pages: d.b}
	var n uint64
	for i := 0; i < int(count); i++ {
		if present[i/8]&(1<<(i%8)) == 0 {
			continue
		}
		n++
		pn := first + uint64(i)
		w, bit := pn/64, uint64(1)<<(pn%64)
		seen[w] |= bit
		if zero[i/8]&(1<<(i%8)) == 0 {
			if written[w]&bit == 0 {
				b.fresh[i/64] |= 1 << (i % 64)
			}
			written[w] |= bit
			continue
		}
		if written[w]&bit != 0 {
			b.clear[i/64] |= 1 << (i % 64)
			written[w] &^= bit
		}
	}
	return n, nil
}

// run decodes the pages of a prepared batch into RAM. Batches of one round
// may run concurrently. It checks every page record as hostile.
func (s *batchSink) run(b *preparedBatch) (batchCounts, error) {
	var c batchCounts
	var copies []pageCopy
	s.populate(b)
	d := decoder{b: b.pages}
	for i := 0; i < b.count; i++ {
		if b.present[i/8]&(1<<(i%8)) == 0 {
			continue
		}
		pn := b.first + uint64(i)
		if b.zero[i/8]&(1<<(i%8)) != 0 {
			// Only pages that may hold data need clearing, and
			// skip the write when one is already zero.
			if b.clear[i/64]&(1<<(i%64)) != 0 {
				if page := b.host[pn*pageSize : (pn+1)*pageSize]; !isZero(page) {
					clear(page)
				}
			}
			c.zero++
			continue
		}
		page := b.host[pn*pageSize : (pn+1)*pageSize]
		enc := d.take(1)
		n := d.u16()
		if d.err != nil {
			return c, d.err
		}
		switch enc[0] {
		case encRaw:
			if n != pageSize {
				return c, protoErr("raw page %d of region %d has length %d, want %d", pn, b.region, n, pageSize)
			}
			copy(page, d.take(pageSize))
			c.normal++
		case encCopy:
			if n != copyRecordLen {
				return c, protoErr("copy record of page %d of region %d has length %d, want %d", pn, b.region, n, copyRecordLen)
			}
			rec := d.take(copyRecordLen)
			if d.err != nil {
				return c, d.err
			}
			src := pageRef{region: binary.LittleEndian.Uint32(rec), page: binary.LittleEndian.Uint64(rec[4:])}
			if src.region >= uint32(len(s.regions)) || src.page >= s.regions[src.region].Pages() {
				return c, protoErr("page %d of region %d copies page %d of region %d, outside RAM", pn, b.region, src.page, src.region)
			}
			copies = append(copies, pageCopy{dst: pageRef{region: b.region, page: pn}, src: src})
			c.deduplicated++
		case encLZ4:
			if n == 0 || n >= pageSize {
				return c, protoErr("LZ4 page %d of region %d has length %d, want 1..%d", pn, b.region, n, pageSize-1)
			}
			src := d.take(int(n))
			if d.err != nil {
				return c, d.err
			}
			got, err := lz4.UncompressBlock(src, page)
			if err != nil {
				return c, protoErr("LZ4 page %d of region %d: %v", pn, b.region, err)
			}
			if got != pageSize {
				return c, protoErr("LZ4 page %d of region %d decompressed to %d bytes, want %d", pn, b.region, got, pageSize)
			}
			c.compressed++
		default:
			return c, protoErr("page %d of region %d has unknown encoding %d", pn, b.region, enc[0])
		}
		if d.err != nil {
			return c, d.err
		}
	}
	if len(copies) > 0 {
		s.mu.Lock()
		s.copies = append(s.copies, copies...)
		s.mu.Unlock()
	}
	return c, d.end("PAGE_BATCH pages")
}

// populate allocates the host pages behind each run of b's fresh pages
// with one Memory.Populate call, before the run writes them: cheaper than
// a page fault per page where the RAM has 4 KiB pages (see Populate), and
// the pages get allocated anyway. Pages that no batch fills stay
// unallocated. RAM with huge pages (a fault allocates 2 MiB) skips it, and
// a kernel without MADV_POPULATE_WRITE (EINVAL) turns it off; other
// errors leave the pages to their faults.
func (s *batchSink) populate(b *preparedBatch) {
	if s.noPopulate.Load() {
		return
	}
	for i := 0; i < b.count; {
		if b.fresh[i/64]&(1<<(i%64)) == 0 {
			i++
			continue
		}
		j := i + 1
		for j < b.count && b.fresh[j/64]&(1<<(j%64)) != 0 {
			j++
		}
		if err := s.mem.Populate(int(b.region), b.first+uint64(i), uint64(j-i)); errors.Is(err, unix.EINVAL) {
			s.noPopulate.Store(true)
			return
		}
		i = j
	}
}

// copyPages performs the encCopy records of the round's batches; call it
// once they have all run (at ROUND_END), when every page the round sent
// with data is in RAM. A copy must name a page this round sent with data
// other than itself; which one of several such pages a hostile stream
// names first cannot matter to the destination's safety: whatever it
// copies is guest data the stream could as well have sent.
func (s *batchSink) copyPages() error {
	s.mu.Lock()
	copies := s.copies
	s.copies = nil
	s.mu.Unlock()
	for _, cp := range copies {
		w, bit := cp.src.page/64, uint64(1)<<(cp.src.page%64)
		if cp.src == cp.dst || s.round[cp.src.region][w]&bit == 0 || s.written[cp.src.region][w]&bit == 0 {
			return protoErr("page %d of region %d copies page %d of region %d, which this round did not send with data",
				cp.dst.page, cp.dst.region, cp.src.page, cp.src.region)
		}
		from := s.mem.RegionHost(int(cp.src.region))[cp.src.page*pageSize : (cp.src.page+1)*pageSize]
		to := s.mem.RegionHost(int(cp.dst.region))[cp.dst.page*pageSize : (cp.dst.page+1)*pageSize]
		copy(to, from)
	}
	return nil
}

// apply prepares and runs one PAGE_BATCH payload on the calling goroutine.
func (s *batchSink) apply(p []byte) (batchCounts, error) {
	var b preparedBatch
	if _, err := s.prepare(p, &b); err != nil {
		return batchCounts{}, err
	}
	c, err := s.run(&b)
	if err != nil {
		return c, err
	}
	return c, s.copyPages()
}

// missing returns the number of pages never received, and the first one.
func (s *batchSink) missing() (n uint64, region int, page uint64) {
	region = -1
	for i, r := range s.regions {
		pages := r.Pages()
		for w, word := range s.seen[i] {
			valid := ^uint64(0)
			if rem := pages - uint64(w)*64; rem < 64 {
				valid = 1<<rem - 1
			}
			if miss := ^word & valid; miss != 0 {
				if region < 0 {
					region, page = i, uint64(w)*64+uint64(bits.TrailingZeros64(miss))
				}
				n += uint64(bits.OnesCount64(miss))
			}
		}
	}
	return n, region, page
}

// nextBatch fills b with the next run of set bits in bm (a region bitmap
// of pages bits) at or after page *pos, covering at most MaxBatchPages
// pages, and advances *pos past it. It returns false when no bit is left.
func nextBatch(bm []uint64, pages uint64, pos *uint64, b *batch) bool {
	p := *pos
	for p < pages {
		w := p / 64
		word := bm[w] >> (p % 64)
		if word == 0 {
			p = (w + 1) * 64
			continue
		}
		p += uint64(bits.TrailingZeros64(word))
		break
	}
	if p >= pages {
		*pos = pages
		return false
	}
	b.first = p
	b.count = int(min(uint64(MaxBatchPages), pages-p))
	b.holes = [batchWords]uint64{}
	extractBits(bm, p, b.count, &b.present)
	// Trim the run to its last present page so the bitmaps stay short.
	for j := len(b.present) - 1; j >= 0; j-- {
		if b.present[j] != 0 {
			b.count = j*64 + 64 - bits.LeadingZeros64(b.present[j])
			break
		}
	}
	*pos = p + uint64(b.count)
	return true
}

// extractBits copies bits [p, p+count) of bm (count ≤ MaxBatchPages)
// into dst, bit 0 of dst being bit p of bm, and clears the rest of dst.
func extractBits(bm []uint64, p uint64, count int, dst *[batchWords]uint64) {
	*dst = [batchWords]uint64{}
	for j := 0; j*64 < count; j++ {
		at := p + uint64(j)*64
		w, sh := at/64, at%64
		v := bm[w] >> sh
		if sh != 0 && w+1 < uint64(len(bm)) {
			v |= bm[w+1] << (64 - sh)
		}
		if left := count - j*64; left < 64 {
			v &= 1<<uint(left) - 1
		}
		dst[j] = v
	}
}

// batchBitmaps reads the present and zero bitmaps of a batch of count
// units (pages or blocks) from d and checks them: no bit past count, zero
// only where present, at least one unit present. It returns the bitmaps
// (aliasing d's bytes) and how many units are present. frame and unit
// name the batch in errors.
func batchBitmaps(d *decoder, count uint32, frame, unit string) (present, zero []byte, n uint64, err error) {
	bmBytes := int(count+7) / 8
	present = d.take(bmBytes)
	zero = d.take(bmBytes)
	if d.err != nil {
		return nil, nil, 0, d.err
	}
	if spare := uint(count % 8); spare != 0 {
		mask := byte(0xff) << spare
		if present[bmBytes-1]&mask != 0 || zero[bmBytes-1]&mask != 0 {
			return nil, nil, 0, protoErr("%s bitmap has bits past its %d %ss", frame, count, unit)
		}
	}
	for i := range present {
		if zero[i]&^present[i] != 0 {
			return nil, nil, 0, protoErr("%s marks a %s zero that is not present", frame, unit)
		}
		n += uint64(bits.OnesCount8(present[i]))
	}
	if n == 0 {
		return nil, nil, 0, protoErr("%s carries no %ss", frame, unit)
	}
	return present, zero, n, nil
}

// markRound sets in round the bit of unit first+i for every unit i of a
// batch's present bitmap (count units). It stops at a unit whose bit the
// round already has and returns it with dup true: a batch that repeats a
// unit fails the migration, so the bits set before it are moot.
func markRound(round []uint64, present []byte, first uint64, count uint32) (unit uint64, dup bool) {
	for i := 0; i < int(count); i++ {
		if present[i/8]&(1<<(i%8)) == 0 {
			continue
		}
		u := first + uint64(i)
		w, bit := u/64, uint64(1)<<(u%64)
		if round[w]&bit != 0 {
			return u, true
		}
		round[w] |= bit
	}
	return 0, false
}
