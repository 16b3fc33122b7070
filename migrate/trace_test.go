package migrate_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit/migrate"
	"godwit/migrate/migratetest"
)

// checkBreakdown asserts the stop-and-copy breakdown of a completed
// migration: present, equal in downtime to the statistics, its parts
// adding up to the downtime within 10%, and the destination's timings
// exactly what the destination measured.
func checkBreakdown(t *testing.T, r result) *migrate.DowntimeBreakdown {
	t.Helper()
	sc := r.stats.StopAndCopy
	if sc == nil {
		t.Fatal("completed migration without a stop-and-copy breakdown")
	}
	if sc.Type != migrate.RecordStopAndCopy || sc.Round != r.stats.Rounds-1 {
		t.Fatalf("breakdown type %q round %d, %d rounds", sc.Type, sc.Round, r.stats.Rounds)
	}
	if sc.DowntimeMs != r.stats.DowntimeMs || sc.DowntimeMs <= 0 {
		t.Fatalf("breakdown downtime %v ms, stats %v ms", sc.DowntimeMs, r.stats.DowntimeMs)
	}
	if got := time.Duration(sc.EndUnixNs - sc.StartUnixNs); math.Abs(float64(got)/1e6-sc.DowntimeMs) > 1 {
		t.Fatalf("start..end spans %v, downtime %v ms", got, sc.DowntimeMs)
	}
	parts := []float64{sc.PauseMs, sc.FinalSyncMs, sc.DirtyLogMs, sc.FinalPagesMs, sc.StateSaveMs, sc.TransferMs,
		sc.DestRestoreMs, sc.DestResumeMs, sc.DestOtherMs, sc.AckRoundTripMs}
	for i, p := range parts {
		if p < 0 || math.IsNaN(p) {
			t.Fatalf("part %d is %v: %+v", i, p, sc)
		}
	}
	if sum := sc.PartsMs(); math.Abs(sum-sc.DowntimeMs) > 0.1*sc.DowntimeMs {
		t.Fatalf("parts add up to %v ms, downtime %v ms: %+v", sum, sc.DowntimeMs, sc)
	}
	if math.Abs(sc.DirtyLogMs+sc.FinalPagesMs-sc.FinalSyncMs) > 1e-6 || sc.FinalSyncMs != r.stats.FinalSyncMs {
		t.Fatalf("final sync %v = dirty log %v + pages %v? stats say %v", sc.FinalSyncMs, sc.DirtyLogMs, sc.FinalPagesMs, r.stats.FinalSyncMs)
	}
	// The acknowledgement carried the destination's own measurements.
	if sc.DestTimingsVersion != migrate.TimingsVersion || sc.DestTimingsError != "" {
		t.Fatalf("destination timings version %d, error %q", sc.DestTimingsVersion, sc.DestTimingsError)
	}
	d := r.destStats
	if sc.DestRestoreMs != d.RestoreMs || sc.DestResumeMs != d.StartMs ||
		math.Abs(sc.DestRestoreMs+sc.DestResumeMs+sc.DestOtherMs-d.CompleteToResumedMs) > 1e-6 {
		t.Fatalf("source has restore %v resume %v other %v; destination measured restore %v start %v handling %v",
			sc.DestRestoreMs, sc.DestResumeMs, sc.DestOtherMs, d.RestoreMs, d.StartMs, d.CompleteToResumedMs)
	}
	if r.stats.RestoreMs != d.RestoreMs || r.stats.StartMs != d.StartMs {
		t.Fatalf("stats restore %v start %v, destination %v %v", r.stats.RestoreMs, r.stats.StartMs, d.RestoreMs, d.StartMs)
	}
	if sc.StateBytes == 0 || sc.TransferBytes <= sc.StateBytes {
		t.Fatalf("state %d bytes, transferred in %d", sc.StateBytes, sc.TransferBytes)
	}
	return sc
}

// TestTraceShrinkingRounds migrates a guest whose dirtying falls round by
// round and checks the round records: one per round, in order, each
// round sending what the previous one found dirty, pre-copy rounds
// shrinking to the paused one, the policy's decisions, and the
// breakdown of the downtime.
func TestTraceShrinkingRounds(t *testing.T) {
	schedule := []int{800, 300, 100, 30} // pages the guest writes before each fetch; then none
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			vm := newVM(t)
			vm.DirtySchedule = func(n int) int {
				if n < len(schedule) {
					return schedule[n]
				}
				return 0
			}
			var recs []migrate.RoundRecord
			src, dst := tr.pair(t)
			// A 1ns target and switchover cost: only a round that
			// leaves nothing dirty converges.
			r := migrateOnce(context.Background(), context.Background(), src, dst, vm, &migratetest.Factory{}, migrate.Options{
				DowntimeTarget: 1, SwitchoverCost: 1,
				Trace: func(rr migrate.RoundRecord) { recs = append(recs, rr) },
			})
			checkSuccess(t, vm, r)
			checkBreakdown(t, r)
			if len(recs) != len(schedule)+2 || len(recs) != r.stats.Rounds {
				t.Fatalf("%d records, %d rounds: %+v", len(recs), r.stats.Rounds, recs)
			}
			var total migrate.PageStats
			for i, rr := range recs {
				if rr.Type != migrate.RecordRound || rr.Round != i || rr.Paused != (i == len(recs)-1) {
					t.Fatalf("record %d: type %q round %d paused %v", i, rr.Type, rr.Round, rr.Paused)
				}
				if p := rr.Pages; p.Total() != rr.PagesSent {
					t.Fatalf("round %d: split %+v does not add up to %d pages", i, p, rr.PagesSent)
				}
				total.Normal += rr.Pages.Normal
				total.Zero += rr.Pages.Zero
				total.Compressed += rr.Pages.Compressed
				total.Deduplicated += rr.Pages.Deduplicated
				if rr.End.Before(rr.Start) || rr.StartUnixNs != rr.Start.UnixNano() || rr.EndUnixNs != rr.End.UnixNano() ||
					math.Abs(float64(rr.EndUnixNs-rr.StartUnixNs)/1e6-rr.DurationMs) > 1 {
					t.Fatalf("round %d times %v..%v (%d..%d), %v ms", i, rr.Start, rr.End, rr.StartUnixNs, rr.EndUnixNs, rr.DurationMs)
				}
				if i > 0 && rr.Start.Before(recs[i-1].End) {
					t.Fatalf("round %d starts before round %d ended", i, i-1)
				}
				if waits := rr.EncodeWaitMs + rr.SendWaitMs + rr.AckWaitMs; waits > rr.DurationMs+0.01 {
					t.Fatalf("round %d: waits of %.3f ms (encode %.3f, send %.3f, ack %.3f) exceed its %.3f ms",
						i, waits, rr.EncodeWaitMs, rr.SendWaitMs, rr.AckWaitMs, rr.DurationMs)
				}
				if rr.Bytes == 0 || rr.BandwidthBytesPerSec <= 0 {
					t.Fatalf("round %d: %d bytes at %v bytes/s", i, rr.Bytes, rr.BandwidthBytesPerSec)
				}
				if i > 0 && rr.PagesSent != recs[i-1].DirtyPagesFound {
					t.Fatalf("round %d sent %d pages; round %d found %d dirty", i, rr.PagesSent, i-1, recs[i-1].DirtyPagesFound)
				}
				if i > 0 && rr.PagesSent >= recs[i-1].PagesSent {
					t.Fatalf("round %d sent %d pages, not fewer than round %d's %d", i, rr.PagesSent, i-1, recs[i-1].PagesSent)
				}
				switch {
				case rr.Paused:
					if rr.Decision != "" || rr.ExpectedDowntimeMs != 0 || rr.DirtyPagesFound != 0 {
						t.Fatalf("paused round %+v", rr)
					}
				case i < len(schedule):
					if rr.Decision != migrate.DecisionContinue || rr.ExpectedDowntimeMs <= 0 || rr.DirtyPagesFound == 0 ||
						rr.DirtyPagesPerSec <= 0 || rr.DirtyBytesPerSec != rr.DirtyPagesPerSec*4096 || rr.Reason == "" {
						t.Fatalf("round %d %+v, want continue with a dirty rate", i, rr)
					}
				default:
					if rr.Decision != migrate.DecisionStopAndCopy || rr.DirtyPagesFound != 0 || rr.DirtyPagesPerSec != 0 {
						t.Fatalf("round %d %+v, want stop-and-copy with nothing dirty", i, rr)
					}
				}
			}
			if recs[0].PagesSent != testRAM/4096 {
				t.Fatalf("round 0 sent %d pages, RAM has %d", recs[0].PagesSent, testRAM/4096)
			}
			if total != r.stats.Pages {
				t.Fatalf("round records add up to %+v pages, stats say %+v", total, r.stats.Pages)
			}
			if last := recs[len(recs)-2]; r.stats.ExpectedDowntimeMs != last.ExpectedDowntimeMs ||
				r.stats.StopAndCopy.ExpectedDowntimeMs != last.ExpectedDowntimeMs {
				t.Fatalf("expected downtime: stats %v, breakdown %v, last decision %v", r.stats.ExpectedDowntimeMs,
					r.stats.StopAndCopy.ExpectedDowntimeMs, last.ExpectedDowntimeMs)
			}
			if sc := r.stats.StopAndCopy; sc.FinalPages != recs[len(recs)-1].Pages || sc.FinalBytes != recs[len(recs)-1].Bytes {
				t.Fatalf("breakdown's final pages %+v / %d bytes, paused round %+v / %d", sc.FinalPages, sc.FinalBytes,
					recs[len(recs)-1].Pages, recs[len(recs)-1].Bytes)
			}
		})
	}
}

// TestTraceThrottleUp checks the throttle-up decision and the throttle in
// effect as the round records report them.
func TestTraceThrottleUp(t *testing.T) {
	vm := newVM(t)
	vm.DirtyPerRound = 50
	var recs []migrate.RoundRecord
	src, dst := pipePair(t)
	r := migrateOnce(context.Background(), context.Background(), src, dst, vm, &migratetest.Factory{}, migrate.Options{
		DowntimeTarget: 1, AutoConverge: true, MaxRounds: 200,
		Trace: func(rr migrate.RoundRecord) { recs = append(recs, rr) },
	})
	checkSuccess(t, vm, r)
	throttle, ups := 0, 0
	for _, rr := range recs {
		if rr.ThrottlePct != throttle {
			t.Fatalf("round %d ran at %d%%, the last throttle-up set %d%%", rr.Round, rr.ThrottlePct, throttle)
		}
		if rr.Decision == migrate.DecisionThrottleUp {
			if rr.ThrottleToPct <= throttle {
				t.Fatalf("round %d throttles up from %d%% to %d%%", rr.Round, throttle, rr.ThrottleToPct)
			}
			throttle = rr.ThrottleToPct
			ups++
		} else if rr.ThrottleToPct != 0 {
			t.Fatalf("round %d: throttle_to_pct %d with decision %q", rr.Round, rr.ThrottleToPct, rr.Decision)
		}
	}
	if ups == 0 || throttle != migrate.ThrottleMax {
		t.Fatalf("%d throttle-ups reaching %d%%", ups, throttle)
	}
}

// TestBreakdownSumsToDowntime checks the breakdown over both transports,
// with a guest dirtying memory concurrently, several times each.
func TestBreakdownSumsToDowntime(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			for i := range 3 {
				vm := newVM(t)
				ctx, cancel := context.WithCancel(context.Background())
				var wg sync.WaitGroup
				wg.Add(1)
				go func() { defer wg.Done(); vm.RunGuest(ctx, 8) }()
				src, dst := tr.pair(t)
				r := migrateOnce(context.Background(), context.Background(), src, dst, vm, &migratetest.Factory{}, migrate.Options{})
				cancel()
				wg.Wait()
				checkSuccess(t, vm, r)
				sc := checkBreakdown(t, r)
				t.Logf("run %d: downtime %.3f ms = pause %.3f + final sync %.3f + state %.3f + transfer %.3f + restore %.3f + resume %.3f + dest other %.3f + ack %.3f",
					i, sc.DowntimeMs, sc.PauseMs, sc.FinalSyncMs, sc.StateSaveMs, sc.TransferMs, sc.DestRestoreMs, sc.DestResumeMs, sc.DestOtherMs, sc.AckRoundTripMs)
			}
		})
	}
}

// TestTraceWriter checks a whole trace as TraceWriter writes it from a
// real migration: JSON Lines, every line an object whose type comes in
// order (round..., stop_and_copy, summary), the summary equal to the
// final statistics; and that records out of order are refused.
func TestTraceWriter(t *testing.T) {
	vm := newVM(t)
	vm.DirtyPerRound = 200
	var buf bytes.Buffer
	tw := migrate.NewTraceWriter(&buf)
	var werr error
	src, dst := pipePair(t)
	r := migrateOnce(context.Background(), context.Background(), src, dst, vm, &migratetest.Factory{}, migrate.Options{
		Trace: func(rr migrate.RoundRecord) {
			if err := tw.Round(rr); err != nil && werr == nil {
				werr = err
			}
		},
	})
	checkSuccess(t, vm, r)
	if werr != nil {
		t.Fatal(werr)
	}
	if err := tw.StopAndCopy(*r.stats.StopAndCopy); err != nil {
		t.Fatal(err)
	}
	if err := tw.Summary(r.stats); err != nil {
		t.Fatal(err)
	}

	var types []string
	sc := bufio.NewScanner(&buf)
	var last []byte
	for sc.Scan() {
		var rec struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("line %d %q: %v", len(types)+1, sc.Text(), err)
		}
		types = append(types, rec.Type)
		last = append(last[:0], sc.Bytes()...)
	}
	want := strings.Repeat("round ", r.stats.Rounds) + "stop_and_copy summary"
	if got := strings.Join(types, " "); got != want {
		t.Fatalf("record types %q, want %q", got, want)
	}
	var sum struct {
		Type string `json:"type"`
		migrate.Stats
	}
	dec := json.NewDecoder(bytes.NewReader(last))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sum); err != nil {
		t.Fatal(err)
	}
	gotJSON, _ := json.Marshal(sum.Stats)
	wantJSON, _ := json.Marshal(r.stats)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Fatalf("summary %s\nstats   %s", gotJSON, wantJSON)
	}

	if err := tw.Round(migrate.RoundRecord{Round: r.stats.Rounds}); err == nil {
		t.Fatal("a round record after the summary was accepted")
	}
	tw2 := migrate.NewTraceWriter(&bytes.Buffer{})
	if err := tw2.Round(migrate.RoundRecord{Round: 3}); err != nil || tw2.NextRound() != 4 {
		t.Fatalf("Round(3): %v, next %d", err, tw2.NextRound())
	}
	if err := tw2.Round(migrate.RoundRecord{Round: 3}); err == nil {
		t.Fatal("round 3 twice was accepted")
	}
	if err := tw2.StopAndCopy(migrate.DowntimeBreakdown{}); err != nil {
		t.Fatal(err)
	}
	if err := tw2.StopAndCopy(migrate.DowntimeBreakdown{}); err == nil {
		t.Fatal("a second stop_and_copy was accepted")
	}
}
