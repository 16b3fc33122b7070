// Package report writes the record of a benchmark (bench.Report):
// results.json (everything: machine, version, sweep, every run with the
// migrators' own statistics and round records, the summary and ratios),
// results.csv (one row per run, for spreadsheets and R/pandas) and the
// summary table `godwit bench` prints at the end.
package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"godwit/bench"
)

// File names in the output directory.
const (
	JSONFile = "results.json"
	CSVFile  = "results.csv"
)

// WriteJSON writes r as indented JSON.
func WriteJSON(w io.Writer, r *bench.Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// ReadJSON reads a report that WriteJSON wrote and checks its schema.
func ReadJSON(rd io.Reader) (*bench.Report, error) {
	var r bench.Report
	if err := json.NewDecoder(rd).Decode(&r); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if r.Schema != bench.Schema {
		return nil, fmt.Errorf("report: schema %q, want %q", r.Schema, bench.Schema)
	}
	return &r, nil
}

// CSVHeader names the columns of results.csv.
var CSVHeader = []string{
	"seq", "point", "variant", "side", "compress", "rep",
	"mem_bytes", "dirty_rate_pages_per_sec", "working_set_bytes", "downtime_target_ms",
	"status", "downtime_ms", "total_ms", "setup_ms", "transferred_bytes", "rounds",
	"dirty_pages_rate", "wall_ms", "start", "error",
}

// WriteCSV writes one row per run of r (RFC 4180, header first). A
// dirty rate of 0 means unlimited; the numbers of a failed run are empty.
func WriteCSV(w io.Writer, r *bench.Report) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', 3, 64) }
	u := func(x uint64) string { return strconv.FormatUint(x, 10) }
	for _, res := range r.Results {
		p, ok := r.Point(res.Point)
		if !ok {
			return fmt.Errorf("report: result %d names point %d, which the report lacks", res.Seq, res.Point)
		}
		v, ok := bench.Plan{Variants: r.Variants}.VariantByName(res.Variant)
		if !ok {
			return fmt.Errorf("report: result %d names variant %q, which the report lacks", res.Seq, res.Variant)
		}
		row := []string{
			strconv.Itoa(res.Seq), strconv.Itoa(res.Point), res.Variant, string(v.Side), v.Compress, strconv.Itoa(res.Rep),
			u(p.MemBytes), u(p.DirtyRate), u(p.WorkingSet), strconv.FormatInt(p.DowntimeMs, 10),
			res.Status, "", "", "", "", "", "", f(res.WallMs), res.Start.UTC().Format(time.RFC3339Nano), res.Error,
		}
		if res.Status == bench.StatusOK {
			copy(row[11:17], []string{f(res.DowntimeMs), f(res.TotalMs), f(res.SetupMs), u(res.TransferredBytes), strconv.Itoa(res.Rounds), f(res.DirtyPagesRate)})
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteFiles writes results.json and results.csv into dir, each through a
// temporary file renamed into place, and returns their paths.
func WriteFiles(dir string, r *bench.Report) ([]string, error) {
	var paths []string
	for _, f := range []struct {
		name  string
		write func(io.Writer, *bench.Report) error
	}{{JSONFile, WriteJSON}, {CSVFile, WriteCSV}} {
		var b bytes.Buffer
		if err := f.write(&b, r); err != nil {
			return paths, fmt.Errorf("%s: %w", f.name, err)
		}
		p := filepath.Join(dir, f.name)
		if err := writeAtomic(p, b.Bytes()); err != nil {
			return paths, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// writeAtomic writes data to path through a temporary file in its
// directory.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// WriteTable writes the summary for a person: the machine and version,
// then per point and variant the successful runs and the median, minimum
// and maximum downtime, the median total time, bytes and rounds, then the
// godwit/QEMU ratios when there is a peer.
func WriteTable(w io.Writer, r *bench.Report) error {
	m := r.Machine
	fmt.Fprintf(w, "godwit %s on %s (%d CPUs, %s RAM), kernel %s, KVM: %s\n",
		r.GodwitVersion, orUnknown(m.CPUModel), m.CPUs, HumanBytes(float64(m.MemoryBytes)), orUnknown(firstField(m.Kernel)), m.KVM)
	fmt.Fprintf(w, "guest: %s, migration over %s (%s channel); medians over the successful runs, times in ms\n",
		r.Options.Guest, orDefault(r.Options.To, "loopback"), r.Options.Channel)
	if r.Options.QEMUVersion != "" {
		fmt.Fprintf(w, "peer: %s (-cpu %s, -machine %s)\n", r.Options.QEMUVersion, r.Options.QEMUCPU, r.Options.QEMUMachine)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "point\tmemory\tdirty rate\tworking set\ttarget ms\tvariant\truns ok\tdowntime ms\tmin-max\ttotal ms\tsent\trounds\t")
	for _, s := range r.Summary {
		p, _ := r.Point(s.Point)
		ok := s.Runs - s.Failed
		row := fmt.Sprintf("%d\t%s\t%s\t%s\t%d\t%s\t%d/%d\t", p.ID, bench.FormatBytes(p.MemBytes), bench.RateValue(p.DirtyRate),
			bench.FormatBytes(p.WorkingSet), p.DowntimeMs, s.Variant, ok, s.Runs)
		if ok == 0 {
			row += "-\t-\t-\t-\t-\t"
		} else {
			row += fmt.Sprintf("%.1f\t%.1f-%.1f\t%.1f\t%s\t%.0f\t", s.DowntimeMs.Median, s.DowntimeMs.Min, s.DowntimeMs.Max,
				s.TotalMs.Median, HumanBytes(s.TransferredBytes.Median), s.Rounds.Median)
		}
		fmt.Fprintln(tw, row)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintln(w, "\nratios of medians, godwit / QEMU (below 1: godwit lower):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "point\tvariant\tdowntime\ttotal\tbytes\t")
		for _, ra := range r.Ratios {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t\n", ra.Point, ra.Variant, ratio(ra.Downtime), ratio(ra.Total), ratio(ra.Bytes))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	failed := 0
	for _, res := range r.Results {
		if res.Status != bench.StatusOK {
			failed++
		}
	}
	if failed > 0 {
		fmt.Fprintf(w, "\n%d of %d runs failed:\n", failed, len(r.Results))
		for _, res := range r.Results {
			if res.Status != bench.StatusOK {
				fmt.Fprintf(w, "  run %d (point %d, %s, rep %d): %s\n", res.Seq, res.Point, res.Variant, res.Rep, oneLine(res.Error, 300))
			}
		}
	}
	return nil
}

// HumanBytes writes a byte count with a binary unit: "812 B", "3.4 KiB",
// "56.1 MiB", "1.20 GiB".
func HumanBytes(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

func ratio(x *float64) string {
	if x == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f×", *x)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func firstField(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// oneLine shortens s to one line of at most n bytes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}
