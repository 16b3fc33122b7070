package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// errTimeout is returned by waits that ran out of time.
var errTimeout = errors.New("timed out")

// maxLines bounds what a console keeps; older lines are dropped.
const maxLines = 20000

// console collects the lines a child process writes (guest serial output or
// a VMM's log) and lets callers wait for a line that matches.
type console struct {
	name    string
	mu      sync.Mutex
	lines   []string
	dropped int    // lines dropped from the front (indices stay absolute)
	partial []byte // bytes after the last newline
	changed chan struct{}
}

// newConsole returns an empty console called name (used in errors).
func newConsole(name string) *console {
	return &console{name: name, changed: make(chan struct{})}
}

// Write implements io.Writer: it splits p into lines (CR and NUL bytes
// removed) and wakes waiters.
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	data := append(c.partial, p...)
	added := false
	for {
		i := strings.IndexByte(string(data), '\n')
		if i < 0 {
			break
		}
		c.lines = append(c.lines, cleanLine(data[:i]))
		data = data[i+1:]
		added = true
	}
	c.partial = append([]byte(nil), data...)
	if n := len(c.lines); n > maxLines {
		drop := n - maxLines/2
		c.lines = append([]string(nil), c.lines[drop:]...)
		c.dropped += drop
	}
	if added {
		close(c.changed)
		c.changed = make(chan struct{})
	}
	return len(p), nil
}

// cleanLine turns raw console bytes into a printable line.
func cleanLine(b []byte) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == 0 {
			return -1
		}
		return r
	}, string(b))
}

// next returns the absolute index of the next line to arrive.
func (c *console) next() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped + len(c.lines)
}

// waitFor waits until a line at absolute index from or later satisfies
// match, and returns it with the index after it. It fails when timeout
// passes or done is closed (the process exited) first.
func (c *console) waitFor(from int, timeout time.Duration, done <-chan struct{}, what string, match func(string) bool) (string, int, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	exited := false
	for {
		c.mu.Lock()
		if from < c.dropped {
			from = c.dropped
		}
		for i := from - c.dropped; i < len(c.lines); i++ {
			if match(c.lines[i]) {
				line := c.lines[i]
				c.mu.Unlock()
				return line, c.dropped + i + 1, nil
			}
		}
		from = c.dropped + len(c.lines)
		changed := c.changed
		c.mu.Unlock()
		if exited {
			return "", from, fmt.Errorf("%s: process exited before %s", c.name, what)
		}
		select {
		case <-changed:
		case <-done:
			// Give the output copier a moment, then look once more.
			time.Sleep(200 * time.Millisecond)
			exited = true
			done = nil
		case <-deadline.C:
			return "", from, fmt.Errorf("%s: %w after %s waiting for %s", c.name, errTimeout, timeout, what)
		}
	}
}

// tail returns the last n lines (and the unfinished one, if any).
func (c *console) tail(n int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := max(len(c.lines)-n, 0)
	out := append([]string(nil), c.lines[start:]...)
	if len(c.partial) > 0 {
		out = append(out, cleanLine(c.partial)+" [no newline]")
	}
	return out
}

// proc is a child process whose stdout and stderr go to consoles.
type proc struct {
	name    string
	cmd     *exec.Cmd
	out     *console
	err     *console
	done    chan struct{}
	waitErr error
}

// children tracks running processes so they can be killed on exit.
var children struct {
	mu  sync.Mutex
	set map[*proc]bool
}

// startProc starts argv with stdin on /dev/null, in its own process group,
// killed if this program dies.
func startProc(name string, argv ...string) (*proc, error) {
	p := &proc{
		name: name,
		cmd:  exec.Command(argv[0], argv[1:]...),
		out:  newConsole(name + " stdout"),
		err:  newConsole(name + " stderr"),
		done: make(chan struct{}),
	}
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.err
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", name, argv[0], err)
	}
	children.mu.Lock()
	if children.set == nil {
		children.set = map[*proc]bool{}
	}
	children.set[p] = true
	children.mu.Unlock()
	go func() {
		p.waitErr = p.cmd.Wait()
		children.mu.Lock()
		delete(children.set, p)
		children.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// wait waits up to timeout for the process to exit and returns its exit
// error, or errTimeout.
func (p *proc) wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(timeout):
		return fmt.Errorf("%s: %w after %s waiting for it to exit", p.name, errTimeout, timeout)
	}
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill kills the process group if the process still runs and reaps it.
func (p *proc) kill() {
	if p == nil || p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	_ = p.wait(5 * time.Second)
}

// killAll kills every child still running.
func killAll() {
	children.mu.Lock()
	ps := make([]*proc, 0, len(children.set))
	for p := range children.set {
		ps = append(ps, p)
	}
	children.mu.Unlock()
	for _, p := range ps {
		p.kill()
	}
}

// printMatching prints p's stderr lines that match the regexp expr (up
// to the last maxLines), prefixed with p's name.
func (p *proc) printMatching(expr string) {
	if p == nil {
		return
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		fmt.Printf("migratebench: --show-log: %v\n", err)
		return
	}
	for _, l := range p.err.tail(maxLines) {
		if re.MatchString(l) {
			fmt.Printf("%s log: %s\n", p.name, l)
		}
	}
}

// dump prints the tail of the process's output to stderr (for failures).
func (p *proc) dump(n int) {
	if p == nil {
		return
	}
	state := "running"
	if p.exited() {
		state = fmt.Sprintf("exited: %v", p.waitErr)
		if p.waitErr == nil {
			state = "exited: status 0"
		}
	}
	fmt.Fprintf(os.Stderr, "---- %s (%s): last lines of stdout ----\n", p.name, state)
	for _, l := range p.out.tail(n) {
		fmt.Fprintf(os.Stderr, "  | %s\n", l)
	}
	fmt.Fprintf(os.Stderr, "---- %s: last lines of stderr ----\n", p.name)
	for _, l := range p.err.tail(n) {
		fmt.Fprintf(os.Stderr, "  | %s\n", l)
	}
}
