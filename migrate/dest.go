package migrate

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sync"
	"time"

	"godwit/vmm/memory"
)

// ReceiveOptions tune Receive. The zero value is usable.
type ReceiveOptions struct {
	// IdleTimeout bounds the wait for each frame from the source (default
	// 30s): a stalled source fails the migration.
	IdleTimeout time.Duration
	// Workers is the number of goroutines decoding page batches into
	// RAM while the calling goroutine reads the stream (default
	// GOMAXPROCS, at most 4).
	Workers int
	// AssumeZeroed promises that Target.Memory() is zero-filled when the
	// TargetFactory returns it, as fresh memfd RAM is. The receiver then
	// skips zero pages for pages it has not written: no read, no clear,
	// no page fault; and, where RAM has 4 KiB pages, it allocates each
	// run of data pages it writes for the first time with one madvise.
	// Leave it false when the target's RAM may hold data (reused memory,
	// or migratetest.Factory's junk-filled RAM); then every zero page is
	// checked and cleared.
	AssumeZeroed bool
	// Trace, if set, receives a record of every memory round once all of
	// its pages are applied.
	Trace func(DestRoundTrace)
}

// recvState is a state of the destination's state machine (see the
// package documentation).
type recvState int

// Receiver states.
const (
	stateWaitHello recvState = iota
	stateWaitStorage
	stateWaitMemory
	stateInRound
	stateBetweenRounds
	stateWaitState
	stateRestoring
	stateDone
	stateFailed
)

func (s recvState) String() string {
	switch s {
	case stateWaitHello:
		return "WaitHello"
	case stateWaitStorage:
		return "WaitStorage"
	case stateWaitMemory:
		return "WaitMemory"
	case stateInRound:
		return "InRound"
	case stateBetweenRounds:
		return "BetweenRounds"
	case stateWaitState:
		return "WaitState"
	case stateRestoring:
		return "Restoring"
	case stateDone:
		return "Done"
	case stateFailed:
		return "Failed"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// receiver is the state of one Receive.
type receiver struct {
	ctx     context.Context
	l       *link
	fr      *frameReader
	factory TargetFactory
	opts    ReceiveOptions
	start   time.Time
	state   recvState

	target      Target
	version     uint32 // the protocol version HELLO named
	hello       hello  // kept while waiting for STORAGE
	sink        *batchSink
	disks       *diskSink // nil without storage
	ap          *applier
	round       uint32
	roundPages  uint64
	roundBlocks uint64
	roundStart  time.Time
	rt          DestRoundTrace
	readWait    time.Duration
	stateBuf    []byte
	stateMore   bool      // the last STATE chunk had flagMore
	completeAt  time.Time // when COMPLETE was read
	sections    []Section
	stats       DestStats
	refused     bool // REFUSE already sent
	peerErr     bool // the source sent ERROR
}

// Receive runs the destination side of a migration on conn: it reads
// HELLO, builds the VM with factory (a factory error is sent back verbatim
// in REFUSE), receives memory and state, restores and starts the VM, and
// answers RESUMED. It returns the running Target.
//
// On any failure it discards the target, sends ERROR to the source (best
// effort), and returns the error. Every frame is treated as hostile; the
// receiver enforces the state machine of the package documentation.
//
// Cancelling ctx, or a source silent for longer than IdleTimeout, fails
// the migration; pending reads are unblocked by a past deadline when conn
// has SetDeadline and by closing it otherwise (when it is an io.Closer).
func Receive(ctx context.Context, conn io.ReadWriter, factory TargetFactory, opts ReceiveOptions) (Target, DestStats, error) {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 30 * time.Second
	}
	if opts.Workers <= 0 {
		opts.Workers = min(runtime.GOMAXPROCS(0), 4)
	}
	r := &receiver{
		ctx:     ctx,
		l:       newLink(conn),
		factory: factory,
		opts:    opts,
		start:   time.Now(),
		stats:   DestStats{Status: StatusActive},
	}
	r.fr = newFrameReader(bufio.NewReaderSize(conn, 256<<10))
	r.fr.limit = r.frameLimit
	r.fr.deferSum = func(t frameType) bool { return t == framePageBatch || t == frameDiskBatch }
	stop := r.l.watch(ctx)
	err := r.run()
	stop()
	if r.ap != nil {
		// No page may be written once Receive returns, and none
		// after Discard.
		r.ap.close()
		// A batch a worker refused (its checksum, a write error) came
		// earlier in the stream than whatever stopped the reader
		// after it, such as the source closing the connection: that
		// is the failure to report.
		if aerr := r.ap.err(); err != nil && aerr != nil && !errors.Is(err, aerr) {
			err = fmt.Errorf("round %d: %w", r.round, aerr)
		}
	}
	r.l.disarmIdle()
	r.stats.ReceivedBytes = r.fr.n
	r.stats.TotalMs = ms(time.Since(r.start))
	if err != nil {
		return nil, r.stats, r.fail(err)
	}
	r.state = stateDone
	r.stats.Status = StatusCompleted
	r.l.clearDeadlines()
	return r.target, r.stats, nil
}

// run drives the state machine until the VM runs or something fails.
func (r *receiver) run() error {
	for r.state != stateRestoring {
		f, err := r.next()
		if err != nil {
			return err
		}
		if f.typ == frameError {
			r.peerErr = true
			return fmt.Errorf("%w: source: %s", ErrPeerAborted, parseReason(f.payload))
		}
		if err := r.handle(f); err != nil {
			return err
		}
	}
	return r.restore()
}

// next reads one frame within the idle timeout.
func (r *receiver) next() (frame, error) {
	if err := r.ctx.Err(); err != nil {
		return frame{}, err
	}
	r.l.armIdle(r.opts.IdleTimeout)
	t0 := time.Now()
	f, err := r.fr.next()
	r.readWait += time.Since(t0)
	if err == nil {
		return f, nil
	}
	switch {
	case r.ctx.Err() != nil:
		return frame{}, r.ctx.Err()
	case r.l.idleFired.Load() || errors.Is(err, os.ErrDeadlineExceeded):
		return frame{}, fmt.Errorf("%w: nothing from the source for %v in state %s", ErrTimeout, r.opts.IdleTimeout, r.state)
	case err == io.EOF:
		return frame{}, fmt.Errorf("source closed the connection in state %s: %w", r.state, io.ErrUnexpectedEOF)
	}
	return frame{}, fmt.Errorf("reading from the source in state %s: %w", r.state, err)
}

// handle applies one frame to the state machine.
func (r *receiver) handle(f frame) error {
	switch {
	case r.state == stateWaitHello && f.typ == frameHello:
		return r.readHello(f.payload)

	case r.state == stateWaitStorage && f.typ == frameStorage:
		st, err := parseStorage(f.payload)
		if err != nil {
			return err
		}
		return r.build(r.hello, st)

	case (r.state == stateWaitMemory || r.state == stateBetweenRounds) && f.typ == frameMemoryBegin:
		round := uint32(f.payload[0]) | uint32(f.payload[1])<<8 | uint32(f.payload[2])<<16 | uint32(f.payload[3])<<24
		want := uint32(0)
		if r.state == stateBetweenRounds {
			if r.round == math.MaxUint32 {
				return protoErr("too many rounds")
			}
			want = r.round + 1
		}
		if round != want {
			return protoErr("MEMORY_BEGIN for round %d, expected round %d", round, want)
		}
		r.round, r.roundPages, r.roundBlocks, r.state = round, 0, 0, stateInRound
		r.roundStart = time.Now()
		r.rt = DestRoundTrace{Round: int(round), Start: r.roundStart.Sub(r.start)}
		r.readWait = 0
		r.sink.newRound()
		if r.disks != nil {
			r.disks.newRound(round)
		}
		return nil

	case r.state == stateInRound && f.typ == framePageBatch:
		if err := r.ap.err(); err != nil {
			return fmt.Errorf("round %d: %w", r.round, err)
		}
		j := &applyJob{f: f}
		n, err := r.sink.prepare(f.payload, &j.b)
		if err != nil {
			return fmt.Errorf("round %d: %w", r.round, uncheckedErr(&f, err))
		}
		j.buf = r.fr.detach(r.ap.spare())
		r.roundPages += n
		r.ap.submit(j)
		return nil

	case r.state == stateInRound && f.typ == frameDiskBatch:
		if r.disks == nil {
			return protoErr("DISK_BATCH frame in a migration without storage")
		}
		if err := r.ap.err(); err != nil {
			return fmt.Errorf("round %d: %w", r.round, err)
		}
		j := &applyJob{disk: true, f: f}
		n, err := r.disks.prepare(f.payload, &j.d)
		if err != nil {
			return fmt.Errorf("round %d: %w", r.round, uncheckedErr(&f, err))
		}
		j.buf = r.fr.detach(r.ap.spare())
		r.roundBlocks += n
		r.ap.submit(j)
		return nil

	case r.state == stateInRound && f.typ == frameRoundEnd:
		end, err := parseRoundEndVersion(f.payload, r.version)
		if err != nil {
			return err
		}
		if end.round != r.round {
			return protoErr("ROUND_END for round %d inside round %d", end.round, r.round)
		}
		if end.pages != r.roundPages {
			return protoErr("round %d: source sent %d pages, %d arrived", r.round, end.pages, r.roundPages)
		}
		if end.diskBlocks != r.roundBlocks {
			return protoErr("round %d: source sent %d disk blocks, %d arrived", r.round, end.diskBlocks, r.roundBlocks)
		}
		t0 := time.Now()
		c, busy, err := r.ap.wait()
		if err == nil {
			err = r.sink.copyPages()
		}
		if err != nil {
			return fmt.Errorf("round %d: %w", r.round, err)
		}
		// The round's disk blocks are durable before it is
		// acknowledged, so the source's round time prices the flush.
		if r.disks != nil {
			if err := r.disks.syncTouched(); err != nil {
				return fmt.Errorf("round %d: %w", r.round, err)
			}
		}
		applied := time.Since(r.roundStart)
		r.stats.Pages.add(c.pages)
		r.stats.DiskBlocks.add(c.blocks)
		r.stats.Rounds++
		r.state = stateBetweenRounds
		// Every page of the round is in RAM: tell the source, which
		// measures its throughput end to end and waits for this
		// before it decides on another round.
		ack := roundAck{round: r.round, applyNs: uint64(applied), readWaitNs: uint64(r.readWait), workNs: uint64(busy)}
		if err := r.write(appendFrame(nil, frameRoundAck, 0, ack.appendVersion(nil, r.version))); err != nil {
			return err
		}
		if r.opts.Trace != nil {
			r.rt.Duration, r.rt.ReadWait, r.rt.Apply, r.rt.Drain = applied, r.readWait, busy, time.Since(t0)
			r.rt.PageCounts.add(c.pages)
			r.rt.DiskBlockCounts.add(c.blocks)
			r.opts.Trace(r.rt)
		}
		return nil

	case (r.state == stateBetweenRounds || (r.state == stateWaitState && r.stateMore)) && f.typ == frameState:
		if len(r.stateBuf)+len(f.payload) > MaxStateSize {
			return protoErr("VM state exceeds %d bytes", MaxStateSize)
		}
		r.stateBuf = append(r.stateBuf, f.payload...)
		r.stateMore = f.flags&flagMore != 0
		r.state = stateWaitState
		if !r.stateMore {
			sections, err := decodeState(r.stateBuf)
			if err != nil {
				return err
			}
			r.sections = sections
		}
		return nil

	case r.state == stateWaitState && !r.stateMore && f.typ == frameComplete:
		if n, region, page := r.sink.missing(); n > 0 {
			return protoErr("COMPLETE with %d pages never sent (first: page %d of region %d)", n, page, region)
		}
		r.state = stateRestoring
		r.completeAt = time.Now()
		return nil
	}
	what := ""
	if r.state == stateWaitState && f.typ == frameState {
		what = " (the previous STATE chunk was the last)"
	} else if r.state == stateWaitState && f.typ == frameComplete {
		what = " (STATE is incomplete)"
	}
	return protoErr("unexpected %s frame in state %s%s", f.typ, r.state, what)
}

// readHello validates HELLO; from protocol version 3 on, it waits for
// STORAGE before building the target.
func (r *receiver) readHello(p []byte) error {
	h, err := parseHello(p)
	if err != nil {
		return err
	}
	if h.version > ProtocolVersion || h.version < MinProtocolVersion {
		return r.refuse(fmt.Errorf("protocol version %d not supported (this side speaks %d to %d)", h.version, MinProtocolVersion, ProtocolVersion))
	}
	if h.pageSize != memory.PageSize {
		return r.refuse(fmt.Errorf("page size %d not supported (this side uses %d)", h.pageSize, memory.PageSize))
	}
	r.version = h.version
	if h.version >= 3 {
		r.hello, r.state = h, stateWaitStorage
		return nil
	}
	return r.build(h, storageInfo{})
}

// build builds the target from HELLO's configuration, checks it against
// HELLO's memory layout and STORAGE's disks, and answers ACCEPT or
// REFUSE.
func (r *receiver) build(h hello, st storageInfo) error {
	r.hello = hello{}
	r.l.disarmIdle()
	t, err := r.factory(h.config)
	if err != nil {
		return r.refuse(err)
	}
	if t == nil {
		return r.refuse(errors.New("VM factory returned no VM"))
	}
	r.target = t
	mem := t.Memory()
	regions := mem.Regions()
	if len(regions) != len(h.regions) {
		return r.refuse(fmt.Errorf("memory layout mismatch: source has %d regions, the VM built here has %d", len(h.regions), len(regions)))
	}
	for i, reg := range regions {
		if reg.GPA != h.regions[i].GPA || reg.Size != h.regions[i].Size {
			return r.refuse(fmt.Errorf("memory layout mismatch: source region %d is [%#x, +%#x), here [%#x, +%#x)",
				i, h.regions[i].GPA, h.regions[i].Size, reg.GPA, reg.Size))
		}
	}
	var disks []TargetDisk
	if s, ok := t.(StorageTarget); ok {
		disks = s.TargetDisks()
	}
	switch {
	case !st.included() && len(disks) > 0:
		return r.refuse(fmt.Errorf("the VM built here expects its %d disks in the migration stream, but the source does not send them (godwit migrate --include-storage)", len(disks)))
	case st.included() && len(disks) != len(st.disks):
		return r.refuse(fmt.Errorf("the source sends %d disks, the VM built here receives %d", len(st.disks), len(disks)))
	}
	for i, d := range st.disks {
		if got := disks[i].Size(); got != d.size {
			return r.refuse(fmt.Errorf("disk %d: the source sends %d bytes, the image here has %d", i, d.size, got))
		}
	}
	r.sink = newBatchSink(mem, r.opts.AssumeZeroed)
	if st.included() {
		r.disks = newDiskSink(disks)
		r.stats.Storage = true
	}
	r.ap = newApplier(r.sink, r.disks, r.opts.Workers)
	if err := r.write(appendFrame(nil, frameAccept, 0, nil)); err != nil {
		return err
	}
	r.state = stateWaitMemory
	return nil
}

// refuse sends REFUSE with err's text verbatim and returns err.
func (r *receiver) refuse(err error) error {
	r.refused = true
	if werr := r.write(appendFrame(nil, frameRefuse, 0, reasonPayload(err.Error()))); werr != nil {
		return errors.Join(fmt.Errorf("refused the migration: %w", err), werr)
	}
	return fmt.Errorf("refused the migration: %w", err)
}

func (r *receiver) write(b []byte) error {
	// A source that stops reading is as stalled as one that stops
	// sending: the write gets the idle timeout too.
	r.l.armWrite(r.opts.IdleTimeout)
	_, err := r.l.rw.Write(b)
	r.l.disarmWrite()
	if err != nil {
		switch {
		case r.ctx.Err() != nil:
			return r.ctx.Err()
		case r.l.idleFired.Load() || errors.Is(err, os.ErrDeadlineExceeded):
			return fmt.Errorf("%w: the source read nothing for %v in state %s", ErrTimeout, r.opts.IdleTimeout, r.state)
		}
		return fmt.Errorf("writing to the source: %w", err)
	}
	return nil
}

// restore loads the state, starts the VM, and reports RESUMED.
func (r *receiver) restore() error {
	r.l.disarmIdle()
	if err := r.ctx.Err(); err != nil {
		return err
	}
	if r.disks != nil {
		// Every block is in: make the images durable under their
		// final names before the VM that will use them exists.
		t := time.Now()
		for i, d := range r.disks.disks {
			if err := d.Commit(); err != nil {
				return fmt.Errorf("committing disk %d: %w", i, err)
			}
		}
		r.stats.DiskCommitMs = ms(time.Since(t))
	}
	t0 := time.Now()
	if err := r.target.RestoreState(r.sections); err != nil {
		return fmt.Errorf("restoring the VM state: %w", err)
	}
	restore := time.Since(t0)
	if err := r.ctx.Err(); err != nil {
		return err
	}
	t1 := time.Now()
	if err := r.target.Start(r.ctx); err != nil {
		return fmt.Errorf("starting the VM: %w", err)
	}
	start := time.Since(t1)
	// handle covers restore and start: the source nests all three in
	// the interval from writing COMPLETE to reading RESUMED.
	handle := time.Since(r.completeAt)
	r.stats.RestoreMs, r.stats.StartMs, r.stats.CompleteToResumedMs = ms(restore), ms(start), ms(handle)
	res := resumed{
		restoreNs: clampReported(restore), startNs: clampReported(start),
		version: TimingsVersion, handleNs: clampReported(handle),
	}
	// If RESUMED cannot be delivered, the source will resume its own
	// copy: discard ours (fail does) so that only one runs.
	if err := r.write(appendFrame(nil, frameResumed, 0, res.append(nil))); err != nil {
		return fmt.Errorf("VM started but RESUMED not delivered, discarding it: %w", err)
	}
	return nil
}

// clampReported converts a duration for RESUMED to the bound its reader
// enforces. Only a restore or start of more than a day would need it.
func clampReported(d time.Duration) uint64 {
	return uint64(min(max(d, 0), MaxReportedDuration))
}

// fail discards the target, tells the source (best effort), and returns err.
func (r *receiver) fail(err error) error {
	r.state = stateFailed
	if r.target != nil {
		r.target.Discard()
		r.target = nil
	}
	if !r.refused && !r.peerErr {
		r.l.farewell(appendFrame(nil, frameError, 0, reasonPayload(err.Error())))
	}
	r.stats.Status = StatusFailed
	if r.ctx.Err() != nil {
		r.stats.Status = StatusCancelled
	}
	r.stats.Error = err.Error()
	return err
}

// applyJob is one prepared PAGE_BATCH (or DISK_BATCH, when disk is set)
// and the frame buffer it aliases.
type applyJob struct {
	b    preparedBatch
	d    preparedDiskBatch
	disk bool
	buf  []byte
	f    frame // the batch's frame, its checksum not yet verified
}

// uncheckedErr is the error to report when a batch frame whose checksum
// is not verified yet fails to parse: the checksum's mismatch if it has
// one (the frame was damaged on the way), else err.
func uncheckedErr(f *frame, err error) error {
	if sumErr := f.verify(); sumErr != nil {
		return sumErr
	}
	return err
}

// appliedCounts counts what a round's jobs wrote: pages and disk blocks.
type appliedCounts struct {
	pages, blocks batchCounts
}

// applier decodes prepared batches into RAM on a pool of goroutines while
// the receiver reads on. The receiver submits a round's batches, then
// waits for all of them at ROUND_END. Buffers cycle between the frame
// reader and the workers: at most workers+2 frame buffers exist.
type applier struct {
	sink   *batchSink
	disks  *diskSink // nil without storage
	jobs   chan *applyJob
	spares chan []byte
	done   sync.WaitGroup // workers
	busy   sync.WaitGroup // submitted, not yet applied

	mu     sync.Mutex
	counts appliedCounts
	apply  time.Duration
	first  error
}

func newApplier(sink *batchSink, disks *diskSink, workers int) *applier {
	a := &applier{sink: sink, disks: disks, jobs: make(chan *applyJob), spares: make(chan []byte, workers+1)}
	for range workers {
		a.done.Add(1)
		go a.work()
	}
	return a
}

func (a *applier) work() {
	defer a.done.Done()
	var scratch []byte // decompressed disk block
	for j := range a.jobs {
		a.mu.Lock()
		failed := a.first != nil
		a.mu.Unlock()
		var c batchCounts
		var err error
		var d time.Duration
		if !failed {
			t0 := time.Now()
			// The reader left the checksum to the workers (deferSum):
			// nothing of a damaged frame reaches RAM or a disk.
			if err = j.f.verify(); err == nil {
				if j.disk {
					if scratch == nil {
						scratch = make([]byte, DiskBlockSize)
					}
					c, err = a.disks.run(&j.d, scratch)
				} else {
					c, err = a.sink.run(&j.b)
				}
			}
			d = time.Since(t0)
		}
		a.mu.Lock()
		if j.disk {
			a.counts.blocks.add(c)
		} else {
			a.counts.pages.add(c)
		}
		a.apply += d
		if err != nil && a.first == nil {
			a.first = err
		}
		a.mu.Unlock()
		select {
		case a.spares <- j.buf:
		default:
		}
		a.busy.Done()
	}
}

// spare returns a free frame buffer, or nil when none is free.
func (a *applier) spare() []byte {
	select {
	case b := <-a.spares:
		return b
	default:
		return nil
	}
}

// submit hands a prepared batch to a worker, waiting for a free one.
func (a *applier) submit(j *applyJob) {
	a.busy.Add(1)
	a.jobs <- j
}

// err returns the first error a worker met, if any.
func (a *applier) err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.first
}

// wait waits until every submitted batch is applied and returns their
// page and block counts and the workers' busy time since the last wait,
// or the first error.
func (a *applier) wait() (appliedCounts, time.Duration, error) {
	a.busy.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	c, d := a.counts, a.apply
	a.counts, a.apply = appliedCounts{}, 0
	return c, d, a.first
}

// close waits for the submitted batches and stops the workers.
func (a *applier) close() {
	close(a.jobs)
	a.done.Wait()
}
