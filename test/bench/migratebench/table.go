package main

import (
	"fmt"
	"io"
	"slices"
)

// Goals for godwit relative to QEMU (godwit / QEMU, lower is better).
const (
	goalDowntime = 0.25
	goalTotal    = 0.5
	goalBytes    = 0.5
)

// median returns the median of xs (NaN-free; 0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// medians are a variant's medians over its successful runs.
type medians struct {
	n                 int
	downtime, total   float64
	bytes, setup, rnd float64
	sent              float64 // the source-side downtime (result.sentMs)
}

// summarize computes the medians of rs.
func summarize(rs []result) medians {
	var d, t, b, s, r, sent []float64
	for _, x := range rs {
		d = append(d, x.downtimeMs)
		if x.sentMs > 0 {
			sent = append(sent, x.sentMs)
		}
		t = append(t, x.totalMs)
		b = append(b, float64(x.bytes))
		if !x.fromLog { // the source's log has neither
			s = append(s, x.setupMs)
			r = append(r, float64(x.rounds))
		}
	}
	return medians{n: len(rs), downtime: median(d), total: median(t), bytes: median(b), setup: median(s), rnd: median(r), sent: median(sent)}
}

// ratio formats a/b against goal: "0.21 (goal <= 0.25: met)".
func ratio(a, b, goal float64) string {
	if b <= 0 {
		return "n/a"
	}
	r := a / b
	verdict := "met"
	if r > goal {
		verdict = "MISSED"
	}
	return fmt.Sprintf("%.2f (goal <= %.2f: %s)", r, goal, verdict)
}

// printTable writes the medians of every variant and the ratios of each
// godwit variant to QEMU as Markdown tables between marker lines.
func printTable(w io.Writer, c *config, vs []variant, results map[string][]result, failures map[string]int) {
	fmt.Fprintln(w, "MIGRATEBENCH-TABLE-BEGIN")
	fmt.Fprintf(w, "Live migration of an idle Debian guest (%d MiB, %d vCPU, busybox initramfs), loopback TCP, downtime target %d ms; medians of %d reps\n\n",
		c.memMiB, c.cpus, c.downtimeMs, c.reps)
	fmt.Fprintln(w, "| variant | ok/runs | downtime ms | source-side downtime ms | total ms | MB sent | rounds | setup ms |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	sums := map[string]medians{}
	for _, v := range vs {
		m := summarize(results[v.name])
		sums[v.name] = m
		runs := m.n + failures[v.name]
		if m.n == 0 {
			fmt.Fprintf(w, "| %s | 0/%d | - | - | - | - | - | - |\n", v.label, runs)
			continue
		}
		sent := "-"
		if m.sent > 0 {
			sent = fmt.Sprintf("%.1f", m.sent)
		}
		fmt.Fprintf(w, "| %s | %d/%d | %.1f | %s | %.0f | %.1f | %.1f | %.1f |\n",
			v.label, m.n, runs, m.downtime, sent, m.total, m.bytes/1e6, m.rnd, m.setup)
	}
	q, haveQ := sums["qemu"]
	if haveQ && q.n > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| godwit / QEMU | downtime | source-side downtime | total time | bytes |")
		fmt.Fprintln(w, "|---|---|---|---|---|")
		for _, v := range vs {
			g := sums[v.name]
			if v.qemu || g.n == 0 {
				continue
			}
			sent := "n/a"
			if g.sent > 0 && q.downtime > 0 {
				sent = fmt.Sprintf("%.2f", g.sent/q.downtime)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", v.label,
				ratio(g.downtime, q.downtime, goalDowntime), sent, ratio(g.total, q.total, goalTotal), ratio(g.bytes, q.bytes, goalBytes))
		}
	}
	fmt.Fprintln(w, "\nQEMU's bytes are query-migrate ram.transferred (RAM only); godwit's are every byte on the connection.")
	fmt.Fprintln(w, "godwit's downtime runs from the pause to the destination's RESUMED read back on the source (restore, start and the")
	fmt.Fprintln(w, "acknowledgement included); QEMU's (query-migrate downtime) ends on the source once the last state is sent.")
	fmt.Fprintln(w, "godwit's source-side downtime is the same span as QEMU's: pause to COMPLETE written; its ratio is to QEMU's downtime.")
	fmt.Fprintln(w, "MIGRATEBENCH-TABLE-END")
}
