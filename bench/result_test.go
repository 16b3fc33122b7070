package bench

import (
	"encoding/json"
	"math"
	"testing"
)

func TestDistribution(t *testing.T) {
	d := Distribution([]float64{5, 1, 4, 2, 3})
	if d != (Dist{N: 5, Min: 1, Median: 3, P90: 5, Max: 5, Mean: 3}) {
		t.Errorf("odd: %+v", d)
	}
	d = Distribution([]float64{10, 2, 4, 8})
	if d.Median != 6 || d.P90 != 10 || d.Min != 2 || d.Max != 10 || d.Mean != 6 {
		t.Errorf("even: %+v", d)
	}
	ten := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if d := Distribution(ten); d.P90 != 9 {
		t.Errorf("p90 of 1..10 = %v, want 9 (nearest rank)", d.P90)
	}
	if d := Distribution(nil); d != (Dist{}) {
		t.Errorf("empty: %+v", d)
	}
}

// sampleReport has two points, godwit and QEMU, and a failed run.
func sampleReport() *Report {
	pl, err := MakePlan(Spec{MemBytes: []uint64{64 << 20}, DirtyRates: []uint64{1000, 10000}, WorkingSets: []uint64{8 << 20},
		DowntimeMs: []int64{100}, Compress: []string{CompressLZ4}, Reps: 3, Peer: PeerQEMU})
	if err != nil {
		panic(err)
	}
	r := &Report{Schema: Schema, Points: pl.Points, Variants: pl.Variants}
	vals := map[string][]float64{"godwit-lz4": {4, 2, 3}, "qemu": {10, 20, 30}}
	for _, run := range pl.Runs {
		res := Result{Run: run, Status: StatusOK}
		x := vals[run.Variant][run.Rep-1] * float64(run.Point)
		res.DowntimeMs, res.TotalMs, res.TransferredBytes, res.Rounds = x, 10*x, uint64(1000*x), run.Rep
		if run.Point == 2 && run.Variant == "qemu" && run.Rep == 3 {
			res = Result{Run: run, Status: StatusFailed, Error: "boom"}
		}
		r.Results = append(r.Results, res)
	}
	return r
}

func TestSummarize(t *testing.T) {
	r := sampleReport()
	sums, ratios := Summarize(r)
	if len(sums) != 4 {
		t.Fatalf("%d summaries, want 4: %+v", len(sums), sums)
	}
	g1, q1, q2 := sums[0], sums[1], sums[3]
	if g1.Point != 1 || g1.Variant != "godwit-lz4" || g1.Runs != 3 || g1.Failed != 0 || g1.DowntimeMs.Median != 3 || g1.TotalMs.Median != 30 {
		t.Errorf("godwit point 1: %+v", g1)
	}
	if q1.Variant != "qemu" || q1.DowntimeMs.Median != 20 || q1.TransferredBytes.Median != 20000 || q1.Rounds.Median != 2 {
		t.Errorf("qemu point 1: %+v", q1)
	}
	if q2.Runs != 3 || q2.Failed != 1 || q2.DowntimeMs.N != 2 || q2.DowntimeMs.Median != 30 {
		t.Errorf("qemu point 2 with a failure: %+v", q2)
	}
	if len(ratios) != 2 {
		t.Fatalf("ratios %+v", ratios)
	}
	if ra := ratios[0]; ra.Point != 1 || ra.Variant != "godwit-lz4" || ra.Peer != "qemu" ||
		math.Abs(*ra.Downtime-0.15) > 1e-12 || math.Abs(*ra.Total-0.15) > 1e-12 || math.Abs(*ra.Bytes-0.15) > 1e-12 {
		t.Errorf("ratio at point 1: %+v", ra)
	}
	// Point 2: godwit median 6, QEMU median of 20 and 40 is 30.
	if ra := ratios[1]; math.Abs(*ra.Downtime-0.2) > 1e-12 {
		t.Errorf("ratio at point 2: %v", *ra.Downtime)
	}
	// No peer: no ratios. A zero median on the peer side: no ratio.
	r.Variants = r.Variants[:1]
	if _, ratios := Summarize(r); len(ratios) != 0 {
		t.Errorf("ratios without a peer: %+v", ratios)
	}
	if ratio(Dist{N: 1, Median: 3}, Dist{N: 1, Median: 0}) != nil || ratio(Dist{}, Dist{N: 1, Median: 1}) != nil {
		t.Error("ratio over a zero or empty median")
	}
	// The report encodes (no NaN or Inf sneaks into JSON).
	r.Summary, r.Ratios = Summarize(sampleReport())
	if _, err := json.Marshal(r); err != nil {
		t.Fatal(err)
	}
}
