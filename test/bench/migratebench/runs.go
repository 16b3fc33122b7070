package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"godwit/bench/qmp"
)

// tickNum parses a guest "tick N" line.
func tickNum(line string) (int, bool) {
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "tick" {
		return 0, false
	}
	n, err := strconv.Atoi(f[1])
	return n, err == nil
}

// lastTick returns the highest tick the console shows (0 if none).
func lastTick(c *console) int {
	best := 0
	for _, l := range c.tail(maxLines) {
		if n, ok := tickNum(l); ok && n > best {
			best = n
		}
	}
	return best
}

// waitBooted waits for the guest's tick number settle on p's console.
func waitBooted(c *config, p *proc) error {
	_, _, err := p.out.waitFor(0, c.bootTimeout, p.done, fmt.Sprintf("guest tick %d (boot)", c.settleTicks), func(l string) bool {
		n, ok := tickNum(l)
		return ok && n >= c.settleTicks
	})
	return err
}

// waitLaterTick waits for a tick after last on the destination's console.
func waitLaterTick(c *config, dst *proc, last int) error {
	_, _, err := dst.out.waitFor(0, c.stepTimeout, dst.done, fmt.Sprintf("a tick after %d on the destination", last), func(l string) bool {
		n, ok := tickNum(l)
		return ok && n > last
	})
	return err
}

// listenAddr extracts the address from godwit receive's
// `msg="waiting for a migrating VM" listen=tcp:HOST:PORT` log line.
func listenAddr(line string) (string, bool) {
	_, rest, ok := strings.Cut(line, "listen=")
	if !ok {
		return "", false
	}
	f := strings.Fields(rest)
	if len(f) == 0 || !strings.HasPrefix(f[0], "tcp:") {
		return "", false
	}
	return strings.Trim(f[0], `"`), true
}

// statsFromLog reads the source's `msg="migration completed"
// downtime_ms=.. total_ms=.. bytes=..` log line.
func statsFromLog(c *console) (godwitMigration, bool) {
	var m godwitMigration
	for _, l := range c.tail(maxLines) {
		if !strings.Contains(l, `msg="migration completed"`) {
			continue
		}
		found := 0
		for _, f := range strings.Fields(l) {
			k, v, _ := strings.Cut(f, "=")
			var err error
			switch k {
			case "downtime_ms":
				m.Stats.DowntimeMs, err = strconv.ParseFloat(v, 64)
			case "total_ms":
				m.Stats.TotalMs, err = strconv.ParseFloat(v, 64)
			case "bytes":
				m.Stats.TransferredBytes, err = strconv.ParseUint(v, 10, 64)
			default:
				continue
			}
			if err == nil {
				found++
			}
		}
		if found == 3 {
			m.Status = "completed"
			return m, true
		}
	}
	return m, false
}

// godwitMigration is the JSON `godwit migrate --json` prints.
type godwitMigration struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Stats  struct {
		DowntimeMs       float64 `json:"downtime_ms"`
		TotalMs          float64 `json:"total_ms"`
		SetupMs          float64 `json:"setup_ms"`
		TransferredBytes uint64  `json:"transferred_bytes"`
		Rounds           int     `json:"rounds"`
		Error            string  `json:"error"`
		// StopAndCopy is godwit's downtime breakdown (docs/trace.md).
		StopAndCopy map[string]any `json:"stop_and_copy"`
	} `json:"stats"`
}

// breakdownParts are the consecutive parts of godwit's downtime, in order.
var breakdownParts = []string{"pause_ms", "dirty_log_ms", "final_pages_ms", "state_save_ms", "transfer_ms",
	"dest_restore_ms", "dest_resume_ms", "dest_other_ms", "ack_round_trip_ms"}

// sourceSideParts are the parts of godwit's downtime from the pause to
// writing COMPLETE: what QEMU's own downtime figure covers (its source
// stops the VM, sends the rest and the device state, and completes,
// without waiting for the destination to load or run the VM).
var sourceSideParts = []string{"pause_ms", "final_sync_ms", "state_save_ms", "transfer_ms"}

// sourceSideMs sums the breakdown's sourceSideParts (0 without one).
func sourceSideMs(b map[string]any) float64 {
	var sum float64
	for _, k := range sourceSideParts {
		if v, ok := b[k].(float64); ok {
			sum += v
		}
	}
	return sum
}

// formatBreakdown renders the parts of a downtime breakdown as
// " pause_ms=.. dirty_log_ms=.. ...", or "" without one.
func formatBreakdown(b map[string]any) string {
	if b == nil {
		return ""
	}
	var sb strings.Builder
	for _, k := range breakdownParts {
		if v, ok := b[k].(float64); ok {
			fmt.Fprintf(&sb, " %s=%.2f", k, v)
		}
	}
	return sb.String()
}

// runGodwit boots the guest under `godwit run`, migrates it to a fresh
// `godwit receive` and checks that it keeps running there.
func runGodwit(c *config, v variant) (res result, err error) {
	dir, err := os.MkdirTemp(c.workdir, "migratebench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	srcSock, dstSock := dir+"/src.sock", dir+"/dst.sock"
	var src, dst, mig *proc
	defer func() {
		if err != nil {
			src.dump(40)
			mig.dump(60)
			dst.dump(40)
		}
		if c.showLog != "" {
			src.printMatching(c.showLog)
			dst.printMatching(c.showLog)
		}
		src.kill()
		dst.kill()
		mig.kill()
	}()

	t0 := time.Now()
	src, err = startProc(v.name+" source", c.godwit, "run", "--kernel", c.kernel, "--initrd", c.initrd,
		"--mem", fmt.Sprintf("%dM", c.memMiB), "--cpus", strconv.Itoa(c.cpus),
		"--api-sock", srcSock, "--serial", "stdio", "--cmdline", c.cmdline)
	if err != nil {
		return res, err
	}
	if err = waitBooted(c, src); err != nil {
		return res, err
	}
	res.boot = time.Since(t0)

	dst, err = startProc(v.name+" destination", append([]string{c.godwit, "receive", "--listen", "tcp:127.0.0.1:0",
		"--api-sock", dstSock, "--serial", "stdio"}, strings.Fields(c.receiveArgs)...)...)
	if err != nil {
		return res, err
	}
	line, _, err := dst.err.waitFor(0, c.stepTimeout, dst.done, "the receiver's listen address", func(l string) bool {
		return strings.Contains(l, "waiting for a migrating VM") && strings.Contains(l, "listen=")
	})
	if err != nil {
		return res, err
	}
	addr, ok := listenAddr(line)
	if !ok {
		return res, fmt.Errorf("no listen=tcp:... in the receiver's line %q", line)
	}

	args := []string{c.godwit, "migrate", "--api-sock", srcSock, "--to", addr, "--json",
		"--downtime-ms", strconv.Itoa(c.downtimeMs), "--timeout", c.migrateTimeout.String()}
	mig, err = startProc(v.name+" migrate", append(args, v.args...)...)
	if err != nil {
		return res, err
	}
	migErr := mig.wait(c.migrateTimeout + 30*time.Second)
	out := strings.Join(mig.out.tail(maxLines), "\n")
	var m godwitMigration
	jsonErr := json.Unmarshal([]byte(out), &m)
	if migErr != nil && jsonErr != nil {
		// The source stops as soon as its migration completes; a status
		// poll that comes after that finds no socket. The source's log
		// still has the main statistics (no rounds, no setup time).
		if werr := src.wait(c.stepTimeout); werr == nil {
			if s, ok := statsFromLog(src.err); ok {
				fmt.Printf("migratebench: WARNING: %s: godwit migrate failed (%v: %s) after the source logged a completed migration; statistics taken from the source's log\n",
					v.name, migErr, strings.Join(mig.err.tail(1), ""))
				m, jsonErr, migErr = s, nil, nil
				res.fromLog = true
			}
		}
	}
	switch {
	case migErr != nil && jsonErr != nil:
		return res, fmt.Errorf("godwit migrate: %v (stderr: %s)", migErr, strings.Join(mig.err.tail(5), " / "))
	case jsonErr != nil:
		return res, fmt.Errorf("godwit migrate printed no statistics JSON: %v", jsonErr)
	case m.Status != "completed" || migErr != nil:
		why := m.Error
		if why == "" {
			why = m.Stats.Error
		}
		return res, fmt.Errorf("godwit migrate: status %q: %s (exit: %v; stderr: %s)", m.Status, why, migErr, strings.Join(mig.err.tail(5), " / "))
	}
	if !res.fromLog {
		res.detail = compactJSON(out)
	}
	res.downtimeMs, res.totalMs, res.setupMs = m.Stats.DowntimeMs, m.Stats.TotalMs, m.Stats.SetupMs
	res.bytes, res.rounds = m.Stats.TransferredBytes, m.Stats.Rounds
	res.breakdown = formatBreakdown(m.Stats.StopAndCopy)
	res.sentMs = sourceSideMs(m.Stats.StopAndCopy)

	if err = src.wait(c.stepTimeout); err != nil {
		return res, fmt.Errorf("source after a completed migration: %w", err)
	}
	last := lastTick(src.out)
	if err = waitLaterTick(c, dst, last); err != nil {
		return res, err
	}
	ctl, err := startProc(v.name+" ctl", c.godwit, "ctl", "--api-sock", dstSock, "shutdown")
	if err != nil {
		return res, err
	}
	if cerr := ctl.wait(c.stepTimeout); cerr != nil {
		ctl.kill()
		return res, fmt.Errorf("godwit ctl shutdown: %v (%s)", cerr, strings.Join(ctl.err.tail(5), " / "))
	}
	if err = dst.wait(c.stepTimeout); err != nil {
		return res, fmt.Errorf("destination after shutdown: %w", err)
	}
	return res, nil
}

// compactJSON returns s as one line of JSON (s itself if it is not JSON).
func compactJSON(s string) string {
	var b bytes.Buffer
	if json.Compact(&b, []byte(s)) != nil {
		return strings.Join(strings.Fields(s), " ")
	}
	return b.String()
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// runQEMU boots the guest under QEMU/KVM, migrates it over QMP to a fresh
// `-incoming` QEMU and checks that it keeps running there.
func runQEMU(c *config, v variant) (res result, err error) {
	dir, err := os.MkdirTemp(c.workdir, "migratebench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	srcQMP, dstQMP := dir+"/src.qmp", dir+"/dst.qmp"
	var src, dst *proc
	var sq, dq *qmp.Client
	defer func() {
		if err != nil {
			src.dump(40)
			dst.dump(40)
		}
		for _, q := range []*qmp.Client{sq, dq} {
			if q != nil {
				q.Close()
			}
		}
		src.kill()
		dst.kill()
	}()
	base := []string{c.qemu, "-enable-kvm", "-cpu", "host", "-m", strconv.Itoa(c.memMiB), "-smp", strconv.Itoa(c.cpus),
		"-nographic", "-nic", "none", "-no-reboot", "-kernel", c.kernel, "-initrd", c.initrd, "-append", c.cmdline}

	t0 := time.Now()
	src, err = startProc(v.name+" source", append(base, "-qmp", "unix:"+srcQMP+",server=on,wait=off")...)
	if err != nil {
		return res, err
	}
	if err = waitBooted(c, src); err != nil {
		return res, err
	}
	res.boot = time.Since(t0)

	port, err := freePort()
	if err != nil {
		return res, err
	}
	uri := fmt.Sprintf("tcp:127.0.0.1:%d", port)
	dst, err = startProc(v.name+" destination", append(base, "-qmp", "unix:"+dstQMP+",server=on,wait=off", "-incoming", uri)...)
	if err != nil {
		return res, err
	}
	// QMP answers from the main loop, which starts after the incoming
	// listener is set up: once it answers, the destination is ready.
	if dq, err = qmp.DialWhenReady(context.Background(), dstQMP, dst.done, c.stepTimeout); err != nil {
		return res, fmt.Errorf("%s: %w", dst.name, err)
	}
	if sq, err = qmp.DialWhenReady(context.Background(), srcQMP, src.done, c.stepTimeout); err != nil {
		return res, fmt.Errorf("%s: %w", src.name, err)
	}
	if _, err = qmpDo(sq, "migrate-set-parameters", map[string]any{
		"max-bandwidth": c.qemuBandwidth, "downtime-limit": c.downtimeMs,
	}, 10*time.Second); err != nil {
		return res, err
	}
	if _, err = qmpDo(sq, "migrate", map[string]any{"uri": uri}, 10*time.Second); err != nil {
		return res, err
	}
	deadline := time.Now().Add(c.migrateTimeout)
	var m qemuMigration
	var raw json.RawMessage
	for {
		raw, err = qmpDo(sq, "query-migrate", nil, 10*time.Second)
		if err != nil {
			return res, err
		}
		m = qemuMigration{}
		if err = json.Unmarshal(raw, &m); err != nil {
			return res, fmt.Errorf("query-migrate reply %s: %w", raw, err)
		}
		// QEMU sets "completed" a moment before it computes the
		// times (migration_calculate_complete): a reply in between
		// says downtime 0 and total-time 0 (seen once in session 12),
		// so ask again until the times are there.
		if (m.Status == "completed" && m.TotalTime > 0) || m.Status == "failed" || m.Status == "cancelled" {
			break
		}
		if time.Now().After(deadline) {
			_, _ = qmpDo(sq, "migrate_cancel", nil, 10*time.Second)
			return res, fmt.Errorf("QEMU migration still %q: %w after %s", m.Status, errTimeout, c.migrateTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m.Status != "completed" {
		return res, fmt.Errorf("QEMU migration %s: %s", m.Status, m.ErrorDesc)
	}
	res.detail = compactJSON(string(raw))
	res.downtimeMs, res.totalMs, res.setupMs = m.Downtime, m.TotalTime, m.SetupTime
	res.bytes, res.rounds = m.RAM.Transferred, m.RAM.DirtySyncCount

	last := lastTick(src.out)
	if err = waitLaterTick(c, dst, last); err != nil {
		return res, err
	}
	for _, q := range []*qmp.Client{sq, dq} {
		_, _ = qmpDo(q, "quit", nil, 5*time.Second) // the reply may be lost as QEMU exits
	}
	for _, p := range []*proc{src, dst} {
		if werr := p.wait(c.stepTimeout); werr != nil {
			return res, fmt.Errorf("after quit: %w", werr)
		}
	}
	return res, nil
}

// qmpDo runs one QMP command with a timeout for its reply.
func qmpDo(q *qmp.Client, cmd string, args any, timeout time.Duration) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return q.Execute(ctx, cmd, args)
}

// qemuMigration is the part of query-migrate's reply the benchmark reads.
type qemuMigration struct {
	Status    string  `json:"status"`
	TotalTime float64 `json:"total-time"`
	Downtime  float64 `json:"downtime"`
	SetupTime float64 `json:"setup-time"`
	ErrorDesc string  `json:"error-desc"`
	RAM       struct {
		Transferred    uint64 `json:"transferred"`
		DirtySyncCount int    `json:"dirty-sync-count"`
		Duplicate      uint64 `json:"duplicate"`
		Normal         uint64 `json:"normal"`
	} `json:"ram"`
}
