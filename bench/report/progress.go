package report

import (
	"fmt"
	"io"
	"strings"
	"time"

	"godwit/bench"
)

// Progress shows how far a bench run is: on a terminal a bar that
// rewrites one line (runs done, ETA, the run in progress), otherwise a
// line per finished run, fit for logs.
type Progress struct {
	w     io.Writer
	tty   bool
	total int
	done  int
	start time.Time
	now   func() time.Time
	width int // columns of the bar
}

// NewProgress returns a Progress for total runs writing to w; tty selects
// the rewriting bar.
func NewProgress(w io.Writer, tty bool, total int) *Progress {
	return &Progress{w: w, tty: tty, total: total, start: time.Now(), now: time.Now, width: 24}
}

// Begin announces a run that starts.
func (p *Progress) Begin(run bench.Run, pt bench.Point) {
	if !p.tty {
		return
	}
	fmt.Fprintf(p.w, "\r\033[K%s %d/%d%s  run %d: %s, %s, rep %d", p.bar(), p.done, p.total, p.eta(), run.Seq, pt.Label(), run.Variant, run.Rep)
}

// End records a finished run.
func (p *Progress) End(res bench.Result, pt bench.Point) {
	p.done++
	outcome := fmt.Sprintf("ok, downtime %.1f ms, total %.1f ms, %s, %d rounds", res.DowntimeMs, res.TotalMs, HumanBytes(float64(res.TransferredBytes)), res.Rounds)
	if res.Status != bench.StatusOK {
		outcome = "FAILED: " + oneLine(res.Error, 200)
	}
	if p.tty {
		// Failures stay on screen; successes only move the bar.
		if res.Status != bench.StatusOK {
			fmt.Fprintf(p.w, "\r\033[Krun %d (%s, %s, rep %d) %s\n", res.Seq, pt.Label(), res.Variant, res.Rep, outcome)
		}
		fmt.Fprintf(p.w, "\r\033[K%s %d/%d%s", p.bar(), p.done, p.total, p.eta())
		return
	}
	fmt.Fprintf(p.w, "godwit bench: run %d/%d (%s, %s, rep %d): %s\n", res.Seq, p.total, pt.Label(), res.Variant, res.Rep, outcome)
}

// Finish ends the bar.
func (p *Progress) Finish() {
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// Log returns a writer for other messages that keeps the bar intact: on a
// terminal every write starts on a cleared line.
func (p *Progress) Log() io.Writer {
	if !p.tty {
		return p.w
	}
	return logWriter{p.w}
}

// logWriter clears the terminal line before every write.
type logWriter struct{ w io.Writer }

// Write clears the line, then writes b.
func (l logWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(l.w, "\r\033[K"); err != nil {
		return 0, err
	}
	return l.w.Write(b)
}

// bar draws "[=====>      ]".
func (p *Progress) bar() string {
	filled := 0
	if p.total > 0 {
		filled = p.done * p.width / p.total
	}
	head := ""
	if filled < p.width {
		head = ">"
	}
	return "[" + strings.Repeat("=", filled) + head + strings.Repeat(" ", max(0, p.width-filled-len(head))) + "]"
}

// eta estimates the time left from the average run so far.
func (p *Progress) eta() string {
	if p.done == 0 || p.done >= p.total {
		return ""
	}
	per := p.now().Sub(p.start) / time.Duration(p.done)
	left := (per * time.Duration(p.total-p.done)).Round(time.Second)
	return "  ETA " + left.String()
}
