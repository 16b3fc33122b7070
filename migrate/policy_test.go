package migrate

import (
	"strings"
	"testing"
	"time"
)

// rs builds a round of 100000 costly pages in one second: 10µs a page.
func rs(dirtyAfter uint64, throttle int) RoundStat {
	return RoundStat{Pages: 100000, Bytes: 100e6, Duration: time.Second, DirtyAfter: dirtyAfter, ThrottlePct: throttle}
}

func TestDecide(t *testing.T) {
	base := Policy{DowntimeTarget: 300 * time.Millisecond, MaxRounds: 30, Timeout: time.Minute}
	auto := base
	auto.AutoConverge = true
	noTimeout := base
	noTimeout.Timeout = 0
	switchover := base
	switchover.SwitchoverCost = 50 * time.Millisecond
	tests := []struct {
		name         string
		h            History
		p            Policy
		want         Action
		wantThrottle int
		wantExpected time.Duration
		wantReason   string
	}{
		{name: "no rounds yet", h: History{}, p: base, want: Continue},
		{name: "converged", h: History{Rounds: []RoundStat{rs(1000, 0)}}, p: base,
			want: StopAndCopy, wantExpected: 10 * time.Millisecond, wantReason: "converged"},
		{name: "nothing dirty", h: History{Rounds: []RoundStat{rs(0, 0)}}, p: base, want: StopAndCopy, wantExpected: 0},
		{name: "nothing dirty: switchover cost alone", h: History{Rounds: []RoundStat{rs(0, 0)}}, p: switchover,
			want: StopAndCopy, wantExpected: 50 * time.Millisecond},
		{name: "switchover cost added", h: History{Rounds: []RoundStat{rs(1000, 0)}}, p: switchover,
			want: StopAndCopy, wantExpected: 60 * time.Millisecond},
		{name: "switchover cost tips over the target", h: History{Rounds: []RoundStat{rs(26000, 0)}}, p: switchover,
			want: Continue, wantExpected: 310 * time.Millisecond},
		{name: "exactly at target", h: History{Rounds: []RoundStat{{Pages: 10, Bytes: 4096 * 10, Duration: time.Second, DirtyAfter: 3}}},
			p: base, want: StopAndCopy, wantExpected: 300 * time.Millisecond},
		{name: "above target", h: History{Rounds: []RoundStat{rs(100000, 0)}}, p: base,
			want: Continue, wantExpected: time.Second},
		{name: "zero pages are not priced", h: History{Rounds: []RoundStat{
			{Pages: 65536, ZeroPages: 65536 - 1000, Duration: 100 * time.Millisecond, DirtyAfter: 500}}},
			p: base, want: StopAndCopy, wantExpected: 50 * time.Millisecond},
		{name: "a round of zero pages only", h: History{Rounds: []RoundStat{
			{Pages: 2000, ZeroPages: 2000, Duration: 20 * time.Millisecond, DirtyAfter: 100}}},
			p: base, want: StopAndCopy, wantExpected: time.Millisecond},
		{name: "sample spans rounds until minRateSample pages", h: History{Rounds: []RoundStat{
			{Pages: 10000, Duration: 100 * time.Millisecond},
			{Pages: 23, Duration: 9 * time.Millisecond},
			{Pages: 1000, Duration: 1 * time.Millisecond, DirtyAfter: 1024}}},
			p: base, want: StopAndCopy, wantExpected: 1024 * 110 * time.Millisecond / 11023},
		{name: "tiny round alone overstates", h: History{Rounds: []RoundStat{
			{Pages: 10, Duration: 10 * time.Millisecond, DirtyAfter: 1000}}},
			p: base, want: Continue, wantExpected: time.Second},
		{name: "cost from the last rounds that sent", h: History{Rounds: []RoundStat{rs(100000, 0), {DirtyAfter: 1000}}},
			p: base, want: StopAndCopy, wantExpected: 10 * time.Millisecond},
		{name: "nothing measured yet", h: History{Rounds: []RoundStat{{DirtyAfter: 5}}}, p: base, want: Continue},
		{name: "timeout", h: History{Rounds: []RoundStat{rs(100000, 0)}, Elapsed: time.Minute}, p: base,
			want: Fail, wantReason: "timeout"},
		{name: "converged at timeout still stops", h: History{Rounds: []RoundStat{rs(10, 0)}, Elapsed: 2 * time.Minute}, p: base,
			want: StopAndCopy},
		{name: "no timeout set", h: History{Rounds: []RoundStat{rs(100000, 0)}, Elapsed: time.Hour}, p: noTimeout, want: Continue},
		{name: "round limit with a timeout: keep iterating", h: History{Rounds: repeat(rs(100000, 0), 30), Elapsed: 30 * time.Second}, p: base,
			want: Continue},
		{name: "round limit, then the timeout: fail", h: History{Rounds: repeat(rs(4000000, 0), 40), Elapsed: time.Minute},
			p: base, want: Fail, wantReason: "timeout"},
		{name: "round limit without timeout", h: History{Rounds: repeat(rs(4000000, 0), 30)}, p: noTimeout, want: StopAndCopy, wantReason: "round limit"},
		{name: "stalled without auto-converge", h: History{Rounds: repeat(rs(100000, 0), 3)}, p: base, want: Continue},
		{name: "stalled: first throttle", h: History{Rounds: repeat(rs(100000, 0), 3)}, p: auto,
			want: Throttle, wantThrottle: ThrottleInitial, wantReason: "not shrinking"},
		{name: "stalled with a small drop", h: History{Rounds: []RoundStat{rs(100000, 0), rs(99000, 0), rs(98000, 0)}}, p: auto,
			want: Throttle, wantThrottle: 20},
		{name: "shrinking", h: History{Rounds: []RoundStat{rs(100000, 0), rs(90000, 0), rs(80000, 0)}}, p: auto, want: Continue},
		{name: "growing", h: History{Rounds: []RoundStat{rs(100000, 0), rs(110000, 0), rs(120000, 0)}}, p: auto,
			want: Throttle, wantThrottle: 20},
		{name: "only two rounds", h: History{Rounds: repeat(rs(100000, 0), 2)}, p: auto, want: Continue},
		{name: "one stalled round since throttling is enough", h: History{ThrottlePct: 20,
			Rounds: []RoundStat{rs(100000, 0), rs(100000, 0), rs(100000, 0), rs(100000, 20)}}, p: auto, want: Throttle, wantThrottle: 60},
		{name: "throttled round shrank: keep the throttle", h: History{ThrottlePct: 20,
			Rounds: []RoundStat{rs(100000, 0), rs(100000, 0), rs(100000, 0), rs(80000, 20)}}, p: auto, want: Continue},
		{name: "stalled at 20: halve the guest's share to 60", h: History{ThrottlePct: 20,
			Rounds: []RoundStat{rs(100000, 0), rs(100000, 20), rs(100000, 20)}}, p: auto, want: Throttle, wantThrottle: 60},
		{name: "stalled at 60: step to 80", h: History{ThrottlePct: 60,
			Rounds: []RoundStat{rs(100000, 20), rs(100000, 60)}}, p: auto, want: Throttle, wantThrottle: 80},
		{name: "stalled at 90: capped at 99", h: History{ThrottlePct: 90,
			Rounds: []RoundStat{rs(100000, 90), rs(100000, 90), rs(100000, 90)}}, p: auto, want: Throttle, wantThrottle: 99},
		{name: "stalled at 99: keep going", h: History{ThrottlePct: 99,
			Rounds: []RoundStat{rs(100000, 99), rs(100000, 99), rs(100000, 99)}}, p: auto, want: Continue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.h, tt.p)
			if d.Action != tt.want {
				t.Fatalf("action %v (%s), want %v", d.Action, d.Reason, tt.want)
			}
			if tt.want == Throttle && d.ThrottlePct != tt.wantThrottle {
				t.Fatalf("throttle %d, want %d", d.ThrottlePct, tt.wantThrottle)
			}
			if tt.wantExpected != 0 || tt.name == "nothing dirty" {
				if diff := d.ExpectedDowntime - tt.wantExpected; diff > time.Microsecond || diff < -time.Microsecond {
					t.Fatalf("expected downtime %v, want %v", d.ExpectedDowntime, tt.wantExpected)
				}
			}
			if !strings.Contains(d.Reason, tt.wantReason) {
				t.Fatalf("reason %q, want it to mention %q", d.Reason, tt.wantReason)
			}
			if d.Reason == "" {
				t.Fatal("decision without a reason")
			}
		})
	}
}

func repeat(r RoundStat, n int) []RoundStat {
	out := make([]RoundStat, n)
	for i := range out {
		out[i] = r
		out[i].Round = i
	}
	return out
}

func TestActionString(t *testing.T) {
	tests := []struct {
		a    Action
		want string
	}{{Continue, "continue"}, {StopAndCopy, "stop-and-copy"}, {Throttle, "throttle"}, {Fail, "fail"}, {Action(9), "action(9)"}}
	for _, tt := range tests {
		if got := tt.a.String(); got != tt.want {
			t.Errorf("%d: %q, want %q", int(tt.a), got, tt.want)
		}
	}
}

func TestDecideRefine(t *testing.T) {
	refine := Policy{DowntimeTarget: 300 * time.Millisecond, MaxRounds: 30, Timeout: time.Minute, RefineFloor: 2 * time.Millisecond}
	oneRound := refine
	oneRound.MaxRounds = 1
	switchover := refine
	switchover.SwitchoverCost = 50 * time.Millisecond
	tests := []struct {
		name string
		h    History
		p    Policy
		want Action
	}{
		{name: "after round 0: 1000 pages left, a 10 ms round leaves about 10", h: History{Rounds: []RoundStat{rs(1000, 0)}}, p: refine, want: Continue},
		{name: "pages part under the floor", h: History{Rounds: []RoundStat{rs(100, 0)}}, p: refine, want: StopAndCopy},
		{name: "switchover cost counts as the round's fixed cost", h: History{Rounds: []RoundStat{rs(1000, 0)}}, p: switchover, want: Continue},
		{name: "the guest would dirty most of them again", h: History{Rounds: []RoundStat{rs(100000, 0),
			{Pages: 2000, Duration: 20 * time.Millisecond, DirtyAfter: 1500}}}, p: refine, want: StopAndCopy},
		{name: "the last refinement did not shrink the pages by a quarter", h: History{Rounds: []RoundStat{rs(1000, 0), rs(900, 0)}}, p: refine, want: StopAndCopy},
		{name: "the last refinement shrank them by a quarter", h: History{Rounds: []RoundStat{rs(1000, 0), rs(700, 0)}}, p: refine, want: Continue},
		{name: "round limit reached", h: History{Rounds: []RoundStat{rs(1000, 0)}}, p: oneRound, want: StopAndCopy},
		{name: "half the timeout passed", h: History{Rounds: []RoundStat{rs(1000, 0)}, Elapsed: 30 * time.Second}, p: refine, want: StopAndCopy},
		{name: "not converged: the usual rules", h: History{Rounds: []RoundStat{rs(100000, 0)}}, p: refine, want: Continue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.h, tt.p)
			if d.Action != tt.want {
				t.Fatalf("action %v (%s), want %v", d.Action, d.Reason, tt.want)
			}
			if d.Reason == "" {
				t.Fatal("decision without a reason")
			}
		})
	}
}
