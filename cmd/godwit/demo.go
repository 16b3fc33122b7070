package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"godwit/migrate"
	"godwit/test/guest"
	"godwit/vmm/api"
	"godwit/vmm/memory"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "bounce the embedded test guest between two local godwit instances, verifying its memory after every hop",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "hops", Value: 10, Usage: "number of migrations"},
			&cli.StringFlag{Name: "mem", Value: "256M", Usage: "guest RAM size"},
			&cli.StringSliceFlag{Name: "guest-arg", Usage: "embedded test guest parameter key=value (repeatable)"},
			&cli.IntFlag{Name: "downtime-ms", Value: 300, Usage: "downtime target per hop"},
			&cli.StringFlag{Name: "compress", Value: "lz4", Usage: "lz4 or none"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "limit for each step (boot, hop, check)"},
			&cli.BoolFlag{Name: "json", Usage: "print every hop's statistics as JSON lines"},
		},
		Action: runDemo,
	}
}

// demoInstance is one godwit process of the demo.
type demoInstance struct {
	name   string
	cmd    *exec.Cmd
	client *api.Client
	lines  chan string // its log lines, for readiness
	done   chan error  // its exit, once
}

// runDemo starts the test guest in one instance, then --hops times starts
// a receiver, migrates the VM to it, and verifies the guest's memory there
// (pause, dump, check, resume).
func runDemo(c *cli.Context) error {
	mem, err := parseSize(c.String("mem"))
	if err != nil {
		return cli.Exit("--mem: "+err.Error(), 2)
	}
	layout, err := memory.Layout(mem)
	if err != nil {
		return cli.Exit("--mem: "+err.Error(), 2)
	}
	params := guest.DefaultParams(layout[0].End())
	for _, a := range c.StringSlice("guest-arg") {
		if err := guest.ParseArg(&params, a); err != nil {
			return cli.Exit("--guest-arg "+a+": "+err.Error(), 2)
		}
	}
	if _, err := migrate.ParseCompression(c.String("compress")); err != nil {
		return cli.Exit("--compress: "+err.Error(), 2)
	}
	self, err := os.Executable()
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	dir, err := os.MkdirTemp("", "godwit-demo-")
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	defer os.RemoveAll(dir)
	timeout := c.Duration("timeout")
	ctx := c.Context

	args := []string{"run", "--mem", c.String("mem"), "--serial", "file=" + filepath.Join(dir, "vm-0.console")}
	for _, a := range c.StringSlice("guest-arg") {
		args = append(args, "--guest-arg", a)
	}
	src, _, err := startInstance(self, dir, "vm-0", args, "control API listening")
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	defer src.kill()
	fmt.Printf("godwit demo: test guest, %s RAM, range %#x-%#x, %d hops over loopback\n",
		formatSize(mem), params.RangeStart, params.RangeEnd, c.Int("hops"))
	fmt.Printf("%-4s %-12s %9s %9s %7s %11s %10s %10s %s\n",
		"hop", "route", "total_ms", "downtime", "rounds", "transferred", "counter", "passes", "check")
	var lastCounter uint64
	var downtimes []float64
	for hop := 1; hop <= c.Int("hops"); hop++ {
		name := fmt.Sprintf("vm-%d", hop)
		dst, listen, err := startReceiver(self, dir, name)
		if err != nil {
			return cli.Exit(fmt.Sprintf("hop %d: %v", hop, err), 1)
		}
		stats, err := migrateOnce(ctx, src, listen, c.Int("downtime-ms"), c.String("compress"), timeout)
		if err != nil {
			dst.kill()
			return cli.Exit(fmt.Sprintf("hop %d: %v", hop, err), 1)
		}
		if err := src.waitExit(timeout); err != nil {
			dst.kill()
			return cli.Exit(fmt.Sprintf("hop %d: source after migrating: %v", hop, err), 1)
		}
		src = dst
		res, passes, err := verifyGuest(ctx, src, params, filepath.Join(dir, "mem.img"), timeout)
		if err != nil {
			return cli.Exit(fmt.Sprintf("hop %d: %v", hop, err), 1)
		}
		if res.Counter < lastCounter {
			return cli.Exit(fmt.Sprintf("hop %d: guest counter went back from %d to %d", hop, lastCounter, res.Counter), 1)
		}
		lastCounter = res.Counter
		downtimes = append(downtimes, stats.DowntimeMs)
		if c.Bool("json") {
			b, _ := json.Marshal(map[string]any{"hop": hop, "stats": stats, "counter": res.Counter, "boundary": res.Boundary, "passes": passes})
			fmt.Println(string(b))
			continue
		}
		fmt.Printf("%-4d %-12s %9.1f %9.1f %7d %11s %10d %10d %s\n", hop,
			fmt.Sprintf("vm-%d→vm-%d", hop-1, hop), stats.TotalMs, stats.DowntimeMs, stats.Rounds,
			formatSize(stats.TransferredBytes), res.Counter, passes, "ok")
	}
	if err := src.client.Shutdown(ctx); err != nil {
		return cli.Exit("shutting the guest down: "+err.Error(), 1)
	}
	if err := src.waitExit(timeout); err != nil {
		return cli.Exit("final instance: "+err.Error(), 1)
	}
	if len(downtimes) > 0 {
		fmt.Printf("godwit demo: %d hops, guest memory verified after each; downtime min %.1f ms, median %.1f ms, max %.1f ms\n",
			len(downtimes), minOf(downtimes), median(downtimes), maxOf(downtimes))
	}
	return nil
}

// startInstance starts `godwit <args> --api-sock DIR/NAME.sock` and returns
// once its log line containing ready appears; that line is returned.
func startInstance(self, dir, name string, args []string, ready string) (*demoInstance, string, error) {
	sock := filepath.Join(dir, name+".sock")
	cmd := exec.Command(self, append(args, "--api-sock", sock, "--log-level", "info")...)
	inst := &demoInstance{name: name, cmd: cmd, client: api.NewClient(sock), lines: make(chan string, 256), done: make(chan error, 1)}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case inst.lines <- sc.Text():
			default: // nobody waits for lines any more
			}
			if strings.Contains(sc.Text(), "level=WARN") || strings.Contains(sc.Text(), "level=ERROR") {
				fmt.Fprintf(os.Stderr, "%s: %s\n", name, sc.Text())
			}
		}
		close(inst.lines)
		inst.done <- cmd.Wait()
	}()
	line, err := inst.waitLine(ready, 2*time.Minute)
	if err != nil {
		inst.kill()
		return nil, "", err
	}
	return inst, line, nil
}

// waitLine returns the instance's first log line containing s.
func (d *demoInstance) waitLine(s string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case l, ok := <-d.lines:
			if !ok {
				return "", fmt.Errorf("%s exited before logging %q", d.name, s)
			}
			if strings.Contains(l, s) {
				return l, nil
			}
		case <-t.C:
			return "", fmt.Errorf("%s did not log %q within %v", d.name, s, timeout)
		}
	}
}

// startReceiver starts `godwit receive` on a free loopback port and
// returns it with its tcp:HOST:PORT address.
func startReceiver(self, dir, name string) (*demoInstance, string, error) {
	args := []string{"receive", "--listen", "tcp:127.0.0.1:0", "--serial", "file=" + filepath.Join(dir, name+".console")}
	inst, line, err := startInstance(self, dir, name, args, "waiting for a migrating VM")
	if err != nil {
		return nil, "", err
	}
	_, addr, ok := strings.Cut(line, "listen=")
	if !ok {
		inst.kill()
		return nil, "", fmt.Errorf("%s: no address in %q", name, line)
	}
	return inst, strings.Fields(addr)[0], nil
}

// migrateOnce migrates src to the receiver at to and returns the stats.
func migrateOnce(ctx context.Context, src *demoInstance, to string, downtimeMS int, compress string, timeout time.Duration) (migrate.Stats, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	auto := true
	if _, err := src.client.Migrate(ctx, api.MigrateRequest{To: to, DowntimeMS: int64(downtimeMS), Compress: compress, AutoConverge: &auto}); err != nil {
		return migrate.Stats{}, err
	}
	for {
		info, err := src.client.MigrationStatus(ctx, 5*time.Second)
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

// verifyGuest pauses the VM, dumps and checks its memory, and resumes it.
// It returns the checker's result and the guest's own pass counter.
func verifyGuest(ctx context.Context, d *demoInstance, p guest.Params, img string, timeout time.Duration) (guest.CheckResult, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := d.client.Pause(ctx); err != nil {
		return guest.CheckResult{}, 0, fmt.Errorf("pause: %w", err)
	}
	if _, err := d.client.DumpMemory(ctx, img, 0, p.RangeEnd); err != nil {
		return guest.CheckResult{}, 0, fmt.Errorf("dump: %w", err)
	}
	data, err := os.ReadFile(img)
	if err != nil {
		return guest.CheckResult{}, 0, err
	}
	res, err := guest.Check(data, p)
	if err != nil {
		return res, 0, fmt.Errorf("guest memory check failed: %w", err)
	}
	passes, err := guest.ReadStatus(data[guest.ParamAddr:])
	if err != nil {
		return res, 0, err
	}
	if err := res.MatchPasses(passes); err != nil {
		return res, passes, fmt.Errorf("guest pass counter disagrees with memory: %w", err)
	}
	if err := d.client.Resume(ctx); err != nil {
		return res, passes, fmt.Errorf("resume: %w", err)
	}
	return res, passes, nil
}

// waitExit waits for the process to exit and wants exit status 0.
func (d *demoInstance) waitExit(timeout time.Duration) error {
	select {
	case err := <-d.done:
		d.done <- err
		return err
	case <-time.After(timeout):
		return fmt.Errorf("%s did not exit within %v", d.name, timeout)
	}
}

// kill stops the process if it still runs.
func (d *demoInstance) kill() {
	if d.cmd.ProcessState == nil {
		d.cmd.Process.Kill()
	}
}

func minOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

func maxOf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
