package main

import (
	"strings"
	"testing"
	"time"
)

// TestParsers checks the console and log line parsers.
func TestParsers(t *testing.T) {
	if n, ok := tickNum("tick 12"); !ok || n != 12 {
		t.Errorf("tickNum(tick 12) = %d, %v", n, ok)
	}
	for _, l := range []string{"", "tick", "tick x", "ticks 3", "[ 1.0] tick 3"} {
		if _, ok := tickNum(l); ok {
			t.Errorf("tickNum(%q) matched", l)
		}
	}
	line := `time=2026-01-01T00:00:00Z level=INFO msg="waiting for a migrating VM" listen=tcp:127.0.0.1:40123`
	if a, ok := listenAddr(line); !ok || a != "tcp:127.0.0.1:40123" {
		t.Errorf("listenAddr = %q, %v", a, ok)
	}
	if _, ok := listenAddr("msg=other"); ok {
		t.Error("listenAddr matched a line without listen=")
	}
}

// TestMedian checks odd, even and empty inputs.
func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// TestConsoleWait checks line splitting, CR removal, waiting and timeouts.
func TestConsoleWait(t *testing.T) {
	c := newConsole("test")
	done := make(chan struct{})
	go func() {
		c.Write([]byte("boot\r\ntick 1\r\nti"))
		time.Sleep(20 * time.Millisecond)
		c.Write([]byte("ck 2\r\n"))
	}()
	line, next, err := c.waitFor(0, 5*time.Second, done, "tick 2", func(l string) bool { n, ok := tickNum(l); return ok && n == 2 })
	if err != nil || line != "tick 2" || next != 3 {
		t.Fatalf("waitFor = %q, %d, %v", line, next, err)
	}
	if _, _, err := c.waitFor(next, 50*time.Millisecond, done, "more", func(string) bool { return true }); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("waitFor past the end: %v, want a timeout", err)
	}
	close(done)
	if _, _, err := c.waitFor(next, 5*time.Second, done, "more", func(string) bool { return true }); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("waitFor after exit: %v, want an exit error", err)
	}
	if got := lastTick(c); got != 2 {
		t.Errorf("lastTick = %d", got)
	}
}

// TestStatsFromLog reads the source's completion log line.
func TestStatsFromLog(t *testing.T) {
	c := newConsole("src")
	c.Write([]byte(`time=2026-11-27T10:58:24.024Z level=INFO msg="migration completed" downtime_ms=193.05872 total_ms=27790.67175 bytes=83308565` + "\n"))
	m, ok := statsFromLog(c)
	if !ok || m.Status != "completed" || m.Stats.DowntimeMs != 193.05872 || m.Stats.TotalMs != 27790.67175 || m.Stats.TransferredBytes != 83308565 {
		t.Fatalf("statsFromLog = %+v, %v", m, ok)
	}
	if _, ok := statsFromLog(newConsole("empty")); ok {
		t.Fatal("statsFromLog found a line in an empty log")
	}
}

func TestFormatBreakdown(t *testing.T) {
	for _, tt := range []struct {
		in   map[string]any
		want string
	}{
		{nil, ""},
		{map[string]any{"pause_ms": 1.5, "transfer_ms": 2.25, "final_bytes": 7.0}, " pause_ms=1.50 transfer_ms=2.25"},
	} {
		if got := formatBreakdown(tt.in); got != tt.want {
			t.Errorf("formatBreakdown(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
