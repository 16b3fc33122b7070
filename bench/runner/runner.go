// Package runner executes the runs of a benchmark plan (package bench): for
// a godwit variant it boots the embedded test guest (or its boot image)
// under `godwit run`, waits for the guest's first heartbeat (one whole pass
// over the working set), migrates it through the control API to a fresh
// `godwit receive` on loopback (or to a remote receiver) and checks that
// the guest goes on at the destination; for the QEMU variant it does the
// same with two QEMU/KVM processes booting the boot image from a raw disk,
// driven over QMP. Each run's numbers come from the migrator's own
// statistics — godwit's migrate.Stats and round records, QEMU's
// query-migrate — not from re-measuring.
package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"godwit/bench"
	"godwit/bench/qmp"
	"godwit/migrate"
	"godwit/migrate/pingpong"
	"godwit/test/guest"
	"godwit/vmm/api"
	"godwit/vmm/memory"
)

// Guest kinds godwit can run.
const (
	// GuestTest is the flat embedded test guest (`godwit run` without a
	// kernel): godwit tells it the TSC frequency.
	GuestTest = "test"
	// GuestBootSector is the same program in the boot image
	// (`godwit run --boot-sector`), byte for byte what QEMU boots.
	GuestBootSector = "boot-sector"
)

// QEMU settings the QEMU variant uses.
const (
	// DefaultQEMU is the QEMU binary looked up on PATH.
	DefaultQEMU = "qemu-system-x86_64"
	// DefaultQEMUCPU is -cpu: the host's CPU, as godwit's guests see it.
	DefaultQEMUCPU = "host"
	// DefaultQEMUMachine is -machine: i440FX, whose RAM below 4 GiB
	// matches godwit's (3 GiB at most).
	DefaultQEMUMachine = "pc"
	// QEMUMaxBandwidth lifts QEMU's default bandwidth cap (bytes/s):
	// godwit has none.
	QEMUMaxBandwidth = 1 << 37
)

// QEMUCapabilities are the migration capabilities the bench turns on in
// the source QEMU: events (so the end of a migration is an event, not a
// poll) and auto-converge (godwit's default is to throttle too).
var QEMUCapabilities = []string{"events", "auto-converge"}

// heartbeat matches the test guest's heartbeat lines.
var heartbeat = regexp.MustCompile("^" + guest.HeartbeatPrefix + "[0-9]+$")

// Config sets up a Runner.
type Config struct {
	// Godwit is the godwit binary (usually os.Executable()).
	Godwit string
	// Dir is a work directory for sockets and images; it must exist.
	Dir string
	// Guest is GuestTest or GuestBootSector.
	Guest string
	// To is a remote `godwit receive` (tcp:HOST:PORT) to migrate to;
	// empty: a local receiver on loopback for every run.
	To string
	// ToRetry is how long a migration to To is retried while the remote
	// receiver is not listening yet (connection refused).
	ToRetry time.Duration
	// Migrate is the template of every godwit migration request: the
	// channel's files (PSK, TLS) and the bandwidth cap. To, DowntimeMS,
	// Compress, TimeoutMS and AutoConverge are set per run.
	Migrate api.MigrateRequest
	// ReceiveArgs are extra `godwit receive` flags (the channel's).
	ReceiveArgs []string
	// QEMU, QEMUCPU and QEMUMachine set up the QEMU variant.
	QEMU, QEMUCPU, QEMUMachine string
	// StepTimeout bounds every wait but the migration: boot, first
	// heartbeat (plus three passes' time), exits.
	StepTimeout time.Duration
	// MigrateTimeout bounds one migration; a migration still running
	// then is cancelled and the run fails.
	MigrateTimeout time.Duration
	// Log receives the processes' warnings and errors (may be nil).
	Log io.Writer
}

// Runner runs benchmark runs one at a time.
type Runner struct {
	cfg Config
}

// New checks cfg, fills in defaults and returns a Runner.
func New(cfg Config) (*Runner, error) {
	if cfg.Godwit == "" || cfg.Dir == "" {
		return nil, errors.New("runner: Godwit and Dir are required")
	}
	switch cfg.Guest {
	case "":
		cfg.Guest = GuestTest
	case GuestTest, GuestBootSector:
	default:
		return nil, fmt.Errorf("runner: guest %q: want %s or %s", cfg.Guest, GuestTest, GuestBootSector)
	}
	if cfg.QEMU == "" {
		cfg.QEMU = DefaultQEMU
	}
	if cfg.QEMUCPU == "" {
		cfg.QEMUCPU = DefaultQEMUCPU
	}
	if cfg.QEMUMachine == "" {
		cfg.QEMUMachine = DefaultQEMUMachine
	}
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = 2 * time.Minute
	}
	if cfg.MigrateTimeout <= 0 {
		cfg.MigrateTimeout = 5 * time.Minute
	}
	if cfg.ToRetry <= 0 {
		cfg.ToRetry = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	// QEMU's option syntax gives ',' and '=' meanings: paths in options
	// must not hold them.
	if strings.ContainsAny(cfg.Dir, ",=") {
		return nil, fmt.Errorf("runner: work directory %q holds ',' or '=', which QEMU options cannot carry", cfg.Dir)
	}
	return &Runner{cfg: cfg}, nil
}

// Run performs one run and returns its result; a failure is a result with
// StatusFailed and the reason, never a panic or a lingering process.
func (r *Runner) Run(ctx context.Context, run bench.Run, p bench.Point, v bench.Variant) bench.Result {
	res := bench.Result{Run: run, Start: time.Now()}
	var err error
	switch v.Side {
	case bench.SideGodwit:
		err = r.runGodwit(ctx, p, v, &res)
	case bench.SideQEMU:
		err = r.runQEMU(ctx, p, &res)
	default:
		err = fmt.Errorf("unknown side %q", v.Side)
	}
	res.Status = bench.StatusOK
	if err != nil {
		res.Status, res.Error = bench.StatusFailed, err.Error()
	}
	return res
}

// stepTimeout is the bound of a wait for a heartbeat at p: the step
// timeout plus three heartbeat intervals.
func (r *Runner) stepTimeout(p bench.Point) time.Duration {
	return r.cfg.StepTimeout + 3*time.Duration(p.HeartbeatEvery())*p.PassTime()
}

// lowRAMEnd is the end of the guest's RAM below the 32-bit PCI hole.
func lowRAMEnd(mem uint64) (uint64, error) {
	l, err := memory.Layout(mem)
	if err != nil {
		return 0, err
	}
	return l[0].End(), nil
}

// bootImage writes the boot image patched for p into dir.
func bootImage(dir string, p bench.Point) (string, error) {
	low, err := lowRAMEnd(p.MemBytes)
	if err != nil {
		return "", err
	}
	img, err := guest.PatchBootImage(guest.BootImage, p.GuestParams(), low)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "boot.img")
	return path, os.WriteFile(path, img, 0o644)
}

// guestArgs are the `godwit run` flags of p's guest.
func (r *Runner) guestArgs(dir string, p bench.Point) ([]string, error) {
	args := []string{"run", "--mem", strconv.FormatUint(p.MemBytes, 10), "--cpus", "1"}
	if r.cfg.Guest == GuestBootSector {
		img, err := bootImage(dir, p)
		if err != nil {
			return nil, err
		}
		return append(args, "--boot-sector", img), nil
	}
	gp := p.GuestParams()
	low, err := lowRAMEnd(p.MemBytes)
	if err != nil {
		return nil, err
	}
	check := gp
	check.TSCKHz = 1 // godwit fills it in
	if err := check.Validate(low); err != nil {
		return nil, err
	}
	return append(args,
		"--guest-arg", fmt.Sprintf("range-start=%#x", gp.RangeStart),
		"--guest-arg", fmt.Sprintf("range-end=%#x", gp.RangeEnd),
		"--guest-arg", fmt.Sprintf("heartbeat=%d", gp.HeartbeatEvery),
		"--guest-arg", fmt.Sprintf("rate=%d", gp.MaxPagesPerSec)), nil
}

// runGodwit migrates p's guest from `godwit run` to `godwit receive`.
func (r *Runner) runGodwit(ctx context.Context, p bench.Point, v bench.Variant, res *bench.Result) error {
	dir, err := os.MkdirTemp(r.cfg.Dir, "godwit-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	args, err := r.guestArgs(dir, p)
	if err != nil {
		return err
	}
	step := r.stepTimeout(p)
	o := pingpong.Options{Godwit: r.cfg.Godwit, Dir: dir, Timeout: step, Log: r.cfg.Log}
	src, _, err := pingpong.Start(&o, "source", args, "control API listening")
	if err != nil {
		return err
	}
	defer src.Kill()
	// The first heartbeat ends a whole pass: every page of the working
	// set has been written before the migration starts.
	if err := waitConsole(ctx, step, src, "the guest's first heartbeat on the source"); err != nil {
		return err
	}
	to := r.cfg.To
	var dst *pingpong.Instance
	if to == "" {
		var line string
		dst, line, err = pingpong.Start(&o, "destination", append([]string{"receive", "--listen", "tcp:127.0.0.1:0"}, r.cfg.ReceiveArgs...), "waiting for a migrating VM")
		if err != nil {
			return err
		}
		defer dst.Kill()
		if to = listenAddr(line); to == "" {
			return fmt.Errorf("no listen address in the receiver's line %q", line)
		}
	}
	auto := true
	req := r.cfg.Migrate
	req.To, req.DowntimeMS, req.Compress, req.AutoConverge = to, p.DowntimeMs, v.Compress, &auto
	req.TimeoutMS = r.cfg.MigrateTimeout.Milliseconds()
	stats, rounds, wall, err := r.migrateGodwit(ctx, src, req)
	res.WallMs = ms(wall)
	if err != nil {
		return err
	}
	res.DowntimeMs, res.TotalMs, res.SetupMs = stats.DowntimeMs, stats.TotalMs, stats.SetupMs
	res.TransferredBytes, res.Rounds, res.DirtyPagesRate = stats.TransferredBytes, stats.Rounds, stats.DirtyPagesRate
	res.Godwit, res.RoundTrace = &stats, rounds
	if err := src.Wait(step); err != nil {
		return fmt.Errorf("the source after migrating: %w", err)
	}
	if dst == nil {
		return nil // the remote receiver checks and stops the guest
	}
	if err := waitConsole(ctx, step, dst, "a heartbeat on the destination"); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, step)
	defer cancel()
	if err := dst.Client.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutting the destination down: %w", err)
	}
	if err := dst.Wait(step); err != nil {
		return fmt.Errorf("the destination after shutdown: %w", err)
	}
	return nil
}

// migrateGodwit runs one migration, retrying for a while a remote
// receiver that is not listening yet. It returns the statistics, the
// round records and the wall time of the successful attempt.
func (r *Runner) migrateGodwit(ctx context.Context, src *pingpong.Instance, req api.MigrateRequest) (stats migrate.Stats, rounds []migrate.RoundRecord, wall time.Duration, err error) {
	deadline := time.Now().Add(r.cfg.ToRetry)
	for {
		start := time.Now()
		stats, rounds, err = pingpong.Migrate(ctx, src, req, r.cfg.MigrateTimeout+r.cfg.StepTimeout)
		wall = time.Since(start)
		if err == nil || r.cfg.To == "" || !strings.Contains(err.Error(), "connection refused") || time.Now().After(deadline) {
			return stats, rounds, wall, err
		}
		// Failed before anything moved: the VM runs on at the source.
		t := time.NewTimer(time.Second)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return stats, rounds, wall, err
		}
	}
}

// waitConsole waits for a heartbeat line that the instance prints from now
// on (or printed already: any heartbeat proves a pass).
func waitConsole(ctx context.Context, timeout time.Duration, in *pingpong.Instance, what string) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := in.WaitConsole(wctx, 0, heartbeat); err != nil {
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return nil
}

// listenAddr takes tcp:HOST:PORT from godwit receive's "waiting for a
// migrating VM ... listen=tcp:HOST:PORT" log line.
func listenAddr(line string) string {
	_, rest, ok := strings.Cut(line, "listen=")
	if !ok {
		return ""
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return ""
	}
	a := strings.Trim(f[0], `"`)
	if !strings.HasPrefix(a, "tcp:") {
		return ""
	}
	return a
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// QEMUVersion returns the first line of `qemu -version`.
func (r *Runner) QEMUVersion(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, r.cfg.QEMU, "-version").Output()
	if err != nil {
		return "", fmt.Errorf("%s -version: %w", r.cfg.QEMU, err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(first), nil
}

// qemuArgs are the options both QEMU processes of p share.
func (r *Runner) qemuArgs(p bench.Point, disk string) []string {
	return []string{r.cfg.QEMU,
		"-machine", r.cfg.QEMUMachine, "-accel", "kvm", "-cpu", r.cfg.QEMUCPU,
		"-m", strconv.FormatUint(p.MemBytes>>10, 10) + "K", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "stdio",
		"-drive", "file=" + disk + ",format=raw,if=ide"}
}

// runQEMU migrates p's guest (the boot image) from one QEMU to an
// -incoming QEMU on loopback, over QMP.
func (r *Runner) runQEMU(ctx context.Context, p bench.Point, res *bench.Result) error {
	dir, err := os.MkdirTemp(r.cfg.Dir, "qemu-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	disk, err := bootImage(dir, p)
	if err != nil {
		return err
	}
	step := r.stepTimeout(p)
	srcQMP, dstQMP := filepath.Join(dir, "src.qmp"), filepath.Join(dir, "dst.qmp")
	src, err := startProc("QEMU source", append(r.qemuArgs(p, disk), "-qmp", "unix:"+srcQMP+",server=on,wait=off")...)
	if err != nil {
		return err
	}
	defer src.kill()
	wctx, cancel := context.WithTimeout(ctx, step)
	_, err = src.waitLine(wctx, 0, heartbeat)
	cancel()
	if err != nil {
		if strings.Contains(src.stderrTail(), "failed to set MSR") {
			return fmt.Errorf("this KVM refuses an MSR of QEMU's -cpu %s: try --qemu-cpu %s,-arch-capabilities or a named CPU model (%w)", r.cfg.QEMUCPU, r.cfg.QEMUCPU, err)
		}
		return fmt.Errorf("waiting for the guest's first heartbeat on the source: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	uri := fmt.Sprintf("tcp:127.0.0.1:%d", port)
	dst, err := startProc("QEMU destination", append(r.qemuArgs(p, disk), "-qmp", "unix:"+dstQMP+",server=on,wait=off", "-incoming", uri)...)
	if err != nil {
		return err
	}
	defer dst.kill()
	// QMP answers from QEMU's main loop, which runs once the incoming
	// listener is set up: a destination that answers is ready.
	dq, err := dialQMP(ctx, dstQMP, dst, step)
	if err != nil {
		return err
	}
	defer dq.Close()
	sq, err := dialQMP(ctx, srcQMP, src, step)
	if err != nil {
		return err
	}
	defer sq.Close()
	cctx, cancel := context.WithTimeout(ctx, step)
	defer cancel()
	if err := sq.SetCapabilities(cctx, QEMUCapabilities...); err != nil {
		return err
	}
	if _, err := sq.Execute(cctx, "migrate-set-parameters", QEMUParameters(p.DowntimeMs)); err != nil {
		return err
	}
	start := time.Now()
	if _, err := sq.Execute(cctx, "migrate", map[string]any{"uri": uri}); err != nil {
		return err
	}
	mctx, mcancel := context.WithTimeout(ctx, r.cfg.MigrateTimeout)
	status, err := sq.WaitMigrationEnd(mctx)
	mcancel()
	res.WallMs = ms(time.Since(start))
	if err != nil {
		_, _ = sq.Execute(cctx, "migrate_cancel", nil)
		return fmt.Errorf("QEMU migration did not end: %w", err)
	}
	info, raw, err := queryFinished(cctx, sq, status)
	if err != nil {
		return err
	}
	res.QEMU = json.RawMessage(raw)
	if status != qmp.StatusCompleted || info.Status != qmp.StatusCompleted {
		return fmt.Errorf("QEMU migration %s: %s", info.Status, info.ErrorDesc)
	}
	res.DowntimeMs, res.TotalMs, res.SetupMs = float64(info.Downtime), float64(info.TotalTime), float64(info.SetupTime)
	if info.RAM != nil {
		res.TransferredBytes, res.Rounds = info.RAM.Transferred, int(info.RAM.DirtySyncCount)
		res.DirtyPagesRate = float64(info.RAM.DirtyPagesRate)
	}
	wctx, cancel = context.WithTimeout(ctx, step)
	_, err = dst.waitLine(wctx, 0, heartbeat)
	cancel()
	if err != nil {
		return fmt.Errorf("waiting for a heartbeat on the destination: %w", err)
	}
	for _, q := range []*qmp.Client{sq, dq} {
		_, _ = q.Execute(cctx, "quit", nil) // the reply may be lost as QEMU exits
	}
	for _, pr := range []*proc{src, dst} {
		if err := pr.wait(step); err != nil {
			return fmt.Errorf("%s after quit: %w", pr.name, err)
		}
	}
	return nil
}

// queryFinished reads query-migrate once the migration has ended with
// status. QEMU sends the MIGRATION event of a completed migration before
// its migration thread has computed the times (total-time and downtime
// read 0 until then), so a completed migration is read again, briefly,
// until they are there.
func queryFinished(ctx context.Context, c *qmp.Client, status string) (qmp.MigrationInfo, []byte, error) {
	backoff := 5 * time.Millisecond
	for {
		info, raw, err := c.QueryMigrate(ctx)
		if err != nil || status != qmp.StatusCompleted || info.Status != qmp.StatusCompleted || info.TotalTime > 0 {
			return info, raw, err
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return info, raw, fmt.Errorf("QEMU reported a completed migration without its times: %w", ctx.Err())
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// QEMUParameters are the migrate-set-parameters arguments for a downtime
// target.
func QEMUParameters(downtimeMs int64) map[string]any {
	return map[string]any{"downtime-limit": downtimeMs, "max-bandwidth": int64(QEMUMaxBandwidth)}
}

// dialQMP connects to a QEMU's QMP socket once it accepts, giving up when
// the process exits or after timeout.
func dialQMP(ctx context.Context, path string, pr *proc, timeout time.Duration) (*qmp.Client, error) {
	c, err := qmp.DialWhenReady(ctx, path, pr.done, timeout)
	switch {
	case errors.Is(err, qmp.ErrExited):
		return nil, fmt.Errorf("%s exited (%v) before its QMP socket accepted; stderr: %s", pr.name, pr.err, pr.stderrTail())
	case err != nil:
		return nil, fmt.Errorf("%s: %w", pr.name, err)
	}
	return c, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
