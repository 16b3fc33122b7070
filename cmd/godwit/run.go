package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"godwit/vmm"
)

// vmFlags are the flags that describe a VM, shared by run and demo.
func vmFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "kernel", Usage: "Linux bzImage to boot"},
		&cli.StringFlag{Name: "initrd", Usage: "initramfs for --kernel"},
		&cli.StringFlag{Name: "cmdline", Usage: "kernel command line (default \"" + vmm.DefaultCmdline + "\")"},
		&cli.BoolFlag{Name: "acpi", Usage: "give a Linux guest ACPI tables so that it can power off (experimental)"},
		&cli.StringFlag{Name: "boot-sector", Usage: "raw boot sector or flat real-mode image (up to 64 KiB, loaded at 0x7c00)"},
		&cli.StringFlag{Name: "mem", Value: "256M", Usage: "guest RAM size (K/M/G suffixes)"},
		&cli.BoolFlag{Name: "mem-prealloc", Usage: "allocate all guest RAM before the guest starts (slower start, no host allocation on the guest's first touch of a page)"},
		&cli.IntFlag{Name: "cpus", Value: 1, Usage: "number of vCPUs (1-16)"},
		&cli.StringFlag{Name: "serial", Value: "stdio", Usage: "COM1: stdio, file=PATH or none"},
		&cli.StringFlag{Name: "api-sock", Usage: "unix socket for the control API"},
		&cli.BoolFlag{Name: "rng", Usage: "add a virtio entropy device (virtio-rng on PCI) fed by the host's getrandom(2)"},
		&cli.StringSliceFlag{Name: "disk", Usage: "add a virtio-blk disk over a raw image: path=FILE[,readonly=on] (repeatable; vda, vdb, ... in order)"},
		&cli.StringSliceFlag{Name: "net", Usage: "add a virtio-net device on a Linux tap: tap=NAME[,mac=MAC] (repeatable; eth0, eth1, ... in order; the tap is created when absent; without mac= a random locally administered one)"},
		&cli.StringSliceFlag{Name: "guest-arg", Usage: "embedded test guest parameter key=value (repeatable)"},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
	}
}

// vmConfig turns the VM flags into a vmm.Config.
func vmConfig(c *cli.Context) (vmm.Config, error) {
	mem, err := parseSize(c.String("mem"))
	if err != nil {
		return vmm.Config{}, cli.Exit("--mem: "+err.Error(), 2)
	}
	// Commands that reuse the VM flags without these (pingpong) get defaults.
	serialFlag, level := c.String("serial"), c.String("log-level")
	if serialFlag == "" {
		serialFlag = "none"
	}
	if level == "" {
		level = "info"
	}
	serial, err := vmm.ParseSerial(serialFlag)
	if err != nil {
		return vmm.Config{}, cli.Exit(err.Error(), 2)
	}
	log, err := newLogger(level)
	if err != nil {
		return vmm.Config{}, cli.Exit(err.Error(), 2)
	}
	var disks []vmm.DiskConfig
	for _, s := range c.StringSlice("disk") {
		d, err := vmm.ParseDisk(s)
		if err != nil {
			return vmm.Config{}, cli.Exit(err.Error(), 2)
		}
		disks = append(disks, d)
	}
	var nets []vmm.NetConfig
	for _, s := range c.StringSlice("net") {
		n, err := vmm.ParseNet(s)
		if err != nil {
			return vmm.Config{}, cli.Exit(err.Error(), 2)
		}
		nets = append(nets, n)
	}
	cfg := vmm.Config{
		MemoryBytes: mem,
		CPUs:        c.Int("cpus"),
		Kernel:      c.String("kernel"),
		Initrd:      c.String("initrd"),
		Cmdline:     c.String("cmdline"),
		BootSector:  c.String("boot-sector"),
		ACPI:        c.Bool("acpi"),
		MemPrealloc: c.Bool("mem-prealloc"),
		GuestArgs:   c.StringSlice("guest-arg"),
		Serial:      serial,
		APISocket:   c.String("api-sock"),
		RNG:         c.Bool("rng"),
		Disks:       disks,
		Nets:        nets,
		Log:         log,
	}
	if err := cfg.Validate(); err != nil {
		return vmm.Config{}, cli.Exit(err.Error(), 2)
	}
	return cfg, nil
}

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "boot a VM: a Linux kernel, a boot sector, or the embedded test guest",
		ArgsUsage: " ",
		Flags:     vmFlags(),
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return cli.Exit("run takes no arguments, only flags", 2)
			}
			cfg, err := vmConfig(c)
			if err != nil {
				return err
			}
			vm, err := vmm.New(cfg)
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			defer vm.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			r := vm.Run(ctx)
			if !r.Clean {
				vm.Close()
				return cli.Exit("VM stopped: "+r.What+": "+errString(r.Err), 1)
			}
			cfg.Log.Info("VM stopped", "reason", r.What)
			return nil
		},
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}
