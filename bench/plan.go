package bench

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"godwit/test/guest"
)

// Side names who migrates in a run.
type Side string

// The sides a run can take.
const (
	// SideGodwit is godwit: `godwit run` migrated to `godwit receive`.
	SideGodwit Side = "godwit"
	// SideQEMU is QEMU/KVM: a QEMU migrated to an -incoming QEMU over QMP.
	SideQEMU Side = "qemu"
)

// Compression settings of a godwit variant (godwit migrate --compress).
const (
	CompressLZ4  = "lz4"
	CompressNone = "none"
)

// PeerQEMU is the only peer `godwit bench --peer` knows.
const PeerQEMU = "qemu"

// RangeStart is the guest-physical address where every point's working set
// begins: the test guest's default range start (guest.DefaultParams).
const RangeStart = 2 << 20

// MaxRangeEnd bounds the end of a working set: RAM below the 32-bit PCI
// hole, 3 GiB in godwit (vmm/memory) and in QEMU's pc machine.
const MaxRangeEnd = 3 << 30

// MinMem and MaxMem bound a point's guest memory size.
const (
	MinMem = 16 << 20
	MaxMem = 64 << 30
)

// Spec is the sweep a user asks for: every combination of the lists, each
// run Reps times by every variant.
type Spec struct {
	// MemBytes are the guest memory sizes.
	MemBytes []uint64 `json:"mem_bytes"`
	// DirtyRates are the test guest's dirty-rate limits in pages (4 KiB)
	// per second; 0 means unlimited (as fast as the vCPU runs).
	DirtyRates []uint64 `json:"dirty_rates_pages_per_sec"`
	// WorkingSets are the sizes of the range the test guest dirties, from
	// RangeStart up; 0 means all RAM from RangeStart to the end of RAM
	// below 3 GiB.
	WorkingSets []uint64 `json:"working_sets_bytes"`
	// DowntimeMs are the downtime targets in milliseconds (godwit migrate
	// --downtime-ms, QEMU's downtime-limit).
	DowntimeMs []int64 `json:"downtime_targets_ms"`
	// Compress are godwit's compression settings: CompressLZ4, CompressNone.
	Compress []string `json:"compress"`
	// Reps is the number of repetitions of every point and variant.
	Reps int `json:"reps"`
	// Peer is "" or PeerQEMU: also run every point with QEMU/KVM.
	Peer string `json:"peer,omitempty"`
}

// QuickSpec is `godwit bench --quick`: four small points, LZ4 only, one
// repetition. It is sized to finish within five minutes in the nested host
// (about ten times slower than a hardware KVM for the test guest), QEMU
// runs included.
func QuickSpec() Spec {
	return Spec{
		MemBytes:    []uint64{64 << 20, 128 << 20},
		DirtyRates:  []uint64{2000, 20000},
		WorkingSets: []uint64{8 << 20},
		DowntimeMs:  []int64{100},
		Compress:    []string{CompressLZ4},
		Reps:        1,
	}
}

// DefaultSpec is `godwit bench` without sweep flags: 36 points, both
// compression settings, three repetitions.
func DefaultSpec() Spec {
	return Spec{
		MemBytes:    []uint64{128 << 20, 256 << 20, 512 << 20},
		DirtyRates:  []uint64{1000, 10000, 100000},
		WorkingSets: []uint64{16 << 20, 64 << 20},
		DowntimeMs:  []int64{30, 300},
		Compress:    []string{CompressLZ4, CompressNone},
		Reps:        3,
	}
}

// Validate checks every value of s on its own; MakePlan checks the
// combinations.
func (s Spec) Validate() error {
	var errs []error
	if len(s.MemBytes) == 0 || len(s.DirtyRates) == 0 || len(s.WorkingSets) == 0 || len(s.DowntimeMs) == 0 || len(s.Compress) == 0 {
		errs = append(errs, errors.New("bench: every sweep list (memory, dirty rate, working set, downtime, compression) needs at least one value"))
	}
	for _, m := range s.MemBytes {
		if m < MinMem || m > MaxMem || m%guest.PageSize != 0 {
			errs = append(errs, fmt.Errorf("bench: memory size %s: want a multiple of 4 KiB from %s to %s", FormatBytes(m), FormatBytes(MinMem), FormatBytes(MaxMem)))
		}
	}
	for _, w := range s.WorkingSets {
		if w%guest.PageSize != 0 || w > MaxRangeEnd-RangeStart {
			errs = append(errs, fmt.Errorf("bench: working set %s: want a multiple of 4 KiB up to %s (or 0 for all RAM)", FormatBytes(w), FormatBytes(MaxRangeEnd-RangeStart)))
		}
	}
	for _, d := range s.DowntimeMs {
		if d <= 0 || d > 600000 {
			errs = append(errs, fmt.Errorf("bench: downtime target %d ms: want 1 to 600000", d))
		}
	}
	for _, c := range s.Compress {
		if c != CompressLZ4 && c != CompressNone {
			errs = append(errs, fmt.Errorf("bench: compression %q: want %s or %s", c, CompressLZ4, CompressNone))
		}
	}
	if s.Reps < 1 || s.Reps > 1000 {
		errs = append(errs, fmt.Errorf("bench: repetitions %d: want 1 to 1000", s.Reps))
	}
	if s.Peer != "" && s.Peer != PeerQEMU {
		errs = append(errs, fmt.Errorf("bench: peer %q: only %q is known", s.Peer, PeerQEMU))
	}
	return errors.Join(errs...)
}

// Point is one guest and policy configuration of the sweep.
type Point struct {
	// ID numbers the points from 1, in plan order.
	ID int `json:"id"`
	// MemBytes is the guest memory size.
	MemBytes uint64 `json:"mem_bytes"`
	// DirtyRate is the test guest's dirty-rate limit, pages per second;
	// 0 = unlimited.
	DirtyRate uint64 `json:"dirty_rate_pages_per_sec"`
	// WorkingSet is the size of the dirtied range, from RangeStart; never
	// 0 in a plan (Spec's 0 is resolved to the size it means).
	WorkingSet uint64 `json:"working_set_bytes"`
	// DowntimeMs is the downtime target.
	DowntimeMs int64 `json:"downtime_target_ms"`
}

// GuestParams returns the test guest's parameters for p: the range
// [RangeStart, RangeStart+WorkingSet), heartbeats on COM1 (HeartbeatEvery)
// and the dirty-rate limit. TSCKHz is left zero: godwit fills it in for
// the flat test guest, and the boot image measures it.
func (p Point) GuestParams() guest.Params {
	return guest.Params{
		RangeStart:     RangeStart,
		RangeEnd:       RangeStart + p.WorkingSet,
		HeartbeatEvery: p.HeartbeatEvery(),
		MaxPagesPerSec: p.DirtyRate,
		SerialPort:     guest.DefaultSerialPort,
	}
}

// heartbeatPages bounds the page writes between two heartbeats. A page
// write costs from about 0.1 µs (hardware KVM) to about 50 µs (the nested
// host, where the test guest runs under TCG): heartbeats then come 1.6 ms
// to 0.8 s apart.
const heartbeatPages = 16384

// HeartbeatEvery is the number of passes between two heartbeat lines: one
// pass, or as many as keep the heartbeats about a tenth of a second apart
// at the rate limit, and at most heartbeatPages page writes apart (the
// limit alone, for an unlimited rate). Every line is a few dozen port
// writes, each an exit to the VMM: printing after every tiny pass would
// make the serial port, not the rate limit, pace the guest.
func (p Point) HeartbeatEvery() uint64 {
	pages := max(p.WorkingSet/guest.PageSize, 1)
	byPages := max(1, heartbeatPages/pages)
	if p.DirtyRate == 0 {
		return byPages
	}
	// Passes per second / 10, rounded up.
	return min(byPages, max(1, (p.DirtyRate+10*pages-1)/(10*pages)))
}

// PassTime is how long one pass over the working set takes at the dirty
// rate limit (0 when unlimited); every wait for a heartbeat allows a few
// of them.
func (p Point) PassTime() time.Duration {
	if p.DirtyRate == 0 {
		return 0
	}
	pages := p.WorkingSet / guest.PageSize
	return time.Duration(float64(pages) / float64(p.DirtyRate) * float64(time.Second))
}

// Label names p for people: "mem 64M, 10K pages/s, ws 8M, target 100 ms".
func (p Point) Label() string {
	return fmt.Sprintf("mem %s, %s, ws %s, target %d ms", FormatBytes(p.MemBytes), FormatRate(p.DirtyRate), FormatBytes(p.WorkingSet), p.DowntimeMs)
}

// Variant is one way of migrating a point.
type Variant struct {
	// Name is "godwit-lz4", "godwit-none" or "qemu".
	Name string `json:"name"`
	// Side is who migrates.
	Side Side `json:"side"`
	// Compress is godwit's --compress; CompressNone for QEMU.
	Compress string `json:"compress"`
}

// Run is one planned measurement.
type Run struct {
	// Seq numbers the runs from 1 in the order they run.
	Seq int `json:"seq"`
	// Point is the Point's ID.
	Point int `json:"point"`
	// Variant is the Variant's name.
	Variant string `json:"variant"`
	// Rep numbers the repetitions from 1.
	Rep int `json:"rep"`
}

// Skip is a combination of the sweep that cannot run, and why.
type Skip struct {
	// Point is the combination (its ID is 0: it is not in the plan).
	Point Point `json:"point"`
	// Reason says why it cannot run.
	Reason string `json:"reason"`
}

// Plan is what a Spec expands to.
type Plan struct {
	// Points are the combinations that run, IDs from 1.
	Points []Point `json:"points"`
	// Variants are the ways every point is migrated.
	Variants []Variant `json:"variants"`
	// Runs are every point, variant and repetition, in run order.
	Runs []Run `json:"runs"`
	// Skipped are the combinations that cannot run.
	Skipped []Skip `json:"skipped,omitempty"`
}

// MakePlan expands s into points (every combination of memory size, dirty
// rate, working set and downtime target, in that nesting order, without
// the ones whose working set does not fit in the memory), variants (one
// godwit variant per compression setting, then QEMU with a peer) and runs.
//
// Runs go repetition by repetition over all points, and the variants of a
// point run back to back, in reverse order every other repetition: a slow
// drift of a shared machine then hits every variant and point alike.
func MakePlan(s Spec) (Plan, error) {
	if err := s.Validate(); err != nil {
		return Plan{}, err
	}
	var pl Plan
	for _, c := range dedup(s.Compress) {
		pl.Variants = append(pl.Variants, Variant{Name: string(SideGodwit) + "-" + c, Side: SideGodwit, Compress: c})
	}
	if s.Peer == PeerQEMU {
		pl.Variants = append(pl.Variants, Variant{Name: string(SideQEMU), Side: SideQEMU, Compress: CompressNone})
	}
	for _, mem := range dedup(s.MemBytes) {
		low := min(mem, uint64(MaxRangeEnd))
		for _, rate := range dedup(s.DirtyRates) {
			for _, ws := range dedup(s.WorkingSets) {
				for _, dt := range dedup(s.DowntimeMs) {
					p := Point{MemBytes: mem, DirtyRate: rate, WorkingSet: ws, DowntimeMs: dt}
					if ws == 0 {
						p.WorkingSet = low - RangeStart
					}
					if RangeStart+p.WorkingSet > low {
						pl.Skipped = append(pl.Skipped, Skip{Point: p, Reason: fmt.Sprintf(
							"working set %s from %s does not fit below the end of RAM (%s)", FormatBytes(p.WorkingSet), FormatBytes(RangeStart), FormatBytes(low))})
						continue
					}
					if p.WorkingSet < guest.PageSize {
						pl.Skipped = append(pl.Skipped, Skip{Point: p, Reason: "empty working set"})
						continue
					}
					p.ID = len(pl.Points) + 1
					pl.Points = append(pl.Points, p)
				}
			}
		}
	}
	if len(pl.Points) == 0 {
		return pl, errors.New("bench: no point of the sweep fits: every working set is larger than its memory")
	}
	for rep := 1; rep <= s.Reps; rep++ {
		for _, p := range pl.Points {
			vs := slices.Clone(pl.Variants)
			if rep%2 == 0 {
				slices.Reverse(vs)
			}
			for _, v := range vs {
				pl.Runs = append(pl.Runs, Run{Seq: len(pl.Runs) + 1, Point: p.ID, Variant: v.Name, Rep: rep})
			}
		}
	}
	return pl, nil
}

// PointByID returns the point with the given ID.
func (pl Plan) PointByID(id int) (Point, bool) {
	for _, p := range pl.Points {
		if p.ID == id {
			return p, true
		}
	}
	return Point{}, false
}

// VariantByName returns the variant with the given name.
func (pl Plan) VariantByName(name string) (Variant, bool) {
	for _, v := range pl.Variants {
		if v.Name == name {
			return v, true
		}
	}
	return Variant{}, false
}

// dedup returns xs without repeated values, in first-seen order.
func dedup[T comparable](xs []T) []T {
	var out []T
	for _, x := range xs {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// FormatBytes writes a size with a binary suffix when it divides evenly:
// "64M", "1G", "8K", else bytes ("1000").
func FormatBytes(n uint64) string {
	for _, u := range []struct {
		shift  uint
		suffix string
	}{{30, "G"}, {20, "M"}, {10, "K"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", n>>u.shift, u.suffix)
		}
	}
	return fmt.Sprint(n)
}

// FormatRate writes a dirty rate: "unlimited", "10K pages/s", "1500 pages/s".
func FormatRate(r uint64) string {
	if r == 0 {
		return "unlimited"
	}
	return RateValue(r) + " pages/s"
}

// RateValue writes a dirty rate without its unit: "unlimited", "10K",
// "2.5M", "1500".
func RateValue(r uint64) string {
	switch {
	case r == 0:
		return "unlimited"
	case r >= 1000000 && r%100000 == 0:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(r)/1e6), ".0") + "M"
	case r >= 1000 && r%100 == 0:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(r)/1e3), ".0") + "K"
	}
	return fmt.Sprint(r)
}
