package migrate

import (
	"fmt"
	"math"
	"time"
)

// Auto-converge throttle steps, as QEMU's defaults
// (cpu-throttle-initial 20, cpu-throttle-increment 10, max 99).
const (
	ThrottleInitial   = 20
	ThrottleIncrement = 10
	ThrottleMax       = 99
)

// RoundStat is what one pre-copy round measured.
type RoundStat struct {
	// Round is the round number, 0 for the full copy.
	Round int `json:"round"`
	// Pages is the number of pages the round sent (zero pages included).
	Pages uint64 `json:"pages"`
	// ZeroPages is how many of them were zero pages (sent as a bit).
	ZeroPages uint64 `json:"zero_pages"`
	// Bytes is what the round put on the wire.
	Bytes uint64 `json:"bytes"`
	// Duration is the round end to end: from sending its MEMORY_BEGIN
	// to the destination's ROUND_ACK, every page applied there.
	Duration time.Duration `json:"duration_ns"`
	// DirtyAfter is the number of pages the guest dirtied while the round
	// ran: the work left for the next round.
	DirtyAfter uint64 `json:"dirty_after"`
	// ThrottlePct is the auto-converge throttle in effect during the round.
	ThrottlePct int `json:"throttle_pct"`
	// DiskBlocks is the number of disk blocks (DiskBlockSize bytes) the
	// round sent in a storage migration, zero blocks included.
	DiskBlocks uint64 `json:"disk_blocks,omitzero"`
	// DiskZeroBlocks is how many of them were zero (sent as a bit).
	DiskZeroBlocks uint64 `json:"disk_zero_blocks,omitzero"`
	// DiskDirtyAfter is the number of disk blocks the guest wrote while
	// the round ran: disk work left for the next round.
	DiskDirtyAfter uint64 `json:"disk_dirty_after,omitzero"`
}

// blockUnits is the weight of one disk block in the policy's unit, the
// page: its size in pages. A block costs what its bytes cost.
const blockUnits = DiskBlockSize / pageSize

// costly returns the round's costly (non-zero) units, pages and disk
// blocks weighed by size; a round of zero pages and blocks only counts
// those.
func (r RoundStat) costly() uint64 {
	c := (r.Pages - min(r.ZeroPages, r.Pages)) + (r.DiskBlocks-min(r.DiskZeroBlocks, r.DiskBlocks))*blockUnits
	if c == 0 {
		c = r.Pages + r.DiskBlocks*blockUnits
	}
	return c
}

// pending returns the work the round left, in units: dirty pages and
// written disk blocks weighed by size.
func (r RoundStat) pending() uint64 { return r.DirtyAfter + r.DiskDirtyAfter*blockUnits }

// History is the input of Decide: every round so far and the clock.
type History struct {
	// Rounds are the completed rounds, oldest first.
	Rounds []RoundStat
	// Elapsed is the time since the migration started.
	Elapsed time.Duration
	// ThrottlePct is the throttle currently applied.
	ThrottlePct int
}

// Policy holds the knobs of the stop-iterating decision.
type Policy struct {
	// DowntimeTarget is the longest acceptable pause.
	DowntimeTarget time.Duration
	// MaxRounds bounds the iterative rounds (round 0 included).
	MaxRounds int
	// Timeout bounds the whole migration; 0 means none.
	Timeout time.Duration
	// AutoConverge allows throttling the vCPUs when the dirty set does not
	// shrink.
	AutoConverge bool
	// SwitchoverCost is the fixed part of the downtime, added to the
	// time the last dirty pages take.
	SwitchoverCost time.Duration
	// RefineFloor enables refinement rounds (see Decide): after
	// converging, another live round runs while the last pages' share of
	// the expected downtime is at least RefineFloor and that round is
	// expected to at least halve it. 0 disables refinement: the pause
	// then starts as soon as it fits the target.
	RefineFloor time.Duration
}

// minRateSample is how many costly pages the per-page cost is measured
// over, at least: rounds are taken newest first until they add up to it
// (or none is left), so a tiny round's fixed overheads do not pass for a
// per-page cost.
const minRateSample = 1024

// Action is what Decide tells the source to do next.
type Action int

// Actions.
const (
	// Continue runs another iterative round.
	Continue Action = iota
	// StopAndCopy pauses the VM and sends what is left.
	StopAndCopy
	// Throttle sets Decision.ThrottlePct, then runs another round.
	Throttle
	// Fail gives up; the source keeps running.
	Fail
)

// String returns the action's name.
func (a Action) String() string {
	switch a {
	case Continue:
		return "continue"
	case StopAndCopy:
		return "stop-and-copy"
	case Throttle:
		return "throttle"
	case Fail:
		return "fail"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Decision is the result of Decide.
type Decision struct {
	// Action is what to do next.
	Action Action
	// ThrottlePct is the new throttle when Action is Throttle.
	ThrottlePct int
	// Reason explains the decision in words, for traces and errors.
	Reason string
	// ExpectedDowntime is the pause stop-and-copy would cause now.
	ExpectedDowntime time.Duration
	// PageCost is the measured end-to-end time per costly page (0 when
	// nothing has been measured yet).
	PageCost time.Duration
	// Bandwidth is the end-to-end throughput over the same rounds, in
	// bytes per second (+Inf when nothing has been measured yet).
	Bandwidth float64
}

// shrinks reports whether the dirty set went from prev to cur pages by at
// least 5%: a smaller drop means pre-copy is not gaining on the guest.
func shrinks(prev, cur uint64) bool { return cur*20 <= prev*19 && cur < prev }

// Decide is the stop-iterating policy, a pure function of the round
// statistics. The expected downtime is
//
//	(DirtyAfter + DiskDirtyAfter × blockUnits) of the last round × PageCost
//	+ SwitchoverCost
//
// where PageCost is the time per costly (non-zero) page end to end — from
// MEMORY_BEGIN to the destination's ROUND_ACK, so it covers encoding, the
// link and the destination decoding and writing pages — over the most
// recent rounds that add up to minRateSample costly pages (a round of
// zero pages only counts its zero pages). In a storage migration a disk
// block counts as blockUnits pages (its size in pages), both in the
// measurement (the rounds' disk blocks share their time with their pages,
// and the destination's flush of the blocks is part of it) and in what is
// pending: disk blocks written since the last round count toward the
// expected downtime like dirty pages. It is conservative: every dirty
// page and block is priced as a costly one, though some travel as a bit.
// With nothing pending it is SwitchoverCost alone.
//
// The checks run in this order after every round:
//
//  1. Converged: the expected downtime is within DowntimeTarget:
//     StopAndCopy, unless a refinement round pays (RefineFloor set): the
//     pages part of the expected downtime (without SwitchoverCost) is at
//     least RefineFloor; a live round sending the pending pages — about
//     that long, plus SwitchoverCost for its fixed costs — would at the
//     last round's dirty rate leave at most half of them dirty; the last
//     round shrank the pending work by at least a quarter against the
//     round before (or is round 0); the round limit is not reached; and
//     less than half of the Timeout has passed. Then Continue: the guest
//     pauses later but for a shorter time. An idle guest whose round 0
//     took seconds leaves hundreds of pages its timers dirtied; a short
//     round more leaves the few dirtied in its own milliseconds.
//  2. Timeout reached: Fail.
//  3. MaxRounds reached and no Timeout set: StopAndCopy, accepting a
//     longer pause, so a migration without a timeout always ends (as Cloud
//     Hypervisor bounds its rounds). With a Timeout, the downtime target
//     is honoured as QEMU does: iterate (and throttle) until converged, or
//     Fail at the Timeout with the VM still running on the source.
//  4. AutoConverge on, throttle below ThrottleMax, and the dirty set
//     stalled (did not shrink by at least 5%) over the last two rounds
//     before any throttle, or over the last round run at the current
//     throttle once throttling: Throttle, to ThrottleInitial the first
//     time, then halving the share of time the guest still runs (at least
//     ThrottleIncrement more), capped at ThrottleMax: 20, 60, 80, 90, 99.
//     QEMU adds 10 points a step; when the dirty set saturates
//     (a guest that rewrites all its memory within one round) its
//     throttle cannot show any effect until it is high, so reaching it
//     in a few rounds matters more than fine steps.
//  5. Otherwise Continue.
func Decide(h History, p Policy) Decision {
	if len(h.Rounds) == 0 {
		return Decision{Action: Continue, Reason: "no round completed yet", Bandwidth: math.Inf(1)}
	}
	last := h.Rounds[len(h.Rounds)-1]
	var dur time.Duration
	var pages, bytes uint64
	for i := len(h.Rounds) - 1; i >= 0 && pages < minRateSample; i-- {
		r := h.Rounds[i]
		costly := r.costly()
		if costly == 0 {
			continue
		}
		dur += r.Duration
		pages += costly
		bytes += r.Bytes
	}
	bw := math.Inf(1)
	var cost time.Duration
	if pages > 0 {
		cost = max(dur/time.Duration(pages), 1)
		bw = float64(bytes) / max(dur.Seconds(), 1e-9)
	}
	var expected time.Duration
	switch pending := last.pending(); {
	case pending == 0:
		expected = p.SwitchoverCost
	case pages == 0:
		expected = math.MaxInt64 / 2 // unknown: never "converged"
	default:
		expected = time.Duration(min(float64(pending)*float64(dur)/float64(pages)+float64(p.SwitchoverCost), math.MaxInt64/2))
	}
	d := Decision{ExpectedDowntime: expected, PageCost: cost, Bandwidth: bw}
	rounds := len(h.Rounds)
	switch {
	case expected <= p.DowntimeTarget && refines(h, p, expected):
		d.Action = Continue
		d.Reason = fmt.Sprintf("converged (expected downtime %v within target %v), and one more live round should at least halve the pages left", expected, p.DowntimeTarget)
	case expected <= p.DowntimeTarget:
		d.Action = StopAndCopy
		d.Reason = fmt.Sprintf("converged: expected downtime %v within target %v", expected, p.DowntimeTarget)
	case p.Timeout > 0 && h.Elapsed >= p.Timeout:
		d.Action = Fail
		d.Reason = fmt.Sprintf("timeout %v reached after %d rounds; expected downtime still %v (target %v)", p.Timeout, rounds, expected, p.DowntimeTarget)
	case p.MaxRounds > 0 && rounds >= p.MaxRounds && p.Timeout == 0:
		d.Action = StopAndCopy
		d.Reason = fmt.Sprintf("round limit %d reached and no timeout set: stopping with expected downtime %v (target %v)", p.MaxRounds, expected, p.DowntimeTarget)
	case p.AutoConverge && h.ThrottlePct < ThrottleMax && stalled(h):
		next := ThrottleInitial
		if h.ThrottlePct > 0 {
			halved := 100 - (100-h.ThrottlePct)/2
			next = min(max(h.ThrottlePct+ThrottleIncrement, halved, ThrottleInitial), ThrottleMax)
		}
		d.Action = Throttle
		d.ThrottlePct = next
		d.Reason = fmt.Sprintf("dirty set not shrinking at throttle %d%%: throttling to %d%%", h.ThrottlePct, next)
	default:
		d.Action = Continue
		d.Reason = fmt.Sprintf("expected downtime %v above target %v", expected, p.DowntimeTarget)
	}
	return d
}

// refines reports whether a converged migration should run one more live
// round first (Decide's rule 1): the pages part of expected is worth
// cutting, and the dirty rate the last round measured says the round
// would halve it.
func refines(h History, p Policy, expected time.Duration) bool {
	n := len(h.Rounds)
	last := h.Rounds[n-1]
	pagesPart := expected - p.SwitchoverCost
	switch {
	case p.RefineFloor <= 0 || pagesPart < p.RefineFloor || last.Duration <= 0:
		return false
	case p.MaxRounds > 0 && n >= p.MaxRounds:
		return false
	case p.Timeout > 0 && h.Elapsed >= p.Timeout/2:
		return false
	case n >= 2 && last.pending()*4 > h.Rounds[n-2].pending()*3:
		return false
	}
	pending := float64(last.pending())
	next := pending / last.Duration.Seconds() * (pagesPart + p.SwitchoverCost).Seconds()
	return next*2 <= pending
}

// stalled reports whether the rounds run at the current throttle failed to
// shrink the dirty set (pages and disk blocks, weighed as in Decide): the
// last two before any throttle, the last one once throttling (each step
// then shows its effect within a round).
func stalled(h History) bool {
	n := len(h.Rounds)
	window := 2
	if h.ThrottlePct > 0 {
		window = 1
	}
	if n < window+1 {
		return false
	}
	for i := n - window; i < n; i++ {
		r := h.Rounds[i]
		if r.ThrottlePct != h.ThrottlePct || shrinks(h.Rounds[i-1].pending(), r.pending()) {
			return false
		}
	}
	return true
}
