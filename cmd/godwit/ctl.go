package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"godwit/vmm/api"
)

// topExits is how many exit counters `ctl status` shows.
const topExits = 6

// ctlCommands lists the ctl subcommands for error messages.
const ctlCommands = "status, stats, pause, resume, shutdown, dump-memory or cancel-migration"

// ctlCommand is `godwit ctl`: it controls a running VM through its API socket.
func ctlCommand() *cli.Command {
	return &cli.Command{
		Name:  "ctl",
		Usage: "control a running VM through its API socket",
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "api-sock",
				Usage:   "the VM's control API socket, as given to run --api-sock (required)",
				EnvVars: []string{"GODWIT_API_SOCK"},
			},
		},
		// Subcommands are dispatched before Action; Action sees the rest.
		Action: func(c *cli.Context) error {
			if !c.Args().Present() {
				cli.ShowSubcommandHelp(c)
				return cli.Exit("ctl: missing command (want "+ctlCommands+")", 1)
			}
			return cli.Exit(fmt.Sprintf("ctl: unknown command %q (want %s)", printable(c.Args().First()), ctlCommands), 1)
		},
		Subcommands: []*cli.Command{
			{
				Name:      "status",
				Usage:     "show the VM's state, size, uptime and exit counters",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "json", Usage: "print the API's JSON instead of a summary"},
				},
				Action: ctlStatus,
			},
			{
				Name:      "stats",
				Usage:     "show the VM's current or last outgoing migration: statistics, round records, downtime breakdown",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "json", Usage: "print the API's JSON (GET /migrate) instead of a summary"},
				},
				Action: ctlStats,
			},
			simpleCtl("pause", "pause the VM's vCPUs and devices", "VM paused", (*api.Client).Pause),
			simpleCtl("resume", "resume a paused VM", "VM resumed", (*api.Client).Resume),
			simpleCtl("shutdown", "stop the VM", "VM shutting down", (*api.Client).Shutdown),
			{
				Name:      "dump-memory",
				Usage:     "write guest RAM to a file (on the VM's host); pause first for a consistent image",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "out", Usage: "file to write, made absolute before it is sent (required)"},
					&cli.StringFlag{Name: "gpa", Value: "0", Usage: "guest-physical start address (e.g. 0x100000 or 1M)"},
					&cli.StringFlag{Name: "len", Value: "0", Usage: "bytes to dump, K/M/G suffixes; 0 = to the end of RAM"},
				},
				Action: ctlDumpMemory,
			},
			{
				Name:      "cancel-migration",
				Usage:     "abort the VM's outgoing migration before switchover and wait until it has ended; the VM keeps running here",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					&cli.DurationFlag{Name: "wait", Value: 30 * time.Second, Usage: "how long to wait for the migration to end"},
				},
				Action: ctlCancelMigration,
			},
		},
	}
}

// ctlClient checks that a ctl subcommand got no arguments and returns a
// client for the --api-sock socket. Required flags are checked here rather
// than with cli's Required, which prints the whole help text before the
// error; every ctl error is one line and exit code 1.
func ctlClient(c *cli.Context) (*api.Client, error) {
	if c.Args().Present() {
		return nil, cli.Exit(fmt.Sprintf("ctl %s takes no arguments, only flags", c.Command.Name), 1)
	}
	sock := c.String("api-sock")
	if sock == "" {
		return nil, cli.Exit("ctl: --api-sock PATH (or GODWIT_API_SOCK) is required", 1)
	}
	return api.NewClient(sock), nil
}

// simpleCtl is a subcommand that makes one state-changing call.
func simpleCtl(name, usage, done string, call func(*api.Client, context.Context) error) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: " ",
		Action: func(c *cli.Context) error {
			cl, err := ctlClient(c)
			if err != nil {
				return err
			}
			if err := call(cl, c.Context); err != nil {
				return cli.Exit(name+": "+err.Error(), 1)
			}
			fmt.Fprintln(c.App.Writer, done)
			return nil
		},
	}
}

// ctlStatus prints the VM's info as JSON or as a summary.
func ctlStatus(c *cli.Context) error {
	cl, err := ctlClient(c)
	if err != nil {
		return err
	}
	info, err := cl.Info(c.Context)
	if err != nil {
		return cli.Exit("status: "+err.Error(), 1)
	}
	if c.Bool("json") {
		out, err := json.MarshalIndent(info, "", "  ")
		if err != nil {
			return cli.Exit("status: encoding JSON: "+err.Error(), 1)
		}
		fmt.Fprintf(c.App.Writer, "%s\n", out)
		return nil
	}
	printStatus(c.App.Writer, info)
	return nil
}

// printStatus writes a human-readable summary of info. Strings from the
// server are stripped of control characters before they reach a terminal.
func printStatus(w io.Writer, info api.VMInfo) {
	uptime := time.Duration(info.UptimeMS) * time.Millisecond
	if uptime >= time.Minute {
		uptime = uptime.Round(time.Second)
	}
	fmt.Fprintf(w, "state:   %s\n", printable(info.State))
	fmt.Fprintf(w, "guest:   %s\n", printable(info.Config.Guest))
	fmt.Fprintf(w, "memory:  %s\n", formatSize(info.Config.MemoryBytes))
	fmt.Fprintf(w, "cpus:    %d\n", info.Config.CPUs)
	fmt.Fprintf(w, "uptime:  %s\n", uptime)
	fmt.Fprintf(w, "exits:   %s\n", summarizeExits(info.Exits, topExits))
}

// summarizeExits lists the n largest counters, largest first (ties by
// name), as "io=12 hlt=3", noting how many were left out.
func summarizeExits(exits map[string]uint64, n int) string {
	if len(exits) == 0 {
		return "none"
	}
	names := make([]string, 0, len(exits))
	for k := range exits {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := names[i], names[j]
		if exits[a] != exits[b] {
			return exits[a] > exits[b]
		}
		return a < b
	})
	var parts []string
	for _, k := range names[:min(n, len(names))] {
		parts = append(parts, fmt.Sprintf("%s=%d", printable(k), exits[k]))
	}
	s := strings.Join(parts, " ")
	if len(names) > n {
		s += fmt.Sprintf(" (+%d more; --json for all)", len(names)-n)
	}
	return s
}

// printable drops control characters from s.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return -1
		}
		return r
	}, s)
}

// ctlDumpMemory asks the VMM to write guest RAM to a file.
func ctlDumpMemory(c *cli.Context) error {
	cl, err := ctlClient(c)
	if err != nil {
		return err
	}
	if c.String("out") == "" {
		return cli.Exit("dump-memory: --out FILE is required", 1)
	}
	gpa, err := parseSize(c.String("gpa"))
	if err != nil {
		return cli.Exit("dump-memory: --gpa: "+err.Error(), 1)
	}
	length, err := parseSize(c.String("len"))
	if err != nil {
		return cli.Exit("dump-memory: --len: "+err.Error(), 1)
	}
	out, err := filepath.Abs(c.String("out"))
	if err != nil {
		return cli.Exit("dump-memory: --out: "+err.Error(), 1)
	}
	n, err := cl.DumpMemory(c.Context, out, gpa, length)
	if err != nil {
		return cli.Exit("dump-memory: "+err.Error(), 1)
	}
	fmt.Fprintf(c.App.Writer, "wrote %d bytes (%s) of guest memory from gpa %#x to %s\n",
		n, formatSize(uint64(n)), gpa, out)
	return nil
}

// ctlCancelMigration cancels the VM's outgoing migration (PUT
// /migrate/cancel) and waits, up to --wait, until it has ended. A
// migration that completed anyway (it was past switchover) is an error.
func ctlCancelMigration(c *cli.Context) error {
	cl, err := ctlClient(c)
	if err != nil {
		return err
	}
	info, err := cl.CancelMigration(c.Context)
	if err != nil {
		return cli.Exit("cancel-migration: "+err.Error(), 1)
	}
	deadline := time.Now().Add(c.Duration("wait"))
	for info.Status == "active" && time.Now().Before(deadline) {
		if info, err = cl.MigrationStatus(c.Context, min(time.Second, time.Until(deadline))); err != nil {
			return cli.Exit("cancel-migration: migration status: "+err.Error(), 1)
		}
	}
	switch info.Status {
	case "active":
		return cli.Exit(fmt.Sprintf("cancel-migration: the migration is still active after %v", c.Duration("wait")), 1)
	case "completed":
		return cli.Exit("cancel-migration: too late: the migration completed, the VM runs on the destination", 1)
	case "cancelled":
		fmt.Fprintf(c.App.Writer, "migration cancelled; the VM keeps running here (%s)\n", printable(info.Error))
	default:
		fmt.Fprintf(c.App.Writer, "no migration running (last one: %s)\n", printable(info.Status))
	}
	return nil
}
