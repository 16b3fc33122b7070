package harness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// MonitorPrompt is the prompt QEMU's human monitor (HMP) prints when it
// is ready for a command line.
const MonitorPrompt = "(qemu) "

// maxMonitorReply bounds what one monitor reply may hold, so that a
// monitor that never prints its prompt cannot grow the buffer without end.
const maxMonitorReply = 1 << 20

// DeadlineReadWriter is a connection whose reads and writes can be bounded
// in time, as a net.Conn's can.
type DeadlineReadWriter interface {
	io.ReadWriter
	// SetDeadline bounds every later Read and Write, as net.Conn's does.
	SetDeadline(t time.Time) error
}

// Monitor is a client of QEMU's human monitor protocol (HMP): a greeting
// ending in MonitorPrompt, then, for each command line sent, its output
// and the prompt again. QEMU's line editor echoes the command line,
// redrawn with terminal escape sequences, before the output: Command
// drops that echo. A Monitor is not safe for concurrent use.
type Monitor struct {
	conn    DeadlineReadWriter
	pending []byte // bytes read after the last prompt
	esc     escState
}

// NewMonitor reads the monitor's greeting from conn up to its first
// prompt, giving up at deadline.
func NewMonitor(conn DeadlineReadWriter, deadline time.Time) (*Monitor, error) {
	m := &Monitor{conn: conn}
	if _, err := m.readReply(deadline); err != nil {
		return nil, fmt.Errorf("monitor greeting: %w", err)
	}
	return m, nil
}

// Command sends one command line and returns its output up to the next
// prompt, without the echoed command line, carriage returns and escape
// sequences, and without leading or trailing empty lines. It gives up at
// deadline (the error then wraps os.ErrDeadlineExceeded for a net.Conn);
// the Monitor is of no further use after an error.
func (m *Monitor) Command(cmd string, deadline time.Time) (string, error) {
	if strings.ContainsAny(cmd, "\r\n") {
		return "", fmt.Errorf("monitor command %q: more than one line", cmd)
	}
	if err := m.conn.SetDeadline(deadline); err != nil {
		return "", err
	}
	if _, err := io.WriteString(m.conn, cmd+"\n"); err != nil {
		return "", fmt.Errorf("monitor command %q: %w", cmd, err)
	}
	out, err := m.readReply(deadline)
	if err != nil {
		return "", fmt.Errorf("monitor command %q: %w", cmd, err)
	}
	// The echo is the first line; QEMU's redrawing leaves the whole
	// command at its end once the escapes are gone.
	if first, rest, _ := strings.Cut(out, "\n"); strings.HasSuffix(first, cmd) {
		out = rest
	}
	return strings.Trim(out, "\n"), nil
}

// readReply reads up to the next prompt at the start of a line and
// returns what came before it, filtered; bytes after the prompt are kept
// for the next reply.
func (m *Monitor) readReply(deadline time.Time) (string, error) {
	if err := m.conn.SetDeadline(deadline); err != nil {
		return "", err
	}
	buf := make([]byte, 4096)
	for {
		if i := promptIndex(m.pending); i >= 0 {
			reply := m.esc.filter(m.pending[:i])
			m.pending = append(m.pending[:0], m.pending[i+len(MonitorPrompt):]...)
			return string(reply), nil
		}
		if len(m.pending) > maxMonitorReply {
			return "", errors.New("no prompt in a reply of more than 1 MiB")
		}
		n, err := m.conn.Read(buf)
		m.pending = append(m.pending, buf[:n]...)
		if err != nil && n == 0 {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
	}
}

// promptIndex returns where the first MonitorPrompt starting a line of b
// begins, or -1.
func promptIndex(b []byte) int {
	if bytes.HasPrefix(b, []byte(MonitorPrompt)) {
		return 0
	}
	if i := bytes.Index(b, []byte("\n"+MonitorPrompt)); i >= 0 {
		return i + 1
	}
	return -1
}

// registerKeys are the fields of QEMU's x86 register dump that
// CompactRegisters keeps, in its output order: where each CPU is, its
// stack, whether it runs in the kernel or halted, and which address space
// (and last page fault) it is in. The E names are the dump's names in
// 16- and 32-bit modes.
var registerKeys = []string{"RIP", "EIP", "RSP", "ESP", "RBP", "EBP", "RFL", "EFL", "CPL", "II", "HLT", "CR2", "CR3"}

// CompactRegisters condenses the output of the monitor's "info registers
// -a" on an x86 machine to one line a CPU, "CPU#<n> RIP=... RSP=...", with
// the fields of registerKeys, in at most maxLines lines. Output it cannot
// read that way (an error message) is returned as its first maxLines
// non-empty lines.
func CompactRegisters(out string, maxLines int) []string {
	if maxLines <= 0 {
		return nil
	}
	type cpu struct {
		name   string
		fields map[string]string
	}
	var cpus []*cpu
	var raw []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		raw = append(raw, line)
		if strings.HasPrefix(line, "CPU#") && !strings.Contains(line, "=") {
			cpus = append(cpus, &cpu{name: line, fields: map[string]string{}})
			continue
		}
		for _, f := range strings.Fields(line) {
			k, v, ok := strings.Cut(f, "=")
			if !ok || k == "" || !slices.Contains(registerKeys, k) {
				continue
			}
			if len(cpus) == 0 { // "info registers" without -a: no header
				cpus = append(cpus, &cpu{name: "CPU", fields: map[string]string{}})
			}
			if _, seen := cpus[len(cpus)-1].fields[k]; !seen {
				cpus[len(cpus)-1].fields[k] = v
			}
		}
	}
	var lines []string
	for _, c := range cpus {
		if len(c.fields) == 0 {
			continue
		}
		var b strings.Builder
		b.WriteString(c.name)
		for _, k := range registerKeys {
			if v, ok := c.fields[k]; ok {
				fmt.Fprintf(&b, " %s=%s", k, v)
			}
		}
		lines = append(lines, b.String())
	}
	if len(lines) == 0 {
		lines = raw
	}
	if len(lines) > maxLines {
		more := len(lines) - maxLines + 1
		lines = append(lines[:maxLines-1], fmt.Sprintf("(%d more lines left out)", more))
	}
	return lines
}
