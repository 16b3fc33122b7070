package main

import (
	"context"
	"net"
	"strings"
	"time"

	"godwit/test/nested/harness"
)

// Bounds of the wedge diagnostics, which delay stopping a wedged nested
// host by at most their sum (about 30 s).
const (
	// diagMonitorTime bounds all monitor work together: connecting, the
	// register dump and the SysRq keys. A QEMU whose main loop is stuck
	// never answers, and the harness moves on.
	diagMonitorTime = 8 * time.Second
	// diagConsoleMax bounds the wait for the nested kernel's SysRq output.
	diagConsoleMax = 10 * time.Second
	// diagConsoleQuiet ends that wait early: this long without console
	// output means the kernel has printed what it will.
	diagConsoleQuiet = 2 * time.Second
	// diagNMITime bounds the monitor's answer to the NMI command.
	diagNMITime = 2 * time.Second
	// diagRegisterLines bounds the register lines logged.
	diagRegisterLines = 40
)

// sysrqKeys are the SysRq keys sent to a wedged nested host, in order:
// console loglevel 9 first (the host boots with "quiet", and the kernel
// puts the loglevel back before a SysRq handler runs, so the dumps
// below would not reach the console), then the blocked (D state) tasks
// and a backtrace of every CPU (by NMI, so it works on a CPU spinning
// with interrupts off).
var sysrqKeys = []string{"alt-sysrq-9", "alt-sysrq-w", "alt-sysrq-l"}

// monitorArgs returns QEMU's arguments for a human monitor on the unix
// socket sock, or nil if sock cannot be one: a unix socket path is at
// most 107 bytes, and QEMU's option syntax would split it at a comma.
func monitorArgs(sock string) []string {
	if len(sock) > 107 || strings.Contains(sock, ",") {
		return nil
	}
	return []string{"-monitor", "unix:" + sock + ",server=on,wait=off"}
}

// wedgeDiagnostics collects what it can about a wedged nested host before
// QEMU is stopped, through the monitor on the unix socket sock: each
// vCPU's registers ("info registers -a", one compact line a CPU), logged
// as "wedge diagnostics: CPU#<n> RIP=... RSP=... CR3=...", then SysRq
// keys on the emulated PS/2 keyboard, so that the nested kernel prints its
// blocked tasks and CPU backtraces on the serial console, which con
// passes on; it waits for that output until con has been quiet for
// diagConsoleQuiet, at most diagConsoleMax; then an NMI, which makes the
// kernel panic with a backtrace even on CPUs spinning with interrupts off
// (the host's /init sets kernel.unknown_nmi_panic), and the same wait for
// its output. Under multi-threaded TCG the
// registers are the ones a vCPU thread last stored, not an instant's.
// Every failure is logged and ends the diagnostics; they also end when
// ctx is done or exited is closed (QEMU is gone).
func wedgeDiagnostics(ctx context.Context, sock string, con *harness.Console, exited <-chan struct{}) {
	start := time.Now()
	deadline := start.Add(diagMonitorTime)
	mctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(mctx, "unix", sock)
	if err != nil {
		logf("wedge diagnostics: no monitor: %v", err)
		return
	}
	defer conn.Close()
	// Unblock a pending read at once when the run ends (not at mctx's
	// deadline: the NMI comes after the console wait, past it).
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	m, err := harness.NewMonitor(conn, deadline)
	if err != nil {
		logf("wedge diagnostics: %v", err)
		return
	}
	regs, err := m.Command("info registers -a", deadline)
	if err != nil {
		logf("wedge diagnostics: %v", err)
		return
	}
	for _, l := range harness.CompactRegisters(regs, diagRegisterLines) {
		logf("wedge diagnostics: %s", l)
	}
	for _, k := range sysrqKeys {
		out, err := m.Command("sendkey "+k, deadline)
		if err != nil {
			logf("wedge diagnostics: %v", err)
			return
		}
		if out != "" {
			logf("wedge diagnostics: sendkey %s: %s", k, out)
			return
		}
	}
	logf("wedge diagnostics: sent SysRq 9, w, l (blocked tasks, CPU backtraces): reading the console for up to %v", diagConsoleMax)
	if !waitConsole(ctx, con, exited) {
		return
	}
	// A host whose CPUs spin with interrupts off never sees the SysRq
	// keys (CI's wedges showed both vCPUs in the kernel with IF clear and
	// no SysRq output). An NMI gets through: the host's /init sets
	// kernel.unknown_nmi_panic, so the kernel panics with the interrupted
	// CPU's backtrace. The host is about to be stopped anyway.
	if out, err := m.Command("nmi", time.Now().Add(diagNMITime)); err != nil || out != "" {
		logf("wedge diagnostics: nmi: %v%s", err, out)
		return
	}
	logf("wedge diagnostics: sent an NMI (the host panics with a backtrace): reading the console for up to %v", diagConsoleMax)
	if waitConsole(ctx, con, exited) {
		logf("wedge diagnostics: done in %v", time.Since(start).Round(100*time.Millisecond))
	}
}

// waitConsole waits until con has been quiet for diagConsoleQuiet, at
// most diagConsoleMax. It returns false when ctx is done or exited is
// closed (QEMU is gone) first.
func waitConsole(ctx context.Context, con *harness.Console, exited <-chan struct{}) bool {
	sent := time.Now()
	tick := time.NewTicker(diagConsoleQuiet / 8)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-exited:
			return false
		case <-tick.C:
		}
		since := time.Since(sent)
		if since >= diagConsoleMax || since >= diagConsoleQuiet && con.Quiet() >= diagConsoleQuiet {
			return true
		}
	}
}
