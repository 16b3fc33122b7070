package runner

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestProc(t *testing.T) {
	p, err := startProc("shell", "sh", "-c", "echo banner; echo 'heartbeat 1'; echo oops >&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	line, err := p.waitLine(ctx, 0, heartbeat)
	if err != nil || line != "heartbeat 1" {
		t.Fatalf("waitLine = %q, %v", line, err)
	}
	if err := p.wait(10 * time.Second); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("wait = %v, want exit status 3", err)
	}
	if p.consoleLines() != 2 || p.stderrTail() != "oops" {
		t.Errorf("%d lines, stderr %q", p.consoleLines(), p.stderrTail())
	}
	// A line that never comes: the exit ends the wait, with the reason.
	if _, err := p.waitLine(ctx, 2, regexp.MustCompile("never")); err == nil || !strings.Contains(err.Error(), "oops") {
		t.Errorf("waitLine after exit: %v", err)
	}
	p.kill() // already gone: no-op
}

func TestProcKillAndTimeout(t *testing.T) {
	p, err := startProc("sleeper", "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := p.waitLine(ctx, 0, heartbeat); err == nil || !strings.Contains(err.Error(), "no console line") {
		t.Errorf("waitLine on a silent process: %v", err)
	}
	if err := p.wait(10 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "did not exit") {
		t.Errorf("wait on a running process: %v", err)
	}
	p.kill()
	select {
	case <-p.done:
	default:
		t.Fatal("kill returned before the process was gone")
	}
	var none *proc
	none.kill()
}
