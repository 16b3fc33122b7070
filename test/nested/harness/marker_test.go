package harness

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParseExitMarker(t *testing.T) {
	tests := []struct {
		line   string
		code   int
		wantOK bool
	}{
		{"GODWIT-NESTED-EXIT=0", 0, true},
		{"GODWIT-NESTED-EXIT=1\r", 1, true},
		{"GODWIT-NESTED-EXIT=255  ", 255, true},
		{"[    3.1] GODWIT-NESTED-EXIT=2", 2, true},
		{"GODWIT-NESTED-EXIT=", 0, false},
		{"GODWIT-NESTED-EXIT=$code", 0, false},
		{"GODWIT-NESTED-EXIT=256", 0, false},
		{"GODWIT-NESTED-EXIT=-1", 0, false},
		{"GODWIT-NESTED-EXIT=+1", 0, false},
		{"GODWIT-NESTED-EXIT=1 extra", 0, false},
		{"echo GODWIT-NESTED-EXITED=0", 0, false},
		{"no marker here", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			code, ok := ParseExitMarker(tt.line)
			if ok != tt.wantOK || code != tt.code {
				t.Errorf("ParseExitMarker(%q) = %d, %v; want %d, %v", tt.line, code, ok, tt.code, tt.wantOK)
			}
		})
	}
}

func TestConsole(t *testing.T) {
	tests := []struct {
		name     string
		chunks   []string
		out      string
		started  bool
		exited   bool
		exitCode int
	}{
		{
			name:    "split markers, CRLF dropped",
			chunks:  []string{"boot\r\nGODWIT-NESTED-ST", "ART kernel=6.1\r\nok\r\nGODWIT-NESTED-E", "XIT=3\r\n"},
			out:     "boot\nGODWIT-NESTED-START kernel=6.1\nok\nGODWIT-NESTED-EXIT=3\n",
			started: true, exited: true, exitCode: 3,
		},
		{
			name:    "last marker wins",
			chunks:  []string{"GODWIT-NESTED-START\nGODWIT-NESTED-EXIT=1\nGODWIT-NESTED-EXIT=0\n"},
			out:     "GODWIT-NESTED-START\nGODWIT-NESTED-EXIT=1\nGODWIT-NESTED-EXIT=0\n",
			started: true, exited: true, exitCode: 0,
		},
		{
			name:    "unterminated marker line is not parsed",
			chunks:  []string{"GODWIT-NESTED-START\n", "GODWIT-NESTED-EXIT=0"},
			out:     "GODWIT-NESTED-START\nGODWIT-NESTED-EXIT=0",
			started: true,
		},
		{
			name:    "escape sequences split across writes",
			chunks:  []string{"\x1bc\x1b[?7l\x1b[2JSeaBIOS\r\n\x1b[", "0mGODWIT-NESTED-START\n\x1b", "cGODWIT-NESTED-EXIT=0\n"},
			out:     "SeaBIOS\nGODWIT-NESTED-START\nGODWIT-NESTED-EXIT=0\n",
			started: true, exited: true, exitCode: 0,
		},
		{
			name:   "kernel panic",
			chunks: []string{"Kernel panic - not syncing\n"},
			out:    "Kernel panic - not syncing\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			c := NewConsole(&buf)
			for _, ch := range tt.chunks {
				if n, err := c.Write([]byte(ch)); err != nil || n != len(ch) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if buf.String() != tt.out {
				t.Errorf("output %q, want %q", buf.String(), tt.out)
			}
			if _, ok := c.Started(); ok != tt.started {
				t.Errorf("started = %v, want %v", ok, tt.started)
			}
			code, _, ok := c.Exit()
			if ok != tt.exited || code != tt.exitCode {
				t.Errorf("Exit = %d, %v; want %d, %v", code, ok, tt.exitCode, tt.exited)
			}
		})
	}
}

func TestWedgeSign(t *testing.T) {
	for _, tt := range []struct {
		line string
		want bool
	}{
		{"[  122.908626] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", true},
		{"[ 5.1] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:", true},
		{"[   44.000001] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [godwit:123]", true},
		{"        [   12.837435] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", false}, // a guest's, indented by a test
		{"    godwit| [ 3.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", false},
		{"[  122.908626] rcu: 	0-....: (17 ticks this GP)", false},
		{"rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", false},
		{"[ unterminated", false},
		{"[  243.266277] INFO: task khugepaged:36 blocked for more than 120 seconds.", true},
		{"[  243.266954]       Not tainted 6.1.0-56-amd64 #1 Debian 6.1.192-2", false},
		{"[  243.3] INFO: task khugepaged:36 is fine", false},
		{"        [ 9.0] INFO: task kworker/0:1:12 blocked for more than 120 seconds.", false},
	} {
		if _, got := WedgeSign(tt.line); got != tt.want {
			t.Errorf("WedgeSign(%q) = %v, want %v", tt.line, got, tt.want)
		}
	}
}

func TestConsoleWedged(t *testing.T) {
	var out strings.Builder
	c := NewConsole(&out)
	fmt.Fprintf(c, "        [ 1.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n")
	select {
	case <-c.Wedged():
		t.Fatal("a guest's indented message wedged the console")
	default:
	}
	fmt.Fprintf(c, "[ 2.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n[ 3.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n")
	select {
	case <-c.Wedged():
	default:
		t.Fatal("not wedged after the nested host's stall report")
	}
	if w := c.Wedge(); !strings.HasPrefix(w, "rcu: INFO: rcu_preempt") {
		t.Errorf("Wedge() = %q", w)
	}
}

func TestConsoleSilence(t *testing.T) {
	var out strings.Builder
	c := NewConsole(&out)
	clock := time.Unix(1000, 0)
	c.now = func() time.Time { return clock }
	c.lastOut = clock
	for _, step := range []struct {
		advance time.Duration
		write   string
		quiet   time.Duration // want from Quiet
		want    bool
	}{
		{advance: 3 * time.Minute, quiet: 3 * time.Minute, want: false},
		{advance: time.Minute, write: "still here\n", quiet: 0, want: false},
		{advance: 3*time.Minute + 59*time.Second, quiet: 3*time.Minute + 59*time.Second, want: false},
		{advance: 2 * time.Second, quiet: 4*time.Minute + time.Second, want: true},
	} {
		clock = clock.Add(step.advance)
		if step.write != "" {
			fmt.Fprint(c, step.write)
		}
		if got := c.Quiet(); got != step.quiet {
			t.Errorf("after %v more (wrote %q): Quiet = %v, want %v", step.advance, step.write, got, step.quiet)
		}
		if got := c.CheckSilence(4 * time.Minute); got != step.want {
			t.Fatalf("after %v more (wrote %q): CheckSilence = %v, want %v", step.advance, step.write, got, step.want)
		}
	}
	select {
	case <-c.Wedged():
	default:
		t.Fatal("a silent console is not wedged")
	}
	if w := c.Wedge(); !strings.HasPrefix(w, "no console output for 4m1s") {
		t.Errorf("Wedge() = %q", w)
	}
}

func TestConsoleWedgedMarker(t *testing.T) {
	for _, tt := range []struct {
		line string
		want bool
	}{
		{WedgedMarker + ": godwit (pid 12) still alive 30s after SIGKILL", true},
		{"    helpers_test.go:1: " + WedgedMarker + " quoted by a test", false},
		{"heartbeat 3", false},
	} {
		var out strings.Builder
		c := NewConsole(&out)
		fmt.Fprintln(c, tt.line)
		select {
		case <-c.Wedged():
			if !tt.want {
				t.Errorf("%q wedged the console", tt.line)
			}
		default:
			if tt.want {
				t.Errorf("%q did not wedge the console", tt.line)
			}
		}
	}
}
