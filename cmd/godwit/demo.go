package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"godwit/migrate"
	"godwit/migrate/pingpong"
	"godwit/test/guest"
	"godwit/vmm/api"
	"godwit/vmm/memory"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "bounce the embedded test guest between local godwit instances, verifying its memory after every hop",
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "hops", Value: 10, Usage: "number of migrations"},
			&cli.StringFlag{Name: "mem", Value: "256M", Usage: "guest RAM size"},
			&cli.StringSliceFlag{Name: "guest-arg", Usage: "embedded test guest parameter key=value (repeatable)"},
			&cli.IntFlag{Name: "downtime-ms", Value: 300, Usage: "downtime target per hop"},
			&cli.StringFlag{Name: "compress", Value: "lz4", Usage: "lz4 or none"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "limit for each step (boot, hop, check)"},
			&cli.BoolFlag{Name: "json", Usage: "print every hop's statistics as JSON lines"},
		}, channelFlags("the `NAME` the certificates must carry, checked both ways (default: the destination's address, 127.0.0.1, on the source side only); every instance uses the same --tls-cert")...),
		Action: runDemo,
	}
}

// demoCheck is what the demo verified after one hop.
type demoCheck struct {
	Counter  uint64 `json:"counter"`
	Boundary int64  `json:"boundary"`
	Passes   uint64 `json:"passes"`
}

// runDemo starts the test guest, then --hops times migrates it to a new
// local instance and verifies the guest's memory there (pause, dump, check,
// resume); the counters must never go back.
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
	channel, _, err := loadChannel(c)
	if err != nil {
		return err
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

	runArgs := []string{"--mem", c.String("mem")}
	for _, a := range c.StringSlice("guest-arg") {
		runArgs = append(runArgs, "--guest-arg", a)
	}
	auto := true
	req := api.MigrateRequest{DowntimeMS: int64(c.Int("downtime-ms")), Compress: c.String("compress"), AutoConverge: &auto}
	requestChannel(&req, channel)
	checks := map[int]demoCheck{}
	var last uint64
	fmt.Printf("godwit demo: test guest, %s RAM, range %#x-%#x, %d hops over loopback\n",
		formatSize(mem), params.RangeStart, params.RangeEnd, c.Int("hops"))
	if !c.Bool("json") {
		fmt.Printf("%-4s %-12s %9s %9s %7s %11s %10s %10s %s\n",
			"hop", "route", "total_ms", "downtime", "rounds", "transferred", "counter", "passes", "check")
	}
	hops, final, err := pingpong.Run(c.Context, pingpong.Options{
		Godwit:      self,
		Dir:         dir,
		RunArgs:     runArgs,
		Hops:        c.Int("hops"),
		Migrate:     req,
		ReceiveArgs: receiveChannelArgs(channel),
		Timeout:     c.Duration("timeout"),
		Log:         os.Stderr,
		Verify: func(ctx context.Context, hop int, in *pingpong.Instance) error {
			res, passes, err := verifyGuest(ctx, in, params, filepath.Join(dir, "mem.img"))
			if err != nil {
				return err
			}
			if res.Counter < last {
				return fmt.Errorf("guest counter went back from %d to %d", last, res.Counter)
			}
			last = res.Counter
			checks[hop] = demoCheck{Counter: res.Counter, Boundary: res.Boundary, Passes: passes}
			return nil
		},
	})
	for _, h := range hops {
		ck := checks[h.Hop]
		if c.Bool("json") {
			b, _ := json.Marshal(struct {
				pingpong.Hop
				Check demoCheck `json:"check"`
			}{h, ck})
			fmt.Println(string(b))
			continue
		}
		fmt.Printf("%-4d %-12s %9.1f %9.1f %7d %11s %10d %10d %s\n", h.Hop, h.From+"→"+h.To,
			h.Stats.TotalMs, h.Stats.DowntimeMs, h.Stats.Rounds, formatSize(h.Stats.TransferredBytes), ck.Counter, ck.Passes, "ok")
	}
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	defer final.Kill()
	if err := final.Client.Shutdown(c.Context); err != nil {
		return cli.Exit("shutting the guest down: "+err.Error(), 1)
	}
	if err := final.Wait(c.Duration("timeout")); err != nil {
		return cli.Exit(final.Name+": "+err.Error(), 1)
	}
	s := pingpong.Summarize(hops)
	fmt.Printf("godwit demo: %d hops, guest memory verified after each; downtime min %.1f ms, median %.1f ms, max %.1f ms\n",
		s.Hops, s.MinMs, s.MedianMs, s.MaxMs)
	return nil
}

// verifyGuest pauses the VM, dumps and checks its memory, and resumes it.
// It returns the checker's result and the guest's own pass counter.
func verifyGuest(ctx context.Context, in *pingpong.Instance, p guest.Params, img string) (guest.CheckResult, uint64, error) {
	if err := in.Client.Pause(ctx); err != nil {
		return guest.CheckResult{}, 0, fmt.Errorf("pause: %w", err)
	}
	if _, err := in.Client.DumpMemory(ctx, img, 0, p.RangeEnd); err != nil {
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
	if err := in.Client.Resume(ctx); err != nil {
		return res, passes, fmt.Errorf("resume: %w", err)
	}
	return res, passes, nil
}
