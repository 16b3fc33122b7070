package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"godwit/migrate"
	"godwit/vmm/api"
)

// This file follows a migration through the source's API for `godwit
// migrate` (progress, --trace) and shows the downtime breakdown and the
// round records (`godwit migrate`, `godwit ctl stats`).

// pollWait is the long-poll each GET /migrate asks for.
const pollWait = time.Second

// followMigration polls GET /migrate until the migration is no longer
// active and returns that final answer, calling seen with every answer
// before it, in arrival order (an answer may be older than the one
// before it; round records only ever accumulate, so this is harmless).
//
// Two long-polls are kept in flight, the second started half a poll
// after the first, so that at every moment one of them waits at the
// server: when the migration ends, that one is answered with the final
// status — the last round records, the breakdown, the summary. The
// source VM stops only once some client has read its final status, and
// its API server completes the requests in flight before the process
// exits; so the final answer reaches this process even when another
// client (a `godwit ctl stats`) reads it first and releases the source.
func followMigration(ctx context.Context, c *api.Client, seen func(api.MigrationInfo)) (api.MigrationInfo, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		info api.MigrationInfo
		err  error
	}
	answers := make(chan answer)
	poll := func(delay time.Duration) {
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
		for {
			info, err := c.MigrationStatus(ctx, pollWait)
			select {
			case answers <- answer{info, err}:
			case <-ctx.Done():
				return
			}
			if err != nil || info.Status != "active" {
				return
			}
		}
	}
	go poll(0)
	go poll(pollWait / 2)
	var lastErr error
	for running := 2; running > 0; {
		select {
		case a := <-answers:
			if a.err != nil {
				running--
				lastErr = a.err
				continue
			}
			if a.info.Status != "active" {
				return a.info, nil
			}
			seen(a.info)
		case <-ctx.Done():
			return api.MigrationInfo{}, ctx.Err()
		}
	}
	return api.MigrationInfo{}, lastErr
}

// traceFile is the file of `godwit migrate --trace`: the round records
// as GET /migrate reports them, then the breakdown and the summary from
// the final statistics (docs/trace.md).
type traceFile struct {
	path string
	f    *os.File
	w    *migrate.TraceWriter
	warn io.Writer // where gaps are reported
	err  error     // the first write error; nothing is written after it
}

// createTrace creates (or truncates) the trace file at path.
func createTrace(path string, warn io.Writer) (*traceFile, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &traceFile{path: path, f: f, w: migrate.NewTraceWriter(f), warn: warn}, nil
}

// rounds writes the round records of info that are not written yet. A
// source keeps only its most recent records; any it no longer had is
// reported once as a gap.
func (t *traceFile) rounds(info api.MigrationInfo) {
	if t.err != nil || len(info.Rounds) == 0 {
		return
	}
	var recs []migrate.RoundRecord
	if err := json.Unmarshal(info.Rounds, &recs); err != nil {
		t.err = fmt.Errorf("the source's round records: %w", err)
		return
	}
	for _, r := range recs {
		next := t.w.NextRound()
		if r.Round < next {
			continue
		}
		if r.Round > next {
			fmt.Fprintf(t.warn, "godwit: trace %s: rounds %d to %d were gone from the source before they could be read\n", t.path, next, r.Round-1)
		}
		if t.err = t.w.Round(r); t.err != nil {
			return
		}
	}
}

// finish writes the last round records, the breakdown (when the
// migration completed) and the summary from the final answer, and
// closes the file.
func (t *traceFile) finish(info api.MigrationInfo) error {
	t.rounds(info)
	if t.err == nil {
		var s migrate.Stats
		if len(info.Stats) > 0 {
			if err := json.Unmarshal(info.Stats, &s); err != nil {
				t.err = fmt.Errorf("the source's statistics: %w", err)
			}
		}
		if s.Status == "" {
			s.Status, s.Error = info.Status, info.Error
		}
		if t.err == nil && s.StopAndCopy != nil {
			t.err = t.w.StopAndCopy(*s.StopAndCopy)
		}
		if t.err == nil {
			t.err = t.w.Summary(s)
		}
	}
	if t.err == nil {
		t.err = t.f.Sync()
	}
	if err := t.f.Close(); t.err == nil {
		t.err = err
	}
	return t.err
}

// discard closes and removes a trace file of a migration that never
// started.
func (t *traceFile) discard() {
	t.f.Close()
	os.Remove(t.path)
}

// printBreakdown prints the downtime breakdown for a person.
func printBreakdown(w io.Writer, b *migrate.DowntimeBreakdown) {
	if b == nil {
		return
	}
	fp, fd := b.FinalPages, b.FinalDiskBlocks
	blocks := ""
	if n := fd.Total(); n > 0 {
		blocks = fmt.Sprintf(", %d disk blocks", n)
	}
	fmt.Fprintf(w, "stop-and-copy: pause %.2f ms, final sync %.2f ms (dirty log %.2f ms, %d pages%s, %s), state save %.2f ms (%s), transfer %.2f ms\n",
		b.PauseMs, b.FinalSyncMs, b.DirtyLogMs, fp.Total(), blocks, formatSize(b.FinalBytes),
		b.StateSaveMs, formatSize(b.StateBytes), b.TransferMs)
	fmt.Fprintf(w, "               destination restore %.2f ms, resume %.2f ms, other %.2f ms; ack round trip %.2f ms\n",
		b.DestRestoreMs, b.DestResumeMs, b.DestOtherMs, b.AckRoundTripMs)
	if b.DestTimingsError != "" {
		fmt.Fprintf(w, "               (the destination's timings were rejected: %s)\n", printable(b.DestTimingsError))
	}
}

// printRounds prints a table of round records.
func printRounds(w io.Writer, recs []migrate.RoundRecord) {
	if len(recs) == 0 {
		return
	}
	fmt.Fprintf(w, "%5s %9s %8s %8s %8s %10s %9s %11s %6s %9s  %s\n",
		"round", "ms", "pages", "zero", "lz4", "bytes", "MB/s", "dirty/s", "thr%", "exp ms", "decision")
	for _, r := range recs {
		decision := r.Decision
		switch {
		case r.Paused:
			decision = "(paused)"
		case r.Decision == migrate.DecisionThrottleUp:
			decision = fmt.Sprintf("%s to %d%%", r.Decision, r.ThrottleToPct)
		}
		fmt.Fprintf(w, "%5d %9.2f %8d %8d %8d %10d %9.1f %11.0f %6d %9.2f  %s\n",
			r.Round, r.DurationMs, r.PagesSent, r.Pages.Zero, r.Pages.Compressed, r.Bytes,
			r.BandwidthBytesPerSec/1e6, r.DirtyPagesPerSec, r.ThrottlePct, r.ExpectedDowntimeMs, printable(decision))
	}
}

// ctlStats is `godwit ctl stats`: the VM's current or last outgoing
// migration, with its round records and downtime breakdown.
func ctlStats(c *cli.Context) error {
	cl, err := ctlClient(c)
	if err != nil {
		return err
	}
	info, err := cl.MigrationStatus(c.Context, 0)
	if err != nil {
		return cli.Exit("stats: "+err.Error(), 1)
	}
	if c.Bool("json") {
		out, err := json.MarshalIndent(info, "", "  ")
		if err != nil {
			return cli.Exit("stats: encoding JSON: "+err.Error(), 1)
		}
		fmt.Fprintf(c.App.Writer, "%s\n", out)
		return nil
	}
	w := c.App.Writer
	fmt.Fprintf(w, "migration:    %s\n", printable(info.Status))
	if info.Error != "" {
		fmt.Fprintf(w, "error:        %s\n", printable(info.Error))
	}
	var recs []migrate.RoundRecord
	if len(info.Rounds) > 0 && json.Unmarshal(info.Rounds, &recs) != nil {
		return cli.Exit("stats: the VM's round records are not valid JSON", 1)
	}
	if info.Status == "active" {
		var p struct {
			Progress migrate.Progress `json:"progress"`
		}
		if json.Unmarshal(info.Stats, &p) == nil {
			pr := p.Progress
			fmt.Fprintf(w, "progress:     round %d, %d of %d pages left, %s sent, throttle %d%%, expected downtime %.1f ms\n",
				pr.Round, pr.RemainingPages, pr.TotalPages, formatSize(pr.TransferredBytes), pr.ThrottlePct, ms(pr.ExpectedDowntime))
			if pr.DiskTotalBytes > 0 {
				fmt.Fprintf(w, "disks:        %d blocks left, %s of disk blocks sent\n", pr.DiskRemainingBlocks, formatSize(pr.DiskTransferredBytes))
			}
		}
	} else if len(info.Stats) > 0 {
		var s migrate.Stats
		if json.Unmarshal(info.Stats, &s) != nil {
			return cli.Exit("stats: the VM's statistics are not valid JSON", 1)
		}
		writeStats(w, s)
	}
	printRounds(w, recs)
	return nil
}

// writeStats prints final statistics for a person, with the breakdown.
func writeStats(w io.Writer, s migrate.Stats) {
	fmt.Fprintf(w, "total:        %.1f ms (setup %.1f ms)\n", s.TotalMs, s.SetupMs)
	fmt.Fprintf(w, "downtime:     %.1f ms (expected %.1f ms)\n", s.DowntimeMs, s.ExpectedDowntimeMs)
	fmt.Fprintf(w, "rounds:       %d\n", s.Rounds)
	fmt.Fprintf(w, "transferred:  %s (%.0f Mbit/s)\n", formatSize(s.TransferredBytes), s.Mbps)
	fmt.Fprintf(w, "pages:        normal %d, zero %d, compressed %d, deduplicated %d\n", s.Pages.Normal, s.Pages.Zero, s.Pages.Compressed, s.Pages.Deduplicated)
	fmt.Fprintf(w, "dirty rate:   %.0f pages/s, throttle %d%%\n", s.DirtyPagesRate, s.ThrottlePct)
	if s.Storage {
		fmt.Fprintf(w, "disks:        %s, %s sent in %d rounds; blocks normal %d, zero %d, compressed %d; written %.0f blocks/s\n",
			formatSize(s.DiskTotalBytes), formatSize(s.DiskTransferredBytes), s.DiskRounds,
			s.DiskBlocks.Normal, s.DiskBlocks.Zero, s.DiskBlocks.Compressed, s.DiskDirtyBlocksRate)
	}
	printBreakdown(w, s.StopAndCopy)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// traceUsage is the help text of --trace.
const traceUsage = "write a JSON Lines trace of the migration to `FILE`: a record per round, " +
	"the downtime breakdown, the final statistics (docs/trace.md)"
