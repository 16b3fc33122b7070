package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/urfave/cli/v2"

	"godwit/migrate/pingpong"
	"godwit/vmm"
	"godwit/vmm/api"
)

func pingpongCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.IntFlag{Name: "rounds", Value: 10, Usage: "number of migrations"},
		&cli.StringFlag{Name: "expect", Usage: "after each hop, wait for a console line matching this regular expression (default: any new line)"},
		&cli.StringFlag{Name: "ready", Usage: "before the first hop, wait for a console line matching this regular expression"},
		&cli.IntFlag{Name: "downtime-ms", Value: 300, Usage: "downtime target per hop"},
		&cli.StringFlag{Name: "compress", Value: "lz4", Usage: "lz4 or none"},
		&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "limit for each step (boot, hop, check)"},
		&cli.BoolFlag{Name: "console", Usage: "echo the guest console, prefixed with the instance name, to stderr"},
		&cli.BoolFlag{Name: "include-storage", Usage: "move the disks with the VM on every hop (migrate --include-storage), back and forth between two directories"},
		&cli.StringSliceFlag{Name: "storage-dir", Usage: "with --include-storage: the two directories the disks move between, given twice (default: two temporary ones); stale copies are deleted, the first instance's images kept"},
	}
	flags = append(flags, channelFlags("the `NAME` the certificates must carry, checked both ways (default: the destination's address, 127.0.0.1, on the source side only); every instance uses the same --tls-cert")...)
	// The VM flags of `godwit run`, passed on to the first instance.
	// Not --net: the instances run on one host, and a tap has one holder
	// at a time, so every hop would need another tap (receive --tap-map).
	for _, f := range vmFlags() {
		switch f.Names()[0] {
		case "api-sock", "serial", "log-level", "net":
		default:
			flags = append(flags, f)
		}
	}
	return &cli.Command{
		Name:      "pingpong",
		Usage:     "bounce any VM between two local godwit instances N times, checking it is alive after each hop; prints a JSON report",
		ArgsUsage: " ",
		Flags:     flags,
		Action:    runPingpong,
	}
}

// pingpongStorage returns the storage of a `pingpong --include-storage`
// run: the two directories (--storage-dir twice, or two under tmp) and
// the base names of the --disk images. Nil without --include-storage.
func pingpongStorage(c *cli.Context, tmp string) (*pingpong.Storage, error) {
	dirs := c.StringSlice("storage-dir")
	if !c.Bool("include-storage") {
		if len(dirs) > 0 {
			return nil, cli.Exit("--storage-dir needs --include-storage", 2)
		}
		return nil, nil
	}
	s := &pingpong.Storage{}
	switch len(dirs) {
	case 0:
		for i, side := range []string{"storage-a", "storage-b"} {
			s.Dirs[i] = filepath.Join(tmp, side)
			if err := os.Mkdir(s.Dirs[i], 0o700); err != nil {
				return nil, cli.Exit(err.Error(), 1)
			}
		}
	case 2:
		for i, d := range dirs {
			if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
				return nil, cli.Exit(fmt.Sprintf("--storage-dir %q: not a directory", d), 2)
			}
			s.Dirs[i] = d
		}
		a, errA := filepath.Abs(dirs[0])
		b, errB := filepath.Abs(dirs[1])
		if errA != nil || errB != nil || a == b {
			return nil, cli.Exit("--storage-dir: give two different directories", 2)
		}
	default:
		return nil, cli.Exit("--storage-dir: give it twice, one directory for each side", 2)
	}
	for _, f := range c.StringSlice("disk") {
		d, err := vmm.ParseDisk(f)
		if err != nil {
			return nil, cli.Exit(err.Error(), 2)
		}
		s.Images = append(s.Images, filepath.Base(d.Path))
	}
	return s, nil
}

// pingpongReport is the JSON report of `godwit pingpong`.
type pingpongReport struct {
	Status  string           `json:"status"`
	Error   string           `json:"error,omitempty"`
	Summary pingpong.Summary `json:"summary"`
	Hops    []pingpong.Hop   `json:"hops"`
}

func runPingpong(c *cli.Context) error {
	if c.Args().Present() {
		return cli.Exit("pingpong takes no arguments, only flags", 2)
	}
	var expect, ready *regexp.Regexp
	var err error
	if s := c.String("expect"); s != "" {
		if expect, err = regexp.Compile(s); err != nil {
			return cli.Exit("--expect: "+err.Error(), 2)
		}
	}
	if s := c.String("ready"); s != "" {
		if ready, err = regexp.Compile(s); err != nil {
			return cli.Exit("--ready: "+err.Error(), 2)
		}
	}
	// Validate the VM flags as `godwit run` would before starting anything.
	if _, err := vmConfig(c); err != nil {
		return err
	}
	channel, _, err := loadChannel(c)
	if err != nil {
		return err
	}
	var runArgs []string
	for _, f := range vmFlags() {
		name := f.Names()[0]
		if !c.IsSet(name) || name == "api-sock" || name == "serial" || name == "log-level" {
			continue
		}
		if name == "guest-arg" || name == "disk" {
			for _, a := range c.StringSlice(name) {
				runArgs = append(runArgs, "--"+name, a)
			}
			continue
		}
		runArgs = append(runArgs, "--"+name, fmt.Sprint(c.Value(name)))
	}
	self, err := os.Executable()
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	dir, err := os.MkdirTemp("", "godwit-pingpong-")
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	defer os.RemoveAll(dir)
	o := pingpong.Options{
		Godwit:  self,
		Dir:     dir,
		RunArgs: runArgs,
		Hops:    c.Int("rounds"),
		Migrate: api.MigrateRequest{DowntimeMS: int64(c.Int("downtime-ms")), Compress: c.String("compress")},
		Ready:   ready,
		Timeout: c.Duration("timeout"),
		Log:     os.Stderr,
		Verify: func(ctx context.Context, hop int, in *pingpong.Instance) error {
			// The guest is alive when its console goes on at the destination.
			_, err := in.WaitConsole(ctx, in.ConsoleLines(), expect)
			return err
		},
	}
	if c.Bool("console") {
		o.Console = os.Stderr
	}
	if o.Storage, err = pingpongStorage(c, dir); err != nil {
		return err
	}
	requestChannel(&o.Migrate, channel)
	o.ReceiveArgs = append(o.ReceiveArgs, receiveChannelArgs(channel)...)
	hops, final, runErr := pingpong.Run(c.Context, o)
	if runErr == nil {
		if err := final.Client.Shutdown(c.Context); err != nil {
			runErr = fmt.Errorf("shutting the VM down: %w", err)
		} else if err := final.Wait(o.Timeout); err != nil {
			runErr = fmt.Errorf("%s: %w", final.Name, err)
		}
		final.Kill()
	}
	rep := pingpongReport{Status: "passed", Summary: pingpong.Summarize(hops), Hops: hops}
	if rep.Hops == nil {
		rep.Hops = []pingpong.Hop{}
	}
	if runErr != nil {
		rep.Status, rep.Error = "failed", runErr.Error()
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	fmt.Println(string(out))
	if runErr != nil {
		return cli.Exit("pingpong: "+runErr.Error(), 1)
	}
	return nil
}
