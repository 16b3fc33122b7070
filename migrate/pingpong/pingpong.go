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
	"os"
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
	// Storage, when set, moves the VM's disks with it on every hop.
	Storage *Storage
}

// Storage moves a VM's disks with it (`migrate --include-storage`): hop
// n's receiver creates the images in Dirs[(n-1)%2] (`receive
// --storage-dir`), so they go back and forth between the two directories.
// Once hop n's source has exited, the images it used are stale copies:
// from hop 2 on they are deleted (they are in the directory the next hop
// receives into); the first instance's images, the caller's, are kept.
type Storage struct {
	// Dirs are the two directories.
	Dirs [2]string
	// Images are the base names of the VM's images, which the receivers
	// keep.
	Images []string
}

// dir returns the directory hop n receives into.
func (s *Storage) dir(n int) string { return s.Dirs[(n-1)%2] }

// removeStale deletes the images hop n's source used, once it exited.
func (s *Storage) removeStale(n int) error {
	if n < 2 {
		return nil
	}
	for _, name := range s.Images {
		if err := os.Remove(filepath.Join(s.dir(n-1), name)); err != nil {
			return fmt.Errorf("removing the stale image of hop %d: %w", n-1, err)
		}
	}
	return nil
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
	// Rounds are the source's round records of the migration (the most
	// recent ones it kept); not in the JSON report.
	Rounds []migrate.RoundRecord `json:"-"`
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

// Start runs godwit with args plus --api-sock, --serial stdio and
// --log-level info (o.Dir, o.Godwit, o.Timeout, o.Console and o.Log apply),
// and returns once a stderr line containing ready appears (that line too).
// Run is built on it; other drivers (`godwit bench`) use it directly.
func Start(o *Options, name string, args []string, ready string) (*Instance, string, error) {
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
	src, _, err := Start(&o, "vm-0", append([]string{"run"}, o.RunArgs...), "control API listening")
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
		if o.Storage != nil {
			args = append(args, "--storage-dir", o.Storage.dir(n))
		}
		dst, line, err := Start(&o, name, args, "waiting for a migrating VM")
		if err != nil {
			src.Kill()
			return hops, nil, fmt.Errorf("hop %d: %w", n, err)
		}
		_, addr, _ := strings.Cut(line, "listen=")
		req := o.Migrate
		req.To = strings.Fields(addr + " ")[0]
		req.IncludeStorage = req.IncludeStorage || o.Storage != nil
		stats, rounds, err := Migrate(ctx, src, req, o.Timeout)
		if err != nil {
			dst.Kill()
			src.Kill()
			return hops, nil, fmt.Errorf("hop %d (%s→%s): %w", n, src.Name, name, err)
		}
		if err := src.Wait(o.Timeout); err != nil {
			dst.Kill()
			return hops, nil, fmt.Errorf("hop %d: %s after migrating: %w", n, src.Name, err)
		}
		if o.Storage != nil {
			if err := o.Storage.removeStale(n); err != nil {
				dst.Kill()
				return hops, nil, fmt.Errorf("hop %d: %w", n, err)
			}
		}
		hops = append(hops, Hop{Hop: n, From: src.Name, To: name, Stats: stats, Rounds: rounds})
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

// Migrate migrates src as req says (within timeout) and returns the
// source's final statistics and round records.
func Migrate(ctx context.Context, src *Instance, req api.MigrateRequest, timeout time.Duration) (migrate.Stats, []migrate.RoundRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := src.Client.Migrate(ctx, req); err != nil {
		return migrate.Stats{}, nil, err
	}
	for {
		info, err := src.Client.MigrationStatus(ctx, 5*time.Second)
		if err != nil {
			return migrate.Stats{}, nil, err
		}
		if info.Status == "active" {
			continue
		}
		var rounds []migrate.RoundRecord
		if len(info.Rounds) > 0 {
			_ = json.Unmarshal(info.Rounds, &rounds) // records are extra; the statistics decide
		}
		var st migrate.Stats
		if err := json.Unmarshal(info.Stats, &st); err != nil {
			return st, rounds, fmt.Errorf("migration %s: %s (no statistics: %v)", info.Status, info.Error, err)
		}
		if info.Status != "completed" {
			return st, rounds, fmt.Errorf("migration %s: %s", info.Status, info.Error)
		}
		return st, rounds, nil
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
