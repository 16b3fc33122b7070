package bench

import (
	"encoding/json"
	"math"
	"slices"
	"time"

	"godwit/bench/host"
	"godwit/migrate"
)

// Schema identifies the layout of results.json.
const Schema = "godwit-bench/1"

// Run statuses.
const (
	StatusOK     = "ok"
	StatusFailed = "failed"
)

// Result is what one run measured. The common fields mean the same on both
// sides as far as the two migrators allow (docs/benchmarks.md): durations
// are milliseconds, each measured on one clock.
type Result struct {
	Run
	// Status is StatusOK or StatusFailed.
	Status string `json:"status"`
	// Error says why a run failed.
	Error string `json:"error,omitempty"`
	// Start is when the run began (booting the source), wall clock.
	Start time.Time `json:"start"`
	// DowntimeMs is the migrator's own downtime: godwit's downtime_ms
	// (source clock, Pause to RESUMED read, docs/trace.md); QEMU's
	// query-migrate downtime (source clock, VM stopped to the last byte
	// sent).
	DowntimeMs float64 `json:"downtime_ms"`
	// TotalMs is the migrator's total time: godwit's total_ms, QEMU's
	// total-time.
	TotalMs float64 `json:"total_ms"`
	// SetupMs is godwit's setup_ms, QEMU's setup-time.
	SetupMs float64 `json:"setup_ms"`
	// TransferredBytes is godwit's transferred_bytes (every byte on the
	// connection), QEMU's ram.transferred.
	TransferredBytes uint64 `json:"transferred_bytes"`
	// Rounds is godwit's memory rounds (full copy and paused round
	// included), QEMU's ram.dirty-sync-count.
	Rounds int `json:"rounds"`
	// DirtyPagesRate is the dirty rate the migrator measured, pages/s.
	DirtyPagesRate float64 `json:"dirty_pages_rate"`
	// WallMs is the bench's own measurement, on its monotonic clock: from
	// asking the migrator to start to seeing it completed.
	WallMs float64 `json:"wall_ms"`
	// Godwit is godwit's final statistics (GET /migrate), with the
	// downtime breakdown.
	Godwit *migrate.Stats `json:"godwit,omitempty"`
	// RoundTrace is godwit's per-round records of the migration
	// (migrate.RoundRecord, docs/trace.md).
	RoundTrace []migrate.RoundRecord `json:"round_trace,omitempty"`
	// QEMU is QEMU's query-migrate answer, verbatim.
	QEMU json.RawMessage `json:"qemu,omitempty"`
}

// Options are the settings of a bench run that are not part of the sweep.
type Options struct {
	// Guest is the guest godwit runs: "test" (the flat embedded test
	// guest) or "boot-sector" (the same program in the boot image that
	// QEMU runs).
	Guest string `json:"guest"`
	// To is the remote receiver, or "" for loopback.
	To string `json:"to,omitempty"`
	// Channel is the migration channel: "plain", "psk" or "tls".
	Channel string `json:"channel"`
	// QEMU is the peer's binary.
	QEMU string `json:"qemu,omitempty"`
	// QEMUVersion is the first line of its -version.
	QEMUVersion string `json:"qemu_version,omitempty"`
	// QEMUCPU is its -cpu.
	QEMUCPU string `json:"qemu_cpu,omitempty"`
	// QEMUMachine is its -machine.
	QEMUMachine string `json:"qemu_machine,omitempty"`
	// QEMUCapabilities are the migration capabilities the bench turned
	// on in the source QEMU before each migration.
	QEMUCapabilities []string `json:"qemu_capabilities,omitempty"`
	// QEMUParameters are the migrate-set-parameters arguments besides
	// downtime-limit, which is the point's target.
	QEMUParameters map[string]any `json:"qemu_parameters,omitempty"`
}

// Report is everything a bench run records: results.json.
type Report struct {
	// Schema is Schema.
	Schema string `json:"schema"`
	// GodwitVersion is the godwit build that ran (git describe or build
	// information).
	GodwitVersion string `json:"godwit_version"`
	// Machine describes the host.
	Machine host.Machine `json:"machine"`
	// Started is when the bench run began, wall clock.
	Started time.Time `json:"started"`
	// Finished is when its last run ended, wall clock.
	Finished time.Time `json:"finished"`
	// Options are the bench's settings besides the sweep.
	Options Options `json:"options"`
	// Spec is the sweep asked for.
	Spec Spec `json:"spec"`
	// Points are the plan's points.
	Points []Point `json:"points"`
	// Variants are the plan's variants.
	Variants []Variant `json:"variants"`
	// Skipped are the combinations of the sweep that could not run.
	Skipped []Skip `json:"skipped,omitempty"`
	// Results holds every run, in run order.
	Results []Result `json:"results"`
	// Summary is computed from Results by Summarize.
	Summary []Summary `json:"summary"`
	// Ratios are computed from Results by Summarize, with a peer.
	Ratios []Ratio `json:"ratios,omitempty"`
}

// Point returns the report's point with the given ID.
func (r *Report) Point(id int) (Point, bool) {
	return Plan{Points: r.Points}.PointByID(id)
}

// Dist is the distribution of one quantity over a point's successful runs.
type Dist struct {
	// N counts the values.
	N int `json:"n"`
	// Min is the smallest value.
	Min float64 `json:"min"`
	// Median is the middle value (the mean of the middle two for an even N).
	Median float64 `json:"median"`
	// P90 is the 90th percentile, nearest rank.
	P90 float64 `json:"p90"`
	// Max is the largest value.
	Max float64 `json:"max"`
	// Mean is the arithmetic mean.
	Mean float64 `json:"mean"`
}

// Summary sums up one point and variant.
type Summary struct {
	// Point is the point's ID.
	Point int `json:"point"`
	// Variant is the variant's name.
	Variant string `json:"variant"`
	// Runs counts the runs.
	Runs int `json:"runs"`
	// Failed counts the failed runs, which the distributions leave out.
	Failed int `json:"failed"`
	// DowntimeMs is the downtime over the successful runs.
	DowntimeMs Dist `json:"downtime_ms"`
	// TotalMs is the total time over the successful runs.
	TotalMs Dist `json:"total_ms"`
	// TransferredBytes is the bytes sent over the successful runs.
	TransferredBytes Dist `json:"transferred_bytes"`
	// Rounds is the rounds over the successful runs.
	Rounds Dist `json:"rounds"`
}

// Ratio compares a godwit variant with the peer at one point: the ratio
// of the medians, godwit over peer (below 1: godwit is lower). A ratio is
// absent when either side has no successful run or the peer's median is 0.
type Ratio struct {
	// Point is the point's ID.
	Point int `json:"point"`
	// Variant is the godwit variant.
	Variant string `json:"variant"`
	// Peer is the peer variant ("qemu").
	Peer string `json:"peer"`
	// Downtime is the ratio of the median downtimes.
	Downtime *float64 `json:"downtime,omitempty"`
	// Total is the ratio of the median total times.
	Total *float64 `json:"total,omitempty"`
	// Bytes is the ratio of the median bytes sent.
	Bytes *float64 `json:"bytes,omitempty"`
}

// Distribution computes the Dist of xs (nearest-rank percentiles; the
// median of an even count is the mean of the middle two).
func Distribution(xs []float64) Dist {
	if len(xs) == 0 {
		return Dist{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	d := Dist{N: len(s), Min: s[0], Max: s[len(s)-1]}
	if len(s)%2 == 1 {
		d.Median = s[len(s)/2]
	} else {
		d.Median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	d.P90 = s[int(math.Ceil(0.9*float64(len(s))))-1]
	var sum float64
	for _, x := range s {
		sum += x
	}
	d.Mean = sum / float64(len(s))
	return d
}

// Summarize computes the summary of every point and variant of r (in
// point, then variant order) and, when r has a QEMU variant, the ratio of
// every godwit variant to it at every point.
func Summarize(r *Report) ([]Summary, []Ratio) {
	var sums []Summary
	byKey := map[summaryKey]*Summary{}
	for _, p := range r.Points {
		for _, v := range r.Variants {
			var down, total, bytes, rounds []float64
			s := Summary{Point: p.ID, Variant: v.Name}
			for _, res := range r.Results {
				if res.Point != p.ID || res.Variant != v.Name {
					continue
				}
				s.Runs++
				if res.Status != StatusOK {
					s.Failed++
					continue
				}
				down = append(down, res.DowntimeMs)
				total = append(total, res.TotalMs)
				bytes = append(bytes, float64(res.TransferredBytes))
				rounds = append(rounds, float64(res.Rounds))
			}
			if s.Runs == 0 {
				continue
			}
			s.DowntimeMs, s.TotalMs = Distribution(down), Distribution(total)
			s.TransferredBytes, s.Rounds = Distribution(bytes), Distribution(rounds)
			sums = append(sums, s)
		}
	}
	for i := range sums {
		byKey[summaryKey{sums[i].Point, sums[i].Variant}] = &sums[i]
	}
	var ratios []Ratio
	for _, peer := range r.Variants {
		if peer.Side != SideQEMU {
			continue
		}
		for _, p := range r.Points {
			ps := byKey[summaryKey{p.ID, peer.Name}]
			for _, v := range r.Variants {
				if v.Side != SideGodwit {
					continue
				}
				gs := byKey[summaryKey{p.ID, v.Name}]
				if gs == nil || ps == nil {
					continue
				}
				ratios = append(ratios, Ratio{Point: p.ID, Variant: v.Name, Peer: peer.Name,
					Downtime: ratio(gs.DowntimeMs, ps.DowntimeMs),
					Total:    ratio(gs.TotalMs, ps.TotalMs),
					Bytes:    ratio(gs.TransferredBytes, ps.TransferredBytes)})
			}
		}
	}
	return sums, ratios
}

// ratio is a.Median / b.Median, or nil when either is empty or b's is 0.
func ratio(a, b Dist) *float64 {
	if a.N == 0 || b.N == 0 || b.Median == 0 {
		return nil
	}
	x := a.Median / b.Median
	return &x
}

// summaryKey finds a Summary by point and variant.
type summaryKey struct {
	point   int
	variant string
}
