package bench

import (
	"strings"
	"testing"
	"time"

	"godwit/test/guest"
)

func TestMakePlanExpandsAndOrders(t *testing.T) {
	s := Spec{
		MemBytes:    []uint64{64 << 20, 128 << 20, 64 << 20}, // a duplicate is dropped
		DirtyRates:  []uint64{1000, 0},
		WorkingSets: []uint64{8 << 20, 96 << 20},
		DowntimeMs:  []int64{100},
		Compress:    []string{CompressLZ4, CompressNone},
		Reps:        2,
		Peer:        PeerQEMU,
	}
	pl, err := MakePlan(s)
	if err != nil {
		t.Fatal(err)
	}
	// 96M does not fit in 64M: 2 skipped, 2*2*2 - 2 = 6 points.
	if len(pl.Points) != 6 || len(pl.Skipped) != 2 {
		t.Fatalf("%d points, %d skipped; want 6 and 2: %+v", len(pl.Points), len(pl.Skipped), pl)
	}
	for _, sk := range pl.Skipped {
		if sk.Point.MemBytes != 64<<20 || sk.Point.WorkingSet != 96<<20 || !strings.Contains(sk.Reason, "does not fit") {
			t.Errorf("unexpected skip %+v", sk)
		}
	}
	want := []Point{
		{1, 64 << 20, 1000, 8 << 20, 100},
		{2, 64 << 20, 0, 8 << 20, 100},
		{3, 128 << 20, 1000, 8 << 20, 100},
		{4, 128 << 20, 1000, 96 << 20, 100},
		{5, 128 << 20, 0, 8 << 20, 100},
		{6, 128 << 20, 0, 96 << 20, 100},
	}
	for i, p := range pl.Points {
		if p != want[i] {
			t.Errorf("point %d = %+v, want %+v", i, p, want[i])
		}
	}
	names := []string{}
	for _, v := range pl.Variants {
		names = append(names, v.Name)
	}
	if strings.Join(names, ",") != "godwit-lz4,godwit-none,qemu" {
		t.Fatalf("variants %v", names)
	}
	if q, _ := pl.VariantByName("qemu"); q.Side != SideQEMU || q.Compress != CompressNone {
		t.Errorf("qemu variant %+v", q)
	}
	if len(pl.Runs) != 6*3*2 {
		t.Fatalf("%d runs, want 36", len(pl.Runs))
	}
	// Repetition-major; variants of a point back to back, reversed on even
	// repetitions; Seq counts from 1.
	for i, r := range pl.Runs {
		if r.Seq != i+1 {
			t.Fatalf("run %d has Seq %d", i, r.Seq)
		}
		rep, rest := i/18+1, i%18
		point, vi := rest/3+1, rest%3
		if rep%2 == 0 {
			vi = 2 - vi
		}
		if r.Rep != rep || r.Point != point || r.Variant != names[vi] {
			t.Fatalf("run %d = %+v, want rep %d point %d variant %s", i, r, rep, point, names[vi])
		}
	}
}

func TestMakePlanWorkingSetAll(t *testing.T) {
	pl, err := MakePlan(Spec{MemBytes: []uint64{64 << 20, 4 << 30}, DirtyRates: []uint64{0}, WorkingSets: []uint64{0},
		DowntimeMs: []int64{300}, Compress: []string{CompressLZ4}, Reps: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := pl.Points[0].WorkingSet; got != 62<<20 {
		t.Errorf("all of 64M = %d, want 62 MiB", got)
	}
	// Above 3 GiB, RAM continues at 4 GiB: the range stops at the hole.
	if got := pl.Points[1].WorkingSet; got != MaxRangeEnd-RangeStart {
		t.Errorf("all of 4G = %d, want %d", got, uint64(MaxRangeEnd-RangeStart))
	}
	if len(pl.Variants) != 1 || len(pl.Runs) != 2 {
		t.Errorf("variants %v runs %v", pl.Variants, pl.Runs)
	}
}

func TestSpecValidate(t *testing.T) {
	good := QuickSpec()
	if err := good.Validate(); err != nil {
		t.Fatalf("QuickSpec: %v", err)
	}
	if err := DefaultSpec().Validate(); err != nil {
		t.Fatalf("DefaultSpec: %v", err)
	}
	bad := []func(*Spec){
		func(s *Spec) { s.MemBytes = nil },
		func(s *Spec) { s.MemBytes = []uint64{1 << 20} },
		func(s *Spec) { s.MemBytes = []uint64{64<<20 + 1} },
		func(s *Spec) { s.WorkingSets = []uint64{4097} },
		func(s *Spec) { s.WorkingSets = []uint64{4 << 30} },
		func(s *Spec) { s.DowntimeMs = []int64{0} },
		func(s *Spec) { s.Compress = []string{"zstd"} },
		func(s *Spec) { s.Reps = 0 },
		func(s *Spec) { s.Peer = "xen" },
	}
	for i, f := range bad {
		s := QuickSpec()
		f(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("case %d: %+v accepted", i, s)
		}
		if _, err := MakePlan(s); err == nil {
			t.Errorf("case %d: MakePlan accepted %+v", i, s)
		}
	}
	// Every working set too large for every memory size: no plan.
	s := QuickSpec()
	s.WorkingSets = []uint64{1 << 30}
	if _, err := MakePlan(s); err == nil {
		t.Error("a plan without a fitting point was made")
	}
}

// TestQuickIsSmall keeps --quick quick: a handful of points, one
// repetition, and passes short enough for the nested host.
func TestQuickIsSmall(t *testing.T) {
	s := QuickSpec()
	s.Peer = PeerQEMU
	pl, err := MakePlan(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.Points) > 6 || s.Reps > 2 || len(pl.Runs) > 12 {
		t.Errorf("--quick plans %d points, %d reps, %d runs", len(pl.Points), s.Reps, len(pl.Runs))
	}
	for _, p := range pl.Points {
		if p.MemBytes > 256<<20 || p.PassTime() > 2*time.Second {
			t.Errorf("--quick point %s is not small (a pass every %v)", p.Label(), p.PassTime())
		}
	}
}

func TestPointGuestParams(t *testing.T) {
	p := Point{ID: 1, MemBytes: 128 << 20, DirtyRate: 5000, WorkingSet: 16 << 20, DowntimeMs: 30}
	gp := p.GuestParams()
	want := guest.Params{RangeStart: 2 << 20, RangeEnd: 18 << 20, HeartbeatEvery: 1, MaxPagesPerSec: 5000, SerialPort: guest.DefaultSerialPort}
	if gp != want {
		t.Fatalf("GuestParams = %+v, want %+v", gp, want)
	}
	gp.TSCKHz = 1
	if err := gp.Validate(p.MemBytes); err != nil {
		t.Fatal(err)
	}
	if got := p.PassTime(); got != time.Duration(4096)*time.Second/5000 {
		t.Errorf("PassTime = %v", got)
	}
	if got := (Point{WorkingSet: 8 << 20}).PassTime(); got != 0 {
		t.Errorf("unlimited PassTime = %v", got)
	}
	for _, tt := range []struct {
		p    Point
		want uint64
	}{
		{Point{DirtyRate: 5000, WorkingSet: 16 << 20}, 1},       // 1.2 passes/s
		{Point{DirtyRate: 20000, WorkingSet: 8 << 20}, 1},       // 9.8 passes/s
		{Point{DirtyRate: 100000, WorkingSet: 8 << 20}, 5},      // 49 passes/s
		{Point{DirtyRate: 1000000, WorkingSet: 4 << 10}, 16384}, // a million passes/s: the page bound
		{Point{WorkingSet: 8 << 20}, 8},                         // unlimited: 16384 page writes
		{Point{WorkingSet: 3 << 30}, 1},
	} {
		if got := tt.p.HeartbeatEvery(); got != tt.want {
			t.Errorf("HeartbeatEvery(%+v) = %d, want %d", tt.p, got, tt.want)
		}
	}
	if got := p.Label(); got != "mem 128M, 5K pages/s, ws 16M, target 30 ms" {
		t.Errorf("Label = %q", got)
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[uint64]string{64 << 20: "64M", 1 << 30: "1G", 8 << 10: "8K", 1000: "1000", 1536 << 10: "1536K", 0: "0"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for r, want := range map[uint64]string{0: "unlimited", 1000: "1K", 2500: "2.5K", 1500000: "1.5M", 1234: "1234", 100000: "100K", 3000000: "3M"} {
		if got := RateValue(r); got != want {
			t.Errorf("RateValue(%d) = %q, want %q", r, got, want)
		}
	}
	if FormatRate(0) != "unlimited" || FormatRate(10000) != "10K pages/s" {
		t.Errorf("FormatRate: %q %q", FormatRate(0), FormatRate(10000))
	}
}
