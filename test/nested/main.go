// Command nested runs a shell command inside the nested host: a Debian kernel
// booted under qemu-system-x86_64 -cpu max,erms=off,fsrm=off (TCG; see
// defaultCPU), whose emulated SVM gives a
// real /dev/kvm (kvm_amd), so KVM code can be tested on machines without one.
//
// Usage:
//
//	go run ./test/nested [flags] --add HOST:GUEST ... --run 'shell command'
//	go run ./test/nested --print-env
//	go run ./test/nested --kvm-check
//
// Assets (Debian packages, the kernel, the initramfs images) are prepared on
// first use in $GODWIT_CACHE (default $HOME/.cache/godwit) and reused; a new
// Debian kernel package refreshes them. The serial console is streamed to
// stdout as is; the command exits with the payload's exit code, read from the
// GODWIT-NESTED-EXIT=<code> marker, or with 124 on timeout and 125 when QEMU
// fails or no marker was printed. Timings go to stderr at the end. With
// --silence, a nested host found wedged is stopped after about 20 s of
// diagnostics through QEMU's monitor (vCPU registers on stderr, SysRq task
// and CPU dumps on the console; see wedgeDiagnostics).
//
// Inside the nested host, /assets holds the guest kernel and initramfs, and
// the payload sees GODWIT_KERNEL, GODWIT_INITRD, GODWIT_BIN and GODWIT_NESTED=1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"godwit/test/nested/harness"
)

// Exit codes of the harness itself (the payload's code is passed through).
const (
	exitTimeout = 124
	exitHarness = 125
	exitSignal  = 130
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type options struct {
	adds     listFlag
	envs     listFlag
	run      string
	mem      int
	smp      int
	timeout  time.Duration
	silence  time.Duration
	withQemu bool
	printEnv bool
	cache    string
	appendK  string
	kvmCheck bool
	keepKVM  bool
	tcg      string
	cpu      string
	self     string // this binary, copied into the nested host for --keep-kvm ("": not copied)
}

func main() {
	os.Exit(realMain())
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "godwit-nested: "+format+"\n", args...)
}

func realMain() int {
	var o options
	fs := flag.NewFlagSet("nested", flag.ContinueOnError)
	fs.Var(&o.adds, "add", "`HOSTPATH:GUESTPATH` file or directory to copy into the nested host (repeatable)")
	fs.Var(&o.envs, "env", "`KEY=VALUE` exported to the payload (repeatable)")
	fs.StringVar(&o.run, "run", "", "shell `command` run inside the nested host (written to /payload.sh)")
	fs.IntVar(&o.mem, "mem", 4096, "nested host memory in `MiB`")
	fs.IntVar(&o.smp, "smp", 2, "nested host vCPUs")
	fs.DurationVar(&o.timeout, "timeout", 25*time.Minute, "kill QEMU after this long")
	fs.DurationVar(&o.silence, "silence", 0, "treat the nested host as wedged and stop it when its console prints nothing for this long (0: never)")
	fs.BoolVar(&o.withQemu, "with-qemu", false, "also copy Debian's qemu-system-x86_64 (libraries, firmware) into the nested host")
	fs.BoolVar(&o.printEnv, "print-env", false, "prepare the guest kernel and initramfs only and print GODWIT_KERNEL/GODWIT_INITRD as shell exports")
	fs.StringVar(&o.cache, "cache", defaultCache(), "asset cache `dir` (env GODWIT_CACHE)")
	fs.StringVar(&o.appendK, "append", "", "extra nested host kernel command line arguments")
	fs.StringVar(&o.tcg, "tcg-thread", "multi", "QEMU TCG threading, `multi` (one host thread per vCPU) or single (env GODWIT_NESTED_TCG)")
	fs.StringVar(&o.cpu, "cpu", defaultCPU, "QEMU `model` of the nested host's CPU (env GODWIT_NESTED_CPU); it must emulate SVM (see defaultCPU)")
	fs.BoolVar(&o.keepKVM, "keep-kvm", false, "inside the nested host (its /init runs it): hold a KVM VM until power-off (see keepKVM)")
	fs.BoolVar(&o.kvmCheck, "kvm-check", false, "exit 0 if this machine's /dev/kvm can run the tests directly, 1 if the nested host is needed (GODWIT_NESTED=1 forces 1, =0 forces 0)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if v := os.Getenv("GODWIT_NESTED_TCG"); v != "" {
		o.tcg = v
	}
	if v := os.Getenv("GODWIT_NESTED_CPU"); v != "" {
		o.cpu = v
	}
	if o.tcg != "multi" && o.tcg != "single" {
		logf("--tcg-thread must be multi or single, not %q", o.tcg)
		return 2
	}
	if o.kvmCheck {
		return kvmCheck()
	}
	if o.keepKVM {
		return keepKVM()
	}
	if fs.NArg() > 0 {
		logf("unexpected arguments %q (quote the --run command)", fs.Args())
		return 2
	}
	if !o.printEnv && o.run == "" {
		logf("--run is required (or --print-env)")
		return 2
	}

	if self, err := os.Executable(); err == nil {
		o.self = self
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	t0 := time.Now()
	a := &assets{cache: o.cache}
	if err := a.prepare(ctx, !o.printEnv); err != nil {
		logf("asset preparation failed: %v", err)
		return exitHarness
	}
	prep := time.Since(t0)
	if o.printEnv {
		fmt.Printf("export GODWIT_KERNEL=%s\nexport GODWIT_INITRD=%s\n", a.vmlinuz, a.guestInitrd)
		logf("assets ready in %s", prep.Round(time.Millisecond))
		return 0
	}
	var qemuCPIO string
	if o.withQemu {
		var err error
		if qemuCPIO, err = a.qemuBundle(); err != nil {
			logf("--with-qemu: %v", err)
			return exitHarness
		}
	}
	prep = time.Since(t0)

	res, err := boot(ctx, &o, a, qemuCPIO)
	printTimings(prep, res)
	switch {
	case errors.Is(err, errTimeout):
		logf("FAIL: timeout after %s: QEMU killed", o.timeout)
		return exitTimeout
	case ctx.Err() != nil:
		logf("FAIL: interrupted: QEMU killed")
		return exitSignal
	case err != nil:
		logf("FAIL: %v", err)
		return exitHarness
	}
	if res.code != 0 {
		logf("payload exited with code %d", res.code)
	}
	return res.code
}

func kvmCheck() int {
	switch os.Getenv("GODWIT_NESTED") {
	case "1":
		logf("GODWIT_NESTED=1: using the nested host")
		return 1
	case "0":
		logf("GODWIT_NESTED=0: using /dev/kvm directly")
		return 0
	}
	ok, reason := harness.KVMUsable()
	if !ok {
		logf("no usable /dev/kvm (%s): using the nested host", reason)
		return 1
	}
	logf("%s: running directly", reason)
	return 0
}

func defaultCache() string {
	if c := os.Getenv("GODWIT_CACHE"); c != "" {
		return c
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.TempDir()
	}
	return home + "/.cache/godwit"
}

func printTimings(prep time.Duration, r runResult) {
	r2 := func(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
	var b strings.Builder
	fmt.Fprintf(&b, "timings: assets %s", r2(prep))
	if r.booted {
		fmt.Fprintf(&b, ", boot %s", r2(r.boot))
	}
	if r.finished {
		fmt.Fprintf(&b, ", payload %s, shutdown %s", r2(r.payload), r2(r.shutdown))
	}
	fmt.Fprintf(&b, ", qemu total %s", r2(r.total))
	logf("%s", b.String())
}
