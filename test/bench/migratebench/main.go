// Command migratebench measures live migration of an idle stock Linux guest
// with godwit and with QEMU/KVM on the same host, in the same run, and
// prints the medians and the godwit/QEMU ratios.
//
// It runs where /dev/kvm, godwit and qemu-system-x86_64 are available (in
// the repository's nested host: scripts/bench-migrate.sh). Every run boots
// a fresh guest whose command prints "tick N" every second, waits for the
// first tick, migrates it over loopback TCP to a fresh destination process,
// checks that a later tick appears on the destination's console and stops
// both sides. Variants alternate within each repetition (the order reverses
// every other repetition) so slow drifts of a shared machine hit all of
// them alike.
//
// Output: one line per run,
//
//	BENCH <variant> downtime_ms=.. total_ms=.. bytes=.. rounds=.. setup_ms=.. boot_s=.. rep=..
//
// a "DETAIL <variant> rep=.. {json}" line with the full statistics
// (godwit migrate --json, QEMU query-migrate), a
// "BENCH-FAIL <variant> rep=..: <error>" line (with the tails of the
// consoles on stderr) for a failed run, and at the end a table between the
// MIGRATEBENCH-TABLE-BEGIN and MIGRATEBENCH-TABLE-END lines. The exit code
// is 1 when a run failed, 2 on bad usage.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// guestCmd idles but proves life: a numbered tick every second for 20 minutes.
const guestCmd = `i=0; while [ $i -lt 1200 ]; do i=$((i+1)); echo tick $i; sleep 1; done`

// config holds the command-line settings.
type config struct {
	reps           int
	godwit         string
	qemu           string
	kernel         string
	initrd         string
	cmdline        string
	memMiB         int
	cpus           int
	variants       []string
	settleTicks    int
	bootTimeout    time.Duration
	stepTimeout    time.Duration
	migrateTimeout time.Duration
	downtimeMs     int
	receiveArgs    string // extra flags for godwit receive
	showLog        string // regexp: print matching godwit log lines after each run
	qemuBandwidth  int64
	workdir        string
}

// result is one successful migration.
type result struct {
	downtimeMs float64
	totalMs    float64
	setupMs    float64
	bytes      uint64
	rounds     int
	boot       time.Duration
	fromLog    bool   // godwit's statistics came from the source's log
	detail     string // the full statistics, one line of JSON
	breakdown  string // godwit's downtime parts, " name=ms ..."
	// sentMs is the downtime as QEMU measures its own: from the pause to
	// the last byte of the VM written on the source (godwit: to COMPLETE,
	// the breakdown's parts before the destination's; QEMU: its downtime).
	sentMs float64
}

// variant is one way of migrating the guest.
type variant struct {
	name  string
	label string
	qemu  bool
	args  []string // extra `godwit migrate` flags
}

// allVariants lists the known variants, in their default order.
var allVariants = []variant{
	{name: "godwit", label: "godwit (defaults, lz4)"},
	{name: "godwit-nocompress", label: "godwit --compress none", args: []string{"--compress", "none"}},
	{name: "qemu", label: "QEMU/KVM", qemu: true},
}

func main() {
	os.Exit(realMain())
}

// envOr returns the environment variable key, or def when it is empty.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// envInt returns the environment variable key as an int, or def.
func envInt(key string, def int) int {
	var n int
	if _, err := fmt.Sscan(os.Getenv(key), &n); err == nil {
		return n
	}
	return def
}

func realMain() int {
	var c config
	var variants string
	fs := flag.NewFlagSet("migratebench", flag.ContinueOnError)
	fs.IntVar(&c.reps, "reps", envInt("REPS", 2), "repetitions of every variant (env REPS)")
	fs.StringVar(&c.godwit, "godwit", envOr("GODWIT_BIN", "/bin/godwit"), "godwit `binary` (env GODWIT_BIN)")
	fs.StringVar(&c.qemu, "qemu", "qemu-system-x86_64", "QEMU `binary`")
	fs.StringVar(&c.kernel, "kernel", os.Getenv("GODWIT_KERNEL"), "guest kernel `bzImage` (env GODWIT_KERNEL)")
	fs.StringVar(&c.initrd, "initrd", os.Getenv("GODWIT_INITRD"), "guest initramfs running godwit.cmd (env GODWIT_INITRD)")
	fs.StringVar(&c.cmdline, "cmdline", `console=ttyS0 reboot=k panic=-1 quiet godwit.cmd="`+guestCmd+`"`, "guest kernel command line (its command must print \"tick N\" lines)")
	fs.IntVar(&c.memMiB, "mem", 256, "guest memory in `MiB`")
	fs.IntVar(&c.cpus, "cpus", 1, "guest vCPUs")
	fs.StringVar(&variants, "variants", "godwit,godwit-nocompress,qemu", "comma-separated variants: godwit, godwit-nocompress, qemu")
	fs.IntVar(&c.settleTicks, "settle-ticks", 1, "migrate once the guest printed this tick")
	fs.DurationVar(&c.bootTimeout, "boot-timeout", 5*time.Minute, "limit for the guest to boot to its first ticks")
	fs.DurationVar(&c.stepTimeout, "step-timeout", time.Minute, "limit for every other wait (receiver ready, tick on the destination, exits)")
	fs.DurationVar(&c.migrateTimeout, "migrate-timeout", 3*time.Minute, "limit for one migration")
	fs.IntVar(&c.downtimeMs, "downtime-ms", 300, "downtime target for both (godwit --downtime-ms, QEMU downtime-limit)")
	fs.Int64Var(&c.qemuBandwidth, "qemu-max-bandwidth", 1<<37, "QEMU max-bandwidth in bytes/s (large: cap lifted; godwit has none by default)")
	fs.StringVar(&c.receiveArgs, "godwit-receive-args", "", "extra `flags` for every godwit receiver, space-separated")
	fs.StringVar(&c.showLog, "show-log", "", "after each godwit run, print the source's and destination's log lines matching this `regexp` (e.g. 'restored' with --godwit-receive-args '--log-level debug')")
	fs.StringVar(&c.workdir, "workdir", os.TempDir(), "`dir` for sockets")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	vs, err := c.check(variants)
	if err != nil {
		fmt.Fprintf(os.Stderr, "migratebench: %v\n", err)
		return 2
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "migratebench: %v: killing the VMs\n", s)
		killAll()
		os.Exit(130)
	}()
	defer killAll()

	fmt.Printf("migratebench: %d reps of %s; guest %d MiB, %d vCPU, kernel %s, initrd %s\n",
		c.reps, strings.Join(names(vs), ", "), c.memMiB, c.cpus, c.kernel, c.initrd)
	results := map[string][]result{}
	failures := map[string]int{}
	for rep := 1; rep <= c.reps; rep++ {
		order := slices.Clone(vs)
		if rep%2 == 0 {
			slices.Reverse(order)
		}
		for _, v := range order {
			fmt.Printf("migratebench: rep %d/%d: %s: booting\n", rep, c.reps, v.name)
			var r result
			var err error
			if v.qemu {
				r, err = runQEMU(&c, v)
			} else {
				r, err = runGodwit(&c, v)
			}
			killAll() // nothing of this run may linger into the next
			if err != nil {
				failures[v.name]++
				fmt.Printf("BENCH-FAIL %s rep=%d: %v\n", v.name, rep, err)
				continue
			}
			results[v.name] = append(results[v.name], r)
			note := ""
			if r.fromLog {
				note = " stats=source-log"
			}
			fmt.Printf("BENCH %s downtime_ms=%.1f total_ms=%.1f bytes=%d rounds=%d setup_ms=%.1f boot_s=%.1f rep=%d%s\n",
				v.name, r.downtimeMs, r.totalMs, r.bytes, r.rounds, r.setupMs, r.boot.Seconds(), rep, note)
			if r.breakdown != "" {
				fmt.Printf("DOWNTIME %s rep=%d%s\n", v.name, rep, r.breakdown)
			}
			if r.detail != "" {
				fmt.Printf("DETAIL %s rep=%d %s\n", v.name, rep, r.detail)
			}
		}
	}
	printTable(os.Stdout, &c, vs, results, failures)
	for _, n := range failures {
		if n > 0 {
			return 1
		}
	}
	return 0
}

// check validates the configuration and returns the chosen variants.
func (c *config) check(list string) ([]variant, error) {
	if c.reps < 1 {
		return nil, fmt.Errorf("--reps %d: want at least 1", c.reps)
	}
	if c.kernel == "" || c.initrd == "" {
		return nil, fmt.Errorf("--kernel and --initrd (or GODWIT_KERNEL and GODWIT_INITRD) are required")
	}
	for _, f := range []string{c.kernel, c.initrd} {
		if _, err := os.Stat(f); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return nil, fmt.Errorf("no /dev/kvm: %v", err)
	}
	var vs []variant
	for _, name := range strings.Split(list, ",") {
		i := slices.IndexFunc(allVariants, func(v variant) bool { return v.name == strings.TrimSpace(name) })
		if i < 0 {
			return nil, fmt.Errorf("--variants: unknown variant %q", name)
		}
		vs = append(vs, allVariants[i])
	}
	for _, v := range vs {
		bin := c.godwit
		if v.qemu {
			bin = c.qemu
		}
		p, err := exec.LookPath(bin)
		if err != nil {
			return nil, fmt.Errorf("variant %s: %v", v.name, err)
		}
		if v.qemu {
			c.qemu = p
		} else {
			c.godwit = p
		}
	}
	return vs, nil
}

// names returns the variants' names.
func names(vs []variant) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.name)
	}
	return out
}
