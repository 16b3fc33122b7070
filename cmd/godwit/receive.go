package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"godwit/internal/gcquiet"
	"godwit/migrate"
	"godwit/vmm"
)

func receiveCommand() *cli.Command {
	return &cli.Command{
		Name:      "receive",
		Usage:     "wait for one VM migrated by `godwit migrate`, then run it",
		ArgsUsage: " ",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "listen", Usage: "where to listen, tcp:HOST:PORT"},
			&cli.StringFlag{Name: "api-sock", Usage: "unix socket for the control API of the received VM"},
			&cli.StringFlag{Name: "serial", Value: "stdio", Usage: "COM1: stdio, file=PATH or none"},
			&cli.DurationFlag{Name: "idle-timeout", Value: 30 * time.Second, Usage: "fail when the source sends nothing for this long"},
			&cli.StringSliceFlag{Name: "disk-map", Usage: "OLD=NEW: open the source's disk image OLD (the path its --disk gave) as NEW here; unmapped images are opened at the source's path; when the source sends its disks (migrate --include-storage), create NEW from the stream (repeatable)"},
			&cli.StringFlag{Name: "storage-dir", Usage: "when the source sends its disks (migrate --include-storage), create their images in `DIR`, named after the source's images (--disk-map entries go where they say)"},
			&cli.BoolFlag{Name: "overwrite", Usage: "let a storage migration replace existing image files"},
			&cli.StringSliceFlag{Name: "tap-map", Usage: "OLD=NEW: connect the source's network device on tap OLD to tap NEW here (created when absent); unmapped devices use a tap of the source's name (repeatable)"},
			&cli.BoolFlag{Name: "mem-prealloc", Usage: "allocate the incoming VM's RAM in the background while the migration streams, so that the last pages, sent with the guest paused, land in memory the host has already allocated and zeroed"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
		}, channelFlags("accept only a source whose certificate carries `NAME` (DNS, IP, URI or e-mail SAN, or subject CN; default: any certificate the CA signed)")...),
		Action: runReceive,
	}
}

// runReceive accepts one migration, then runs the VM like `godwit run`.
func runReceive(c *cli.Context) error {
	if c.Args().Present() {
		return cli.Exit("receive takes no arguments, only flags", 2)
	}
	addr, ok := strings.CutPrefix(c.String("listen"), "tcp:")
	if !ok || addr == "" {
		return cli.Exit(fmt.Sprintf("--listen %q: want tcp:HOST:PORT", c.String("listen")), 2)
	}
	for _, m := range append(c.StringSlice("disk-map"), c.StringSlice("tap-map")...) {
		if k, v, ok := strings.Cut(m, "="); !ok || k == "" || v == "" {
			return cli.Exit(fmt.Sprintf("map %q: want OLD=NEW", m), 2)
		}
	}
	diskMap, err := parseMap("--disk-map", c.StringSlice("disk-map"))
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	tapMap, err := parseMap("--tap-map", c.StringSlice("tap-map"))
	if err == nil {
		err = vmm.CheckTapMap(tapMap)
	}
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	if dir := c.String("storage-dir"); dir != "" {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return cli.Exit(fmt.Sprintf("--storage-dir %q: not a directory", dir), 2)
		}
	}
	serial, err := vmm.ParseSerial(c.String("serial"))
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	log, err := newLogger(c.String("log-level"))
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	fault, err := parseTestFault(os.Getenv(testFaultEnv))
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	_, channel, err := loadChannel(c)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return cli.Exit(fmt.Sprintf("--listen: %v", err), 1)
	}
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); channel == nil && !net.ParseIP(host).IsLoopback() {
		log.Warn("listening for a VM on a non-loopback address without authentication (see --psk-file, --tls-cert)", "addr", ln.Addr().String())
	}
	log.Info("waiting for a migrating VM", "listen", "tcp:"+ln.Addr().String(), "channel", channelName(channel))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, func() { ln.Close() })
	conn, err := ln.Accept()
	// One incoming VM per receiver: while this one arrives, other sources
	// are refused with a reason, not queued (busy.go); then nobody listens.
	stopRefusing := refuseWhileBusy(ln, conn, channel, c.Duration("idle-timeout"), log)
	defer stopRefusing()
	if err != nil {
		return cli.Exit("waiting for the source: "+err.Error(), 1)
	}
	defer conn.Close()
	// The source proves who it is before anything of the VM is read.
	if conn, err = acceptChannel(ctx, conn, channel, c.Duration("idle-timeout"), log); err != nil {
		return cli.Exit("refused the migrating peer: "+err.Error(), 1)
	}
	local := vmm.Config{Serial: serial, APISocket: c.String("api-sock"), Log: log, DiskMap: diskMap, TapMap: tapMap,
		StorageDir: c.String("storage-dir"), Overwrite: c.Bool("overwrite")}
	// An incoming VM's RAM is a fresh memfd: zero until the stream writes
	// it (NewIncoming loads no guest and no device writes RAM before the
	// VM runs), so zero pages need no work (ReceiveOptions.AssumeZeroed).
	var vm *vmm.VM
	factory := func(config []byte) (migrate.Target, error) {
		v, err := vmm.NewIncoming(config, local)
		if err != nil {
			return nil, err
		}
		if c.Bool("mem-prealloc") {
			v.Memory().PopulateInBackground()
		}
		vm = v
		return v, nil
	}
	// No garbage collection while the VM arrives (see gcquiet).
	quiet := gcquiet.Start()
	_, dstats, err := migrate.Receive(ctx, fault.wrap(conn, log), factory, migrate.ReceiveOptions{IdleTimeout: c.Duration("idle-timeout"), AssumeZeroed: true})
	quiet()
	stopRefusing()
	if err != nil {
		return cli.Exit("receiving the VM failed: "+err.Error(), 1)
	}
	defer vm.Close()
	log.Info("VM received and running", "restore_ms", dstats.RestoreMs, "start_ms", dstats.StartMs, "storage", dstats.Storage, "disk_commit_ms", dstats.DiskCommitMs)
	r := vm.Wait(ctx)
	if !r.Clean {
		vm.Close()
		return cli.Exit("VM stopped: "+r.What+": "+errString(r.Err), 1)
	}
	log.Info("VM stopped", "reason", r.What)
	return nil
}

// parseMap turns OLD=NEW flags (--disk-map, --tap-map) into a map from the
// source's name (the image path or tap name the source VM was given,
// matched exactly) to the one to use here; mapping one name twice is an
// error.
func parseMap(flag string, flags []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(flags))
	for _, f := range flags {
		old, local, ok := strings.Cut(f, "=")
		if !ok || old == "" || local == "" {
			return nil, fmt.Errorf("%s %q: want OLD=NEW", flag, f)
		}
		if _, dup := m[old]; dup {
			return nil, fmt.Errorf("%s: %s is mapped twice", flag, old)
		}
		m[old] = local
	}
	return m, nil
}
