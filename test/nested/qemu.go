package main

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"godwit/test/nested/harness"
)

var errTimeout = errors.New("timeout")

type runResult struct {
	code                           int
	booted, finished               bool
	boot, payload, shutdown, total time.Duration
}

// defaultCPU is the nested host's CPU: everything TCG emulates (SVM with
// nested paging included) except ERMS and FSRM. With those two the kernel
// copies and clears memory with REP MOVSB/STOSB, which TCG executes a
// byte at a time: measured in the nested host, a pipe moved 119-127 MB/s
// and touching 256 MiB of fresh memory took 0.8-1.3 s; without them the
// kernel takes its REP MOVSQ/STOSQ paths (the CPU has REP_GOOD), and the
// same pipe moved 419-490 MB/s, the same touch took 0.16-0.67 s. Real
// CPUs run REP MOVSB at least as fast as the quadword forms, so the
// nested host's kernel (and its guests' kernels, which see KVM's CPUID)
// now costs what it would on hardware relative to user code, instead of
// several times more. Userspace copies are not affected (3.3-3.6 GB/s
// both ways).
const defaultCPU = "max,erms=off,fsrm=off"

// boot writes the per-run overlay, concatenates base + [qemu bundle] + overlay
// into one initrd (QEMU's -initrd takes one file) and runs QEMU.
func boot(ctx context.Context, o *options, a *assets, qemuCPIO string) (runResult, error) {
	var res runResult
	dir, err := os.MkdirTemp(a.cache, "run-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := writeInitrd(initrd, o, a.baseCPIO, qemuCPIO); err != nil {
		return res, err
	}

	cmdline := "console=ttyS0 quiet panic=-1 rdinit=/init"
	if o.appendK != "" {
		cmdline += " " + o.appendK
	}
	args := []string{
		"-M", "q35", "-accel", "tcg,thread=" + o.tcg, "-cpu", o.cpu,
		"-smp", fmt.Sprint(o.smp), "-m", fmt.Sprint(o.mem),
		"-nographic", "-nic", "none", "-no-reboot",
		"-kernel", a.vmlinuz, "-initrd", initrd, "-append", cmdline,
	}
	// A monitor for the wedge diagnostics. With an explicit -monitor,
	// -nographic puts the serial console alone on stdio (not
	// multiplexed with the monitor), as before.
	sock := filepath.Join(dir, "mon.sock")
	mon := monitorArgs(sock)
	if mon == nil {
		logf("warning: no QEMU monitor (socket path %q too long or has a comma): no diagnostics if the nested host wedges", sock)
	}
	args = append(args, mon...)
	logf("booting: qemu-system-x86_64 %s", strings.Join(args, " "))

	tctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	con := harness.NewConsole(os.Stdout)
	cmd := exec.CommandContext(tctx, "qemu-system-x86_64", args...)
	cmd.Stdin = nil
	cmd.Stdout = con
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, err
	}
	// A wedged nested host never recovers: stop it as soon as the
	// diagnostics (at most about 20 s) are in, so that a retry gets the
	// time its tests would have spent waiting.
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		var tick <-chan time.Time
		if o.silence > 0 {
			t := time.NewTicker(o.silence / 16)
			defer t.Stop()
			tick = t.C
		}
		for {
			select {
			case <-tick:
				con.CheckSilence(o.silence)
				continue
			case <-con.Wedged():
				logf("nested host wedged (%s): stopping it", con.Wedge())
				if mon != nil {
					wedgeDiagnostics(tctx, sock, con, stopWatch)
				}
				cancel()
			case <-stopWatch:
			}
			return
		}
	}()
	runErr := cmd.Wait()
	end := time.Now()
	close(stopWatch)
	<-watchDone
	res.total = end.Sub(start)
	if at, ok := con.Started(); ok {
		res.booted, res.boot = true, at.Sub(start)
	}
	code, at, ok := con.Exit()
	if ok && res.booted {
		st, _ := con.Started()
		res.finished, res.payload, res.shutdown = true, at.Sub(st), end.Sub(at)
	}
	res.code = code
	switch {
	case ctx.Err() != nil:
		return res, ctx.Err()
	case con.Wedge() != "" && !ok:
		return res, fmt.Errorf("nested host wedged (%s): stopped without a %s<code> marker", con.Wedge(), harness.ExitMarker)
	case errors.Is(tctx.Err(), context.DeadlineExceeded):
		return res, errTimeout
	case ok:
		if runErr != nil {
			logf("warning: QEMU exited with %v after the payload finished", runErr)
		}
		return res, nil
	case runErr != nil:
		return res, fmt.Errorf("QEMU failed (%v) before the payload finished: no %s marker", runErr, harness.ExitMarker)
	case !res.booted:
		return res, fmt.Errorf("nested host stopped before the payload started (kernel panic or /init failure?)")
	default:
		return res, fmt.Errorf("nested host stopped without a %s<code> marker", harness.ExitMarker)
	}
}

// writeInitrd concatenates the cached archives and the per-run overlay.
func writeInitrd(dst string, o *options, parts ...string) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range parts {
		if p == "" {
			continue
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, src)
		src.Close()
		if err != nil {
			return err
		}
	}
	w := harness.NewCPIOWriter(f)
	payload := "#!/bin/sh\n" + o.run + "\n"
	if err := w.Bytes(harness.PayloadPath, 0o755, []byte(payload)); err != nil {
		return err
	}
	var env strings.Builder
	for _, e := range o.envs {
		k, v, ok := strings.Cut(e, "=")
		if !ok || k == "" {
			return fmt.Errorf("--env %q: want KEY=VALUE", e)
		}
		fmt.Fprintf(&env, "export %s=%s\n", k, harness.ShellQuote(v))
	}
	if err := w.Bytes(harness.EnvPath, 0o644, []byte(env.String())); err != nil {
		return err
	}
	// The harness itself, for /init's --keep-kvm (only a static build
	// runs in the nested host, which has no libc without --with-qemu).
	if o.self != "" {
		if b, err := os.ReadFile(o.self); err == nil && (checkStatic(b) == nil || o.withQemu) {
			if err := w.Bytes(harness.KeeperPath, 0o755, b); err != nil {
				return err
			}
		} else {
			logf("warning: %s is not a static binary (build it with CGO_ENABLED=0): the nested host holds no KVM VM between tests", o.self)
		}
	}
	for _, spec := range o.adds {
		host, guest, ok := strings.Cut(spec, ":")
		if !ok || host == "" || !strings.HasPrefix(guest, "/") {
			return fmt.Errorf("--add %q: want HOSTPATH:/GUESTPATH", spec)
		}
		if err := addTree(w, host, guest); err != nil {
			return fmt.Errorf("--add %q: %w", spec, err)
		}
		if f, err := os.ReadFile(host); err == nil && checkStatic(f) != nil && !o.withQemu {
			if _, err := elf.NewFile(bytes.NewReader(f)); err == nil {
				logf("warning: %s is dynamically linked but the nested host has no libc (build it with CGO_ENABLED=0, or use --with-qemu)", host)
			}
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	return f.Close()
}

// addTree copies a host file, or a directory recursively, into the archive;
// symlinks are followed.
func addTree(w *harness.CPIOWriter, host, guest string) error {
	st, err := os.Stat(host)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return addFile(w, host, guest, st)
	}
	return filepath.WalkDir(host, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(host, p)
		if err != nil {
			return err
		}
		g := path.Join(guest, filepath.ToSlash(rel))
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.IsDir() {
			return w.Dir(g, uint32(st.Mode().Perm()))
		}
		return addFile(w, p, g, st)
	})
}

func addFile(w *harness.CPIOWriter, host, guest string, st os.FileInfo) error {
	f, err := os.Open(host)
	if err != nil {
		return err
	}
	defer f.Close()
	return w.File(guest, uint32(st.Mode().Perm()), st.Size(), f)
}
