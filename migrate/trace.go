package migrate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"godwit/vmm/memory"
)

// This file holds the migration trace: the records that explain a
// migration after the fact (one per round, the stop-and-copy breakdown,
// the summary) and their JSON Lines encoding. docs/trace.md is the
// schema; keep the two in step.

// Record types: the "type" field of every trace record.
const (
	RecordRound       = "round"
	RecordStopAndCopy = "stop_and_copy"
	RecordSummary     = "summary"
)

// Decisions of the stop-iterating policy as RoundRecord.Decision names
// them.
const (
	DecisionContinue    = "continue"
	DecisionStopAndCopy = "stop-and-copy"
	DecisionThrottleUp  = "throttle-up"
	DecisionTimeout     = "timeout"
)

// decisionName names a policy action for the trace. Decide fails only
// when the migration's timeout has passed.
func decisionName(a Action) string {
	switch a {
	case Continue:
		return DecisionContinue
	case StopAndCopy:
		return DecisionStopAndCopy
	case Throttle:
		return DecisionThrottleUp
	case Fail:
		return DecisionTimeout
	}
	return a.String()
}

// RoundRecord is the trace record of one memory round, given to
// Options.Trace when the round is over: right after the policy's decision
// for a pre-copy round, and once RESUMED has arrived for the paused final
// round. Times are wall-clock; durations and rates come from the
// monotonic clock.
type RoundRecord struct {
	// Type is RecordRound.
	Type string `json:"type"`
	// Round is the round number, 0 for the full copy.
	Round int `json:"round"`
	// Paused is set on the final round, sent with the VM paused.
	Paused bool `json:"paused"`
	// Start is when the source began writing the round's MEMORY_BEGIN.
	Start time.Time `json:"start"`
	// StartUnixNs is Start in nanoseconds since the Unix epoch.
	StartUnixNs int64 `json:"start_unix_ns"`
	// End is when the destination's ROUND_ACK for the round arrived:
	// every page of the round was in its RAM.
	End time.Time `json:"end"`
	// EndUnixNs is End in nanoseconds since the Unix epoch.
	EndUnixNs int64 `json:"end_unix_ns"`
	// DurationMs is End - Start in milliseconds.
	DurationMs float64 `json:"duration_ms"`
	// PagesSent is the number of pages the round sent.
	PagesSent uint64 `json:"pages_sent"`
	// Pages splits PagesSent by encoding.
	Pages PageStats `json:"pages"`
	// Bytes is what the round put on the wire, MEMORY_BEGIN to ROUND_END
	// with frame headers and checksums.
	Bytes uint64 `json:"bytes"`
	// BandwidthBytesPerSec is Bytes over the round's duration.
	BandwidthBytesPerSec float64 `json:"bandwidth_bytes_per_sec"`
	// DirtyPagesFound is what the dirty-log fetch after the round found
	// written since the previous fetch: the next round's pages. Zero for
	// the paused round.
	DirtyPagesFound uint64 `json:"dirty_pages_found"`
	// DirtyPagesPerSec is DirtyPagesFound over the time between that
	// fetch and the previous one (or the start of dirty logging).
	DirtyPagesPerSec float64 `json:"dirty_pages_per_sec"`
	// DirtyBytesPerSec is DirtyPagesPerSec times the page size.
	DirtyBytesPerSec float64 `json:"dirty_bytes_per_sec"`
	// ThrottlePct is the auto-converge throttle in effect during the
	// round.
	ThrottlePct int `json:"throttle_pct"`
	// ExpectedDowntimeMs is the downtime the policy expected after the
	// round; absent on the paused round.
	ExpectedDowntimeMs float64 `json:"expected_downtime_ms,omitempty"`
	// Decision is the policy's decision after the round (Decision*
	// constants); absent on the paused round.
	Decision string `json:"decision,omitempty"`
	// ThrottleToPct is the new throttle when Decision is throttle-up.
	ThrottleToPct int `json:"throttle_to_pct,omitempty"`
	// Reason is the policy's explanation of Decision.
	Reason string `json:"reason,omitempty"`

	// Where a live round's time went on the source, to tell a round
	// bound by the source's encoding (CPU) from one bound by the
	// connection or the destination (omitted when zero, and on the
	// paused round). The writer sends batches as the encoders finish
	// them: EncodeWaitMs is its time waiting for the next one,
	// SendWaitMs its time inside writes to the connection (the
	// bandwidth cap's waits included), AckWaitMs the time from
	// ROUND_END written to ROUND_ACK read. The Dest fields are the
	// destination's own report in ROUND_ACK: its MEMORY_BEGIN to its
	// last page in RAM (DestApplyMs), its time waiting for the round's
	// frames (DestReadWaitMs), and its workers' time decoding them,
	// summed over the workers (DestWorkMs).
	EncodeWaitMs   float64 `json:"encode_wait_ms,omitzero"`
	SendWaitMs     float64 `json:"send_wait_ms,omitzero"`
	AckWaitMs      float64 `json:"ack_wait_ms,omitzero"`
	DestApplyMs    float64 `json:"dest_apply_ms,omitzero"`
	DestReadWaitMs float64 `json:"dest_read_wait_ms,omitzero"`
	DestWorkMs     float64 `json:"dest_work_ms,omitzero"`

	// The disk fields are set in a storage migration only (omitted when
	// zero). Bytes and BandwidthBytesPerSec include the disk blocks.

	// DiskBlocksSent is the number of disk blocks (DiskBlockSize bytes)
	// the round sent.
	DiskBlocksSent uint64 `json:"disk_blocks_sent,omitzero"`
	// DiskBlocks splits DiskBlocksSent by encoding.
	DiskBlocks PageStats `json:"disk_blocks,omitzero"`
	// DiskBytes is what the round's DISK_BATCH frames put on the wire.
	DiskBytes uint64 `json:"disk_bytes,omitzero"`
	// DiskDirtyBlocksFound is the disk blocks the fetch after the round
	// found written since the previous fetch: the next round's blocks.
	DiskDirtyBlocksFound uint64 `json:"disk_dirty_blocks_found,omitzero"`
	// DiskDirtyBlocksPerSec is DiskDirtyBlocksFound over the same window
	// as DirtyPagesPerSec.
	DiskDirtyBlocksPerSec float64 `json:"disk_dirty_blocks_per_sec,omitzero"`
	// DiskDirtyBytesPerSec is DiskDirtyBlocksPerSec times the block size.
	DiskDirtyBytesPerSec float64 `json:"disk_dirty_bytes_per_sec,omitzero"`
}

// DowntimeBreakdown is the breakdown of the downtime, the trace's
// stop_and_copy record and Stats.StopAndCopy.
//
// The downtime runs on the source's clock from the call of Source.Pause
// to the moment the source has read RESUMED. It is cut into consecutive
// intervals at the source's instants: PauseMs, FinalSyncMs, StateSaveMs,
// TransferMs, and the tail from starting to write COMPLETE to reading
// RESUMED. The destination measures its handling (COMPLETE read to
// RESUMED written) on its own clock; it lies inside the tail, so the tail
// splits into DestRestoreMs, DestResumeMs, DestOtherMs and what remains,
// AckRoundTripMs. The eight parts add up to DowntimeMs (PartsMs), unless
// the destination reports more time than the tail holds, which an honest
// one cannot: then AckRoundTripMs is 0 and the sum exceeds DowntimeMs.
type DowntimeBreakdown struct {
	// Type is RecordStopAndCopy.
	Type string `json:"type"`
	// Round is the number of the paused final round.
	Round int `json:"round"`
	// Start is when the source called Source.Pause.
	Start time.Time `json:"start"`
	// StartUnixNs is Start in nanoseconds since the Unix epoch.
	StartUnixNs int64 `json:"start_unix_ns"`
	// End is when the source read RESUMED.
	End time.Time `json:"end"`
	// EndUnixNs is End in nanoseconds since the Unix epoch.
	EndUnixNs int64 `json:"end_unix_ns"`
	// DowntimeMs is End - Start, the same value as Stats.DowntimeMs.
	DowntimeMs float64 `json:"downtime_ms"`
	// ExpectedDowntimeMs is the policy's estimate when it decided to stop.
	ExpectedDowntimeMs float64 `json:"expected_downtime_ms"`

	// PauseMs is Source.Pause: vCPUs out of the guest, devices quiesced.
	PauseMs float64 `json:"pause_ms"`
	// FinalSyncMs is the final dirty-log fetch and writing the last
	// pages (MEMORY_BEGIN to ROUND_END): DirtyLogMs + FinalPagesMs.
	FinalSyncMs float64 `json:"final_sync_ms"`
	// DirtyLogMs is the final dirty-log fetch.
	DirtyLogMs float64 `json:"dirty_log_ms"`
	// FinalPagesMs is writing the last pages.
	FinalPagesMs float64 `json:"final_pages_ms"`
	// FinalPages counts the last pages by encoding.
	FinalPages PageStats `json:"final_pages"`
	// FinalBytes is what the last pages (and disk blocks) put on the
	// wire.
	FinalBytes uint64 `json:"final_bytes"`
	// FinalDiskBlocks counts the last disk blocks by encoding (storage
	// migrations only; they are written in FinalPagesMs too).
	FinalDiskBlocks PageStats `json:"final_disk_blocks,omitzero"`
	// StateSaveMs is Source.SaveState and encoding the sections (vCPUs,
	// irqchip, PIT, clock, devices).
	StateSaveMs float64 `json:"state_save_ms"`
	// StateBytes is the size of the encoded state.
	StateBytes uint64 `json:"state_bytes"`
	// TransferMs is writing the STATE frames.
	TransferMs float64 `json:"transfer_ms"`
	// TransferBytes is what the STATE frames put on the wire.
	TransferBytes uint64 `json:"transfer_bytes"`
	// DestRestoreMs is the destination's Target.RestoreState.
	DestRestoreMs float64 `json:"dest_restore_ms"`
	// DestResumeMs is the destination's Target.Start.
	DestResumeMs float64 `json:"dest_resume_ms"`
	// DestOtherMs is the rest of the destination's handling, from reading
	// COMPLETE to writing RESUMED (0 without timings version 1).
	DestOtherMs float64 `json:"dest_other_ms"`
	// AckRoundTripMs is the rest of the tail: COMPLETE and RESUMED
	// crossing the link, and the destination reading whatever of the
	// last pages and the state was still in flight.
	AckRoundTripMs float64 `json:"ack_round_trip_ms"`
	// DestTimingsVersion is the version of RESUMED's timings block (0:
	// only restore and start were reported).
	DestTimingsVersion int `json:"dest_timings_version"`
	// DestTimingsError says why the destination's timings were rejected
	// (then its three parts are 0 and AckRoundTripMs holds the tail).
	DestTimingsError string `json:"dest_timings_error,omitempty"`
}

// PartsMs is the sum of the eight parts of the breakdown.
func (s DowntimeBreakdown) PartsMs() float64 {
	return s.PauseMs + s.FinalSyncMs + s.StateSaveMs + s.TransferMs +
		s.DestRestoreMs + s.DestResumeMs + s.DestOtherMs + s.AckRoundTripMs
}

// switchTimeline holds the source's instants during stop-and-copy.
type switchTimeline struct {
	pause    time.Time // Source.Pause called
	paused   time.Time // it returned
	dirty    time.Time // final dirty-log fetch done
	pages    time.Time // last ROUND_END written
	saved    time.Time // state saved and encoded
	complete time.Time // about to write COMPLETE
	resumed  time.Time // RESUMED read
}

// newStopAndCopy cuts the downtime at the timeline's instants and nests
// the destination's report res (or nothing, when resErr rejected it) in
// the tail. The instants are forced into order first, so the parts are
// never negative and always consecutive.
func newStopAndCopy(tl switchTimeline, res resumed, resErr error) DowntimeBreakdown {
	ts := []*time.Time{&tl.pause, &tl.paused, &tl.dirty, &tl.pages, &tl.saved, &tl.complete, &tl.resumed}
	for i := 1; i < len(ts); i++ {
		if ts[i].Before(*ts[i-1]) {
			*ts[i] = *ts[i-1]
		}
	}
	s := DowntimeBreakdown{
		Type:         RecordStopAndCopy,
		DowntimeMs:   ms(tl.resumed.Sub(tl.pause)),
		PauseMs:      ms(tl.paused.Sub(tl.pause)),
		FinalSyncMs:  ms(tl.pages.Sub(tl.paused)),
		DirtyLogMs:   ms(tl.dirty.Sub(tl.paused)),
		FinalPagesMs: ms(tl.pages.Sub(tl.dirty)),
		StateSaveMs:  ms(tl.saved.Sub(tl.pages)),
		TransferMs:   ms(tl.complete.Sub(tl.saved)),
	}
	s.Start, s.StartUnixNs = stamp(tl.pause)
	s.End, s.EndUnixNs = stamp(tl.resumed)
	tail := tl.resumed.Sub(tl.complete)
	var dest time.Duration
	if resErr != nil {
		s.DestTimingsError = resErr.Error()
	} else {
		restore, start := time.Duration(res.restoreNs), time.Duration(res.startNs)
		s.DestRestoreMs, s.DestResumeMs = ms(restore), ms(start)
		s.DestTimingsVersion = int(res.version)
		dest = restore + start
		if res.version >= 1 {
			s.DestOtherMs = ms(time.Duration(res.handleNs) - dest)
			dest = time.Duration(res.handleNs)
		}
	}
	s.AckRoundTripMs = ms(max(tail-dest, 0))
	return s
}

// stamp returns t in UTC without its monotonic reading, and in Unix
// nanoseconds.
func stamp(t time.Time) (time.Time, int64) {
	return t.UTC(), t.UnixNano()
}

// newRoundRecord fills the parts of a round's record every round has.
func newRoundRecord(round int, c batchCounts, bytes uint64, start, end time.Time, throttle int) RoundRecord {
	r := RoundRecord{Type: RecordRound, Round: round, PagesSent: c.pages(), Bytes: bytes, ThrottlePct: throttle}
	r.Pages.add(c)
	r.Start, r.StartUnixNs = stamp(start)
	r.End, r.EndUnixNs = stamp(end)
	d := end.Sub(start)
	r.DurationMs = ms(d)
	r.BandwidthBytesPerSec = perSecond(float64(bytes), d)
	return r
}

// setWaits records where a live round's time went (see EncodeWaitMs).
func (r *RoundRecord) setWaits(sent roundSent, ackAt time.Time, ack roundAck) {
	r.EncodeWaitMs = ms(sent.encodeWait)
	r.SendWaitMs = ms(sent.sendWait)
	r.AckWaitMs = ms(max(ackAt.Sub(sent.endAt), 0))
	r.DestApplyMs = reportedMs(ack.applyNs)
	r.DestReadWaitMs = reportedMs(ack.readWaitNs)
	r.DestWorkMs = reportedMs(ack.workNs)
}

// reportedMs converts a duration the destination reported, in
// nanoseconds, to milliseconds; one above MaxReportedDuration (malformed)
// counts as 0.
func reportedMs(ns uint64) float64 {
	if ns > uint64(MaxReportedDuration) {
		return 0
	}
	return ms(time.Duration(ns))
}

// setDirty records the pages the fetch after the round found over the
// time since the fetch before it.
func (r *RoundRecord) setDirty(found uint64, window time.Duration) {
	r.DirtyPagesFound = found
	r.DirtyPagesPerSec = perSecond(float64(found), window)
	r.DirtyBytesPerSec = r.DirtyPagesPerSec * memory.PageSize
}

// setDisk records a storage migration round's disk blocks: what it sent
// (c, in bytes on the wire) and what the fetch after it found written
// over window.
func (r *RoundRecord) setDisk(c batchCounts, bytes, found uint64, window time.Duration) {
	r.DiskBlocksSent = c.pages()
	r.DiskBlocks.add(c)
	r.DiskBytes = bytes
	r.DiskDirtyBlocksFound = found
	r.DiskDirtyBlocksPerSec = perSecond(float64(found), window)
	r.DiskDirtyBytesPerSec = r.DiskDirtyBlocksPerSec * DiskBlockSize
}

// setDecision records the policy's decision after the round.
func (r *RoundRecord) setDecision(d Decision) {
	r.ExpectedDowntimeMs = ms(d.ExpectedDowntime)
	r.Decision = decisionName(d.Action)
	r.Reason = d.Reason
	if d.Action == Throttle {
		r.ThrottleToPct = d.ThrottlePct
	}
}

// perSecond is n per second over d, 0 when d is not positive.
func perSecond(n float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return n / d.Seconds()
}

// SummaryRecord is the trace's last record: the final statistics.
type SummaryRecord struct {
	// Type is RecordSummary.
	Type string `json:"type"`
	// Stats are the final statistics; their fields are the record's.
	Stats
}

// EncodeRecord returns rec (a RoundRecord, DowntimeBreakdown or SummaryRecord)
// as one line of JSON, newline included, with its type field set. It
// fails on anything else and on values JSON cannot hold (NaN, ±Inf).
func EncodeRecord(rec any) ([]byte, error) {
	switch r := rec.(type) {
	case RoundRecord:
		r.Type = RecordRound
		rec = r
	case DowntimeBreakdown:
		r.Type = RecordStopAndCopy
		rec = r
	case SummaryRecord:
		r.Type = RecordSummary
		rec = r
	default:
		return nil, fmt.Errorf("trace: %T is not a trace record", rec)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(rec); err != nil {
		return nil, fmt.Errorf("trace: encoding a record: %w", err)
	}
	return b.Bytes(), nil
}

// TraceWriter writes a migration trace as JSON Lines, one record per
// line, each with one write: round records in increasing round order,
// then at most one stop_and_copy record, then the summary, which ends the
// trace. Records out of that order are refused.
type TraceWriter struct {
	w      io.Writer
	next   int  // the lowest round number the next round record may have
	copied bool // stop_and_copy written
	done   bool // summary written
}

// NewTraceWriter returns a TraceWriter writing to w.
func NewTraceWriter(w io.Writer) *TraceWriter { return &TraceWriter{w: w} }

// NextRound is the lowest round number Round accepts now.
func (t *TraceWriter) NextRound() int { return t.next }

// Round writes a round record.
func (t *TraceWriter) Round(r RoundRecord) error {
	if t.copied || t.done {
		return fmt.Errorf("trace: round %d after the %s record", r.Round, t.last())
	}
	if r.Round < t.next {
		return fmt.Errorf("trace: round %d after round %d", r.Round, t.next-1)
	}
	if err := t.write(r); err != nil {
		return err
	}
	t.next = r.Round + 1
	return nil
}

// StopAndCopy writes the stop_and_copy record.
func (t *TraceWriter) StopAndCopy(s DowntimeBreakdown) error {
	if t.copied || t.done {
		return fmt.Errorf("trace: stop_and_copy after the %s record", t.last())
	}
	if err := t.write(s); err != nil {
		return err
	}
	t.copied = true
	return nil
}

// Summary writes the summary record, the last one.
func (t *TraceWriter) Summary(s Stats) error {
	if t.done {
		return fmt.Errorf("trace: a second summary record")
	}
	if err := t.write(SummaryRecord{Stats: s}); err != nil {
		return err
	}
	t.done = true
	return nil
}

func (t *TraceWriter) last() string {
	if t.done {
		return RecordSummary
	}
	return RecordStopAndCopy
}

func (t *TraceWriter) write(rec any) error {
	b, err := EncodeRecord(rec)
	if err != nil {
		return err
	}
	if _, err := t.w.Write(b); err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	return nil
}
