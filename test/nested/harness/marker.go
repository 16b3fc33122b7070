package harness

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Marker lines printed on the nested host's serial console by its /init.
const (
	// StartMarker is printed right before the payload starts.
	StartMarker = "GODWIT-NESTED-START"
	// ExitMarker prefixes the payload's exit code: "GODWIT-NESTED-EXIT=<code>".
	ExitMarker = "GODWIT-NESTED-EXIT="
	// WedgedMarker starts a line a payload prints when it finds the
	// nested host stuck (a killed process that does not die): the
	// harness then stops the nested host at once, as for the kernel's
	// own stall reports.
	WedgedMarker = "GODWIT-NESTED-WEDGED"
	// GuestReadyMarker is printed by the guest initramfs once userspace runs.
	GuestReadyMarker = "GODWIT-GUEST-READY"
)

// wedgeSigns are messages of the nested host's own kernel (at the start
// of a console line, after the "[ seconds]" stamp) that mean it is stuck:
// a CPU that stopped passing RCU quiescent states stays stuck in the
// nested host under TCG, and every test still running would only wait for
// its own timeout. A task hung for two minutes is the same machine seen
// from another side (khugepaged waiting on a godwit process that a test
// could no longer kill: the hung-task reports kept the console from ever
// going silent). Guest kernels' messages never start a line: the tests
// print them indented. Each sign is a prefix and, if not empty, a text
// that must follow it.
var wedgeSigns = []struct{ prefix, then string }{
	{"rcu: INFO: rcu_preempt detected stalls on CPUs", ""},
	{"rcu: INFO: rcu_sched detected stalls on CPUs", ""},
	{"watchdog: BUG: soft lockup", ""},
	{"INFO: task ", " blocked for more than "},
}

// WedgeSign returns the wedge message a console line of the nested host's
// kernel carries, if any.
func WedgeSign(line string) (string, bool) {
	if !strings.HasPrefix(line, "[") {
		return "", false
	}
	end := strings.Index(line, "] ")
	if end < 0 {
		return "", false
	}
	msg := line[end+2:]
	for _, w := range wedgeSigns {
		if strings.HasPrefix(msg, w.prefix) && strings.Contains(msg[len(w.prefix):], w.then) {
			return msg, true
		}
	}
	return "", false
}

// ParseExitMarker reports the exit code carried by a console line holding
// ExitMarker followed by a decimal code. Text before the marker (a kernel log
// prefix) and trailing whitespace or carriage returns are tolerated; anything
// else after the digits makes the line not a marker.
func ParseExitMarker(line string) (code int, ok bool) {
	i := strings.LastIndex(line, ExitMarker)
	if i < 0 {
		return 0, false
	}
	rest := strings.TrimRight(line[i+len(ExitMarker):], " \t\r\n")
	if rest == "" || len(rest) > 3 {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 || n > 255 || rest[0] == '+' {
		return 0, false
	}
	return n, true
}

// Console is an io.Writer placed between QEMU's serial output and the user's
// terminal: it passes the bytes through, dropping carriage returns and
// terminal escape sequences (SeaBIOS resets and clears the screen, which
// would wipe earlier output on a terminal) so logs read as plain text, and
// watches complete lines for the start and exit markers. It is safe for
// concurrent use.
type Console struct {
	out  io.Writer
	now  func() time.Time
	mu   sync.Mutex
	line []byte
	esc  escState

	started  bool
	startAt  time.Time
	exited   bool
	exitCode int
	exitAt   time.Time

	lastOut time.Time // when the last bytes arrived (or the Console was made)

	wedge    string
	wedgedCh chan struct{} // closed at the first wedge sign
}

// NewConsole returns a Console that copies to out.
func NewConsole(out io.Writer) *Console {
	c := &Console{out: out, now: time.Now, wedgedCh: make(chan struct{})}
	c.lastOut = c.now()
	return c
}

// Write implements io.Writer.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastOut = c.now()
	clean := c.esc.filter(p)
	for _, b := range clean {
		if b != '\n' {
			if len(c.line) < 64<<10 {
				c.line = append(c.line, b)
			}
			continue
		}
		c.scan(string(c.line))
		c.line = c.line[:0]
	}
	if _, err := c.out.Write(clean); err != nil {
		return 0, err
	}
	return len(p), nil
}

// escState tracks an escape sequence split across writes.
type escState uint8

const (
	escNone  escState = iota
	escStart          // after ESC
	escCSI            // after ESC [, until a final byte 0x40..0x7e
)

// filter drops carriage returns and escape sequences: ESC [ params final
// (CSI) and two-byte ones such as ESC c (terminal reset). *e carries a
// sequence cut at the end of p over to the next call.
func (e *escState) filter(p []byte) []byte {
	out := make([]byte, 0, len(p))
	for _, b := range p {
		switch *e {
		case escStart:
			*e = escNone
			if b == '[' {
				*e = escCSI
			}
			continue
		case escCSI:
			if b >= 0x40 && b <= 0x7e {
				*e = escNone
			}
			continue
		}
		switch b {
		case 0x1b:
			*e = escStart
		case '\r':
		default:
			out = append(out, b)
		}
	}
	return out
}

func (c *Console) scan(line string) {
	if !c.started && strings.Contains(line, StartMarker) {
		c.started, c.startAt = true, c.now()
	}
	if code, ok := ParseExitMarker(line); ok {
		c.exited, c.exitCode, c.exitAt = true, code, c.now()
	}
	if msg, ok := WedgeSign(line); ok {
		c.setWedge(msg)
	}
	if strings.HasPrefix(line, WedgedMarker) {
		c.setWedge(line)
	}
}

// setWedge records the first wedge sign; c.mu is held.
func (c *Console) setWedge(msg string) {
	if c.wedge == "" {
		c.wedge = msg
		close(c.wedgedCh)
	}
}

// CheckSilence marks the nested host wedged when nothing at all has been
// written for longer than limit, and reports whether it did. A nested host
// whose whole machine froze (QEMU's TCG stuck, seen once in CI for twelve
// minutes) prints no stall report and no test timeout: only its silence
// tells. The caller picks a limit longer than any quiet stretch of a
// healthy run.
func (c *Console) CheckSilence(limit time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	quiet := c.now().Sub(c.lastOut)
	if quiet <= limit {
		return false
	}
	c.setWedge(fmt.Sprintf("no console output for %v", quiet.Truncate(time.Second)))
	return true
}

// Quiet returns how long ago the console last received bytes (or was
// made, if it never did).
func (c *Console) Quiet() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now().Sub(c.lastOut)
}

// Wedged is closed when the nested host's kernel reports being stuck;
// Wedge then says how.
func (c *Console) Wedged() <-chan struct{} { return c.wedgedCh }

// Wedge returns the first wedge message seen, or "".
func (c *Console) Wedge() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wedge
}

// Started reports whether the start marker was seen, and when.
func (c *Console) Started() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startAt, c.started
}

// Exit reports the payload's exit code from the last exit marker seen, and
// when it was seen; ok is false if no marker was seen.
func (c *Console) Exit() (code int, at time.Time, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.exitCode, c.exitAt, c.exited
}
