package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"godwit/bench"
	"godwit/bench/report"
)

func TestParseRate(t *testing.T) {
	for in, want := range map[string]uint64{"unlimited": 0, "UNLIMITED": 0, "5000": 5000, "10K": 10000, "2m": 2000000, "1k": 1000} {
		got, err := parseRate(in)
		if err != nil || got != want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-5", "1.5K", "10G", "K", "99999999999999M"} {
		if _, err := parseRate(in); err == nil {
			t.Errorf("parseRate(%q) accepted", in)
		}
	}
}

func TestBenchDryRun(t *testing.T) {
	out, errOut, code := runGodwit(t, "bench", "--quick", "--dry-run")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "4 points x 1 variants x 1 reps = 4 runs") || !strings.Contains(out, "variant godwit-lz4") {
		t.Errorf("--quick plan:\n%s", out)
	}
	out, errOut, code = runGodwit(t, "bench", "--dry-run", "--mem", "64M, 128M", "--dirty-rate", "1K,unlimited",
		"--working-set", "96M,all", "--downtime-ms", "30", "--compress", "lz4,none", "--reps", "2", "--peer", "qemu")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"6 points x 3 variants x 2 reps = 36 runs",
		"point 1: mem 64M, 1K pages/s, ws 62M, target 30 ms",
		"point 6: mem 128M, unlimited, ws 126M, target 30 ms",
		"variant qemu",
		"skipped: mem 64M, 1K pages/s, ws 96M, target 30 ms: working set 96M",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
}

func TestBenchBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--mem", "64Q"},
		{"--mem", "1M"},
		{"--dirty-rate", "fast"},
		{"--working-set", "0"},
		{"--downtime-ms", "-3"},
		{"--compress", "zstd"},
		{"--reps", "0"},
		{"--peer", "xen"},
		{"--guest", "windows"},
		{"--to", "127.0.0.1:7000"},
		{"--to", "tcp:127.0.0.1:7000", "--peer", "qemu"},
		{"--psk-file", "/nonexistent/psk"},
		{"extra-argument"},
	} {
		_, errOut, code := runGodwit(t, append([]string{"bench", "--dry-run"}, args...)...)
		if code != 2 || !strings.HasPrefix(errOut, "godwit: ") {
			t.Errorf("bench %v: exit %d, stderr %q; want a usage error (2)", args, code, errOut)
		}
	}
}

// TestBenchReport redoes the outputs of a results.json.
func TestBenchReport(t *testing.T) {
	pl, err := bench.MakePlan(bench.QuickSpec())
	if err != nil {
		t.Fatal(err)
	}
	rep := &bench.Report{Schema: bench.Schema, GodwitVersion: "test", Points: pl.Points, Variants: pl.Variants, Spec: bench.QuickSpec()}
	for _, run := range pl.Runs {
		rep.Results = append(rep.Results, bench.Result{Run: run, Status: bench.StatusOK, DowntimeMs: 3, TotalMs: 50, TransferredBytes: 1 << 20, Rounds: 2})
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "in", "results.json")
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := report.WriteJSON(f, rep); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, errOut, code := runGodwit(t, "bench", "report", "--out", filepath.Join(dir, "out"), src)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "godwit-lz4") || !strings.Contains(out, "written: ") {
		t.Errorf("report output:\n%s", out)
	}
	for _, name := range []string{"results.json", "results.csv", "downtime-vs-dirty-rate.png", "bytes-per-round.svg"} {
		if st, err := os.Stat(filepath.Join(dir, "out", name)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, _, code := runGodwit(t, "bench", "report", filepath.Join(dir, "missing.json")); code != 1 {
		t.Errorf("a missing results.json: exit %d, want 1", code)
	}
	if _, _, code := runGodwit(t, "bench", "report"); code != 2 {
		t.Errorf("no argument: exit %d, want 2", code)
	}
}
