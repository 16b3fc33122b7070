package integration

import (
	"bytes"
	"encoding/csv"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"godwit/bench"
	"godwit/bench/figures"
	"godwit/bench/report"
)

// TestBench runs `godwit bench --quick` and checks everything it writes:
// results.json (every run completed, with godwit's statistics and round
// records, the machine and version), results.csv (a row per run), and
// every figure as SVG and PNG.
func TestBench(t *testing.T) {
	needLong(t)
	out := t.TempDir()
	stdout, err := runGodwit(t, commandTimeout, nil, "bench", "--quick", "--out", out)
	t.Logf("godwit bench --quick:\n%s", stdout)
	if err != nil {
		t.Fatalf("godwit bench --quick: %v", err)
	}
	rep := checkBenchOutputs(t, out, string(stdout))
	if len(rep.Points) != len(bench.QuickSpec().MemBytes)*len(bench.QuickSpec().DirtyRates) || len(rep.Variants) != 1 {
		t.Errorf("--quick ran %d points and %d variants", len(rep.Points), len(rep.Variants))
	}
	if rep.Options.Guest != "test" {
		t.Errorf("guest %q, want the flat test guest", rep.Options.Guest)
	}
	for _, res := range rep.Results {
		if res.Godwit == nil || len(res.RoundTrace) < 2 || !res.RoundTrace[len(res.RoundTrace)-1].Paused {
			t.Errorf("run %d: no statistics or round records (or no paused round): %d records", res.Seq, len(res.RoundTrace))
		}
		if res.Godwit != nil && (res.Godwit.DowntimeMs != res.DowntimeMs || res.Godwit.StopAndCopy == nil) {
			t.Errorf("run %d: downtime %v is not godwit's own (%+v)", res.Seq, res.DowntimeMs, res.Godwit)
		}
	}
}

// TestBenchBootSector runs one point with the boot image under godwit, the
// guest --peer qemu compares.
func TestBenchBootSector(t *testing.T) {
	out := t.TempDir()
	stdout, err := runGodwit(t, commandTimeout, nil, "bench", "--guest", "boot-sector", "--mem", "64M", "--dirty-rate", "20K",
		"--working-set", "8M", "--downtime-ms", "100", "--compress", "none", "--reps", "1", "--out", out)
	t.Logf("godwit bench:\n%s", stdout)
	if err != nil {
		t.Fatalf("godwit bench --guest boot-sector: %v", err)
	}
	rep := checkBenchOutputs(t, out, string(stdout))
	if rep.Options.Guest != "boot-sector" || len(rep.Results) != 1 || rep.Results[0].Variant != "godwit-none" {
		t.Errorf("options %+v, results %+v", rep.Options, rep.Results)
	}
	// Without compression every page of the 8 MiB working set travels in
	// full at least once.
	if b := rep.Results[0].TransferredBytes; b < 8<<20 {
		t.Errorf("transferred %d bytes, less than the working set", b)
	}
}

// TestBenchPeerQEMU runs one point with godwit and QEMU/KVM side by side
// when qemu-system-x86_64 is installed. GODWIT_QEMU_CPU sets QEMU's -cpu
// (default host; a KVM that refuses an MSR of -cpu host may need e.g.
// host,-arch-capabilities).
func TestBenchPeerQEMU(t *testing.T) {
	needLong(t)
	godwitBin(t)
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	cpu := os.Getenv("GODWIT_QEMU_CPU")
	if cpu == "" {
		cpu = "host"
	}
	out := t.TempDir()
	stdout, err := runGodwit(t, commandTimeout, nil, "bench", "--peer", "qemu", "--qemu-cpu", cpu, "--mem", "64M", "--dirty-rate", "20K",
		"--working-set", "8M", "--downtime-ms", "100", "--compress", "lz4", "--reps", "1", "--out", out)
	t.Logf("godwit bench --peer qemu:\n%s", stdout)
	if err != nil {
		t.Fatalf("godwit bench --peer qemu: %v", err)
	}
	rep := checkBenchOutputs(t, out, string(stdout))
	if !strings.HasPrefix(rep.Options.QEMUVersion, "QEMU emulator version") || rep.Options.Guest != "boot-sector" {
		t.Errorf("options %+v", rep.Options)
	}
	var q *bench.Result
	for i := range rep.Results {
		if rep.Results[i].Variant == "qemu" {
			q = &rep.Results[i]
		}
	}
	if q == nil || len(q.QEMU) == 0 || q.TransferredBytes == 0 || q.TotalMs <= 0 {
		t.Fatalf("no QEMU statistics in %s", filepath.Join(out, report.JSONFile))
	}
	if len(rep.Ratios) != 1 || rep.Ratios[0].Downtime == nil || rep.Ratios[0].Bytes == nil {
		t.Errorf("ratios %+v", rep.Ratios)
	}
	if !strings.Contains(string(stdout), "ratios of medians, godwit / QEMU") {
		t.Error("the summary has no ratios")
	}
}

// checkBenchOutputs validates the files of a bench run in dir and its
// summary on stdout, and returns the report.
func checkBenchOutputs(t *testing.T, dir, stdout string) *bench.Report {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, report.JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := report.ReadJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	if rep.GodwitVersion == "" || rep.Machine.KVM == "" || rep.Machine.CPUs == 0 || rep.Machine.Kernel == "" {
		t.Errorf("machine or version missing: %q %+v", rep.GodwitVersion, rep.Machine)
	}
	if len(rep.Results) == 0 || len(rep.Summary) == 0 {
		t.Fatalf("no results or summary")
	}
	for _, res := range rep.Results {
		if res.Status != bench.StatusOK {
			t.Errorf("run %d (point %d, %s) failed: %s", res.Seq, res.Point, res.Variant, res.Error)
			continue
		}
		if res.DowntimeMs <= 0 || res.TotalMs < res.DowntimeMs || res.TransferredBytes == 0 || res.Rounds < 1 || res.WallMs <= 0 {
			t.Errorf("run %d (%s): implausible numbers: downtime %v ms, total %v ms, %d bytes, %d rounds, wall %v ms",
				res.Seq, res.Variant, res.DowntimeMs, res.TotalMs, res.TransferredBytes, res.Rounds, res.WallMs)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, report.CSVFile))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(rep.Results)+1 || strings.Join(rows[0], ",") != strings.Join(report.CSVHeader, ",") {
		t.Errorf("results.csv: %d rows, header %v", len(rows), rows[0])
	}
	for _, name := range figures.Names {
		svg, err := os.ReadFile(filepath.Join(dir, name+".svg"))
		if err != nil || !bytes.Contains(svg, []byte("<svg")) {
			t.Errorf("%s.svg: %v (%d bytes)", name, err, len(svg))
		}
		pf, err := os.Open(filepath.Join(dir, name+".png"))
		if err != nil {
			t.Error(err)
			continue
		}
		img, err := png.Decode(pf)
		pf.Close()
		if err != nil || img.Bounds().Dx() < 600 {
			t.Errorf("%s.png: %v", name, err)
		}
	}
	if !strings.Contains(stdout, "downtime ms") || !strings.Contains(stdout, "KVM: ") {
		t.Error("no summary table on stdout")
	}
	return rep
}
