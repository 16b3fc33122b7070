package integration

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"godwit/test/guest"
)

// TestDemoPingPong runs the README's main job: the test guest bounced
// between local instances with its memory verified after every hop.
func TestDemoPingPong(t *testing.T) {
	out, err := runGodwit(t, commandTimeout, nil, "demo", "--hops", "4", "--mem", "128M")
	t.Logf("godwit demo:\n%s", out)
	if err != nil {
		t.Fatalf("godwit demo: %v", err)
	}
	if !strings.Contains(string(out), "4 hops, guest memory verified after each") {
		t.Fatal("demo did not report 4 verified hops")
	}
}

// TestFailedMigrationKeepsSource migrates to an address where nothing
// listens: the migration fails, the VM keeps running on the source, and a
// second migration to a real receiver succeeds.
func TestFailedMigrationKeepsSource(t *testing.T) {
	sock := tempPath(t, "src.sock")
	src := startGodwit(t, "run", "--mem", "64M", "--api-sock", sock, "--guest-arg", "heartbeat=1")
	src.waitLine(func(l string) bool { _, ok := heartbeatPass(l); return ok }, "heartbeat")

	// A port that was free a moment ago: connecting to it is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "tcp:" + ln.Addr().String()
	ln.Close()
	if _, err := migrateVM(t, sock, dead); err == nil {
		t.Fatalf("migrating to %s succeeded", dead)
	}
	if status := ctl(t, sock, "status"); !strings.Contains(status, "running") {
		t.Fatalf("source after a failed migration:\n%s", status)
	}
	last := src.waitLine(func(l string) bool { _, ok := heartbeatPass(l); return ok }, "heartbeat after the failed migration")
	lastPass, _ := heartbeatPass(last)

	migrateOnward(t, src, sock, lastPass, nil)
}

// migrateOnward migrates the test guest of src (API socket sock, last
// heartbeat seen lastPass) to a new local receiver started with
// receiveArgs, `godwit migrate` getting migrateArgs: the migration must
// succeed, the source exit cleanly and the destination's guest go on
// counting past lastPass; then the destination is shut down.
func migrateOnward(t *testing.T, src *vmProcess, sock string, lastPass uint64, receiveArgs []string, migrateArgs ...string) {
	t.Helper()
	dst, listen, dstSock := startReceiver(t, "dst", receiveArgs...)
	if _, err := migrateVM(t, sock, listen, migrateArgs...); err != nil {
		t.Fatalf("migration after the failed ones: %v", err)
	}
	if err := src.wait(); err != nil {
		t.Fatalf("source after migrating: %v", err)
	}
	dst.waitLine(func(l string) bool { n, ok := heartbeatPass(l); return ok && n > lastPass }, "heartbeat on the destination, continuing the count")
	ctl(t, dstSock, "shutdown")
	if err := dst.wait(); err != nil {
		t.Fatalf("destination exit: %v", err)
	}
}

// tickLine parses the guest command's "tick N up=S cpu1ok" lines.
func tickLine(line string) (n, up int, cpu1 bool, ok bool) {
	f := strings.Fields(line)
	if len(f) < 3 || f[0] != "tick" {
		return 0, 0, false, false
	}
	n, err1 := strconv.Atoi(f[1])
	up, err2 := strconv.Atoi(strings.TrimPrefix(f[2], "up="))
	return n, up, len(f) > 3 && f[3] == "cpu1ok", err1 == nil && err2 == nil
}

// TestPingpongCommand runs `godwit pingpong`, the CI command, on the test
// guest: three hops, each followed by a heartbeat on the new instance, and
// a JSON report that says so.
func TestPingpongCommand(t *testing.T) {
	var stderr bytes.Buffer
	out, err := runGodwit(t, commandTimeout, &stderr, "pingpong", "--rounds", "3", "--mem", "64M", "--expect", "^heartbeat", "--timeout", "2m")
	t.Logf("godwit pingpong:\n%s\nstderr:\n%s", out, stderr.String())
	if err != nil {
		t.Fatalf("godwit pingpong: %v", err)
	}
	var rep struct {
		Status  string `json:"status"`
		Summary struct {
			Hops int `json:"hops"`
		} `json:"summary"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("report: %v", err)
	}
	if rep.Status != "passed" || rep.Summary.Hops != 3 {
		t.Fatalf("report: %+v", rep)
	}
}

// TestAutoConverge migrates a guest that dirties memory faster than the
// link: the test guest rewrites all of its memory as fast as it can, and
// the link is capped, without compression, below that: at 1 MB/s without
// auto-converge, at a quarter of the rate measured before migrating with
// it (in the nested host dirty logging itself slows the guest a
// hundredfold, every first write per round being an emulated nested page
// fault, so there the case may not need throttling and is skipped then).
// With auto-converge the
// throttle rises until the dirty set fits the downtime target (the policy,
// not the round limit, ends the iterations); without it the migration
// times out and the VM keeps running on the source.
func TestAutoConverge(t *testing.T) {
	// Each case migrates a VM of its own: in the nested host, turning
	// dirty logging on a second time on one running VM made the guest
	// triple-fault under KVM's TDP MMU (see the session notes), which
	// TestFailedMigrationKeepsSource does not exercise either.
	t.Run("without", func(t *testing.T) {
		src, sock, migrate := dirtyingSource(t, 64)
		// The dirty set never fits: the timeout hits, the VM stays.
		dst, addr, _ := startReceiver(t, "dst")
		if _, err := migrate(addr, "--auto-converge=false", "--timeout", "20s", "--bandwidth", "1M"); err == nil {
			t.Fatal("migration without auto-converge succeeded against a too-slow link")
		}
		if status := ctl(t, sock, "status"); !strings.Contains(status, "running") {
			t.Fatalf("source after the timed-out migration:\n%s", status)
		}
		src.waitLine(func(l string) bool { _, ok := heartbeatPass(l); return ok }, "heartbeat after the timed-out migration")
		if err := dst.wait(); err == nil {
			t.Error("the receiver of the failed migration exited 0")
		}
		ctl(t, sock, "shutdown")
		if err := src.wait(); err != nil {
			t.Fatalf("source exit: %v", err)
		}
	})
	t.Run("with", func(t *testing.T) {
		// The link: a quarter of the rate measured before migrating, so
		// that the full throttle (99%) brings the guest below it on any
		// host. In the nested host dirty logging alone can slow the
		// guest below that; then the case is not shown (skipped).
		src, _, migrate := dirtyingSource(t, 64)
		dst, addr, dsock := startReceiver(t, "dst")
		stats, err := migrate(addr, "--auto-converge=true", "--timeout", "5m")
		if err != nil {
			t.Fatalf("migration with auto-converge: %v", err)
		}
		throttled := true
		if pct, _ := stats["throttle_pct"].(float64); pct <= 0 {
			throttled = false
		}
		if exp, _ := stats["expected_downtime_ms"].(float64); exp > 300 {
			t.Errorf("stopped with an expected downtime of %.0f ms, above the 300 ms target: the round limit ended it, not convergence", exp)
		}
		if err := src.wait(); err != nil {
			t.Fatalf("source after migrating: %v", err)
		}
		dst.waitLine(func(l string) bool { _, ok := heartbeatPass(l); return ok }, "heartbeat on the destination")
		ctl(t, dsock, "shutdown")
		if err := dst.wait(); err != nil {
			t.Fatalf("destination exit: %v", err)
		}
		if !throttled {
			// Not a failure of auto-converge (that would not converge
			// at all), but the case was not shown.
			t.Skip("converged without throttling: under dirty logging the guest dirtied memory slower than the link here, so auto-converge was not needed")
		}
	})
}

// dirtyingSource starts the test guest rewriting its memMiB MiB as fast as it
// can and returns it, its API socket, and a function that migrates it over
// a link capped, without compression, at a quarter of the rate the guest
// was measured to dirty memory at, returning the migration's statistics.
func dirtyingSource(t *testing.T, memMiB int) (*vmProcess, string, func(to string, extra ...string) (map[string]any, error)) {
	t.Helper()
	sock := tempPath(t, "src.sock")
	src := startGodwit(t, "run", "--mem", strconv.Itoa(memMiB)+"M", "--api-sock", sock, "--guest-arg", "heartbeat=1")
	src.waitLine(func(l string) bool { _, ok := heartbeatPass(l); return ok }, "heartbeat")
	// The guest's own pass counter, read through the API, against the
	// host's clock (console lines can arrive in bursts, so their arrival
	// times say little).
	passes := func() (uint64, time.Time) {
		img := tempPath(t, "status.img")
		ctl(t, sock, "dump-memory", "--out", img, "--gpa", strconv.Itoa(guest.ParamAddr), "--len", "4096")
		at := time.Now()
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		n, err := guest.ReadStatus(b)
		if err != nil {
			t.Fatal(err)
		}
		return n, at
	}
	firstPass, first := passes()
	lastPass, last := firstPass, first
	for lastPass < firstPass+4 {
		if time.Since(first) > lineTimeout {
			t.Fatalf("the guest made %d passes in %v: it is not running", lastPass-firstPass, lineTimeout)
		}
		lastPass, last = passes()
	}
	pages := uint64(memMiB-2) << 20 / 4096 // the default range: 2 MiB to the end of RAM
	rate := float64(pages*(lastPass-firstPass)) / last.Sub(first).Seconds()
	bandwidth := max(1<<20, int64(rate*4096/4))
	t.Logf("guest dirties about %.0f pages/s; link capped at %d bytes/s", rate, bandwidth)
	migrate := func(to string, extra ...string) (map[string]any, error) {
		args := append([]string{"--json", "--compress", "none",
			"--bandwidth", strconv.FormatInt(bandwidth, 10), "--downtime-ms", "300"}, extra...)
		out, err := migrateVM(t, sock, to, args...)
		if i := strings.IndexByte(string(out), '{'); i > 0 {
			out = out[i:] // the JSON report follows any error line
		}
		var info struct {
			Stats map[string]any `json:"stats"`
		}
		// Decode reads the report and ignores the error line after it.
		if jerr := json.NewDecoder(bytes.NewReader(out)).Decode(&info); jerr != nil && err == nil {
			err = jerr
		}
		return info.Stats, err
	}
	return src, sock, migrate
}
