package migrate

import (
	"testing"
	"time"
)

// TestDecideStorage covers the policy's disk terms: written disk blocks
// count toward the expected downtime at their size in pages, the rounds'
// disk blocks share their time with their pages, zero blocks are not
// priced, and a dirty set that does not shrink for its disk part stalls
// like one of pages.
func TestDecideStorage(t *testing.T) {
	base := Policy{DowntimeTarget: 300 * time.Millisecond, MaxRounds: 30, Timeout: time.Minute}
	auto := base
	auto.AutoConverge = true
	// 100000 costly units in a second: 10µs a page, 160µs a block.
	pagesOnly := RoundStat{Pages: 100000, Duration: time.Second}
	tests := []struct {
		name         string
		h            History
		p            Policy
		want         Action
		wantExpected time.Duration
	}{
		{name: "pending blocks priced at their size", p: base, want: StopAndCopy, wantExpected: 160 * time.Millisecond,
			h: History{Rounds: []RoundStat{{Pages: 100000, Duration: time.Second, DiskDirtyAfter: 1000}}}},
		{name: "pending blocks and pages add up", p: base, want: Continue, wantExpected: 310 * time.Millisecond,
			h: History{Rounds: []RoundStat{{Pages: 100000, Duration: time.Second, DirtyAfter: 15000, DiskDirtyAfter: 1000}}}},
		{name: "a round's blocks share its time", p: base, want: StopAndCopy, wantExpected: 100 * time.Millisecond,
			// 20000 pages and 5000 blocks (80000 units) in a second:
			// 10 µs a unit; 625 blocks pending are 10000 units, 100 ms.
			h: History{Rounds: []RoundStat{{Pages: 20000, DiskBlocks: 5000, Duration: time.Second, DiskDirtyAfter: 625}}}},
		{name: "zero blocks not priced", p: base, want: StopAndCopy, wantExpected: 160 * time.Millisecond,
			h: History{Rounds: []RoundStat{{Pages: 100000, DiskBlocks: 50000, DiskZeroBlocks: 50000, Duration: time.Second, DiskDirtyAfter: 1000}}}},
		{name: "a round of zero blocks only", p: base, want: StopAndCopy, wantExpected: 16 * time.Millisecond,
			h: History{Rounds: []RoundStat{{DiskBlocks: 1000, DiskZeroBlocks: 1000, Duration: 160 * time.Millisecond, DiskDirtyAfter: 100}}}},
		{name: "nothing pending", p: base, want: StopAndCopy, wantExpected: 0,
			h: History{Rounds: []RoundStat{{Pages: 100000, DiskBlocks: 10, Duration: time.Second}}}},
		{name: "disk writes stall the dirty set", p: auto, want: Throttle, wantExpected: time.Second * 16 * 10000 / 100000,
			h: History{Rounds: []RoundStat{
				{Pages: 100000, Duration: time.Second, DiskDirtyAfter: 10000},
				{Pages: 100000, Duration: time.Second, DiskDirtyAfter: 10000},
				{Pages: 100000, Duration: time.Second, DiskDirtyAfter: 10000},
			}}},
		{name: "shrinking disk writes do not stall", p: auto, want: Continue, wantExpected: time.Second * 16 * 5000 / 100000,
			h: History{Rounds: []RoundStat{
				{Pages: 100000, Duration: time.Second, DiskDirtyAfter: 10000},
				{Pages: 100000, Duration: time.Second, DiskDirtyAfter: 8000},
				{Pages: 100000, Duration: time.Second, DiskDirtyAfter: 5000},
			}}},
		{name: "pages alone unchanged", p: base, want: StopAndCopy, wantExpected: 10 * time.Millisecond,
			h: History{Rounds: []RoundStat{pagesOnly, {Pages: 100000, Duration: time.Second, DirtyAfter: 1000}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.h, tt.p)
			if d.Action != tt.want || d.ExpectedDowntime != tt.wantExpected {
				t.Fatalf("Decide = %v (expected %v, %s), want %v (expected %v)", d.Action, d.ExpectedDowntime, d.Reason, tt.want, tt.wantExpected)
			}
		})
	}
}
