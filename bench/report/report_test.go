package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"godwit/bench"
	"godwit/bench/host"
	"godwit/migrate"
)

// sample returns a small report: two points, godwit and QEMU, one failed
// run, a round trace on the godwit runs.
func sample(t *testing.T) *bench.Report {
	t.Helper()
	pl, err := bench.MakePlan(bench.Spec{MemBytes: []uint64{64 << 20}, DirtyRates: []uint64{2000, 0}, WorkingSets: []uint64{8 << 20},
		DowntimeMs: []int64{100}, Compress: []string{bench.CompressLZ4}, Reps: 2, Peer: bench.PeerQEMU})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	r := &bench.Report{Schema: bench.Schema, GodwitVersion: "v0.test", Started: start, Finished: start.Add(time.Minute),
		Machine: host.Machine{CPUModel: "Test CPU", CPUs: 2, Kernel: "6.1.0 #1", KVM: host.KVMNested, MemoryBytes: 4 << 30},
		Options: bench.Options{Guest: "boot-sector", Channel: "plain", QEMUVersion: "QEMU emulator version 7.2", QEMUCPU: "host", QEMUMachine: "pc"},
		Points:  pl.Points, Variants: pl.Variants}
	for _, run := range pl.Runs {
		res := bench.Result{Run: run, Status: bench.StatusOK, Start: start.Add(time.Duration(run.Seq) * time.Second),
			DowntimeMs: 4.25 * float64(run.Point), TotalMs: 120.5, SetupMs: 3, TransferredBytes: 1 << 20, Rounds: 3, WallMs: 125}
		if run.Variant == "godwit-lz4" {
			for i := 0; i < 3; i++ {
				res.RoundTrace = append(res.RoundTrace, migrate.RoundRecord{Type: "round", Round: i, Paused: i == 2, Bytes: uint64(300000 >> i)})
			}
		}
		if run.Point == 2 && run.Variant == "qemu" && run.Rep == 2 {
			res = bench.Result{Run: run, Status: bench.StatusFailed, Start: res.Start, Error: "QEMU migration failed:\nsomething, broke"}
		}
		r.Results = append(r.Results, res)
	}
	r.Summary, r.Ratios = bench.Summarize(r)
	return r
}

func TestJSONRoundTrip(t *testing.T) {
	r := sample(t)
	var b bytes.Buffer
	if err := WriteJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJSON(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Results) != len(r.Results) || got.Results[0].RoundTrace[1].Bytes != 150000 || got.Machine.KVM != host.KVMNested ||
		got.GodwitVersion != "v0.test" || len(got.Ratios) != len(r.Ratios) || *got.Ratios[0].Downtime != *r.Ratios[0].Downtime {
		t.Fatalf("round trip lost data: %+v", got)
	}
	// The documented top-level keys are there.
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b.Bytes(), &top); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schema", "godwit_version", "machine", "started", "finished", "options", "spec", "points", "variants", "results", "summary", "ratios"} {
		if _, ok := top[k]; !ok {
			t.Errorf("results.json lacks %q", k)
		}
	}
	if _, err := ReadJSON(strings.NewReader(`{"schema":"other/9"}`)); err == nil {
		t.Error("a foreign schema was accepted")
	}
	if _, err := ReadJSON(strings.NewReader(`{`)); err == nil {
		t.Error("broken JSON was accepted")
	}
}

func TestCSV(t *testing.T) {
	r := sample(t)
	var b bytes.Buffer
	if err := WriteCSV(&b, r); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+len(r.Results) {
		t.Fatalf("%d rows, want %d", len(rows), 1+len(r.Results))
	}
	if strings.Join(rows[0], ",") != strings.Join(CSVHeader, ",") {
		t.Fatalf("header %v", rows[0])
	}
	col := map[string]int{}
	for i, h := range CSVHeader {
		col[h] = i
	}
	first := rows[1]
	for k, want := range map[string]string{"seq": "1", "point": "1", "variant": "godwit-lz4", "side": "godwit", "compress": "lz4", "rep": "1",
		"mem_bytes": "67108864", "dirty_rate_pages_per_sec": "2000", "working_set_bytes": "8388608", "downtime_target_ms": "100",
		"status": "ok", "downtime_ms": "4.250", "total_ms": "120.500", "transferred_bytes": "1048576", "rounds": "3",
		"start": "2026-11-27T12:00:01Z", "error": ""} {
		if first[col[k]] != want {
			t.Errorf("first row %s = %q, want %q", k, first[col[k]], want)
		}
	}
	var failed []string
	for _, row := range rows[1:] {
		if len(row) != len(CSVHeader) {
			t.Fatalf("row of %d fields: %v", len(row), row)
		}
		if row[col["status"]] == bench.StatusFailed {
			failed = row
		}
	}
	if failed == nil || failed[col["downtime_ms"]] != "" || failed[col["error"]] != "QEMU migration failed:\nsomething, broke" ||
		failed[col["side"]] != "qemu" || failed[col["dirty_rate_pages_per_sec"]] != "0" {
		t.Errorf("failed row %q", failed)
	}
	bad := sample(t)
	bad.Results[0].Point = 99
	if err := WriteCSV(&bytes.Buffer{}, bad); err == nil {
		t.Error("a result of an unknown point was written")
	}
}

func TestWriteFiles(t *testing.T) {
	dir := t.TempDir()
	paths, err := WriteFiles(dir, sample(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 2 || filepath.Base(paths[0]) != JSONFile || filepath.Base(paths[1]) != CSVFile {
		t.Fatalf("paths %v", paths)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("left behind: %v", ents)
	}
	f, err := os.Open(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := ReadJSON(f); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteFiles(filepath.Join(dir, "missing"), sample(t)); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, sample(t)); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"godwit v0.test on Test CPU (2 CPUs, 4.00 GiB RAM), kernel 6.1.0, KVM: nested",
		"peer: QEMU emulator version 7.2 (-cpu host, -machine pc)",
		"godwit-lz4", "qemu", "unlimited", "2K", "4.2", "8.5", "1.0 MiB",
		"ratios of medians, godwit / QEMU", "1.00×",
		"1 of 8 runs failed", "run 7 (point 2, qemu, rep 2): QEMU migration failed: something, broke",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestProgress(t *testing.T) {
	r := sample(t)
	pt, _ := r.Point(1)
	var b bytes.Buffer
	p := NewProgress(&b, false, 2)
	p.Begin(r.Results[0].Run, pt)
	p.End(r.Results[0], pt)
	var failed bench.Result
	for _, res := range r.Results {
		if res.Status == bench.StatusFailed {
			failed = res
		}
	}
	p.End(failed, pt)
	p.Finish()
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "run 1/2") || !strings.Contains(lines[1], "run 7/2") || !strings.Contains(lines[0], "ok, downtime 4.2 ms") ||
		!strings.Contains(lines[1], "FAILED: QEMU migration failed: something, broke") || strings.Contains(b.String(), "\r") {
		t.Errorf("log progress:\n%s", b.String())
	}

	b.Reset()
	p = NewProgress(&b, true, 4)
	now := p.start
	p.now = func() time.Time { return now }
	p.Begin(r.Results[0].Run, pt)
	now = now.Add(10 * time.Second)
	p.End(r.Results[0], pt)
	out := b.String()
	if !strings.Contains(out, "\r\033[K[>") || !strings.Contains(out, "[======>") || !strings.Contains(out, "1/4  ETA 30s") {
		t.Errorf("terminal progress: %q", out)
	}
	fmtLog := p.Log()
	fmtLog.Write([]byte("warning\n"))
	if !strings.HasSuffix(b.String(), "\r\033[Kwarning\n") {
		t.Errorf("log through the bar: %q", b.String())
	}
}

func TestHumanBytes(t *testing.T) {
	for b, want := range map[float64]string{812: "812 B", 3.5 * 1024: "3.5 KiB", 56.1 * (1 << 20): "56.1 MiB", 1.2 * (1 << 30): "1.20 GiB"} {
		if got := HumanBytes(b); got != want {
			t.Errorf("HumanBytes(%v) = %q, want %q", b, got, want)
		}
	}
}
