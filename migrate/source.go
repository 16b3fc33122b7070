package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"runtime"
	"strings"
	"sync"
	"time"

	"godwit/vmm/memory"
)

// Options tune Send. The zero value is usable.
type Options struct {
	// DowntimeTarget is the longest acceptable pause (default 300ms).
	DowntimeTarget time.Duration
	// Bandwidth caps the send rate in bytes per second (0 = unlimited).
	Bandwidth int64
	// Compression selects the encoding of non-zero pages: with
	// CompressionLZ4 a page equal to one the round already sent travels
	// as a reference to it, the others LZ4-compressed when that shrinks
	// them; with CompressionNone every non-zero page travels raw.
	Compression Compression
	// Timeout bounds the whole migration (0 = none). When it passes, the
	// migration fails and the source keeps running.
	Timeout time.Duration
	// AutoConverge throttles the vCPUs when the dirty set stops shrinking.
	AutoConverge bool
	// MaxRounds bounds the memory rounds before stop-and-copy (default 30).
	MaxRounds int
	// Workers is the number of goroutines encoding page batches (default
	// GOMAXPROCS, at most 4).
	Workers int
	// SwitchoverCost is the fixed part of the downtime the policy
	// expects on top of moving the last dirty pages: pausing, fetching
	// the dirty log, saving, sending and restoring the state, starting
	// the VM, and a round trip (default DefaultSwitchoverCost). A
	// caller that migrates the same kind of VM again can pass the
	// previous migration's Stats.SwitchoverMs.
	SwitchoverCost time.Duration
	// RefineFloor is Policy.RefineFloor: after converging, keep running
	// short live rounds while the last pages' share of the expected
	// downtime is at least this and a round is expected to halve it
	// (default DefaultRefineFloor; negative disables refinement).
	RefineFloor time.Duration
	// Progress, if set, is called after every round.
	Progress func(Progress)
	// Trace, if set, receives the record of every round (see
	// RoundRecord for when). The downtime breakdown is in the returned
	// Stats.StopAndCopy.
	Trace func(RoundRecord)
}

func (o Options) withDefaults() Options {
	if o.DowntimeTarget <= 0 {
		o.DowntimeTarget = 300 * time.Millisecond
	}
	if o.MaxRounds <= 0 {
		o.MaxRounds = 30
	}
	if o.Workers <= 0 {
		o.Workers = min(runtime.GOMAXPROCS(0), 4)
	}
	if o.SwitchoverCost <= 0 {
		o.SwitchoverCost = DefaultSwitchoverCost
	}
	if o.RefineFloor == 0 {
		o.RefineFloor = DefaultRefineFloor
	}
	return o
}

// DefaultSwitchoverCost is Options.SwitchoverCost when unset: above the
// 2-4 ms measured on loopback with the test guest (pause, state save,
// restore, start and the round trip), to stay conservative.
const DefaultSwitchoverCost = 5 * time.Millisecond

// DefaultRefineFloor is Options.RefineFloor when unset: refinement rounds
// stop once the last pages are expected to take under 2 ms.
const DefaultRefineFloor = 2 * time.Millisecond

// peerResult is what the source's reader goroutine saw from the
// destination: RESUMED, or the error that ended the stream.
type peerResult struct {
	resumed resumed
	// timingsErr rejects RESUMED's timings. It does not fail the
	// migration: an intact RESUMED frame means the VM runs there.
	timingsErr error
	at         time.Time // when RESUMED was read
	err        error
}

// sender is the state of one Send.
type sender struct {
	ctx     context.Context
	vm      Source
	opts    Options
	l       *link
	fw      *frameWriter
	start   time.Time
	mem     *memory.Memory
	regions []memory.Region
	dirty   [][]uint64
	encs    []*batchEncoder
	dedup   *dedupTable // the encoders', with LZ4 compression; else nil
	bufs    chan []byte
	stats   Stats
	hist    History

	disks     []SourceDisk // storage migration: the disks, else nil
	diskSizes []uint64
	diskDirty [][]uint64 // per disk: the blocks the next round sends

	logStarted bool
	paused     bool
	peer       chan peerResult
	readerDone chan struct{}
	acks       ackTracker
	peerSeen   *peerResult
	stopCancel func() bool   // detaches ctx from the link
	deadline   time.Time     // from Options.Timeout, zero if none
	fetchedAt  time.Time     // the last dirty-log fetch (or its start)
	expected   time.Duration // the policy's last expected downtime
}

// Send migrates vm over conn: handshake, pre-copy rounds while the VM
// runs, then a paused final round, the device state and switchover. It
// returns when the destination reports RESUMED; the source VM is then
// left paused for the caller to shut down. When vm is a StorageSource,
// its disks travel in the same rounds (see "Storage" in the package
// documentation); Send only ever reads them.
//
// On any failure before RESUMED, Send stops the dirty log, lifts the
// throttle, resumes the VM if it paused it, tells the destination why
// (best effort), and returns the error: the source keeps running unchanged
// and can migrate again.
//
// Cancelling ctx aborts the migration the same way, up to sending
// COMPLETE; after that Send waits for RESUMED (see "Failure and
// switchover" in the package documentation). To unblock pending
// I/O, Send sets a past deadline on conn when it has SetDeadline (as a
// net.Conn does), and closes it otherwise when it is an io.Closer. The
// caller owns conn and closes it after Send returns.
func Send(ctx context.Context, conn io.ReadWriter, vm Source, opts Options) (Stats, error) {
	opts = opts.withDefaults()
	s := &sender{
		vm:    vm,
		opts:  opts,
		l:     newLink(conn),
		start: time.Now(),
		stats: Stats{Status: StatusActive},
	}
	var cancel context.CancelFunc
	if opts.Timeout > 0 {
		ctx, cancel = context.WithTimeoutCause(ctx, opts.Timeout,
			fmt.Errorf("%w: Options.Timeout of %v passed", ErrTimeout, opts.Timeout))
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	s.ctx = ctx
	s.deadline, _ = ctx.Deadline()
	s.fw = &frameWriter{ctx: ctx, w: conn}
	if opts.Bandwidth > 0 {
		s.fw.lim = newLimiter(opts.Bandwidth)
		s.fw.chunk = int(max(min(opts.Bandwidth/20, 1<<20), 4<<10))
	}
	s.stopCancel = s.l.watch(ctx)
	err := s.run()
	s.stopCancel()
	s.stats.TransferredBytes = s.fw.written()
	s.stats.TotalMs = ms(time.Since(s.start))
	s.stats.Mbps = mbps(s.stats.TransferredBytes, time.Since(s.start))
	if err != nil {
		return s.stats, s.fail(err)
	}
	s.stats.Status = StatusCompleted
	s.l.clearDeadlines()
	return s.stats, nil
}

// run is the happy path; any error goes to fail.
func (s *sender) run() error {
	if s.opts.Compression != CompressionNone && s.opts.Compression != CompressionLZ4 {
		return fmt.Errorf("unknown compression %v", s.opts.Compression)
	}
	cfg, err := s.vm.Config()
	if err != nil {
		return fmt.Errorf("reading the VM configuration: %w", err)
	}
	if len(cfg) > MaxConfigSize {
		return fmt.Errorf("VM configuration of %d bytes exceeds the protocol limit of %d", len(cfg), MaxConfigSize)
	}
	s.mem = s.vm.Memory()
	s.regions = s.mem.Regions()
	if len(s.regions) > MaxRegions {
		return fmt.Errorf("VM has %d memory regions, the protocol allows %d", len(s.regions), MaxRegions)
	}
	if ss, ok := s.vm.(StorageSource); ok {
		if err := s.initStorage(ss.SourceDisks()); err != nil {
			return err
		}
	}
	if err := s.handshake(cfg); err != nil {
		return err
	}

	s.peer = make(chan peerResult, 1)
	s.readerDone = make(chan struct{})
	s.acks.init()
	go s.readPeer()

	s.logStarted = true
	if err := s.vm.StartDirtyLog(); err != nil {
		return fmt.Errorf("starting the dirty log: %w", err)
	}
	// Round 0 sends every allocated disk block; forget the writes
	// before it first, so that those after it are the next round's.
	for i, d := range s.disks {
		scratch := make([]uint64, len(s.diskDirty[i]))
		if err := d.TakeWritten(scratch); err != nil {
			return fmt.Errorf("disk %d: clearing its written blocks: %w", i, err)
		}
		if err := d.Allocated(s.diskDirty[i]); err != nil {
			return fmt.Errorf("disk %d: finding its allocated blocks: %w", i, err)
		}
	}
	s.fetchedAt = time.Now()
	s.stats.SetupMs = ms(time.Since(s.start))

	// Round 0 sends all of RAM.
	s.dirty = make([][]uint64, len(s.regions))
	for i, r := range s.regions {
		s.dirty[i] = make([]uint64, (r.Pages()+63)/64)
		for p := uint64(0); p < r.Pages(); p += 64 {
			s.dirty[i][p/64] = ^uint64(0) >> (64 - min(64, r.Pages()-p))
		}
	}
	s.encs = make([]*batchEncoder, s.opts.Workers)
	s.bufs = make(chan []byte, s.opts.Workers+1)
	if s.opts.Compression == CompressionLZ4 {
		// Deduplication is a compression too: without it, pages
		// travel raw (zero pages still as a bit).
		hosts := make([][]byte, len(s.regions))
		for i := range hosts {
			hosts[i] = s.mem.RegionHost(i)
		}
		s.dedup = newDedupTable(hosts)
	}
	for i := range s.encs {
		s.encs[i] = &batchEncoder{comp: s.opts.Compression, flags: flagXXH64, dedup: s.dedup}
	}
	for range s.opts.Workers + 1 {
		s.bufs <- nil
	}

	policy := Policy{
		DowntimeTarget: s.opts.DowntimeTarget,
		MaxRounds:      s.opts.MaxRounds,
		Timeout:        s.opts.Timeout,
		AutoConverge:   s.opts.AutoConverge,
		SwitchoverCost: s.opts.SwitchoverCost,
		RefineFloor:    s.opts.RefineFloor,
	}
	for round := 0; ; round++ {
		roundStart := time.Now()
		sent, err := s.sendRound(round, true)
		if err != nil {
			return err
		}
		// Measure end to end: the round is done when the destination
		// has applied its last page. Waiting here also keeps the
		// source from running ahead of the destination, so the
		// final round never queues behind a backlog.
		ackAt, ack, err := s.waitAck(uint32(round))
		if err != nil {
			return err
		}
		dur := ackAt.Sub(roundStart)
		prevFetch := s.fetchedAt
		dirtyAfter, diskDirtyAfter, err := s.fetchDirty()
		if err != nil {
			return err
		}
		rs := RoundStat{
			Round: round, Pages: sent.pages.pages(), ZeroPages: sent.pages.zero, Bytes: sent.bytes, Duration: dur,
			DirtyAfter: dirtyAfter, ThrottlePct: s.hist.ThrottlePct,
			DiskBlocks: sent.blocks.pages(), DiskZeroBlocks: sent.blocks.zero, DiskDirtyAfter: diskDirtyAfter,
		}
		s.hist.Rounds = append(s.hist.Rounds, rs)
		s.hist.Elapsed = time.Since(s.start)
		d := Decide(s.hist, policy)
		s.stats.Rounds = round + 1
		s.stats.ExpectedDowntimeMs = ms(d.ExpectedDowntime)
		s.expected = d.ExpectedDowntime
		rec := newRoundRecord(round, sent.pages, sent.bytes, roundStart, ackAt, rs.ThrottlePct)
		rec.setDirty(dirtyAfter, s.fetchedAt.Sub(prevFetch))
		rec.setWaits(sent, ackAt, ack)
		if s.stats.Storage {
			rec.setDisk(sent.blocks, sent.diskBytes, diskDirtyAfter, s.fetchedAt.Sub(prevFetch))
		}
		rec.setDecision(d)
		if round > 0 {
			s.stats.DirtyPagesRate = rec.DirtyPagesPerSec
			s.stats.DiskDirtyBlocksRate = rec.DiskDirtyBlocksPerSec
		}
		s.progress(rs, d)
		s.record(rec)
		if err := s.ctx.Err(); err != nil {
			return err
		}
		switch d.Action {
		case StopAndCopy:
			return s.switchover(round + 1)
		case Fail:
			return fmt.Errorf("%w: %s", ErrNotConverged, d.Reason)
		case Throttle:
			s.hist.ThrottlePct = d.ThrottlePct
			s.stats.ThrottlePct = max(s.stats.ThrottlePct, d.ThrottlePct)
			s.vm.SetThrottle(d.ThrottlePct)
		}
	}
}

// progress calls the Progress hook for a finished round.
func (s *sender) progress(rs RoundStat, d Decision) {
	if s.opts.Progress != nil {
		var total uint64
		for _, r := range s.regions {
			total += r.Pages()
		}
		s.opts.Progress(Progress{
			Round:                rs.Round,
			Elapsed:              time.Since(s.start),
			TransferredBytes:     s.fw.written(),
			RemainingPages:       rs.DirtyAfter,
			TotalPages:           total,
			Mbps:                 mbps(rs.Bytes, rs.Duration),
			ExpectedDowntime:     d.ExpectedDowntime,
			ThrottlePct:          s.hist.ThrottlePct,
			DiskRemainingBlocks:  rs.DiskDirtyAfter,
			DiskTotalBytes:       s.stats.DiskTotalBytes,
			DiskTransferredBytes: s.stats.DiskTransferredBytes,
		})
	}
}

// record calls the Trace hook with a round's record.
func (s *sender) record(r RoundRecord) {
	if s.opts.Trace != nil {
		s.opts.Trace(r)
	}
}

// initStorage checks the disks of a storage migration against the
// protocol's bounds and prepares their bitmaps.
func (s *sender) initStorage(disks []SourceDisk) error {
	if len(disks) > MaxDisks {
		return fmt.Errorf("VM has %d disks, the protocol allows %d", len(disks), MaxDisks)
	}
	s.disks = disks
	s.stats.Storage = true
	for i, d := range disks {
		size := d.Size()
		if size == 0 || size > MaxDiskSize || size%512 != 0 {
			return fmt.Errorf("disk %d: size %d is not a multiple of 512 in [512, %d]", i, size, uint64(MaxDiskSize))
		}
		s.diskSizes = append(s.diskSizes, size)
		s.diskDirty = append(s.diskDirty, make([]uint64, (diskBlocks(size)+63)/64))
		s.stats.DiskTotalBytes += size
	}
	return nil
}

// handshake sends HELLO and STORAGE (which says whether disks move) and
// waits for ACCEPT.
func (s *sender) handshake(cfg []byte) error {
	h := hello{version: ProtocolVersion, pageSize: memory.PageSize, config: cfg}
	for _, r := range s.regions {
		h.regions = append(h.regions, regionDesc{GPA: r.GPA, Size: r.Size})
	}
	msg := appendFrame(nil, frameHello, 0, h.append(nil))
	st := storageInfo{}
	if s.stats.Storage {
		st.flags = storageFlagIncluded
	}
	for _, size := range s.diskSizes {
		st.disks = append(st.disks, diskDesc{size: size, blockSize: DiskBlockSize})
	}
	msg = appendFrame(msg, frameStorage, 0, st.append(nil))
	if err := s.fw.write(msg); err != nil {
		return fmt.Errorf("sending HELLO: %w", err)
	}
	f, err := newFrameReader(s.l.rw).next()
	if err != nil {
		return fmt.Errorf("waiting for the destination's answer to HELLO: %w", err)
	}
	switch f.typ {
	case frameAccept:
		return nil
	case frameRefuse:
		reason := parseReason(f.payload)
		if strings.Contains(reason, "protocol version") {
			reason += fmt.Sprintf(" (this source speaks protocol version %d: the destination's godwit is older and cannot take the migration)", ProtocolVersion)
		}
		return fmt.Errorf("%w: %s", ErrRefused, reason)
	case frameError:
		return fmt.Errorf("%w: destination: %s", ErrPeerAborted, parseReason(f.payload))
	}
	return protoErr("destination answered HELLO with %s", f.typ)
}

// readPeer reads the destination's frames after ACCEPT: a ROUND_ACK for
// every round, in order and only for rounds whose ROUND_END was sent, then
// RESUMED once every round is acknowledged; ERROR at any time. Anything
// else is a protocol error.
func (s *sender) readPeer() {
	defer close(s.readerDone)
	fr := newFrameReader(s.l.rw)
	var r peerResult
	for r.err == nil {
		f, err := fr.next()
		now := time.Now()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			r.err = fmt.Errorf("reading from the destination: %w", err)
			break
		}
		if f.typ == frameRoundAck {
			var a roundAck
			if a, r.err = parseRoundAckVersion(f.payload, ProtocolVersion); r.err == nil {
				r.err = s.acks.record(a, now)
			}
			continue
		}
		switch f.typ {
		case frameResumed:
			// The frame itself (intact, after COMPLETE) says the
			// VM runs on the destination; malformed timings are
			// only dropped from the statistics.
			r.at = now
			r.resumed, r.timingsErr = parseResumed(f.payload)
			r.err = s.acks.complete()
		case frameError:
			r.err = fmt.Errorf("%w: destination: %s", ErrPeerAborted, parseReason(f.payload))
		default:
			r.err = protoErr("unexpected %s frame from the destination", f.typ)
		}
		break
	}
	if r.err != nil {
		// The migration is over: unblock a writer stuck on a peer
		// that stopped reading.
		s.l.interrupt()
	}
	s.peerDone(r)
}

// peerDone hands the reader's result to the writer: first into s.peer
// (buffered, written once), then a wake-up of a writer waiting for acks.
// In that order: a waitAck woken by the signal must find the result, or
// it waits again for a signal that never comes (a destination killed in
// an iterative round then kept the source waiting for its timeout).
func (s *sender) peerDone(r peerResult) {
	s.peer <- r
	s.acks.stop()
}

// ackTracker is the source's record of ROUND_ACKs, shared by the writer
// (which announces each ROUND_END before sending it, and waits for acks)
// and the reader (which records them).
type ackTracker struct {
	mu      sync.Mutex
	ended   uint32    // ROUND_ENDs sent (or being sent)
	acked   uint32    // ROUND_ACKs received, in round order
	at      time.Time // arrival of the last ROUND_ACK
	ack     roundAck  // what it said
	changed chan struct{}
}

// init prepares the tracker; call before the reader starts.
func (t *ackTracker) init() { t.changed = make(chan struct{}, 1) }

// ending announces the ROUND_END of round, which is about to be sent.
func (t *ackTracker) ending(round uint32) {
	t.mu.Lock()
	t.ended = round + 1
	t.mu.Unlock()
}

// record checks and stores a ROUND_ACK: it must acknowledge the oldest
// round not yet acknowledged, whose ROUND_END was sent.
func (t *ackTracker) record(a roundAck, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a.round != t.acked || a.round >= t.ended {
		if a.round >= t.ended {
			return protoErr("ROUND_ACK for round %d, whose ROUND_END was not sent (%d rounds ended)", a.round, t.ended)
		}
		return protoErr("ROUND_ACK for round %d, expected round %d", a.round, t.acked)
	}
	t.acked++
	t.at, t.ack = now, a
	t.signal()
	return nil
}

// complete checks, at RESUMED, that every round was acknowledged.
func (t *ackTracker) complete() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.acked != t.ended {
		return protoErr("RESUMED before the ROUND_ACK of round %d", t.acked)
	}
	return nil
}

// stop wakes a waiter when the reader ends.
func (t *ackTracker) stop() { t.signal() }

func (t *ackTracker) signal() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// last returns how many rounds are acknowledged, and when the last
// ROUND_ACK arrived and what it said.
func (t *ackTracker) last() (acked uint32, at time.Time, ack roundAck) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.acked, t.at, t.ack
}

// waitAck waits for the ROUND_ACK of round and returns when it arrived and
// what it said. An error, ERROR or RESUMED from the destination, or ctx,
// ends the wait.
func (s *sender) waitAck(round uint32) (time.Time, roundAck, error) {
	for {
		if acked, at, ack := s.acks.last(); acked > round {
			return at, ack, nil
		}
		if err := s.checkPeer(); err != nil {
			return time.Time{}, roundAck{}, err
		}
		select {
		case <-s.acks.changed:
		case <-s.ctx.Done():
			return time.Time{}, roundAck{}, context.Cause(s.ctx)
		}
	}
}

// checkPeer returns the destination's error if it has spoken before
// COMPLETE (anything it says then ends the migration).
func (s *sender) checkPeer() error {
	if s.peerSeen != nil {
		return s.peerErr(*s.peerSeen)
	}
	select {
	case r := <-s.peer:
		s.peerSeen = &r
		return s.peerErr(r)
	default:
		return nil
	}
}

func (s *sender) peerErr(r peerResult) error {
	if r.err != nil {
		return r.err
	}
	return protoErr("destination sent RESUMED before COMPLETE")
}

// fetchDirty replaces the dirty bitmaps with the pages (and disk blocks)
// written since the last fetch, notes when it fetched, and returns how
// many pages and blocks there are.
func (s *sender) fetchDirty() (pages, blocks uint64, err error) {
	for i := range s.regions {
		clear(s.dirty[i])
		if err := s.vm.FetchDirty(i, s.dirty[i]); err != nil {
			return 0, 0, fmt.Errorf("fetching the dirty log of region %d: %w", i, err)
		}
		pages += popcount(s.dirty[i], s.regions[i].Pages())
	}
	for i, d := range s.disks {
		clear(s.diskDirty[i])
		if err := d.TakeWritten(s.diskDirty[i]); err != nil {
			return 0, 0, fmt.Errorf("fetching the written blocks of disk %d: %w", i, err)
		}
		blocks += popcount(s.diskDirty[i], diskBlocks(s.diskSizes[i]))
	}
	s.fetchedAt = time.Now()
	return pages, blocks, nil
}

// popcount counts the set bits among the first pages bits of bm.
func popcount(bm []uint64, pages uint64) uint64 {
	var n uint64
	for w, v := range bm {
		if rem := pages - uint64(w)*64; rem < 64 {
			v &= 1<<rem - 1
		}
		n += uint64(bits.OnesCount64(v))
	}
	return n
}

// roundSent is what one round sent, and where the sending time went
// (RoundRecord.EncodeWaitMs).
type roundSent struct {
	pages, blocks batchCounts
	bytes         uint64 // the whole round on the wire, MEMORY_BEGIN to ROUND_END
	diskBytes     uint64 // its DISK_BATCH frames

	encodeWait, sendWait time.Duration
	endAt                time.Time // ROUND_END written
}

// sendRound sends MEMORY_BEGIN, a PAGE_BATCH for every run of dirty
// pages, in a storage migration a DISK_BATCH for every run of disk blocks
// to send, and ROUND_END. Page and disk batches are interleaved so that
// each kind has sent about as many bytes as the other (until one runs
// out), under the one bandwidth budget of the frame writer. Encoding
// (and reading disk blocks) runs on opts.Workers goroutines; the calling
// goroutine writes. Batches of one round cover disjoint pages and
// blocks, so they may go out in any order.
//
// With a DirtyClearer in manual mode and arm set (every round the guest
// runs through), the producer re-arms the dirty log of each stretch of
// clearChunkPages pages just before it hands out the first batch in it.
func (s *sender) sendRound(round int, arm bool) (roundSent, error) {
	var out roundSent
	clr := s.clearer(arm)
	var holes [][]uint64
	if round == 0 {
		// Round 0 sends all of RAM: pages the memfd never allocated
		// go as zero pages without being read (see prepareUpTo).
		holes = make([][]uint64, len(s.regions))
		for i := range holes {
			holes[i] = make([]uint64, len(s.dirty[i]))
		}
	}
	if err := s.checkPeer(); err != nil {
		return out, err
	}
	before := s.fw.written()
	s.dedup.reset()
	if err := s.fw.write(appendFrame(nil, frameMemoryBegin, 0, le32(uint32(round)))); err != nil {
		return out, s.writeErr(err)
	}

	if round == 0 || s.anyDirty() {
		if err := s.sendBatches(clr, holes, &out); err != nil {
			return out, err
		}
	}
	// else nothing is dirty (an idle guest's last round, often): no
	// encoders to start and wait for, which under an emulated CPU costs
	// milliseconds of the downtime.
	s.stats.Pages.add(out.pages)
	s.stats.DiskBlocks.add(out.blocks)
	if out.blocks.pages() > 0 {
		s.stats.DiskRounds++
	}
	end := roundEnd{round: uint32(round), pages: out.pages.pages(), bytes: s.fw.written() - before, diskBlocks: out.blocks.pages()}
	s.acks.ending(uint32(round))
	if err := s.fw.write(appendFrame(nil, frameRoundEnd, 0, end.appendVersion(nil, ProtocolVersion))); err != nil {
		return out, s.writeErr(err)
	}
	out.endAt = time.Now()
	out.bytes = s.fw.written() - before
	return out, nil
}

// sendBatches encodes the round's dirty pages and disk blocks on the
// encoders and writes their frames as they finish (see sendRound), adding
// what went out to out. clr and holes are sendRound's.
func (s *sender) sendBatches(clr DirtyClearer, holes [][]uint64, out *roundSent) error {
	var clearErr error // the producer's, read after wg.Wait
	type job struct {
		host []byte
		b    batch
		disk bool
		db   diskBatch
	}
	type result struct {
		buf  []byte
		c    batchCounts
		disk bool
		err  error
	}
	jobs := make(chan *job, len(s.encs))
	results := make(chan result, len(s.encs))
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // producer
		defer wg.Done()
		defer close(jobs)
		var region, disk int
		var pos, dpos, prepared, dataTo uint64 // prepared, dataTo: see prepareUpTo
		nextPages := func() *job {
			for ; region < len(s.regions); region, pos, prepared, dataTo = region+1, 0, 0, 0 {
				j := &job{host: s.mem.RegionHost(region)}
				j.b.region = region
				if nextBatch(s.dirty[region], s.regions[region].Pages(), &pos, &j.b) {
					if clr != nil || holes != nil {
						if clearErr = s.prepareUpTo(clr, holes, region, &prepared, &dataTo, j.b.first+uint64(j.b.count)); clearErr != nil {
							return nil
						}
					}
					if holes != nil {
						extractBits(holes[region], j.b.first, j.b.count, &j.b.holes)
					}
					return j
				}
			}
			return nil
		}
		nextBlocks := func() *job {
			for ; disk < len(s.disks); disk, dpos = disk+1, 0 {
				j := &job{disk: true}
				j.db.disk = disk
				if nextDiskBatch(s.diskDirty[disk], diskBlocks(s.diskSizes[disk]), &dpos, diskBatchBlocks, &j.db) {
					return j
				}
			}
			return nil
		}
		var pageBytes, blockBytes uint64 // queued so far, unencoded
		for {
			first, second := nextPages, nextBlocks
			if blockBytes < pageBytes {
				first, second = nextBlocks, nextPages
			}
			j := first()
			if j == nil && clearErr == nil {
				j = second()
			}
			if j == nil {
				return
			}
			if j.disk {
				blockBytes += uint64(bits.OnesCount64(j.db.present)) * DiskBlockSize
			} else {
				for _, w := range j.b.present {
					pageBytes += uint64(bits.OnesCount64(w)) * pageSize
				}
			}
			select {
			case jobs <- j:
			case <-done:
				return
			}
		}
	}()
	var workers sync.WaitGroup
	for _, enc := range s.encs {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for j := range jobs {
				var buf []byte
				select {
				case buf = <-s.bufs:
				case <-done:
					return
				}
				if buf == nil {
					buf = make([]byte, 0, maxBatchFrame+lz4Room)
				}
				var r result
				if j.disk {
					r.disk = true
					r.buf, r.c, r.err = enc.appendDiskFrame(buf[:0], s.disks[j.db.disk], s.diskSizes[j.db.disk], &j.db)
				} else {
					r.buf, r.c = enc.appendFrame(buf[:0], j.host, &j.b)
				}
				select {
				case results <- r:
				case <-done:
					s.bufs <- r.buf
					return
				}
			}
		}()
	}
	go func() {
		workers.Wait()
		close(results)
	}()
	var err error
	waitFrom := time.Now()
	for r := range results {
		out.encodeWait += time.Since(waitFrom)
		if err == nil {
			if r.err != nil {
				err = fmt.Errorf("reading the source's disk: %w", r.err)
			} else if err = s.checkPeer(); err == nil {
				t0 := time.Now()
				if werr := s.fw.write(r.buf); werr != nil {
					err = s.writeErr(werr)
				}
				out.sendWait += time.Since(t0)
			}
			if err != nil {
				close(done)
			} else if r.disk {
				out.blocks.add(r.c)
				out.diskBytes += uint64(len(r.buf))
				s.stats.DiskTransferredBytes += uint64(len(r.buf))
			} else {
				out.pages.add(r.c)
			}
		}
		s.bufs <- r.buf
		waitFrom = time.Now()
	}
	wg.Wait()
	if err == nil && clearErr != nil {
		err = clearErr
	}
	return err
}

// anyDirty reports whether any page or disk block is marked to be sent.
func (s *sender) anyDirty() bool {
	for _, bms := range [][][]uint64{s.dirty, s.diskDirty} {
		for _, bm := range bms {
			for _, w := range bm {
				if w != 0 {
					return true
				}
			}
		}
	}
	return false
}

// clearChunkPages is how many pages the engine re-arms with one
// DirtyClearer.ClearDirty call (16 MiB): few calls per round, and none
// write-protects much more than the workers are about to read.
const clearChunkPages = 4096

// clearer returns the Source's DirtyClearer when its log is manual and the
// round re-arms pages (arm), else nil.
func (s *sender) clearer(arm bool) DirtyClearer {
	if !arm {
		return nil
	}
	if c, ok := s.vm.(DirtyClearer); ok && c.ManualDirtyLog() {
		return c
	}
	return nil
}

// prepareUpTo readies, chunk by chunk of clearChunkPages pages, the dirty
// pages of region from page *prepared up to at least page end, and
// advances *prepared. With c (a manual dirty log) it re-arms the chunk's
// dirty pages; a chunk without any costs no call. With holes (round 0) it
// then records in holes[region] the chunk's dirty pages that are holes of
// guest RAM's memfd: never written, they read as zeros, and reading them
// would only make the host allocate them. The order matters: a page
// written after the hole scan is logged, because its chunk was re-armed
// (or, without c, the whole log armed by StartDirtyLog) before the scan.
// Pages below *dataTo were data at an earlier scan, and stay data: the
// scan resumes there, so each run of data is walked once.
func (s *sender) prepareUpTo(c DirtyClearer, holes [][]uint64, region int, prepared, dataTo *uint64, end uint64) error {
	pages := s.regions[region].Pages()
	for *prepared < end && *prepared < pages {
		from := *prepared
		to := min(from+clearChunkPages, pages)
		mask := s.dirty[region][from/64 : (to+63)/64]
		dirty := false
		for _, w := range mask {
			if w != 0 {
				dirty = true
				break
			}
		}
		if dirty && c != nil {
			if err := c.ClearDirty(region, from, mask); err != nil {
				return fmt.Errorf("re-arming the dirty log of region %d at page %d: %w", region, from, err)
			}
		}
		if dirty && holes != nil && *dataTo < to {
			// holes[region] is all clear here: fill in the data
			// pages from scanFrom on, then invert under mask.
			h := holes[region][from/64 : (to+63)/64]
			// from is a multiple of 64; so is scanFrom, which may
			// rescan up to 63 pages below *dataTo, the end of a run.
			scanFrom := max(from, *dataTo&^63)
			for w := uint64(0); w < (scanFrom-from)/64; w++ {
				h[w] = ^uint64(0)
			}
			through, err := s.mem.DataPages(region, scanFrom, to-scanFrom, h[(scanFrom-from)/64:])
			if err != nil {
				return fmt.Errorf("finding the unallocated pages of region %d: %w", region, err)
			}
			*dataTo = max(*dataTo, through)
			for w := range h {
				h[w] = mask[w] &^ h[w]
			}
		}
		*prepared = to
	}
	return nil
}

// writeErr explains a failed write: cancellation, or what the destination
// said before it went away, or the write error itself.
func (s *sender) writeErr(err error) error {
	if cerr := context.Cause(s.ctx); cerr != nil {
		return cerr
	}
	// The destination usually sends ERROR before closing: give the reader
	// a moment to deliver it, as it explains the write failure.
	if s.peerSeen == nil {
		t := time.NewTimer(farewellTimeout)
		defer t.Stop()
		select {
		case r := <-s.peer:
			s.peerSeen = &r
		case <-t.C:
		}
	}
	if s.peerSeen != nil && s.peerSeen.err != nil {
		return s.peerSeen.err
	}
	return fmt.Errorf("writing to the destination: %w", err)
}

// switchover pauses the VM, sends the last dirty pages and the state, and
// waits for RESUMED. It notes the instants that cut the downtime into the
// parts of DowntimeBreakdown.
func (s *sender) switchover(round int) error {
	var tl switchTimeline
	tl.pause = time.Now()
	s.paused = true
	if err := s.vm.Pause(s.ctx); err != nil {
		return fmt.Errorf("pausing the VM: %w", err)
	}
	tl.paused = time.Now()
	if err := s.ctx.Err(); err != nil {
		return err
	}
	// The bitmaps hold the pages dirtied during the last round; add
	// those dirtied since.
	for i := range s.regions {
		if err := s.vm.FetchDirty(i, s.dirty[i]); err != nil {
			return fmt.Errorf("fetching the final dirty log of region %d: %w", i, err)
		}
	}
	// The paused devices have completed every request: these are the
	// last blocks the guest wrote.
	for i, d := range s.disks {
		if err := d.TakeWritten(s.diskDirty[i]); err != nil {
			return fmt.Errorf("fetching the final written blocks of disk %d: %w", i, err)
		}
	}
	tl.dirty = time.Now()
	roundStart := tl.dirty
	// Save the state while the last pages go out: SaveState reads only
	// the paused vCPUs and devices, which nothing changes any more, and
	// the pages are already chosen. Its time then hides behind the
	// final round's (state_save_ms is what is left of it).
	type savedState struct {
		state []byte
		err   error
	}
	saving := make(chan savedState, 1)
	go func() {
		sections, err := s.vm.SaveState()
		if err != nil {
			saving <- savedState{err: fmt.Errorf("saving the VM state: %w", err)}
			return
		}
		state, err := encodeState(sections)
		saving <- savedState{state: state, err: err}
	}()
	sent, err := s.sendRound(round, false)
	tl.pages = time.Now()
	// Wait for SaveState even on failure: fail resumes the VM, which
	// must not run while its state is being read.
	saved := <-saving
	if err != nil {
		return err
	}
	s.stats.Rounds = round + 1
	s.stats.FinalSyncMs = ms(tl.pages.Sub(tl.paused))
	s.progress(RoundStat{Round: round, Pages: sent.pages.pages(), Bytes: sent.bytes, Duration: tl.pages.Sub(roundStart), ThrottlePct: s.hist.ThrottlePct,
		DiskBlocks: sent.blocks.pages()}, Decision{})
	if saved.err != nil {
		return saved.err
	}
	state := saved.state
	tl.saved = time.Now()
	s.stats.StateSaveMs = ms(tl.saved.Sub(tl.pages))
	if err := s.checkPeer(); err != nil {
		return err
	}
	stateStart := s.fw.written()
	for off := 0; ; off += maxStateChunk {
		end := min(off+maxStateChunk, len(state))
		var flags uint16
		if end < len(state) {
			flags = flagMore
		}
		if err := s.fw.write(appendFrame(nil, frameState, flags, state[off:end])); err != nil {
			return s.writeErr(err)
		}
		if flags == 0 {
			break
		}
	}
	stateBytes := s.fw.written() - stateStart
	// Point of no return: once COMPLETE is out, the destination may
	// start the VM at any moment, so resuming the source on a mere
	// cancellation could leave the guest running twice. Detach ctx
	// from the link and wait for RESUMED; only a connection failure,
	// an ERROR or the Timeout still aborts (see the package doc).
	if !s.stopCancel() {
		return context.Cause(s.ctx) // cancelled before COMPLETE
	}
	// The destination cannot read COMPLETE before this instant, nor
	// write RESUMED after the reader's: its own timings nest in between.
	tl.complete = time.Now()
	if err := s.fw.write(appendFrame(nil, frameComplete, 0, nil)); err != nil {
		return s.writeErr(err)
	}
	var r peerResult
	if s.peerSeen != nil {
		r = *s.peerSeen
	} else {
		var timeout <-chan time.Time
		if !s.deadline.IsZero() {
			t := time.NewTimer(time.Until(s.deadline))
			defer t.Stop()
			timeout = t.C
		}
		select {
		case r = <-s.peer:
			s.peerSeen = &r
		case <-timeout:
			s.l.interrupt()
			return fmt.Errorf("%w: no RESUMED from the destination within Options.Timeout of %v", ErrTimeout, s.opts.Timeout)
		}
	}
	if r.err != nil {
		return r.err
	}
	tl.resumed = r.at
	sc := newStopAndCopy(tl, r.resumed, r.timingsErr)
	sc.Round = round
	sc.ExpectedDowntimeMs = ms(s.expected)
	sc.FinalPages.add(sent.pages)
	sc.FinalDiskBlocks.add(sent.blocks)
	sc.FinalBytes = sent.bytes
	sc.StateBytes = uint64(len(state))
	sc.TransferBytes = stateBytes
	s.stats.DowntimeMs = sc.DowntimeMs
	s.stats.StopAndCopy = &sc
	// The reader saw every ROUND_ACK before RESUMED, the final
	// round's last.
	_, ackAt, ack := s.acks.last()
	final := ackAt.Sub(roundStart)
	s.stats.FinalRoundMs = ms(final)
	s.stats.FinalApplyMs = reportedMs(ack.applyNs)
	s.stats.SwitchoverMs = ms(tl.resumed.Sub(tl.pause) - final)
	s.stats.RestoreMs = sc.DestRestoreMs
	s.stats.StartMs = sc.DestResumeMs
	rec := newRoundRecord(round, sent.pages, sent.bytes, roundStart, ackAt, s.hist.ThrottlePct)
	rec.Paused = true
	if s.stats.Storage {
		rec.setDisk(sent.blocks, sent.diskBytes, 0, 0)
	}
	s.record(rec)
	// The VM now runs on the destination; the source stays paused.
	// Its error is moot: the migration succeeded, and tracking left on a
	// paused VM that is about to be shut down is harmless.
	_ = s.vm.StopDirtyLog()
	s.vm.SetThrottle(0)
	return nil
}

// fail undoes everything Send did to the source VM and tells the
// destination, then returns err (with any cleanup error joined).
func (s *sender) fail(err error) error {
	if cerr := context.Cause(s.ctx); cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w (%v)", cerr, err)
	}
	peerAborted := errors.Is(err, ErrPeerAborted) || errors.Is(err, ErrRefused)
	if !peerAborted {
		// Finish a frame a failed write cut off: only then is ERROR a frame.
		s.l.farewell(appendFrame(s.fw.unfinished(), frameError, 0, reasonPayload(err.Error())))
	}
	if s.readerDone != nil && s.l.canInterrupt() {
		s.l.interrupt()
		<-s.readerDone
	}
	cleanup := context.WithoutCancel(s.ctx)
	var errs []error
	if s.hist.ThrottlePct > 0 {
		s.vm.SetThrottle(0)
	}
	if s.logStarted {
		if e := s.vm.StopDirtyLog(); e != nil {
			errs = append(errs, fmt.Errorf("stopping the dirty log: %w", e))
		}
	}
	if s.paused {
		if e := s.vm.Resume(cleanup); e != nil {
			errs = append(errs, fmt.Errorf("resuming the source VM: %w", e))
		}
	}
	s.stats.Status = StatusFailed
	if s.ctx.Err() != nil && !errors.Is(err, ErrTimeout) {
		s.stats.Status = StatusCancelled
	}
	err = errors.Join(append([]error{err}, errs...)...)
	s.stats.Error = err.Error()
	return err
}

func le32(v uint32) []byte {
	return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
}
