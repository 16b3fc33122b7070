// Package figures draws the figures of a benchmark report (bench.Report)
// with gonum.org/v1/plot, each written as SVG and PNG:
//
//   - downtime-vs-dirty-rate: median downtime (with min-max bars) against
//     the guest's dirty rate, a line per memory size and variant;
//   - total-time-vs-memory: median total migration time against the guest
//     memory size, a line per dirty rate and variant;
//   - bytes-per-round: the bytes of every memory round of one godwit run
//     (the one with the most rounds), from its round records;
//   - downtime-distribution: a box plot of the downtime of every point and
//     variant over its repetitions.
//
// When the sweep has several working sets or downtime targets, each of
// the median figures and the distribution has a panel per combination
// (small multiples, two to a row). Every axis is labelled with its unit,
// every series is in a legend, and a Y axis whose values span more than a
// factor of 30 is logarithmic.
package figures

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"godwit/bench"
)

// Figure names: the file names without extension.
const (
	DowntimeVsDirtyRate  = "downtime-vs-dirty-rate"
	TotalTimeVsMemory    = "total-time-vs-memory"
	BytesPerRound        = "bytes-per-round"
	DowntimeDistribution = "downtime-distribution"
)

// Names lists the figures in the order WriteAll writes them.
var Names = []string{DowntimeVsDirtyRate, TotalTimeVsMemory, BytesPerRound, DowntimeDistribution}

// Formats are the file extensions every figure is written in.
var Formats = []string{"svg", "png"}

// figure is one drawn figure: one panel, or several side by side (small
// multiples: one per working set and downtime target), each w by h.
type figure struct {
	panels []*plot.Plot
	w, h   vg.Length
}

// single is a figure of one panel.
func single(p *plot.Plot, w, h vg.Length) figure { return figure{[]*plot.Plot{p}, w, h} }

// panelCols is how many panels a row of a figure holds.
const panelCols = 2

// save writes the figure to path in the format ext ("svg", "png").
func (f figure) save(path, ext string) error {
	if len(f.panels) == 1 {
		return f.panels[0].Save(f.w, f.h, path)
	}
	cols := min(panelCols, len(f.panels))
	rows := (len(f.panels) + cols - 1) / cols
	c, err := draw.NewFormattedCanvas(f.w*vg.Length(cols), f.h*vg.Length(rows), ext)
	if err != nil {
		return err
	}
	dc := draw.New(c)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	for i, p := range f.panels {
		p.Draw(tiles.At(dc, i%cols, i/cols))
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(out); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// WriteAll draws every figure of r and writes it into dir in every format;
// it returns the paths written. A figure without data (no successful run)
// is still written, with a title that says so.
func WriteAll(dir string, r *bench.Report) ([]string, error) {
	draws := map[string]func(*bench.Report) (figure, error){
		DowntimeVsDirtyRate:  downtimeVsDirtyRate,
		TotalTimeVsMemory:    totalTimeVsMemory,
		BytesPerRound:        bytesPerRound,
		DowntimeDistribution: downtimeDistribution,
	}
	var paths []string
	var errs []error
	for _, name := range Names {
		f, err := draws[name](r)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		for _, ext := range Formats {
			path := filepath.Join(dir, name+"."+ext)
			if err := f.save(path, ext); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", path, err))
				continue
			}
			paths = append(paths, path)
		}
	}
	return paths, errors.Join(errs...)
}

// newPlot returns a plot with a title, axis labels and a grid.
func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.Padding = vg.Points(8)
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Label.TextStyle.Font.Size = vg.Points(12)
	p.Y.Label.TextStyle.Font.Size = vg.Points(12)
	p.Legend.TextStyle.Font.Size = vg.Points(11)
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(6), vg.Points(-6)
	p.Legend.Padding = vg.Points(3)
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	return p
}

// noData marks a figure that has nothing to show.
func noData(p *plot.Plot) {
	p.Title.Text += "\n(no successful run to show)"
}

// dims says which point fields vary across the report: only those name a
// series.
type dims struct{ mem, rate, ws, target bool }

func varying(points []bench.Point) dims {
	var d dims
	for _, p := range points[min(1, len(points)):] {
		q := points[0]
		d.mem = d.mem || p.MemBytes != q.MemBytes
		d.rate = d.rate || p.DirtyRate != q.DirtyRate
		d.ws = d.ws || p.WorkingSet != q.WorkingSet
		d.target = d.target || p.DowntimeMs != q.DowntimeMs
	}
	return d
}

// groupKey is what a series of a median figure stands for besides its
// variant: a memory size or a dirty rate.
type groupKey struct {
	mem, rate uint64
}

// label names a series: the variant, then the varying fields of its group
// that are not on the X axis.
func (d dims) label(variant string, g groupKey) string {
	parts := []string{variant}
	if d.mem {
		parts = append(parts, "mem "+bench.FormatBytes(g.mem))
	}
	if d.rate {
		parts = append(parts, bench.FormatRate(g.rate))
	}
	return strings.Join(parts, ", ")
}

// series is one line of a figure: X positions with the median and the
// min-max range of a quantity.
type series struct {
	label    string
	variant  int // index into the report's variants: the dash pattern
	group    int // index of the group: colour and glyph
	xys      plotter.XYs
	errs     plotter.YErrors
	hasRange bool
}

// errBars adapts a series to plotter.NewYErrorBars.
type errBars struct {
	plotter.XYs
	plotter.YErrors
}

// addSeries draws the series as lines with points and min-max bars and
// adds them to the legend. It returns how many it drew.
func addSeries(p *plot.Plot, ss []series) (int, error) {
	drawn := 0
	for _, s := range ss {
		if len(s.xys) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(s.xys)
		if err != nil {
			return 0, err
		}
		c := plotutil.Color(s.group)
		line.Color = c
		line.Dashes = plotutil.Dashes(s.variant)
		line.Width = vg.Points(1.5)
		points.Color = c
		points.Shape = plotutil.Shape(s.group)
		points.Radius = vg.Points(3)
		p.Add(line, points)
		if s.hasRange {
			eb, err := plotter.NewYErrorBars(errBars{s.xys, s.errs})
			if err != nil {
				return 0, err
			}
			eb.Color = c
			p.Add(eb)
		}
		p.Legend.Add(s.label, line, points)
		drawn++
	}
	return drawn, nil
}

// sortedSeries fills s with the points (xs, med) sorted by X and their
// min-max bars (lo, hi).
func sortedSeries(s *series, xs []float64, med, lo, hi []float64) {
	idx := make([]int, len(xs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmpFloat(xs[a], xs[b]) })
	for _, i := range idx {
		s.xys = append(s.xys, plotter.XY{X: xs[i], Y: med[i]})
		s.errs = append(s.errs, struct{ Low, High float64 }{med[i] - lo[i], hi[i] - med[i]})
		if hi[i] > lo[i] {
			s.hasRange = true
		}
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// logYIfWide switches the Y axis to a log scale when the positive values
// span more than a factor of 30, and fixes its range to them.
func logYIfWide(p *plot.Plot, ys []float64, entries int) {
	lo, hi := math.Inf(1), 0.0
	for _, y := range ys {
		if y > 0 {
			lo, hi = min(lo, y), max(hi, y)
		}
	}
	if hi == 0 || hi/lo <= 30 {
		p.Y.Min = 0
		if hi > 0 {
			p.Y.Max = hi * headroom(entries)
		}
		return
	}
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = logTicks{}
	p.Y.Min, p.Y.Max = lo/1.5, hi*math.Pow(headroom(entries), 3)
	p.Y.Label.Text += " (log scale)"
}

// logTicks marks a log axis at 1, 2 and 5 times every power of ten
// (labelled) and at the other integers times it (unlabelled): more
// readable than decades alone when the data spans one or two.
type logTicks struct{}

// Ticks returns the ticks between min and max (both positive).
func (logTicks) Ticks(min, max float64) []plot.Tick {
	var ticks []plot.Tick
	if min <= 0 || max <= min {
		return ticks
	}
	for e := math.Floor(math.Log10(min)); e <= math.Ceil(math.Log10(max)); e++ {
		base := math.Pow10(int(e))
		for m := 1; m < 10; m++ {
			v := float64(m) * base
			if v < min || v > max {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'g', -1, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// headroom is the factor above the highest value that keeps the data clear
// of the legend in the plot's top corner: more for more legend entries.
func headroom(entries int) float64 {
	return 1.1 + 0.07*float64(entries)
}

// facet is a working set and downtime target: a panel of the median
// figures.
type facet struct {
	ws     uint64
	target int64
}

// facets lists the facets of the report's points, in point order.
func facets(points []bench.Point) []facet {
	var out []facet
	for _, p := range points {
		if f := (facet{p.WorkingSet, p.DowntimeMs}); !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// title is the panel title: the figure's, with the facet when there are
// several.
func (f facet) title(base string, d dims) string {
	var parts []string
	if d.ws {
		parts = append(parts, "working set "+bench.FormatBytes(f.ws))
	}
	if d.target {
		parts = append(parts, fmt.Sprintf("target %d ms", f.target))
	}
	if len(parts) == 0 {
		return base
	}
	return base + "\n" + strings.Join(parts, ", ")
}

// medianSeries collects, for every variant and group of the facet's
// points, the summary of each point along the X dimension xOf, with a
// series label.
func medianSeries(r *bench.Report, f facet, d dims, groupOf func(bench.Point) groupKey, xOf func(bench.Point) float64,
	dist func(bench.Summary) bench.Dist) ([]series, []float64) {
	var groups []groupKey
	for _, p := range r.Points {
		if g := groupOf(p); !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	var out []series
	var all []float64
	for vi, v := range r.Variants {
		for gi, g := range groups {
			var xs, med, lo, hi []float64
			for _, s := range r.Summary {
				p, ok := r.Point(s.Point)
				if !ok || s.Variant != v.Name || groupOf(p) != g || (facet{p.WorkingSet, p.DowntimeMs}) != f {
					continue
				}
				dd := dist(s)
				if dd.N == 0 {
					continue
				}
				xs, med, lo, hi = append(xs, xOf(p)), append(med, dd.Median), append(lo, dd.Min), append(hi, dd.Max)
				all = append(all, dd.Min, dd.Max)
			}
			s := series{label: d.label(v.Name, g), variant: vi, group: gi}
			sortedSeries(&s, xs, med, lo, hi)
			out = append(out, s)
		}
	}
	return out, all
}

// downtimeVsDirtyRate: median downtime against the dirty rate, a line per
// memory size and variant, a panel per working set and target. The rates
// are categories (they span decades, and "unlimited" has no number).
func downtimeVsDirtyRate(r *bench.Report) (figure, error) {
	var rates []uint64
	for _, pt := range r.Points {
		if !slices.Contains(rates, pt.DirtyRate) {
			rates = append(rates, pt.DirtyRate)
		}
	}
	// Ascending, unlimited (0) last.
	slices.SortFunc(rates, func(a, b uint64) int {
		ka, kb := a, b
		if ka == 0 {
			ka = math.MaxUint64
		}
		if kb == 0 {
			kb = math.MaxUint64
		}
		return cmpFloat(float64(ka), float64(kb))
	})
	pos := func(pt bench.Point) float64 { return float64(slices.Index(rates, pt.DirtyRate)) }
	all := varying(r.Points)
	d := dims{mem: all.mem} // series name the memory size; panels the rest
	fig := figure{w: 10 * vg.Inch, h: 6 * vg.Inch}
	for _, f := range facets(r.Points) {
		p := newPlot(f.title("Downtime vs guest dirty rate (median, bars: min-max over repetitions)", all),
			"guest dirty rate (4 KiB pages/s)", "downtime (ms)")
		ss, ys := medianSeries(r, f, d,
			func(pt bench.Point) groupKey { return groupKey{mem: pt.MemBytes} }, pos,
			func(s bench.Summary) bench.Dist { return s.DowntimeMs })
		drawn, err := addSeries(p, ss)
		if err != nil {
			return figure{}, err
		}
		var ticks []plot.Tick
		for i, rt := range rates {
			ticks = append(ticks, plot.Tick{Value: float64(i), Label: bench.RateValue(rt)})
		}
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		p.X.Min, p.X.Max = -0.3, float64(len(rates)-1)+0.3
		if drawn == 0 {
			noData(p)
		}
		logYIfWide(p, ys, drawn)
		fig.panels = append(fig.panels, p)
	}
	return fig, nil
}

// totalTimeVsMemory: median total time against the memory size, a line
// per dirty rate and variant, a panel per working set and target.
func totalTimeVsMemory(r *bench.Report) (figure, error) {
	var mems []uint64
	for _, pt := range r.Points {
		if !slices.Contains(mems, pt.MemBytes) {
			mems = append(mems, pt.MemBytes)
		}
	}
	slices.Sort(mems)
	all := varying(r.Points)
	d := dims{rate: all.rate}
	fig := figure{w: 10 * vg.Inch, h: 6 * vg.Inch}
	for _, f := range facets(r.Points) {
		p := newPlot(f.title("Total migration time vs guest memory (median, bars: min-max over repetitions)", all),
			"guest memory (MiB)", "total migration time (ms)")
		ss, ys := medianSeries(r, f, d,
			func(pt bench.Point) groupKey { return groupKey{rate: pt.DirtyRate} },
			func(pt bench.Point) float64 { return float64(pt.MemBytes) / (1 << 20) },
			func(s bench.Summary) bench.Dist { return s.TotalMs })
		drawn, err := addSeries(p, ss)
		if err != nil {
			return figure{}, err
		}
		var ticks []plot.Tick
		for _, m := range mems {
			ticks = append(ticks, plot.Tick{Value: float64(m) / (1 << 20), Label: fmt.Sprint(m >> 20)})
		}
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		lo, hi := float64(mems[0])/(1<<20), float64(mems[len(mems)-1])/(1<<20)
		pad := max((hi-lo)*0.05, 1)
		p.X.Min, p.X.Max = lo-pad, hi+pad
		if drawn == 0 {
			noData(p)
		}
		logYIfWide(p, ys, drawn)
		fig.panels = append(fig.panels, p)
	}
	return fig, nil
}

// PickRoundRun chooses the run whose rounds bytes-per-round shows: the
// successful godwit run with the most round records (the first such in
// run order). It returns false when no run has round records.
func PickRoundRun(r *bench.Report) (bench.Result, bool) {
	var best bench.Result
	found := false
	for _, res := range r.Results {
		if res.Status != bench.StatusOK || len(res.RoundTrace) == 0 {
			continue
		}
		if !found || len(res.RoundTrace) > len(best.RoundTrace) {
			best, found = res, true
		}
	}
	return best, found
}

// byteUnit picks the unit for a largest value of max bytes.
func byteUnit(max float64) (float64, string) {
	switch {
	case max >= 1<<30:
		return 1 << 30, "GiB"
	case max >= 1<<20:
		return 1 << 20, "MiB"
	case max >= 1<<10:
		return 1 << 10, "KiB"
	}
	return 1, "bytes"
}

// Colours of bytes-per-round's bars.
var (
	precopyColor = color.RGBA{R: 0x3b, G: 0x6e, B: 0xa8, A: 0xff}
	pausedColor  = color.RGBA{R: 0xc4, G: 0x3c, B: 0x2f, A: 0xff}
)

// bytesPerRound: a bar per memory round of one godwit run.
func bytesPerRound(r *bench.Report) (figure, error) {
	res, ok := PickRoundRun(r)
	if !ok {
		p := newPlot("Bytes sent per memory round", "memory round", "bytes sent (bytes)")
		noData(p)
		return single(p, 10*vg.Inch, 6*vg.Inch), nil
	}
	pt, _ := r.Point(res.Point)
	maxBytes := 0.0
	for _, rr := range res.RoundTrace {
		maxBytes = max(maxBytes, float64(rr.Bytes))
	}
	div, unit := byteUnit(maxBytes)
	p := newPlot(fmt.Sprintf("Bytes sent per memory round: run %d (%s, %s, rep %d)", res.Seq, res.Variant, pt.Label(), res.Rep),
		"memory round (0 = full copy)", "bytes sent ("+unit+")")
	n := res.RoundTrace[len(res.RoundTrace)-1].Round + 1
	pre, paused := make(plotter.Values, n), make(plotter.Values, n)
	for _, rr := range res.RoundTrace {
		if rr.Round < 0 || rr.Round >= n {
			continue
		}
		if rr.Paused {
			paused[rr.Round] = float64(rr.Bytes) / div
		} else {
			pre[rr.Round] = float64(rr.Bytes) / div
		}
	}
	width := vg.Length(math.Max(2, math.Min(30, 600/float64(n))))
	for _, b := range []struct {
		vals  plotter.Values
		c     color.Color
		label string
	}{{pre, precopyColor, "pre-copy round (guest running)"}, {paused, pausedColor, "final round (guest paused: part of the downtime)"}} {
		bars, err := plotter.NewBarChart(b.vals, width)
		if err != nil {
			return figure{}, err
		}
		bars.Color = b.c
		bars.LineStyle.Width = 0
		p.Add(bars)
		p.Legend.Add(b.label, bars)
	}
	p.Legend.Left = false
	p.Legend.XOffs = vg.Points(-6)
	p.X.Min, p.X.Max = -0.7, float64(n)-0.3
	step := max(1, (n+19)/20)
	var ticks []plot.Tick
	for i := 0; i < n; i++ {
		t := plot.Tick{Value: float64(i)}
		if i%step == 0 {
			t.Label = fmt.Sprint(i)
		}
		ticks = append(ticks, t)
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Min, p.Y.Max = 0, maxBytes/div*headroom(2)
	return single(p, 10*vg.Inch, 6*vg.Inch), nil
}

// downtimeDistribution: a box per point and variant, with the runs as
// dots, a panel per working set and target.
func downtimeDistribution(r *bench.Report) (figure, error) {
	all := varying(r.Points)
	d := dims{mem: all.mem, rate: all.rate}
	nv := max(len(r.Variants), 1)
	slot := 0.8 / float64(nv)
	fig := figure{w: 10 * vg.Inch, h: 6 * vg.Inch}
	for _, f := range facets(r.Points) {
		p := newPlot(f.title("Downtime distribution per point (box: quartiles and median, whiskers: 1.5 IQR, dots: runs)", all),
			"point (memory, dirty rate)", "downtime (ms)")
		var pts []bench.Point
		for _, pt := range r.Points {
			if (facet{pt.WorkingSet, pt.DowntimeMs}) == f {
				pts = append(pts, pt)
			}
		}
		var ys []float64
		drawn := make([]bool, len(r.Variants))
		for pi, pt := range pts {
			for vi, v := range r.Variants {
				var vals plotter.Values
				for _, res := range r.Results {
					if res.Point == pt.ID && res.Variant == v.Name && res.Status == bench.StatusOK {
						vals = append(vals, res.DowntimeMs)
					}
				}
				if len(vals) == 0 {
					continue
				}
				loc := float64(pi) - 0.4 + slot*(float64(vi)+0.5)
				box, err := plotter.NewBoxPlot(vg.Points(math.Max(4, math.Min(40, 400/float64(len(pts)*nv)))), loc, vals)
				if err != nil {
					return figure{}, err
				}
				c := plotutil.Color(vi)
				box.FillColor = withAlpha(c, 0x60)
				box.BoxStyle.Color = c
				box.MedianStyle.Color = c
				box.MedianStyle.Width = vg.Points(2)
				box.WhiskerStyle.Color = c
				box.GlyphStyle.Color = c
				p.Add(box)
				// The runs themselves, which matter with few repetitions.
				dots := make(plotter.XYs, len(vals))
				for i, v := range vals {
					dots[i] = plotter.XY{X: loc, Y: v}
				}
				sc, err := plotter.NewScatter(dots)
				if err != nil {
					return figure{}, err
				}
				sc.Color, sc.Shape, sc.Radius = c, draw.CircleGlyph{}, vg.Points(2.5)
				p.Add(sc)
				ys = append(ys, vals...)
				drawn[vi] = true
			}
		}
		var ticks []plot.Tick
		for pi, pt := range pts {
			ticks = append(ticks, plot.Tick{Value: float64(pi), Label: pointTick(pt, d)})
		}
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		p.X.Min, p.X.Max = -0.6, float64(len(pts))-0.4
		entries := 0
		for vi, v := range r.Variants {
			if drawn[vi] {
				p.Legend.Add(v.Name, legendSwatch{withAlpha(plotutil.Color(vi), 0x60), plotutil.Color(vi)})
				entries++
			}
		}
		if entries == 0 {
			noData(p)
		}
		logYIfWide(p, ys, entries)
		if len(pts) > 6 {
			p.X.Tick.Label.Rotation = math.Pi / 6
			p.X.Tick.Label.XAlign = draw.XRight
			p.X.Tick.Label.YAlign = draw.YTop
		}
		fig.panels = append(fig.panels, p)
	}
	return fig, nil
}

// pointTick labels a point on the distribution's X axis: its number and
// the fields d names.
func pointTick(pt bench.Point, d dims) string {
	parts := []string{fmt.Sprintf("#%d", pt.ID)}
	if d.mem {
		parts = append(parts, bench.FormatBytes(pt.MemBytes))
	}
	if d.rate {
		parts = append(parts, bench.RateValue(pt.DirtyRate)+"/s")
	}
	return strings.Join(parts, " ")
}

// legendSwatch is a filled square for a legend entry.
type legendSwatch struct{ fill, line color.Color }

// Thumbnail draws the swatch.
func (s legendSwatch) Thumbnail(c *draw.Canvas) {
	pts := []vg.Point{{X: c.Min.X, Y: c.Min.Y}, {X: c.Min.X, Y: c.Max.Y}, {X: c.Max.X, Y: c.Max.Y}, {X: c.Max.X, Y: c.Min.Y}}
	poly := c.ClipPolygonY(pts)
	c.FillPolygon(s.fill, poly)
	c.StrokeLines(draw.LineStyle{Color: s.line, Width: vg.Points(1)}, append(poly, poly[0]))
}

func withAlpha(c color.Color, a uint8) color.Color {
	r, g, b, _ := c.RGBA()
	return color.NRGBA{R: uint8(r >> 8), G: uint8(g >> 8), B: uint8(b >> 8), A: a}
}
