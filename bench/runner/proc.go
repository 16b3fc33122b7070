package runner

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"
)

// proc is a QEMU process whose stdout (the guest's serial console) is read
// line by line and whose stderr tail is kept for error messages.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // exit status, valid after done

	mu      sync.Mutex
	lines   []string      // console lines so far
	newLine chan struct{} // closed and replaced on every console line
	stderr  []string      // the last stderr lines
}

// maxStderr is how many stderr lines a proc keeps.
const maxStderr = 20

// startProc starts argv[0] with the rest as arguments.
func startProc(name string, argv ...string) (*proc, error) {
	p := &proc{name: name, cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{}), newLine: make(chan struct{})}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, strings.TrimRight(sc.Text(), "\r"))
			close(p.newLine)
			p.newLine = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr = append(p.stderr, sc.Text())
			if len(p.stderr) > maxStderr {
				p.stderr = p.stderr[1:]
			}
			p.mu.Unlock()
		}
	}()
	go func() {
		wg.Wait()
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// consoleLines returns the number of console lines so far.
func (p *proc) consoleLines() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// stderrTail returns the last stderr lines, joined.
func (p *proc) stderrTail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.stderr, " / ")
}

// waitLine waits until a console line after the first `after` matches re
// and returns it.
func (p *proc) waitLine(ctx context.Context, after int, re *regexp.Regexp) (string, error) {
	start := time.Now()
	for {
		p.mu.Lock()
		for i := after; i < len(p.lines); i++ {
			if re.MatchString(p.lines[i]) {
				l := p.lines[i]
				p.mu.Unlock()
				return l, nil
			}
		}
		after = len(p.lines)
		wake := p.newLine
		p.mu.Unlock()
		select {
		case <-wake:
		case <-p.done:
			// Lines read before the exit are in; look once more.
			p.mu.Lock()
			for i := after; i < len(p.lines); i++ {
				if re.MatchString(p.lines[i]) {
					l := p.lines[i]
					p.mu.Unlock()
					return l, nil
				}
			}
			p.mu.Unlock()
			return "", fmt.Errorf("%s exited (%v) before printing a line matching %q; stderr: %s", p.name, p.err, re, p.stderrTail())
		case <-ctx.Done():
			return "", fmt.Errorf("%s: no console line matching %q within %v: %w", p.name, re, time.Since(start).Round(time.Millisecond), ctx.Err())
		}
	}
}

// wait waits up to timeout for the process to exit and returns its status.
func (p *proc) wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		return fmt.Errorf("%s did not exit within %v", p.name, timeout)
	}
}

// kill stops the process if it still runs and waits for it.
func (p *proc) kill() {
	if p == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}
