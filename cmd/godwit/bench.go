package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"godwit/bench"
	"godwit/bench/figures"
	"godwit/bench/host"
	"godwit/bench/report"
	"godwit/bench/runner"
	"godwit/migrate/pingpong"
	"godwit/test/guest"
	"godwit/vmm/api"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure live migration over a sweep of guest memory, dirty rate, working set, downtime target and compression; writes results.json, results.csv and plots",
		Description: "Every point of the sweep boots the embedded test guest, waits for one whole pass over its working set,\n" +
			"migrates it (over loopback to a fresh `godwit receive`, or --to a remote receiver: see `godwit bench serve`)\n" +
			"and checks that it goes on at the destination. --peer qemu runs every point with QEMU/KVM too, booting the\n" +
			"same guest from a disk image, and reports godwit/QEMU ratios. List flags take comma-separated values.\n" +
			"docs/benchmarks.md explains the method.",
		ArgsUsage: " ",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "quick", Usage: "a handful of small points, LZ4 only, one repetition (minutes in a nested host); sweep flags still override"},
			&cli.StringFlag{Name: "mem", Usage: "guest memory sizes, e.g. 128M,256M,512M (default as listed by --dry-run)"},
			&cli.StringFlag{Name: "dirty-rate", Usage: "test guest dirty rates in 4 KiB pages/s (K = 1000, M = 1000000), or unlimited, e.g. 1K,10K,100K"},
			&cli.StringFlag{Name: "working-set", Usage: "sizes of the range the test guest dirties (from 2 MiB up), or all, e.g. 16M,64M"},
			&cli.StringFlag{Name: "downtime-ms", Usage: "downtime targets in milliseconds, e.g. 30,300"},
			&cli.StringFlag{Name: "compress", Usage: "godwit compression settings: lz4, none or lz4,none"},
			&cli.IntFlag{Name: "reps", Usage: "repetitions of every point and variant"},
			&cli.StringFlag{Name: "peer", Usage: "also run every point with `qemu` (Debian's qemu-system-x86 with KVM)"},
			&cli.StringFlag{Name: "qemu", Value: runner.DefaultQEMU, Usage: "QEMU binary for --peer qemu"},
			&cli.StringFlag{Name: "qemu-cpu", Value: runner.DefaultQEMUCPU, Usage: "QEMU -cpu for --peer qemu (e.g. host,-arch-capabilities where KVM refuses that MSR)"},
			&cli.StringFlag{Name: "qemu-machine", Value: runner.DefaultQEMUMachine, Usage: "QEMU -machine for --peer qemu"},
			&cli.StringFlag{Name: "guest", Usage: "what godwit boots: test (the flat test guest) or boot-sector (the same program in the disk image QEMU boots; the default with --peer)"},
			&cli.StringFlag{Name: "to", Usage: "migrate to a remote receiver tcp:HOST:PORT (`godwit bench serve` there) instead of loopback"},
			&cli.StringFlag{Name: "out", Usage: "output directory (default ./godwit-bench-YYYYMMDD-HHMMSS)"},
			&cli.DurationFlag{Name: "step-timeout", Value: 2 * time.Minute, Usage: "limit for every wait but the migration (boot, first heartbeat, exits)"},
			&cli.DurationFlag{Name: "migrate-timeout", Value: 5 * time.Minute, Usage: "limit for one migration"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the plan and exit"},
		}, channelFlags("the `NAME` the receiver's certificate must carry (default: the host of the receiver's address)")...),
		Action:      runBench,
		Subcommands: []*cli.Command{benchServeCommand(), benchReportCommand()},
	}
}

// benchSpec builds the sweep from --quick and the list flags.
func benchSpec(c *cli.Context) (bench.Spec, error) {
	s := bench.DefaultSpec()
	if c.Bool("quick") {
		s = bench.QuickSpec()
	}
	var err error
	if v := c.String("mem"); v != "" {
		if s.MemBytes, err = parseList(v, "--mem", func(x string) (uint64, error) { return parseSize(x) }); err != nil {
			return s, err
		}
	}
	if v := c.String("dirty-rate"); v != "" {
		if s.DirtyRates, err = parseList(v, "--dirty-rate", parseRate); err != nil {
			return s, err
		}
	}
	if v := c.String("working-set"); v != "" {
		if s.WorkingSets, err = parseList(v, "--working-set", func(x string) (uint64, error) {
			if strings.EqualFold(x, "all") {
				return 0, nil
			}
			n, err := parseSize(x)
			if err == nil && n == 0 {
				err = errors.New("0 bytes (use all for the whole RAM)")
			}
			return n, err
		}); err != nil {
			return s, err
		}
	}
	if v := c.String("downtime-ms"); v != "" {
		if s.DowntimeMs, err = parseList(v, "--downtime-ms", func(x string) (int64, error) { return strconv.ParseInt(x, 10, 64) }); err != nil {
			return s, err
		}
	}
	if v := c.String("compress"); v != "" {
		s.Compress, _ = parseList(v, "--compress", func(x string) (string, error) { return x, nil })
	}
	if c.IsSet("reps") {
		s.Reps = c.Int("reps")
	}
	s.Peer = c.String("peer")
	return s, s.Validate()
}

// parseList splits a comma-separated flag value and parses every item.
func parseList[T any](v, flag string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		x, err := parse(item)
		if err != nil || item == "" {
			return nil, fmt.Errorf("%s: %q: %v", flag, item, err)
		}
		out = append(out, x)
	}
	return out, nil
}

// parseRate parses a dirty rate in pages/s: a number with an optional K
// (x1000) or M (x1000000) suffix, or "unlimited" (0).
func parseRate(s string) (uint64, error) {
	if strings.EqualFold(s, "unlimited") {
		return 0, nil
	}
	mult := uint64(1)
	switch {
	case strings.HasSuffix(s, "K"), strings.HasSuffix(s, "k"):
		mult, s = 1000, s[:len(s)-1]
	case strings.HasSuffix(s, "M"), strings.HasSuffix(s, "m"):
		mult, s = 1000000, s[:len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 || n > 1<<40/mult {
		return 0, errors.New("want pages/s like 5000, 10K, 2M, or unlimited")
	}
	return n * mult, nil
}

func runBench(c *cli.Context) error {
	if c.Args().Present() {
		return cli.Exit("bench takes no arguments, only flags (did you mean `godwit bench serve`?)", 2)
	}
	spec, err := benchSpec(c)
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	plan, err := bench.MakePlan(spec)
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	guestKind := c.String("guest")
	switch guestKind {
	case "":
		guestKind = runner.GuestTest
		if spec.Peer != "" {
			guestKind = runner.GuestBootSector
		}
	case runner.GuestTest, runner.GuestBootSector:
	default:
		return cli.Exit(fmt.Sprintf("--guest %q: want %s or %s", guestKind, runner.GuestTest, runner.GuestBootSector), 2)
	}
	to := c.String("to")
	if to != "" {
		if !regexp.MustCompile(`^tcp:.+:[0-9]+$`).MatchString(to) {
			return cli.Exit(fmt.Sprintf("--to %q: want tcp:HOST:PORT", to), 2)
		}
		if spec.Peer != "" {
			return cli.Exit("--peer qemu runs on loopback only; drop --to or --peer", 2)
		}
	}
	files, chcfg, err := loadChannel(c)
	if err != nil {
		return err
	}
	if c.Bool("dry-run") {
		printPlan(plan, spec)
		return nil
	}
	out := c.String("out")
	if out == "" {
		out = "godwit-bench-" + time.Now().Format("20060102-150405")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return cli.Exit("--out: "+err.Error(), 1)
	}
	self, err := os.Executable()
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	work, err := os.MkdirTemp("", "godwit-bench-")
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	defer os.RemoveAll(work)

	tty := isTerminal(os.Stderr)
	prog := report.NewProgress(os.Stderr, tty, len(plan.Runs))
	tmpl := api.MigrateRequest{}
	requestChannel(&tmpl, files)
	r, err := runner.New(runner.Config{
		Godwit: self, Dir: work, Guest: guestKind, To: to,
		Migrate: tmpl, ReceiveArgs: receiveChannelArgs(files),
		QEMU: c.String("qemu"), QEMUCPU: c.String("qemu-cpu"), QEMUMachine: c.String("qemu-machine"),
		StepTimeout: c.Duration("step-timeout"), MigrateTimeout: c.Duration("migrate-timeout"),
		Log: prog.Log(),
	})
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()

	rep := &bench.Report{
		Schema: bench.Schema, GodwitVersion: host.Version(version), Machine: host.Describe(), Started: time.Now(),
		Options: bench.Options{Guest: guestKind, To: to, Channel: channelName(chcfg)},
		Spec:    spec, Points: plan.Points, Variants: plan.Variants, Skipped: plan.Skipped,
		Results: []bench.Result{},
	}
	if spec.Peer == bench.PeerQEMU {
		qv, err := r.QEMUVersion(ctx)
		if err != nil {
			return cli.Exit("--peer qemu: "+err.Error()+" (apt-get install qemu-system-x86)", 1)
		}
		rep.Options.QEMU, rep.Options.QEMUVersion = c.String("qemu"), qv
		rep.Options.QEMUCPU, rep.Options.QEMUMachine = c.String("qemu-cpu"), c.String("qemu-machine")
		rep.Options.QEMUCapabilities = runner.QEMUCapabilities
		rep.Options.QEMUParameters = runner.QEMUParameters(0)
		delete(rep.Options.QEMUParameters, "downtime-limit")
	}
	fmt.Fprintf(os.Stderr, "godwit bench: %d points x %d variants x %d reps = %d runs (%s guest, %s), results in %s\n",
		len(plan.Points), len(plan.Variants), spec.Reps, len(plan.Runs), guestKind, where(to), out)
	for _, sk := range plan.Skipped {
		fmt.Fprintf(os.Stderr, "godwit bench: skipping %s: %s\n", sk.Point.Label(), sk.Reason)
	}

	interrupted := false
	for _, run := range plan.Runs {
		if ctx.Err() != nil {
			interrupted = true
			break
		}
		p, _ := plan.PointByID(run.Point)
		v, _ := plan.VariantByName(run.Variant)
		prog.Begin(run, p)
		res := r.Run(ctx, run, p, v)
		if ctx.Err() != nil {
			// Cut short by the interrupt: not a measurement.
			interrupted = true
			break
		}
		rep.Results = append(rep.Results, res)
		prog.End(res, p)
	}
	prog.Finish()
	rep.Finished = time.Now()
	if err := writeBenchOutputs(out, rep); err != nil {
		return err
	}
	if interrupted {
		return cli.Exit(fmt.Sprintf("interrupted after %d of %d runs (results so far are written)", len(rep.Results), len(plan.Runs)), 130)
	}
	for _, res := range rep.Results {
		if res.Status != bench.StatusOK {
			return cli.Exit("some runs failed (see the table above and results.json)", 1)
		}
	}
	return nil
}

// where names the migration path for the banner.
func where(to string) string {
	if to == "" {
		return "loopback"
	}
	return "to " + to
}

// printPlan prints the points, variants and runs of a plan.
func printPlan(pl bench.Plan, s bench.Spec) {
	fmt.Printf("%d points x %d variants x %d reps = %d runs\n", len(pl.Points), len(pl.Variants), s.Reps, len(pl.Runs))
	for _, p := range pl.Points {
		fmt.Printf("  point %d: %s (a pass every %v)\n", p.ID, p.Label(), p.PassTime().Round(time.Millisecond))
	}
	for _, v := range pl.Variants {
		fmt.Printf("  variant %s\n", v.Name)
	}
	for _, sk := range pl.Skipped {
		fmt.Printf("  skipped: %s: %s\n", sk.Point.Label(), sk.Reason)
	}
}

func benchServeCommand() *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "the remote side of `godwit bench --to`: receive migrated test guests one after another, check each runs, stop it",
		ArgsUsage: " ",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "listen", Usage: "where every receiver listens, tcp:HOST:PORT"},
			&cli.IntFlag{Name: "count", Usage: "stop after this many guests (0 = until interrupted)"},
			&cli.DurationFlag{Name: "step-timeout", Value: 2 * time.Minute, Usage: "limit for the first heartbeat of a received guest and its exit"},
		}, channelFlags("accept only a source whose certificate carries `NAME`")...),
		Action: runBenchServe,
	}
}

// runBenchServe runs `godwit receive` in a loop: each received guest must
// print a heartbeat, then it is shut down and the next receiver starts.
func runBenchServe(c *cli.Context) error {
	if c.String("listen") == "" {
		return cli.Exit("--listen tcp:HOST:PORT is required", 2)
	}
	files, _, err := loadChannel(c)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	dir, err := os.MkdirTemp("", "godwit-bench-serve-")
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	defer os.RemoveAll(dir)
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	beat := regexp.MustCompile("^" + guest.HeartbeatPrefix + "[0-9]+$")
	step := c.Duration("step-timeout")
	args := append([]string{"receive", "--listen", c.String("listen")}, receiveChannelArgs(files)...)
	for n := 1; c.Int("count") == 0 || n <= c.Int("count"); n++ {
		o := pingpong.Options{Godwit: self, Dir: dir, Timeout: step, Log: os.Stderr}
		in, _, err := pingpong.Start(&o, fmt.Sprintf("guest-%d", n), args, "waiting for a migrating VM")
		if err != nil {
			return cli.Exit(err.Error(), 1)
		}
		fmt.Fprintf(os.Stderr, "godwit bench serve: waiting for guest %d on %s\n", n, c.String("listen"))
		// No limit while waiting for the migration itself.
		_, err = in.WaitConsole(ctx, 0, beat)
		if ctx.Err() != nil {
			in.Kill()
			return nil
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "godwit bench serve: guest %d: %v\n", n, err)
			in.Kill()
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, step)
		err = in.Client.Shutdown(sctx)
		cancel()
		if err == nil {
			err = in.Wait(step)
		}
		in.Kill()
		if err != nil {
			fmt.Fprintf(os.Stderr, "godwit bench serve: guest %d ran, stopping it: %v\n", n, err)
			continue
		}
		fmt.Fprintf(os.Stderr, "godwit bench serve: guest %d received, ran at the destination, stopped\n", n)
	}
	return nil
}

// writeBenchOutputs computes the summary of rep and writes results.json,
// results.csv and the figures into out, then prints the summary table.
func writeBenchOutputs(out string, rep *bench.Report) error {
	rep.Summary, rep.Ratios = bench.Summarize(rep)
	written, err := report.WriteFiles(out, rep)
	if err != nil {
		return cli.Exit("writing results: "+err.Error(), 1)
	}
	figs, ferr := figures.WriteAll(out, rep)
	written = append(written, figs...)
	if err := report.WriteTable(os.Stdout, rep); err != nil {
		return cli.Exit(err.Error(), 1)
	}
	fmt.Printf("\nwritten: %s\n", strings.Join(written, " "))
	if ferr != nil {
		return cli.Exit("plots: "+ferr.Error(), 1)
	}
	return nil
}

func benchReportCommand() *cli.Command {
	return &cli.Command{
		Name:      "report",
		Usage:     "redo the summary, results.csv and the plots of a bench run from its results.json",
		ArgsUsage: "RESULTS.json",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "output directory (default: the directory of RESULTS.json)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("report takes one argument: the results.json of a bench run", 2)
			}
			f, err := os.Open(c.Args().First())
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			defer f.Close()
			rep, err := report.ReadJSON(f)
			if err != nil {
				return cli.Exit(c.Args().First()+": "+err.Error(), 1)
			}
			out := c.String("out")
			if out == "" {
				out = filepath.Dir(c.Args().First())
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return cli.Exit("--out: "+err.Error(), 1)
			}
			return writeBenchOutputs(out, rep)
		},
	}
}
