// Package pingpong bounces a VM between local godwit processes: it starts
// one instance, then for every hop starts a receiver on a free loopback
// port, migrates the VM to it through the source's control API, waits for
// the source to exit, and lets the caller verify the guest on the new
// instance. `godwit demo` and `godwit pingpong` are built on it.
package pingpong

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"godwit/migrate"
	"godwit/vmm/api"
)

// Options describe a ping-pong run.
type Options struct {
	// Godwit is the godwit binary to run (usually os.Executable()).
	Godwit string
	// Dir holds the instances' control sockets.
	Dir string
	// RunArgs are the `godwit run` flags of the first instance (without
	// --api-sock and --serial, which the run sets).
	RunArgs []string
	// ReceiveArgs are extra `godwit receive` flags (e.g. --disk-map).
	ReceiveArgs []string
	// Hops is the number of migrations.
	Hops int
	// Migrate is the request template for every hop (To is filled in).
	Migrate api.MigrateRequest
	// Ready, when set, is a console line the first instance must print
	// before the first hop (e.g. the guest's "ready" line).
	Ready *regexp.Regexp
	// Timeout bounds every step: start, hop, verification.
	Timeout time.Duration
	// Verify, when set, runs after every hop on the new instance.
	Verify func(ctx context.Context, hop int, in *Instance) error
	// Console, when set, receives every instance's console output.
	Console io.Writer
	// Log, when set, receives the instances' warnings and errors.
	Log io.Writer
}

// Hop is the result of one migration.
type Hop struct {
	// Hop numbers the migration from 1.
	Hop int `json:"hop"`
	// From and To name the instances.
	From string `json:"from"`
	To   string `json:"to"`
	// Stats are the source's statistics of the migration.
	Stats migrate.Stats `json:"stats"`
}

// Instance is one godwit process of a ping-pong run.
type Instance struct {
	// Name is vm-0, vm-1, ...
	Name string
	// Client talks to the instance's control API.
	Client *api.Client

	cmd  *exec.Cmd
	logs chan string // stderr lines, for readiness
	done chan error  // exit status, once (re-sent for later readers)

	mu      sync.Mutex
	console []string      // console lines so far
	newLine chan struct{} // closed and replaced on every console line
	lastLog []string      // the last log lines, for error messages
}

// maxLastLog is how many log lines an Instance keeps for error messages.
const maxLastLog = 8

// exitError describes an unexpected exit with the instance's last log lines.
func (in *Instance) exitError(err error, before string) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return fmt.Errorf("%s exited (%v) before %s; its last log lines:\n%s", in.Name, err, before, strings.Join(in.lastLog, "\n"))
}

// start runs godwit with args plus --api-sock and --serial stdio, and
// returns once a stderr line containing ready appears (that line too).
func start(o *Options, name string, args []string, ready string) (*Instance, string, error) {
	sock := filepath.Join(o.Dir, name+".sock")
	args = append(append([]string(nil), args...), "--api-sock", sock, "--serial", "stdio", "--log-level", "info")
	in := &Instance{Name: name, Client: api.NewClient(sock), cmd: exec.Command(o.Godwit, args...),
		logs: make(chan string, 256), done: make(chan error, 1), newLine: make(chan struct{})}
	stdout, err := in.cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	stderr, err := in.cmd.StderrPipe()
	if err != nil {
		return nil, "", err
	}
	if err := in.cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("starting %s: %w", name, err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			if o.Console != nil {
				fmt.Fprintf(o.Console, "%s| %s\n", name, line)
			}
			in.mu.Lock()
			in.console = append(in.console, line)
			close(in.newLine)
			in.newLine = make(chan struct{})
			in.mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			in.mu.Lock()
			in.lastLog = append(in.lastLog, sc.Text())
			if len(in.lastLog) > maxLastLog {
				in.lastLog = in.lastLog[1:]
			}
			in.mu.Unlock()
			select {
			case in.logs <- sc.Text():
			default: // nobody waits for log lines any more
			}
			// Warnings, errors, and the process's last word (why its VM
			// stopped) go to the log.
			if o.Log != nil && (strings.Contains(sc.Text(), "level=WARN") || strings.Contains(sc.Text(), "level=ERROR") ||
				strings.HasPrefix(sc.Text(), "godwit: ")) {
				fmt.Fprintf(o.Log, "%s: %s\n", name, sc.Text())
			}
		}
	}()
	go func() {
		wg.Wait()
		close(in.logs)
		in.done <- in.cmd.Wait()
	}()
	line, err := in.waitLog(ready, o.Timeout)
	if err != nil {
		in.Kill()
		return nil, "", err
	}
	return in, line, nil
}

// waitLog returns the instance's first stderr line containing s.
func (in *Instance) waitLog(s string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case l, ok := <-in.logs:
			if !ok {
				return "", fmt.Errorf("%s exited before logging %q", in.Name, s)
			}
			if strings.Contains(l, s) {
				return l, nil
			}
		case <-t.C:
			return "", fmt.Errorf("%s did not log %q within %v", in.Name, s, timeout)
		}
	}
}

// ConsoleLines returns the number of console lines printed so far.
func (in *Instance) ConsoleLines() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.console)
}

// WaitConsole waits for a console line after the first `after` lines that
// matches re (any line when re is nil) and returns it.
func (in *Instance) WaitConsole(ctx context.Context, after int, re *regexp.Regexp) (string, error) {
	start := time.Now()
	for {
		in.mu.Lock()
		for i := after; i < len(in.console); i++ {
			if re == nil || re.MatchString(in.console[i]) {
				l := in.console[i]
				in.mu.Unlock()
				return l, nil
			}
		}
		after = len(in.console)
		wake := in.newLine
		in.mu.Unlock()
		select {
		case <-wake:
		case err := <-in.done:
			in.done <- err
			return "", in.exitError(err, "printing the expected console output")
		case <-ctx.Done():
			what := "console output"
			if re != nil {
				what = fmt.Sprintf("console line matching %q", re)
			}
			return "", fmt.Errorf("%s: no %s within %v: %w", in.Name, what, time.Since(start).Round(time.Second), ctx.Err())
		}
	}
}

// Wait waits for the process to exit and returns its exit error.
func (in *Instance) Wait(timeout time.Duration) error {
	select {
	case err := <-in.done:
		in.done <- err
		return err
	case <-time.After(timeout):
		return fmt.Errorf("%s did not exit within %v", in.Name, timeout)
	}
}

// Kill stops the process if it still runs.
func (in *Instance) Kill() {
	select {
	case err := <-in.done:
		in.done <- err
	default:
		in.cmd.Process.Kill()
	}
}

// Run performs the ping-pong. It returns the hops done and the instance
// that now runs the VM (the caller shuts it down or kills it); on error the
// instances it started are killed.
func Run(ctx context.Context, o Options) ([]Hop, *Instance, error) {
	if o.Hops < 0 || o.Timeout <= 0 || o.Godwit == "" || o.Dir == "" {
		return nil, nil, errors.New("pingpong: Hops >= 0, a Timeout, Godwit and Dir are required")
	}
	src, _, err := start(&o, "vm-0", append([]string{"run"}, o.RunArgs...), "control API listening")
	if err != nil {
		return nil, nil, err
	}
	if o.Ready != nil {
		rctx, cancel := context.WithTimeout(ctx, o.Timeout)
		_, err := src.WaitConsole(rctx, 0, o.Ready)
		cancel()
		if err != nil {
			src.Kill()
			return nil, nil, fmt.Errorf("before the first hop: %w", err)
		}
	}
	var hops []Hop
	for n := 1; n <= o.Hops; n++ {
		name := fmt.Sprintf("vm-%d", n)
		args := append([]string{"receive", "--listen", "tcp:127.0.0.1:0"}, o.ReceiveArgs...)
		dst, line, err := start(&o, name, args, "waiting for a migrating VM")
		if err != nil {
			src.Kill()
			return hops, nil, fmt.Errorf("hop %d: %w", n, err)
		}
		_, addr, _ := strings.Cut(line, "listen=")
		req := o.Migrate
		req.To = strings.Fields(addr + " ")[0]
		stats, err := migrateOnce(ctx, src, req, o.Timeout)
		if err != nil {
			dst.Kill()
			src.Kill()
			return hops, nil, fmt.Errorf("hop %d (%s→%s): %w", n, src.Name, name, err)
		}
		if err := src.Wait(o.Timeout); err != nil {
			dst.Kill()
			return hops, nil, fmt.Errorf("hop %d: %s after migrating: %w", n, src.Name, err)
		}
		hops = append(hops, Hop{Hop: n, From: src.Name, To: name, Stats: stats})
		src = dst
		if o.Verify != nil {
			vctx, cancel := context.WithTimeout(ctx, o.Timeout)
			err := o.Verify(vctx, n, src)
			cancel()
			if err != nil {
				src.Kill()
				return hops, nil, fmt.Errorf("hop %d: verifying %s: %w", n, src.Name, err)
			}
		}
	}
	return hops, src, nil
}

// migrateOnce migrates src as req says and returns the statistics.
func migrateOnce(ctx context.Context, src *Instance, req api.MigrateRequest, timeout time.Duration) (migrate.Stats, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := src.Client.Migrate(ctx, req); err != nil {
		return migrate.Stats{}, err
	}
	for {
		info, err := src.Client.MigrationStatus(ctx, 5*time.Second)
		if err != nil {
			return migrate.Stats{}, err
		}
		if info.Status == "active" {
			continue
		}
		var st migrate.Stats
		if err := json.Unmarshal(info.Stats, &st); err != nil {
			return st, fmt.Errorf("migration %s: %s (no statistics: %v)", info.Status, info.Error, err)
		}
		if info.Status != "completed" {
			return st, fmt.Errorf("migration %s: %s", info.Status, info.Error)
		}
		return st, nil
	}
}

// Summary is the distribution of per-hop downtime.
type Summary struct {
	Hops       int     `json:"hops"`
	MinMs      float64 `json:"downtime_min_ms"`
	MedianMs   float64 `json:"downtime_median_ms"`
	P99Ms      float64 `json:"downtime_p99_ms"`
	MaxMs      float64 `json:"downtime_max_ms"`
	TotalBytes uint64  `json:"transferred_bytes"`
}

// Summarize computes the downtime distribution of hops.
func Summarize(hops []Hop) Summary {
	s := Summary{Hops: len(hops)}
	if len(hops) == 0 {
		return s
	}
	d := make([]float64, len(hops))
	for i, h := range hops {
		d[i] = h.Stats.DowntimeMs
		s.TotalBytes += h.Stats.TransferredBytes
	}
	sort.Float64s(d)
	s.MinMs, s.MaxMs = d[0], d[len(d)-1]
	if len(d)%2 == 1 {
		s.MedianMs = d[len(d)/2]
	} else {
		s.MedianMs = (d[len(d)/2-1] + d[len(d)/2]) / 2
	}
	s.P99Ms = d[min(len(d)-1, (len(d)*99+99)/100-1)]
	return s
}
