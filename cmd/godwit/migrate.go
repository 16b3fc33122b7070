package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"godwit/migrate"
	"godwit/vmm/api"
)

func migrateCommand() *cli.Command {
	return &cli.Command{
		Name:  "migrate",
		Usage: "live-migrate a running VM to a `godwit receive` instance",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "api-sock", EnvVars: []string{"GODWIT_API_SOCK"}, Usage: "control socket of the source VM"},
			&cli.StringFlag{Name: "to", Usage: "destination tcp:HOST:PORT"},
			&cli.IntFlag{Name: "downtime-ms", Value: 300, Usage: "downtime target in milliseconds"},
			&cli.StringFlag{Name: "bandwidth", Value: "0", Usage: "bandwidth cap in bytes/s with K/M/G suffixes (0 = unlimited)"},
			&cli.StringFlag{Name: "compress", Value: "lz4", Usage: "lz4 (pages equal to one already sent in the round as a reference, the rest LZ4 when it shrinks them) or none (raw)"},
			&cli.DurationFlag{Name: "timeout", Usage: "give up after this long (0 = no limit); the VM keeps running here"},
			&cli.BoolFlag{Name: "auto-converge", Value: true, Usage: "throttle the vCPUs when rounds stop shrinking"},
			&cli.BoolFlag{Name: "include-storage", Usage: "send every disk along with memory; the receiver creates new images (receive --storage-dir, --disk-map). Without it the disks are assumed shared: the receiver opens the same images"},
			&cli.BoolFlag{Name: "json", Usage: "print the final statistics as JSON"},
			&cli.StringFlag{Name: "trace", Usage: traceUsage},
		}, channelFlags("the `NAME` the destination's certificate must carry (default: the host of --to)")...),
		Action: runMigrate,
	}
}

// runMigrate starts the migration through the source's API, shows
// progress on a terminal and prints the final statistics.
func runMigrate(c *cli.Context) error {
	sock, to := c.String("api-sock"), c.String("to")
	if sock == "" {
		return cli.Exit("--api-sock is required", 2)
	}
	if to == "" {
		return cli.Exit("--to is required (tcp:HOST:PORT)", 2)
	}
	bw, err := parseSize(c.String("bandwidth"))
	if err != nil || bw > 1<<62 {
		return cli.Exit(fmt.Sprintf("--bandwidth %q: want bytes/s with K/M/G suffixes", c.String("bandwidth")), 2)
	}
	if _, err := migrate.ParseCompression(c.String("compress")); err != nil {
		return cli.Exit("--compress: "+err.Error(), 2)
	}
	if c.Int("downtime-ms") < 0 || c.Duration("timeout") < 0 {
		return cli.Exit("--downtime-ms and --timeout must not be negative", 2)
	}
	// The source VM's process reads the files; checked here first, so a
	// bad one is a clear error of this command.
	channel, _, err := loadChannel(c)
	if err != nil {
		return err
	}
	auto := c.Bool("auto-converge")
	var trace *traceFile
	if path := c.String("trace"); path != "" {
		// Created before the migration starts, so a bad path starts nothing.
		if trace, err = createTrace(path, os.Stderr); err != nil {
			return cli.Exit("--trace: "+err.Error(), 1)
		}
	}
	client := api.NewClient(sock)
	ctx := c.Context
	if _, err := client.Migrate(ctx, api.MigrateRequest{
		To:             to,
		DowntimeMS:     int64(c.Int("downtime-ms")),
		Bandwidth:      int64(bw),
		Compress:       c.String("compress"),
		TimeoutMS:      c.Duration("timeout").Milliseconds(),
		AutoConverge:   &auto,
		IncludeStorage: c.Bool("include-storage"),

		PSKFile:     channel.PSKFile,
		TLSCert:     channel.CertFile,
		TLSKey:      channel.KeyFile,
		TLSCA:       channel.CAFile,
		TLSPeerName: channel.PeerName,
	}); err != nil {
		if trace != nil {
			trace.discard()
		}
		return cli.Exit(err.Error(), 1)
	}
	tty := isTerminal(os.Stderr)
	info, err := followMigration(ctx, client, func(info api.MigrationInfo) {
		if tty {
			showProgress(info)
		}
		if trace != nil {
			trace.rounds(info)
		}
	})
	if err != nil {
		return cli.Exit("migration status: "+err.Error(), 1)
	}
	if tty {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
	if trace != nil {
		// A trace that could not be written does not change the
		// migration's outcome, which the exit code reports.
		if err := trace.finish(info); err != nil {
			fmt.Fprintf(os.Stderr, "godwit: warning: trace %s: %v\n", trace.path, err)
		}
	}
	if c.Bool("json") {
		out, _ := json.MarshalIndent(info, "", "  ")
		fmt.Println(string(out))
	} else {
		printStats(info)
	}
	if info.Status != "completed" {
		return cli.Exit(fmt.Sprintf("migration %s: %s (the VM keeps running on the source)", info.Status, info.Error), 1)
	}
	return nil
}

// showProgress rewrites one status line on the terminal.
func showProgress(info api.MigrationInfo) {
	var p struct {
		Progress migrate.Progress `json:"progress"`
	}
	if json.Unmarshal(info.Stats, &p) != nil {
		return
	}
	pr := p.Progress
	disk := ""
	if pr.DiskTotalBytes > 0 {
		disk = fmt.Sprintf("  disk %d blocks left, %s sent", pr.DiskRemainingBlocks, formatSize(pr.DiskTransferredBytes))
	}
	fmt.Fprintf(os.Stderr, "\r\033[Kround %d  remaining %d/%d pages%s  %.0f Mbit/s  sent %s  throttle %d%%",
		pr.Round, pr.RemainingPages, pr.TotalPages, disk, pr.Mbps, formatSize(pr.TransferredBytes), pr.ThrottlePct)
}

// printStats prints the final statistics for a person.
func printStats(info api.MigrationInfo) {
	var s migrate.Stats
	if len(info.Stats) == 0 || json.Unmarshal(info.Stats, &s) != nil {
		fmt.Printf("status: %s\n", info.Status)
		return
	}
	fmt.Printf("status:       %s\n", info.Status)
	writeStats(os.Stdout, s)
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
