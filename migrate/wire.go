package migrate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"

	"godwit/vmm/memory"
)

// Protocol constants. See the package documentation for the frame layouts.
const (
	// Magic opens every HELLO payload.
	Magic = "GODWITMG"
	// ProtocolVersion is the newest version of the wire format this
	// package speaks, and the one Send speaks: version 3 added storage
	// migration (STORAGE, DISK_BATCH, ROUND_END's disk count), version 4
	// the XXH64 trailer of page and disk batches (flagXXH64) and the copy
	// encoding of a page (encCopy).
	ProtocolVersion = 4
	// MinProtocolVersion is the oldest version Receive takes.
	MinProtocolVersion = 2

	// MaxConfigSize bounds the VM configuration carried by HELLO.
	MaxConfigSize = 64 << 10
	// MaxBatchPages bounds the pages one PAGE_BATCH frame may cover.
	MaxBatchPages = 1024
	// MaxPayload bounds the payload of any frame: a full batch of raw
	// pages plus its headers and bitmaps fits with room to spare.
	MaxPayload = MaxBatchPages*memory.PageSize + 64<<10
	// MaxStateSize bounds the encoded VM state (all STATE chunks together).
	MaxStateSize = 16 << 20
	// MaxSections bounds the number of state sections.
	MaxSections = 4096
	// MaxSectionID bounds the length of a section ID in bytes.
	MaxSectionID = 256
	// MaxReason bounds the reason text of REFUSE and ERROR frames; longer
	// reasons are truncated by the sender.
	MaxReason = 4096
	// MaxRegions bounds the memory regions HELLO may describe.
	MaxRegions = 64

	// DiskBlockSize is the unit of a storage migration: DISK_BATCH
	// frames carry whole blocks of this size (the last block of a disk
	// may be shorter), and SourceDisk's bitmaps have a bit per block.
	DiskBlockSize = 64 << 10
	// MaxDisks bounds the disks STORAGE may describe.
	MaxDisks = 64
	// MaxDiskSize bounds the size of one disk STORAGE may describe. The
	// receiver keeps a bitmap of a bit per block of every disk.
	MaxDiskSize = 16 << 40
	// MaxDiskBatchBlocks bounds the blocks one DISK_BATCH frame may cover.
	MaxDiskBatchBlocks = 64
)

const (
	headerSize    = 8 // type u16, flags u16, length u32
	trailerSize   = 4 // checksum over header and payload
	maxStateChunk = 1 << 20
	// flagMore marks a STATE chunk that is followed by another one.
	flagMore uint16 = 1
	// flagXXH64 (protocol version 4) marks a PAGE_BATCH or DISK_BATCH
	// frame whose trailer is the low 32 bits of the XXH64 (seed 0) of
	// header and payload instead of their CRC-32C: the same protection
	// against a corrupted stream for a tenth of the CPU where the CPU is
	// emulated (the CRC32 instruction is a helper call under TCG; a
	// multiply-rotate hash is plain integer code), and faster natively.
	flagXXH64 uint16 = 1 << 15
)

// frameType identifies a frame on the wire.
type frameType uint16

// Frame types. Their numeric values are part of the wire format.
const (
	frameHello       frameType = 1
	frameAccept      frameType = 2
	frameRefuse      frameType = 3
	frameMemoryBegin frameType = 4
	framePageBatch   frameType = 5
	frameRoundEnd    frameType = 6
	frameState       frameType = 7
	frameComplete    frameType = 8
	frameResumed     frameType = 9
	frameError       frameType = 10
	frameRoundAck    frameType = 11
	frameStorage     frameType = 12
	frameDiskBatch   frameType = 13
)

// frameSpec is what a reader accepts for one frame type.
type frameSpec struct {
	name     string
	maxLen   uint32 // payload bound
	minLen   uint32 // payload lower bound
	flagMask uint16 // flags that may be set
}

var frameSpecs = map[frameType]frameSpec{
	frameHello:       {name: "HELLO", minLen: helloFixed, maxLen: helloFixed + MaxRegions*16 + MaxConfigSize},
	frameAccept:      {name: "ACCEPT"},
	frameRefuse:      {name: "REFUSE", maxLen: MaxReason},
	frameMemoryBegin: {name: "MEMORY_BEGIN", minLen: 4, maxLen: 4},
	framePageBatch:   {name: "PAGE_BATCH", minLen: batchHeader, maxLen: MaxPayload, flagMask: flagXXH64},
	frameRoundEnd:    {name: "ROUND_END", minLen: roundEndSize, maxLen: roundEndSizeV3},
	frameState:       {name: "STATE", maxLen: maxStateChunk, flagMask: flagMore},
	frameComplete:    {name: "COMPLETE"},
	frameResumed:     {name: "RESUMED", minLen: resumedFixed, maxLen: resumedFixed + timingsHeader + MaxTimingsSize},
	frameError:       {name: "ERROR", maxLen: MaxReason},
	frameRoundAck:    {name: "ROUND_ACK", minLen: roundAckSize, maxLen: roundAckSizeV4},
	frameStorage:     {name: "STORAGE", minLen: storageFixed, maxLen: storageFixed + MaxDisks*storageDiskSize},
	frameDiskBatch:   {name: "DISK_BATCH", minLen: diskBatchHeader, maxLen: maxDiskBatchPayload, flagMask: flagXXH64},
}

func (t frameType) String() string {
	if s, ok := frameSpecs[t]; ok {
		return s.name
	}
	return fmt.Sprintf("frame type %#04x", uint16(t))
}

// Errors returned by Send and Receive; test with errors.Is.
var (
	// ErrProtocol reports a malformed, unexpected or corrupted frame.
	ErrProtocol = errors.New("migration protocol error")
	// ErrRefused reports that the destination refused the VM; the
	// error text carries the destination's reason verbatim.
	ErrRefused = errors.New("destination refused the migration")
	// ErrPeerAborted reports an ERROR frame from the other side; the
	// error text carries its reason.
	ErrPeerAborted = errors.New("peer aborted the migration")
	// ErrTimeout reports a migration that ran out of time: the source's
	// Options.Timeout, or the destination's idle timeout.
	ErrTimeout = errors.New("migration timed out")
	// ErrNotConverged reports that the stop-iterating policy gave up.
	ErrNotConverged = errors.New("migration did not converge")
)

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// frameSum returns the trailer of a frame with the given flags, header
// and payload: XXH64's low 32 bits with flagXXH64, else CRC-32C. The
// writer and the reader both use it.
func frameSum(flags uint16, hdr, payload []byte) uint32 {
	if flags&flagXXH64 != 0 {
		var d xxhash.Digest
		d.Reset()
		d.Write(hdr)
		d.Write(payload)
		return uint32(d.Sum64())
	}
	return crc32.Update(crc32.Update(0, castagnoli, hdr), castagnoli, payload)
}

// frame is one decoded frame. Payload aliases the reader's buffer and is
// valid until the next call to next (or until detach hands the buffer
// over).
type frame struct {
	typ     frameType
	flags   uint16
	payload []byte
	// unchecked: the reader left the checksum to the caller
	// (frameReader.deferSum), who must call verify before trusting the
	// payload's data; hdr and sum are what verify needs.
	unchecked bool
	hdr       [headerSize]byte
	sum       uint32
}

// verify checks the checksum of a frame whose reader deferred it; a frame
// the reader checked passes at once.
func (f *frame) verify() error {
	if !f.unchecked {
		return nil
	}
	if got := frameSum(f.flags, f.hdr[:], f.payload); got != f.sum {
		return protoErr("%s frame checksum mismatch (got %#08x, frame says %#08x)", f.typ, got, f.sum)
	}
	f.unchecked = false
	return nil
}

// frameReader reads and checks frames: known type, allowed flags, bounded
// length, checksum. It allocates at most MaxPayload+trailerSize bytes.
type frameReader struct {
	r   io.Reader
	hdr [headerSize]byte
	buf []byte
	n   uint64 // bytes read, including headers and trailers
	// limit, if set, may refuse a frame from its header alone, before
	// its payload is read or room for it allocated (the receiver bounds
	// frames by the VM it accepted: frameLimit).
	limit func(typ frameType, n uint32) error
	// deferSum, if set, names the frame types whose checksum next leaves
	// to the caller (frame.verify): the receiver verifies its page and
	// disk batches on its workers, so that its reading goroutine, which
	// the whole stream waits for, only reads.
	deferSum func(typ frameType) bool
}

// detach hands the buffer the last frame's payload aliases to the caller
// and makes the reader use spare (nil: allocate on demand) from now on.
func (fr *frameReader) detach(spare []byte) []byte {
	b := fr.buf
	fr.buf = spare
	return b
}

func newFrameReader(r io.Reader) *frameReader { return &frameReader{r: r} }

// next reads one frame. It returns io.EOF only at a clean frame boundary.
func (fr *frameReader) next() (frame, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return frame{}, err
	}
	typ := frameType(binary.LittleEndian.Uint16(fr.hdr[0:]))
	flags := binary.LittleEndian.Uint16(fr.hdr[2:])
	n := binary.LittleEndian.Uint32(fr.hdr[4:])
	spec, ok := frameSpecs[typ]
	if !ok {
		return frame{}, protoErr("unknown frame type %#04x", uint16(typ))
	}
	if flags&^spec.flagMask != 0 {
		return frame{}, protoErr("%s frame with unknown flags %#04x", typ, flags)
	}
	if n > spec.maxLen || n < spec.minLen {
		return frame{}, protoErr("%s frame length %d outside [%d, %d]", typ, n, spec.minLen, spec.maxLen)
	}
	if fr.limit != nil {
		if err := fr.limit(typ, n); err != nil {
			return frame{}, err
		}
	}
	need := int(n) + trailerSize
	if cap(fr.buf) < need {
		fr.buf = make([]byte, need)
	}
	buf := fr.buf[:need]
	if _, err := io.ReadFull(fr.r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, fmt.Errorf("reading %s frame: %w", typ, err)
	}
	fr.n += uint64(headerSize + need)
	f := frame{typ: typ, flags: flags, payload: buf[:n], unchecked: true, hdr: fr.hdr, sum: binary.LittleEndian.Uint32(buf[n:])}
	if fr.deferSum != nil && fr.deferSum(typ) {
		return f, nil
	}
	if err := f.verify(); err != nil {
		return frame{}, err
	}
	return f, nil
}

// beginFrame appends room for a frame header to dst; the payload follows.
func beginFrame(dst []byte) []byte {
	return append(dst, make([]byte, headerSize)...)
}

// finishFrame fills in the header of the frame that starts at dst[start]
// and appends its checksum (see frameSum).
func finishFrame(dst []byte, start int, typ frameType, flags uint16) []byte {
	h := dst[start : start+headerSize]
	binary.LittleEndian.PutUint16(h[0:], uint16(typ))
	binary.LittleEndian.PutUint16(h[2:], flags)
	binary.LittleEndian.PutUint32(h[4:], uint32(len(dst)-start-headerSize))
	return binary.LittleEndian.AppendUint32(dst, frameSum(flags, h, dst[start+headerSize:]))
}

// appendFrame appends a complete frame with the given payload to dst.
func appendFrame(dst []byte, typ frameType, flags uint16, payload []byte) []byte {
	start := len(dst)
	dst = beginFrame(dst)
	dst = append(dst, payload...)
	return finishFrame(dst, start, typ, flags)
}

// decoder reads little-endian fields from a payload; the first short read
// sticks as an error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = protoErr("payload truncated: need %d more bytes, have %d", n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u16() uint16 {
	if b := d.take(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if b := d.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if b := d.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// end fails if bytes are left over.
func (d *decoder) end(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.err = protoErr("%d trailing bytes after %s", len(d.b), what)
	}
	return d.err
}

// regionDesc describes one memory region in HELLO.
type regionDesc struct {
	GPA, Size uint64
}

// hello is the HELLO payload:
//
//	magic [8]byte, version u32, page_size u32, region_count u32,
//	region_count × {gpa u64, size u64}, config_len u32, config [config_len]byte
type hello struct {
	version  uint32
	pageSize uint32
	regions  []regionDesc
	config   []byte
}

const helloFixed = 8 + 4 + 4 + 4 + 4

func (h hello) append(dst []byte) []byte {
	dst = append(dst, Magic...)
	dst = binary.LittleEndian.AppendUint32(dst, h.version)
	dst = binary.LittleEndian.AppendUint32(dst, h.pageSize)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(h.regions)))
	for _, r := range h.regions {
		dst = binary.LittleEndian.AppendUint64(dst, r.GPA)
		dst = binary.LittleEndian.AppendUint64(dst, r.Size)
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(h.config)))
	return append(dst, h.config...)
}

// parseHello decodes and bounds-checks a HELLO payload. It does not check
// the version: the caller refuses other versions with a clear message.
// The layout above is the same in every version this package speaks;
// bytes after the config of a version it does not speak are ignored.
func parseHello(p []byte) (hello, error) {
	d := decoder{b: p}
	if m := d.take(len(Magic)); d.err == nil && string(m) != Magic {
		return hello{}, protoErr("bad magic %q: not a godwit migration stream", m)
	}
	var h hello
	h.version = d.u32()
	h.pageSize = d.u32()
	n := d.u32()
	if d.err == nil && n > MaxRegions {
		return hello{}, protoErr("HELLO describes %d memory regions, limit %d", n, MaxRegions)
	}
	for i := uint32(0); i < n && d.err == nil; i++ {
		h.regions = append(h.regions, regionDesc{GPA: d.u64(), Size: d.u64()})
	}
	cl := d.u32()
	if d.err == nil && cl > MaxConfigSize {
		return hello{}, protoErr("HELLO config of %d bytes exceeds limit %d", cl, MaxConfigSize)
	}
	h.config = append([]byte(nil), d.take(int(cl))...)
	if h.version < MinProtocolVersion || h.version > ProtocolVersion {
		// Another version may append fields: leave them unread, so
		// that the caller refuses it with the version's message.
		return h, d.err
	}
	return h, d.end("HELLO")
}

// roundEnd is the ROUND_END payload: round u32, pages u64 (pages sent in
// the round, zero pages included), bytes u64 (wire bytes of the round's
// frames, informational), and from protocol version 3 on disk_blocks u64
// (disk blocks sent in the round, zero blocks included).
type roundEnd struct {
	round      uint32
	pages      uint64
	bytes      uint64
	diskBlocks uint64
}

const (
	roundEndSize   = 4 + 8 + 8
	roundEndSizeV3 = roundEndSize + 8
)

// append encodes r in the layout of protocol version 2.
func (r roundEnd) append(dst []byte) []byte { return r.appendVersion(dst, 2) }

// appendVersion encodes r in the layout of protocol version.
func (r roundEnd) appendVersion(dst []byte, version uint32) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, r.round)
	dst = binary.LittleEndian.AppendUint64(dst, r.pages)
	dst = binary.LittleEndian.AppendUint64(dst, r.bytes)
	if version >= 3 {
		dst = binary.LittleEndian.AppendUint64(dst, r.diskBlocks)
	}
	return dst
}

// parseRoundEnd decodes a ROUND_END payload of protocol version 2.
func parseRoundEnd(p []byte) (roundEnd, error) { return parseRoundEndVersion(p, 2) }

// parseRoundEndVersion decodes a ROUND_END payload of protocol version,
// which fixes its length.
func parseRoundEndVersion(p []byte, version uint32) (roundEnd, error) {
	d := decoder{b: p}
	r := roundEnd{round: d.u32(), pages: d.u64(), bytes: d.u64()}
	if version >= 3 {
		r.diskBlocks = d.u64()
	}
	return r, d.end("ROUND_END")
}

// roundAck is the ROUND_ACK payload: round u32, apply_ns u64 (the
// destination's time from MEMORY_BEGIN to the last page of the round
// applied), and from version 4 on read_wait_ns u64 (its time waiting for
// the round's frames) and work_ns u64 (its workers' time decoding them,
// summed): informational, for the round's record.
type roundAck struct {
	round                       uint32
	applyNs, readWaitNs, workNs uint64
}

const (
	roundAckSize   = 4 + 8
	roundAckSizeV4 = roundAckSize + 8 + 8
)

// appendVersion encodes a in the layout of protocol version.
func (a roundAck) appendVersion(dst []byte, version uint32) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, a.round)
	dst = binary.LittleEndian.AppendUint64(dst, a.applyNs)
	if version >= 4 {
		dst = binary.LittleEndian.AppendUint64(dst, a.readWaitNs)
		dst = binary.LittleEndian.AppendUint64(dst, a.workNs)
	}
	return dst
}

// parseRoundAckVersion decodes a ROUND_ACK payload of protocol version.
func parseRoundAckVersion(p []byte, version uint32) (roundAck, error) {
	d := decoder{b: p}
	a := roundAck{round: d.u32(), applyNs: d.u64()}
	if version >= 4 {
		a.readWaitNs, a.workNs = d.u64(), d.u64()
	}
	return a, d.end("ROUND_ACK")
}

// Bounds of RESUMED's timings (see the package documentation).
const (
	// TimingsVersion is the layout of RESUMED's timings block this
	// package writes.
	TimingsVersion = 1
	// MaxTimingsSize bounds the timings block after its header, for
	// every version, present and future.
	MaxTimingsSize = 256
	// MaxReportedDuration bounds each duration the destination reports
	// in RESUMED; a larger one is malformed.
	MaxReportedDuration = 24 * time.Hour
)

const (
	resumedFixed  = 8 + 8 // restore_ns u64, start_ns u64
	timingsHeader = 2 + 2 // timings_version u16, timings_len u16
	timingsV1Size = 8     // handle_ns u64
)

// resumed is the RESUMED payload:
//
//	restore_ns u64 | start_ns u64
//	[ timings_version u16 | timings_len u16 | timings [timings_len]byte ]
//
// where timings version 1 is handle_ns u64 (timings_len 8): the
// destination's time from reading COMPLETE to writing RESUMED, restore and
// start included. A payload of 16 bytes, from a destination that predates
// the timings block, has no handle_ns (version 0).
type resumed struct {
	restoreNs, startNs uint64
	// version is the timings block's version, 0 when there is none.
	version  uint16
	handleNs uint64
}

// append encodes r with the timings block of r.version (none for 0).
func (r resumed) append(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, r.restoreNs)
	dst = binary.LittleEndian.AppendUint64(dst, r.startNs)
	if r.version == 0 {
		return dst
	}
	dst = binary.LittleEndian.AppendUint16(dst, r.version)
	dst = binary.LittleEndian.AppendUint16(dst, timingsV1Size)
	return binary.LittleEndian.AppendUint64(dst, r.handleNs)
}

// parseResumed decodes a RESUMED payload strictly: a known timings
// version with exactly its length, nothing after it, every duration at
// most MaxReportedDuration, and restore plus start within handle.
func parseResumed(p []byte) (resumed, error) {
	d := decoder{b: p}
	r := resumed{restoreNs: d.u64(), startNs: d.u64()}
	if d.err == nil && len(d.b) > 0 {
		r.version = d.u16()
		n := d.u16()
		if d.err != nil {
			return resumed{}, d.err
		}
		if r.version != TimingsVersion {
			return resumed{}, protoErr("RESUMED timings version %d not supported (this side reads %d)", r.version, TimingsVersion)
		}
		if n != timingsV1Size || len(d.b) != int(n) {
			return resumed{}, protoErr("RESUMED timings version %d: length %d with %d bytes left, want %d", r.version, n, len(d.b), timingsV1Size)
		}
		r.handleNs = d.u64()
	}
	if err := d.end("RESUMED"); err != nil {
		return resumed{}, err
	}
	const limit = uint64(MaxReportedDuration)
	for _, v := range []struct {
		name string
		ns   uint64
	}{{"restore_ns", r.restoreNs}, {"start_ns", r.startNs}, {"handle_ns", r.handleNs}} {
		if v.ns > limit {
			return resumed{}, protoErr("RESUMED %s of %d exceeds %v", v.name, v.ns, MaxReportedDuration)
		}
	}
	if r.version > 0 && r.restoreNs+r.startNs > r.handleNs {
		return resumed{}, protoErr("RESUMED restore_ns %d + start_ns %d exceed handle_ns %d", r.restoreNs, r.startNs, r.handleNs)
	}
	return r, nil
}

// reasonPayload truncates s to MaxReason bytes on a rune boundary.
func reasonPayload(s string) []byte {
	if len(s) > MaxReason {
		s = s[:MaxReason]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return []byte(s)
}

// parseReason turns a REFUSE or ERROR payload into printable text:
// invalid UTF-8 and control characters are escaped.
func parseReason(p []byte) string {
	s := string(p)
	for _, r := range s {
		if r == utf8.RuneError || (r < 0x20 && r != '\t') || r == 0x7f {
			q := fmt.Sprintf("%q", s)
			return q[1 : len(q)-1]
		}
	}
	return s
}

// encodeState serialises sections: count u32, then per section
// id_len u16, id, version u32, data_len u32, data.
func encodeState(sections []Section) ([]byte, error) {
	if len(sections) > MaxSections {
		return nil, fmt.Errorf("%d state sections exceed the limit of %d", len(sections), MaxSections)
	}
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, uint32(len(sections)))
	for _, s := range sections {
		if len(s.ID) == 0 || len(s.ID) > MaxSectionID {
			return nil, fmt.Errorf("state section ID %q: length must be 1..%d", s.ID, MaxSectionID)
		}
		if len(s.Data) > MaxStateSize {
			return nil, fmt.Errorf("state section %q of %d bytes exceeds %d", s.ID, len(s.Data), MaxStateSize)
		}
		b = binary.LittleEndian.AppendUint16(b, uint16(len(s.ID)))
		b = append(b, s.ID...)
		b = binary.LittleEndian.AppendUint32(b, s.Version)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s.Data)))
		b = append(b, s.Data...)
		if len(b) > MaxStateSize {
			return nil, fmt.Errorf("VM state exceeds %d bytes", MaxStateSize)
		}
	}
	return b, nil
}

// decodeState parses an encoded state. Section data aliases b.
func decodeState(b []byte) ([]Section, error) {
	d := decoder{b: b}
	n := d.u32()
	if d.err == nil && n > MaxSections {
		return nil, protoErr("state claims %d sections, limit %d", n, MaxSections)
	}
	var out []Section
	seen := make(map[string]bool)
	for i := uint32(0); i < n && d.err == nil; i++ {
		idLen := d.u16()
		if d.err == nil && (idLen == 0 || idLen > MaxSectionID) {
			return nil, protoErr("state section %d: ID length %d outside [1, %d]", i, idLen, MaxSectionID)
		}
		id := string(d.take(int(idLen)))
		ver := d.u32()
		dl := d.u32()
		data := d.take(int(dl))
		if d.err != nil {
			break
		}
		if seen[id] {
			return nil, protoErr("duplicate state section %q", id)
		}
		seen[id] = true
		out = append(out, Section{ID: id, Version: ver, Data: data})
	}
	if err := d.end("state sections"); err != nil {
		return nil, err
	}
	return out, nil
}
