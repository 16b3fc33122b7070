package figures

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"godwit/bench"
	"godwit/migrate"
)

// report returns a report of a sweep with every run's downtime set from
// its point, round traces on godwit runs, and the summary.
func report(t *testing.T, s bench.Spec, fail bool) *bench.Report {
	t.Helper()
	pl, err := bench.MakePlan(s)
	if err != nil {
		t.Fatal(err)
	}
	r := &bench.Report{Schema: bench.Schema, Points: pl.Points, Variants: pl.Variants, Spec: s}
	for _, run := range pl.Runs {
		res := bench.Result{Run: run, Status: bench.StatusOK,
			DowntimeMs: float64(run.Point) + float64(run.Rep)/4, TotalMs: 100 * float64(run.Point), TransferredBytes: 1 << 20, Rounds: 3}
		if run.Variant == "qemu" {
			res.DowntimeMs *= 3
		} else {
			for i := 0; i <= run.Point; i++ {
				res.RoundTrace = append(res.RoundTrace, migrate.RoundRecord{Round: i, Paused: i == run.Point, Bytes: uint64(4<<20) >> i})
			}
		}
		if fail {
			res = bench.Result{Run: run, Status: bench.StatusFailed, Error: "no"}
		}
		r.Results = append(r.Results, res)
	}
	r.Summary, r.Ratios = bench.Summarize(r)
	return r
}

// checkFiles checks that every figure exists in every format, is not
// empty, that the PNGs decode and the SVGs are SVG.
func checkFiles(t *testing.T, dir string, paths []string) {
	t.Helper()
	if len(paths) != len(Names)*len(Formats) {
		t.Fatalf("wrote %d files, want %d: %v", len(paths), len(Names)*len(Formats), paths)
	}
	for _, n := range Names {
		for _, ext := range Formats {
			p := filepath.Join(dir, n+"."+ext)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) == 0 {
				t.Fatalf("%s is empty", p)
			}
			switch ext {
			case "png":
				img, err := png.Decode(bytes.NewReader(b))
				if err != nil {
					t.Fatalf("%s: %v", p, err)
				}
				if sz := img.Bounds().Size(); sz.X < 600 || sz.Y < 400 {
					t.Errorf("%s is only %v", p, sz)
				}
			case "svg":
				if !bytes.Contains(b, []byte("<svg")) {
					t.Errorf("%s is not SVG", p)
				}
			}
		}
	}
}

func TestWriteAll(t *testing.T) {
	dir := t.TempDir()
	r := report(t, bench.Spec{MemBytes: []uint64{64 << 20, 128 << 20}, DirtyRates: []uint64{2000, 20000, 0}, WorkingSets: []uint64{8 << 20},
		DowntimeMs: []int64{100}, Compress: []string{bench.CompressLZ4, bench.CompressNone}, Reps: 3, Peer: bench.PeerQEMU}, false)
	paths, err := WriteAll(dir, r)
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, paths)
	// The labels a reader needs are in the figures (SVG keeps text).
	for name, wants := range map[string][]string{
		DowntimeVsDirtyRate:  {"downtime (ms)", "guest dirty rate (4 KiB pages/s)", "unlimited", "godwit-lz4, mem 64M", "qemu, mem 128M"},
		TotalTimeVsMemory:    {"total migration time (ms)", "guest memory (MiB)", "godwit-none, 20K pages/s"},
		BytesPerRound:        {"bytes sent (MiB)", "memory round", "final round (guest paused"},
		DowntimeDistribution: {"downtime (ms)", "godwit-lz4", "qemu", "#6 128M unlimited/s", "point (memory, dirty rate)"},
	} {
		b, _ := os.ReadFile(filepath.Join(dir, name+".svg"))
		for _, w := range wants {
			if !bytes.Contains(b, []byte(svgText(w))) {
				t.Errorf("%s.svg lacks %q", name, w)
			}
		}
	}
}

// svgText escapes s as the SVG writer does.
func svgText(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(s)
}

func TestWriteAllWithoutData(t *testing.T) {
	dir := t.TempDir()
	r := report(t, bench.QuickSpec(), true)
	paths, err := WriteAll(dir, r)
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, paths)
	b, _ := os.ReadFile(filepath.Join(dir, DowntimeVsDirtyRate+".svg"))
	if !bytes.Contains(b, []byte("no successful run")) {
		t.Error("an empty figure does not say it is empty")
	}
}

// TestWriteAllManyPoints draws a wide sweep (rotated labels, log scale).
func TestWriteAllManyPoints(t *testing.T) {
	dir := t.TempDir()
	s := bench.DefaultSpec()
	s.Reps = 2
	r := report(t, s, false)
	for i := range r.Results {
		r.Results[i].DowntimeMs *= float64(i * i)
		r.Results[i].DowntimeMs += 0.5
	}
	r.Summary, r.Ratios = bench.Summarize(r)
	paths, err := WriteAll(dir, r)
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, paths)
	b, _ := os.ReadFile(filepath.Join(dir, DowntimeVsDirtyRate+".svg"))
	if !bytes.Contains(b, []byte("(log scale)")) {
		t.Error("downtimes over four decades are not on a log scale")
	}
}

func TestPickRoundRun(t *testing.T) {
	r := report(t, bench.QuickSpec(), false)
	res, ok := PickRoundRun(r)
	if !ok || res.Point != 4 || len(res.RoundTrace) != 5 {
		t.Errorf("picked run %d of point %d with %d rounds", res.Seq, res.Point, len(res.RoundTrace))
	}
	r.Results[len(r.Results)-1].Status = bench.StatusFailed
	if res, _ := PickRoundRun(r); res.Point != 3 {
		t.Errorf("picked a failed run, or the wrong one: point %d", res.Point)
	}
}

func TestLogTicks(t *testing.T) {
	var labels []string
	for _, tk := range (logTicks{}).Ticks(0.8, 60) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if got := strings.Join(labels, ","); got != "1,2,5,10,20,50" {
		t.Errorf("labels %s", got)
	}
	if len((logTicks{}).Ticks(0, 10)) != 0 || len((logTicks{}).Ticks(5, 5)) != 0 {
		t.Error("ticks for an empty or non-positive range")
	}
}
