package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"godwit/migrate"
	"godwit/test/guest"
	"godwit/vmm"
	"godwit/vmm/api"
	"godwit/vmm/memory"
)

// faultMem is the RAM of the VMs the fault tests migrate: small, so that a
// retry is quick, and large enough that round 0 under faultCap lasts a
// couple of seconds.
const faultMem = 32 << 20

// faultFlag is the receiver's test-only fault injection (cmd/godwit/testfault.go).
const faultFlag = "GODWIT_TEST_FAULT="

// iterateForever keeps a migration iterating: a downtime target below the
// switchover cost is never met, and with a timeout set the round limit
// does not force stop-and-copy either, so the memory round after round 0
// is always an iterative one, with the VM running.
var iterateForever = []string{"--downtime-ms", "1", "--auto-converge=false", "--timeout", "3m"}

// faultCap slows rounds down to about two seconds for 32 MiB of test guest
// (uncompressed: LZ4 shrinks its pages to almost nothing), so that a
// cancel lands inside the round it is aimed at.
var faultCap = []string{"--compress", "none", "--bandwidth", "16M"}

// TestMigrationFaults shows that a failure before switchover leaves the
// source running, unchanged and able to migrate again, and that a failure
// after it leaves the VM running on the destination: after every case the
// VM runs in exactly one place (the other process has exited) and its
// memory passes the checker there. Each case starts a test guest that
// dirties its memory and breaks one migration of it; when the source kept
// the VM, the case checks it (heartbeats go on, the API says running,
// dirty logging is off, its memory verifies), then migrates it to a fresh
// receiver and verifies the guest's memory there.
//
// The destination is SIGKILLed by its test-only fault injection
// (GODWIT_TEST_FAULT) as it enters round 0, an iterative round,
// stop-and-copy (the source is paused), or after it has started the VM
// but before it acknowledges with RESUMED; or the migration is cancelled
// (`godwit ctl cancel-migration`) while round 0 or an iterative round
// runs, as the receiver reports; or the link is cut in round 0 (the
// source's --timeout and the receiver's --idle-timeout end the
// migration; the link is restored for the retry); or the source is
// SIGKILLed after switchover, once it has logged the completed migration.
//
// Every case runs over a veth link to receivers in a network namespace of
// their own (newVethLink), and over loopback where that is not available
// (or with GODWIT_TEST_LONG=1 too); cutting the link needs the veth.
func TestMigrationFaults(t *testing.T) {
	for _, kind := range []string{"veth", "loopback"} {
		t.Run(kind, func(t *testing.T) { migrationFaults(t, kind) })
	}
}

// migrationFaults runs TestMigrationFaults's cases over one kind of network.
func migrationFaults(t *testing.T, kind string) {
	kills := []struct {
		phase string
		args  []string
	}{
		{"round0", nil},
		{"iterative", iterateForever},
		{"stop-and-copy", nil},
		{"before-ack", nil},
	}
	for _, k := range kills {
		t.Run("kill-destination-in-"+k.phase, func(t *testing.T) {
			nw := newFaultNet(t, kind)
			src := startFaultSource(t)
			dst, addr, _ := nw.receiver(t, "dst-killed", []string{faultFlag + "die-in=" + k.phase})
			out, err := migrateVM(t, src.sock, addr, k.args...)
			if err == nil {
				t.Fatalf("migrating to a receiver that dies in %s succeeded", k.phase)
			}
			if werr := dst.wait(); werr == nil || !strings.Contains(werr.Error(), "signal: killed") {
				t.Fatalf("receiver exit %v, want killed by its fault injection", werr)
			}
			if want := "test fault: SIGKILL in phase " + k.phase; !strings.Contains(dst.stderrText(), want) {
				t.Fatalf("the receiver did not log %q: it died elsewhere", want)
			}
			src.checkKept(t, out)
			src.retry(t, nw)
		})
	}
	cancels := []struct {
		phase, notYet string
	}{
		{"round0", "iterative"},
		{"iterative", "stop-and-copy"},
	}
	for _, c := range cancels {
		t.Run("cancel-in-"+c.phase, func(t *testing.T) {
			nw := newFaultNet(t, kind)
			src := startFaultSource(t)
			dst, addr, _ := nw.receiver(t, "dst-cancelled", []string{faultFlag + "report"})
			result := migrateInBackground(t, src.sock, addr, append(append([]string{}, faultCap...), iterateForever...)...)
			waitStderr(t, dst, "test fault: phase "+c.phase)
			if out := ctl(t, src.sock, "cancel-migration"); !strings.Contains(out, "migration cancelled") {
				t.Fatalf("ctl cancel-migration: %s", out)
			}
			out := waitMigration(t, result, "the cancel")
			if !strings.Contains(string(out), "migration cancelled") {
				t.Fatalf("godwit migrate does not report a cancelled migration:\n%s", out)
			}
			if err := dst.wait(); err == nil {
				t.Fatal("the receiver of the cancelled migration exited 0")
			}
			stderr := dst.stderrText()
			if !strings.Contains(stderr, "peer aborted the migration: source: context canceled") {
				t.Fatalf("the receiver does not report the source's cancel:\n%s", stderr)
			}
			if strings.Contains(stderr, "test fault: phase "+c.notYet) {
				t.Fatalf("the cancel came too late: the receiver reached %s", c.notYet)
			}
			src.checkKept(t, out)
			src.retry(t, nw)
		})
	}
	t.Run("cut-link-in-round0", func(t *testing.T) {
		nw := newFaultNet(t, kind)
		if nw.link == nil {
			t.Skip("loopback cannot be cut: this case needs the veth link")
		}
		src := startFaultSource(t)
		// Both ends give up on a silent link: the source at its
		// --timeout (the migration alone takes a few seconds under
		// faultCap), the receiver after --idle-timeout.
		dst, addr, _ := nw.receiver(t, "dst-cut", []string{faultFlag + "report"}, "--idle-timeout", "10s")
		result := migrateInBackground(t, src.sock, addr, append(append([]string{}, faultCap...), "--timeout", "20s")...)
		waitStderr(t, dst, "test fault: phase round0")
		nw.link.cut(t)
		out := waitMigration(t, result, "the link was cut")
		if !strings.Contains(string(out), migrate.ErrTimeout.Error()) {
			t.Errorf("godwit migrate does not report a timeout:\n%s", out)
		}
		if err := dst.wait(); err == nil {
			t.Fatal("the receiver of the cut migration exited 0")
		}
		stderr := dst.stderrText()
		if !strings.Contains(stderr, migrate.ErrTimeout.Error()) {
			t.Errorf("the receiver does not report its idle timeout:\n%s", stderr)
		}
		if strings.Contains(stderr, "test fault: phase stop-and-copy") || strings.Contains(stderr, "VM received and running") {
			t.Fatal("the cut came too late: the receiver reached stop-and-copy")
		}
		src.checkKept(t, out)
		nw.link.restore(t)
		src.retry(t, nw)
	})
	t.Run("kill-source-after-switchover", func(t *testing.T) {
		nw := newFaultNet(t, kind)
		src := startFaultSource(t)
		last := src.nextHeartbeat("heartbeat before migrating")
		dst, addr, dsock := nw.receiver(t, "dst", nil)
		// Through the API, not `godwit migrate`: nobody reads the final
		// status, so the migrated source waits (vmm.finalStatusGrace)
		// instead of stopping at once, and is killed in that wait.
		ctx, cancel := context.WithTimeout(context.Background(), lineTimeout)
		defer cancel()
		if _, err := api.NewClient(src.sock).Migrate(ctx, api.MigrateRequest{To: addr}); err != nil {
			t.Fatal(err)
		}
		waitStderr(t, src.vmProcess, "migration completed")
		src.cmd.Process.Kill()
		err := src.wait()
		killed := err != nil && strings.Contains(err.Error(), "signal: killed")
		if err != nil && !killed {
			t.Fatalf("source after migrating: %v", err)
		}
		checkMoved(t, dst, dsock, last)
		if !killed {
			// The VM ran on where it should, but the case was not shown.
			t.Skip("the source stopped on its own before the test killed it")
		}
	})
}

// faultNet is the network a fault case migrates over.
type faultNet struct {
	link *vethLink // nil for loopback
}

// newFaultNet returns a network of the kind ("veth" or "loopback") for t.
// A veth link not available here skips t (newVethLink); loopback skips t
// when the veth link covers the case, unless GODWIT_TEST_LONG=1.
func newFaultNet(t *testing.T, kind string) *faultNet {
	t.Helper()
	if kind == "veth" {
		return &faultNet{link: newVethLink(t)}
	}
	if err := vethProbe(); err == nil && os.Getenv("GODWIT_TEST_LONG") != "1" {
		t.Skip("covered over the veth link; GODWIT_TEST_LONG=1 runs it over loopback too")
	}
	return &faultNet{}
}

// receiver starts `godwit receive` on the network, like startReceiverEnv.
func (n *faultNet) receiver(t *testing.T, name string, env []string, extra ...string) (*vmProcess, string, string) {
	t.Helper()
	if n.link != nil {
		return n.link.startReceiver(t, name, env, extra...)
	}
	return startReceiverEnv(t, name, env, extra...)
}

// waitMigration returns the output of the failed `godwit migrate` whose
// result arrives on result after what happened.
func waitMigration(t *testing.T, result <-chan migrateResult, what string) []byte {
	t.Helper()
	select {
	case r := <-result:
		if r.err == nil {
			t.Fatalf("the migration succeeded although %s", what)
		}
		return r.out
	case <-time.After(lineTimeout):
		t.Fatalf("godwit migrate did not finish within %v after %s", lineTimeout, what)
		return nil
	}
}

// faultSource is a running test guest to migrate.
type faultSource struct {
	*vmProcess
	sock string
}

// startFaultSource starts the test guest (a heartbeat every pass) and
// waits for its first heartbeat.
func startFaultSource(t *testing.T) *faultSource {
	t.Helper()
	sock := tempPath(t, "src.sock")
	p := startGodwit(t, "run", "--mem", fmt.Sprint(faultMem>>20)+"M", "--api-sock", sock, "--guest-arg", "heartbeat=1")
	p.waitLine(func(l string) bool { _, ok := heartbeatPass(l); return ok }, "heartbeat")
	return &faultSource{vmProcess: p, sock: sock}
}

// nextHeartbeat returns the pass of a heartbeat printed from now on.
func (p *vmProcess) nextHeartbeat(what string) uint64 {
	p.t.Helper()
	p.drainLines()
	n, _ := heartbeatPass(p.waitLine(func(l string) bool { _, ok := heartbeatPass(l); return ok }, what))
	return n
}

// checkKept checks the source after a failed migration whose `godwit
// migrate` output was out: it says the VM keeps running, the API reports
// it running with dirty logging off, and its heartbeats go on.
func (s *faultSource) checkKept(t *testing.T, out []byte) {
	t.Helper()
	if !strings.Contains(string(out), "the VM keeps running on the source") {
		t.Errorf("godwit migrate does not say the VM keeps running:\n%s", out)
	}
	var info struct {
		State    string `json:"state"`
		DirtyLog *bool  `json:"dirty_log"`
	}
	if err := json.Unmarshal([]byte(ctl(t, s.sock, "status", "--json")), &info); err != nil {
		t.Fatal(err)
	}
	if info.State != "running" || info.DirtyLog == nil || *info.DirtyLog {
		t.Fatalf("source after the failed migration: state %q, dirty_log %v; want running, false", info.State, fmtBool(info.DirtyLog))
	}
	first := s.nextHeartbeat("heartbeat after the failed migration")
	s.waitLine(func(l string) bool { n, ok := heartbeatPass(l); return ok && n > first }, fmt.Sprintf("heartbeat after pass %d", first))
	if passes := verifyFaultGuest(t, s.sock, "source"); passes <= first {
		t.Fatalf("source at pass %d, not past its heartbeat %d", passes, first)
	}
}

// fmtBool prints an optional bool.
func fmtBool(b *bool) string {
	if b == nil {
		return "absent"
	}
	return fmt.Sprint(*b)
}

// retry migrates the source to a fresh receiver on nw and checks the
// guest there (checkMoved).
func (s *faultSource) retry(t *testing.T, nw *faultNet) {
	t.Helper()
	last := s.nextHeartbeat("heartbeat before the retry")
	dst, addr, dsock := nw.receiver(t, "dst", nil)
	if _, err := migrateVM(t, s.sock, addr); err != nil {
		t.Fatalf("migration after the failed one: %v", err)
	}
	if err := s.wait(); err != nil {
		t.Fatalf("source after migrating: %v", err)
	}
	checkMoved(t, dst, dsock, last)
}

// checkMoved checks the destination of a migration whose source has
// exited after its heartbeat last: the guest goes on counting there and
// its memory passes the checker; then it shuts the destination down.
func checkMoved(t *testing.T, dst *vmProcess, dsock string, last uint64) {
	t.Helper()
	dst.waitLine(func(l string) bool { n, ok := heartbeatPass(l); return ok && n > last }, fmt.Sprintf("heartbeat on the destination after pass %d", last))
	if passes := verifyFaultGuest(t, dsock, "destination"); passes <= last {
		t.Fatalf("destination at pass %d, not past the source's heartbeat %d", passes, last)
	}
	ctl(t, dsock, "shutdown")
	if err := dst.wait(); err != nil {
		t.Fatalf("destination exit: %v", err)
	}
}

// verifyFaultGuest pauses the fault tests' guest behind the API socket
// sock, checks a dump of its memory, resumes it, and returns the guest's
// pass counter; where names the VM in messages.
func verifyFaultGuest(t *testing.T, sock, where string) uint64 {
	t.Helper()
	ctl(t, sock, "pause")
	img := tempPath(t, where+".img")
	ctl(t, sock, "dump-memory", "--out", img)
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	params := guest.DefaultParams(faultMem)
	if err := guest.ParseParam(&params, "heartbeat", "1"); err != nil {
		t.Fatal(err)
	}
	res, err := guest.Check(data, params)
	if err != nil {
		t.Fatalf("the %s's memory fails the check: %v", where, err)
	}
	passes, err := guest.ReadStatus(data[guest.ParamAddr:])
	if err != nil {
		t.Fatal(err)
	}
	if err := res.MatchPasses(passes); err != nil {
		t.Fatalf("the %s's memory: %v", where, err)
	}
	t.Logf("%s memory verified: counter %d, boundary %d, %d passes", where, res.Counter, res.Boundary, passes)
	ctl(t, sock, "resume")
	return passes
}

// migrateResult is the outcome of a `godwit migrate` run.
type migrateResult struct {
	out []byte
	err error
}

// migrateInBackground starts `godwit migrate --api-sock sock --to to
// args...` and returns where its result arrives; the test's end kills a
// run still going.
func migrateInBackground(t *testing.T, sock, to string, args ...string) <-chan migrateResult {
	t.Helper()
	full := append([]string{"migrate", "--api-sock", sock, "--to", to}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), migrateTimeout)
	cmd := exec.CommandContext(ctx, godwitBin(t), full...)
	res := make(chan migrateResult, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			err = fmt.Errorf("godwit migrate did not finish within %v: %w", migrateTimeout, err)
		}
		t.Logf("godwit %s:\n%s", strings.Join(full, " "), out)
		res <- migrateResult{out, err}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return res
}

// TestMigrationFaultsBadStreams sends broken migration streams to a real
// `godwit receive` from a fake source that speaks the wire format by hand:
// a corrupted frame, a stream cut off in the middle of a frame, a protocol
// version the receiver does not speak, and VM configurations this host
// cannot take. Each is refused with a clear message, on the wire (ERROR or
// REFUSE) and in the receiver's output, and the receiver exits non-zero
// without running a VM.
func TestMigrationFaultsBadStreams(t *testing.T) {
	// A zero page at 2 MiB: region 0, first page 512, one page, present
	// and zero bitmaps with bit 0 set (the PAGE_BATCH layout of
	// migrate/doc.go).
	batch := binary.LittleEndian.AppendUint32(nil, 0)
	batch = binary.LittleEndian.AppendUint64(batch, 512)
	batch = binary.LittleEndian.AppendUint32(batch, 1)
	batch = append(batch, 1, 1)
	pageBatch := migrate.AppendFrame(nil, migrate.FramePageBatch, 0, batch)
	corrupt := bytes.Clone(pageBatch)
	corrupt[migrate.FrameHeaderSize+4] ^= 0x10 // first_page 512 -> 528, after the checksum was computed

	tests := []struct {
		name  string
		hello []byte
		// afterAccept is sent once the receiver accepted HELLO (nil:
		// HELLO must be refused); the write side is closed after it.
		afterAccept []byte
		answer      uint16 // the receiver's last frame: REFUSE or ERROR
		want        string // in that frame and in the receiver's output
	}{
		{
			name:        "corrupt-frame",
			hello:       testGuestHello(t, migrate.MinProtocolVersion, faultMem, faultMem, nil),
			afterAccept: append(migrate.AppendFrame(nil, migrate.FrameMemoryBegin, 0, []byte{0, 0, 0, 0}), corrupt...),
			answer:      migrate.FrameError,
			want:        "PAGE_BATCH frame checksum mismatch",
		},
		{
			name:        "truncated-stream",
			hello:       testGuestHello(t, migrate.MinProtocolVersion, faultMem, faultMem, nil),
			afterAccept: append(migrate.AppendFrame(nil, migrate.FrameMemoryBegin, 0, []byte{0, 0, 0, 0}), pageBatch[:len(pageBatch)/2]...),
			answer:      migrate.FrameError,
			want:        "reading from the source in state InRound: reading PAGE_BATCH frame: unexpected EOF",
		},
		{
			name:   "wrong-protocol-version",
			hello:  testGuestHello(t, migrate.ProtocolVersion+1, faultMem, faultMem, nil),
			answer: migrate.FrameRefuse,
			want:   fmt.Sprintf("protocol version %d not supported (this side speaks %d to %d)", migrate.ProtocolVersion+1, migrate.MinProtocolVersion, migrate.ProtocolVersion),
		},
		{
			// A source CPU with every feature bit of leaf 0x80000001
			// set: no host has them all (many are reserved).
			name:   "config-cpu-features",
			hello:  testGuestHello(t, migrate.MinProtocolVersion, faultMem, faultMem, []vmm.CPUIDFeatures{{Function: 0x80000001, ECX: ^uint32(0), EDX: ^uint32(0)}}),
			answer: migrate.FrameRefuse,
			want:   "this host's CPU lacks features the VM uses: leaf 0x80000001.0",
		},
		{
			// HELLO describes 64 MiB of RAM, the configuration 32 MiB.
			name:   "config-memory-layout",
			hello:  testGuestHello(t, migrate.MinProtocolVersion, 2*faultMem, faultMem, nil),
			answer: migrate.FrameRefuse,
			want:   "memory layout mismatch: source region 0 is [0x0, +0x4000000), here [0x0, +0x2000000)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rcv, addr, _ := startReceiver(t, "dst")
			conn, err := net.DialTimeout("tcp", strings.TrimPrefix(addr, "tcp:"), lineTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// Bounds every read and write below.
			conn.SetDeadline(time.Now().Add(lineTimeout))
			if _, err := conn.Write(migrate.AppendFrame(nil, migrate.FrameHello, 0, tt.hello)); err != nil {
				t.Fatalf("sending HELLO: %v", err)
			}
			if tt.afterAccept != nil {
				readFrame(t, conn, migrate.FrameAccept, "the answer to HELLO")
				if _, err := conn.Write(tt.afterAccept); err != nil {
					t.Fatalf("sending the broken stream: %v", err)
				}
				conn.(*net.TCPConn).CloseWrite()
			}
			reason := string(readFrame(t, conn, tt.answer, "the receiver's verdict"))
			if !strings.Contains(reason, tt.want) {
				t.Errorf("%s reason %q does not contain %q", migrate.FrameName(tt.answer), reason, tt.want)
			}
			if err := rcv.wait(); err == nil {
				t.Fatal("the receiver exited 0")
			}
			stderr := rcv.stderrText()
			if !strings.Contains(stderr, "godwit: receiving the VM failed: ") || !strings.Contains(stderr, tt.want) {
				t.Errorf("the receiver's output does not say %q:\n%s", tt.want, stderr)
			}
			if strings.Contains(stderr, "VM received and running") || rcv.consoleLines() > 0 {
				t.Errorf("the receiver ran a VM")
			}
		})
	}
}

// testGuestHello returns a HELLO payload for the test guest: protocol
// version, RAM regions for helloMem bytes, and a configuration for
// cfgMem bytes whose CPU has the features cpuid.
func testGuestHello(t *testing.T, version uint32, helloMem, cfgMem uint64, cpuid []vmm.CPUIDFeatures) []byte {
	t.Helper()
	params := guest.DefaultParams(cfgMem)
	cfg, err := json.Marshal(vmm.MigrationConfig{MemoryBytes: cfgMem, CPUs: 1, Guest: "test-guest", TestGuest: &params, CPUID: cpuid})
	if err != nil {
		t.Fatal(err)
	}
	regions, err := memory.Layout(helloMem)
	if err != nil {
		t.Fatal(err)
	}
	p, err := migrate.HelloPayload(version, regions, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// readFrame reads one frame from conn (within its deadline) and fails
// unless it has type want; it returns the payload.
func readFrame(t *testing.T, conn net.Conn, want uint16, what string) []byte {
	t.Helper()
	typ, _, payload, err := migrate.ReadFrame(conn)
	if err != nil {
		t.Fatalf("no %s: %v", what, err)
	}
	if typ != want {
		t.Fatalf("%s is %s %q, want %s", what, migrate.FrameName(typ), payload, migrate.FrameName(want))
	}
	return payload
}
