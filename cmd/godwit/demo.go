package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"godwit/test/guest"
	"godwit/vmm"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run the embedded test guest and verify its memory at every pause (the README's main job)",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "hops", Value: 10, Usage: "number of pause/verify/resume cycles"},
			&cli.StringFlag{Name: "mem", Value: "256M", Usage: "guest RAM size"},
			&cli.StringSliceFlag{Name: "guest-arg", Usage: "embedded test guest parameter key=value (repeatable)"},
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Minute, Usage: "give up when the guest shows no progress for this long"},
			&cli.BoolFlag{Name: "quiet", Usage: "do not echo the guest's console"},
			&cli.StringFlag{Name: "log-level", Value: "warn", Usage: "debug, info, warn or error"},
		},
		Action: runDemo,
	}
}

// runDemo boots the embedded test guest, then --hops times: waits for a
// heartbeat, pauses, dumps and checks guest memory, and resumes.
func runDemo(c *cli.Context) error {
	mem, err := parseSize(c.String("mem"))
	if err != nil {
		return cli.Exit("--mem: "+err.Error(), 2)
	}
	log, err := newLogger(c.String("log-level"))
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	var echo io.Writer = os.Stdout
	if c.Bool("quiet") {
		echo = io.Discard
	}
	hb := newHeartbeatWriter(echo)
	vm, err := vmm.New(vmm.Config{
		MemoryBytes: mem,
		CPUs:        1,
		GuestArgs:   c.StringSlice("guest-arg"),
		Serial:      vmm.SerialConfig{Out: hb},
		Log:         log,
	})
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	defer vm.Close()
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	stopped := make(chan vmm.StopReason, 1)
	go func() { stopped <- vm.Run(ctx) }()

	dir, err := os.MkdirTemp("", "godwit-demo-")
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	defer os.RemoveAll(dir)
	params := *vm.TestGuestParams()
	timeout := c.Duration("timeout")
	fmt.Printf("%-4s %10s %10s %12s %10s\n", "hop", "heartbeat", "counter", "boundary", "pause_ms")
	for hop := 1; hop <= c.Int("hops"); hop++ {
		pass, err := hb.next(timeout, stopped)
		if err != nil {
			return cli.Exit(fmt.Sprintf("hop %d: %v", hop, err), 1)
		}
		t0 := time.Now()
		if err := vm.Pause(ctx); err != nil {
			return cli.Exit(fmt.Sprintf("hop %d: pause: %v", hop, err), 1)
		}
		img := filepath.Join(dir, "mem.img")
		if err := vm.DumpMemory(ctx, img, 0, 0); err != nil {
			return cli.Exit(fmt.Sprintf("hop %d: dump: %v", hop, err), 1)
		}
		res, err := checkImage(img, params)
		if err != nil {
			return cli.Exit(fmt.Sprintf("hop %d: guest memory check failed: %v", hop, err), 1)
		}
		if err := vm.Resume(ctx); err != nil {
			return cli.Exit(fmt.Sprintf("hop %d: resume: %v", hop, err), 1)
		}
		hb.drain()
		fmt.Printf("%-4d %10d %10d %12d %10.1f\n", hop, pass, res.Counter, res.Boundary, float64(time.Since(t0).Microseconds())/1000)
	}
	if err := vm.Shutdown(ctx); err != nil {
		return cli.Exit(err.Error(), 1)
	}
	if r := <-stopped; !r.Clean {
		return cli.Exit("VM stopped: "+r.What+": "+errString(r.Err), 1)
	}
	fmt.Println("demo: all checks passed")
	return nil
}

// checkImage verifies a memory dump with the test guest's checker.
func checkImage(path string, p guest.Params) (guest.CheckResult, error) {
	img, err := os.ReadFile(path)
	if err != nil {
		return guest.CheckResult{}, err
	}
	return guest.Check(img, p)
}

// heartbeatWriter passes the guest's console through and reports every
// heartbeat line's pass number.
type heartbeatWriter struct {
	out   io.Writer
	mu    sync.Mutex
	line  []byte
	beats chan uint64
}

func newHeartbeatWriter(out io.Writer) *heartbeatWriter {
	return &heartbeatWriter{out: out, beats: make(chan uint64, 1024)}
}

// Write implements io.Writer.
func (h *heartbeatWriter) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.out.Write(p)
	for _, b := range p {
		if b != '\n' {
			if len(h.line) < 256 {
				h.line = append(h.line, b)
			}
			continue
		}
		line := strings.TrimSpace(string(h.line))
		h.line = h.line[:0]
		if rest, ok := strings.CutPrefix(line, "heartbeat "); ok {
			if n, err := strconv.ParseUint(rest, 10, 64); err == nil {
				select {
				case h.beats <- n:
				default:
				}
			}
		}
	}
	return len(p), nil
}

// drain forgets heartbeats already reported.
func (h *heartbeatWriter) drain() {
	for {
		select {
		case <-h.beats:
		default:
			return
		}
	}
}

// next waits for the next heartbeat, a VM stop or the timeout.
func (h *heartbeatWriter) next(timeout time.Duration, stopped <-chan vmm.StopReason) (uint64, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case n := <-h.beats:
		return n, nil
	case r := <-stopped:
		return 0, fmt.Errorf("VM stopped: %s: %s", r.What, errString(r.Err))
	case <-t.C:
		return 0, fmt.Errorf("no heartbeat from the guest within %v", timeout)
	}
}
