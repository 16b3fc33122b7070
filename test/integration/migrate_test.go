package integration

import (
	"net"
	"os/exec"
	"strings"
	"testing"
)

// TestDemoPingPong runs the README's main job: the test guest bounced
// between local instances with its memory verified after every hop.
func TestDemoPingPong(t *testing.T) {
	out, err := exec.Command(godwitBin(t), "demo", "--hops", "4", "--mem", "128M").CombinedOutput()
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
	cmd := exec.Command(godwitBin(t), "migrate", "--api-sock", sock, "--to", dead)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("migrating to %s succeeded:\n%s", dead, out)
	}
	t.Logf("failed migration as expected: %s", strings.TrimSpace(string(out)))
	if status := ctl(t, sock, "status"); !strings.Contains(status, "running") {
		t.Fatalf("source after a failed migration:\n%s", status)
	}
	last := src.waitLine(func(l string) bool { _, ok := heartbeatPass(l); return ok }, "heartbeat after the failed migration")
	lastPass, _ := heartbeatPass(last)

	dstSock := tempPath(t, "dst.sock")
	dst := startGodwit(t, "receive", "--listen", "tcp:127.0.0.1:0", "--api-sock", dstSock)
	addr := waitStderr(t, dst, "waiting for a migrating VM")
	_, listen, _ := strings.Cut(addr, "listen=")
	listen = strings.Fields(listen)[0]
	out, err = exec.Command(godwitBin(t), "migrate", "--api-sock", sock, "--to", listen).CombinedOutput()
	t.Logf("godwit migrate:\n%s", out)
	if err != nil {
		t.Fatalf("second migration: %v", err)
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
