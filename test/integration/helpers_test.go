package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit/test/nested/harness"
)

// lineTimeout bounds every wait for guest output. Nested virtualisation
// under TCG is slow; the bound only stops a hung test.
const lineTimeout = 2 * time.Minute

// killTimeout is how long a SIGKILLed godwit may take to die before the
// test reports the host stuck.
const killTimeout = 30 * time.Second

// migrateTimeout bounds one `godwit migrate` run, and commandTimeout a
// whole demo or pingpong run: a hung command is killed and reported, not
// left to the global test timeout.
const (
	migrateTimeout = 6 * time.Minute
	commandTimeout = 8 * time.Minute
)

// needKVM skips the test when /dev/kvm is not usable here (by the same
// rule `make test` uses to choose between direct KVM and the nested host).
func needKVM(t *testing.T) {
	t.Helper()
	if os.Getenv("GODWIT_FORCE_KVM") == "1" {
		return // the caller vouches for /dev/kvm (e.g. a software KVM, for quick runs of simple guests)
	}
	if ok, why := harness.KVMUsable(); !ok {
		t.Skipf("needs a usable /dev/kvm (`make test` runs this in the nested host): %s", why)
	}
}

// godwitBin returns the godwit binary under test.
func godwitBin(t *testing.T) string {
	t.Helper()
	needKVM(t)
	p := os.Getenv("GODWIT_BIN")
	if p == "" {
		t.Fatal("GODWIT_BIN is not set: point it at a built godwit binary")
	}
	return p
}

// asset returns the path in env var name, or skips when unset.
func asset(t *testing.T, name string) string {
	t.Helper()
	p := os.Getenv(name)
	if p == "" {
		t.Skipf("%s is not set", name)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}

// vmProcess is a godwit process whose console output is read line by line.
type vmProcess struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
	err   error // exit error, valid after done is closed
	start time.Time

	mu       sync.Mutex
	stderr   bytes.Buffer
	console  []string    // every console line, logged when the test ends
	errLines chan string // stderr lines, for readiness
}

// startGodwit starts godwit with args; its stdout (the serial console) is
// scanned into lines.
func startGodwit(t *testing.T, args ...string) *vmProcess {
	t.Helper()
	return startGodwitEnv(t, nil, args...)
}

// startGodwitEnv is startGodwit with env (KEY=VALUE) added to the
// environment.
func startGodwitEnv(t *testing.T, env []string, args ...string) *vmProcess {
	t.Helper()
	p := &vmProcess{t: t, lines: make(chan string, 4096), done: make(chan struct{}), errLines: make(chan string, 256)}
	p.cmd = exec.Command(godwitBin(t), args...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errPipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	// cmd.Wait closes the pipes, so it runs only after both readers have
	// seen EOF: otherwise the last stderr lines (why the VM stopped) are
	// lost.
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.errLines <- sc.Text():
			default:
			}
		}
	}()
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			// Kept, and logged when the test ends: logging each line
			// here could block this reader (the nested host's console
			// is slow), fill godwit's stdout pipe and stall the guest.
			p.mu.Lock()
			p.console = append(p.console, line)
			p.mu.Unlock()
			select {
			case p.lines <- line:
			default: // a reader that fell behind loses lines, never blocks the VM
			}
		}
		<-stderrDone
		p.err = p.cmd.Wait()
		close(p.lines)
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(killTimeout):
				// Only a stuck kernel keeps a SIGKILLed process alive:
				// in the nested host, the known wedge. Tell the harness
				// (a line of its own on the console) so it stops the
				// nested host now rather than after its silence limit.
				fmt.Printf("%s: godwit (pid %d) still alive %v after SIGKILL\n", harness.WedgedMarker, p.cmd.Process.Pid, killTimeout)
				<-p.done
			}
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.console) > 0 {
			t.Logf("guest console (%d lines):\n%s", len(p.console), strings.Join(p.console, "\n"))
		}
		if p.stderr.Len() > 0 {
			t.Logf("godwit stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

// waitLine returns the first line for which match is true.
func (p *vmProcess) waitLine(match func(string) bool, what string) string {
	p.t.Helper()
	timer := time.NewTimer(lineTimeout)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("godwit exited (%v) before %s", p.err, what)
			}
			if match(line) {
				return line
			}
		case <-timer.C:
			p.t.Fatalf("no %s within %v", what, lineTimeout)
		}
	}
}

// wait waits for the process to exit and returns its exit error.
func (p *vmProcess) wait() error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(lineTimeout):
		p.t.Fatalf("godwit did not exit within %v", lineTimeout)
		return nil
	}
}

// stderrText returns what p has written to stderr so far.
func (p *vmProcess) stderrText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// consoleLines returns how many console lines p has printed so far.
func (p *vmProcess) consoleLines() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.console)
}

// waitStderr returns the first stderr line of p containing s.
func waitStderr(t *testing.T, p *vmProcess, s string) string {
	t.Helper()
	timer := time.NewTimer(lineTimeout)
	defer timer.Stop()
	for {
		select {
		case l := <-p.errLines:
			if strings.Contains(l, s) {
				return l
			}
		case <-p.done:
			t.Fatalf("godwit exited (%v) before logging %q", p.err, s)
		case <-timer.C:
			t.Fatalf("godwit did not log %q within %v", s, lineTimeout)
		}
	}
}

// ctl runs `godwit ctl <args> --api-sock sock` and returns its stdout.
func ctl(t *testing.T, sock string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), lineTimeout)
	defer cancel()
	full := append([]string{"ctl", "--api-sock", sock}, args...)
	cmd := exec.CommandContext(ctx, godwitBin(t), full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("godwit %s: %v: %s", strings.Join(full, " "), err, stderr.String())
	}
	return string(out)
}

// tempPath returns a path in the test's temp dir.
func tempPath(t *testing.T, name string) string { return filepath.Join(t.TempDir(), name) }

// startReceiver starts `godwit receive` on a free loopback port and returns
// it with its tcp:HOST:PORT address and its API socket; extra are more
// receive flags (--disk-map, --tap-map).
func startReceiver(t *testing.T, name string, extra ...string) (p *vmProcess, addr, sock string) {
	t.Helper()
	return startReceiverEnv(t, name, nil, extra...)
}

// startReceiverEnv is startReceiver with env (KEY=VALUE) added to the
// receiver's environment.
func startReceiverEnv(t *testing.T, name string, env []string, extra ...string) (p *vmProcess, addr, sock string) {
	t.Helper()
	return startReceiverAt(t, name, "tcp:127.0.0.1:0", env, extra...)
}

// startReceiverAt is startReceiverEnv listening on listen (tcp:HOST:0).
func startReceiverAt(t *testing.T, name, listen string, env []string, extra ...string) (p *vmProcess, addr, sock string) {
	t.Helper()
	sock = tempPath(t, name+".sock")
	p = startGodwitEnv(t, env, append([]string{"receive", "--listen", listen, "--api-sock", sock}, extra...)...)
	line := waitStderr(t, p, "waiting for a migrating VM")
	_, rest, _ := strings.Cut(line, "listen=")
	if f := strings.Fields(rest); len(f) > 0 {
		addr = f[0]
	}
	if !strings.HasPrefix(addr, "tcp:") {
		t.Fatalf("no listen address in %q", line)
	}
	return p, addr, sock
}

// migrateVM runs `godwit migrate --api-sock sock --to to args...` and
// returns its combined output (logged) and exit error.
func migrateVM(t *testing.T, sock, to string, args ...string) ([]byte, error) {
	t.Helper()
	full := append([]string{"migrate", "--api-sock", sock, "--to", to}, args...)
	out, err := runGodwit(t, migrateTimeout, nil, full...)
	t.Logf("godwit %s:\n%s", strings.Join(full, " "), out)
	return out, err
}

// drainLines forgets the console lines already read from the process but
// not yet waited for, so that the next waitLine sees a line printed from
// now on (for measuring when lines arrive).
func (p *vmProcess) drainLines() {
	for {
		select {
		case _, ok := <-p.lines:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// runGodwit runs godwit with args for at most limit and returns its stdout
// (with stderr too when stderr is nil) and exit error; a run cut short says
// so in the error.
func runGodwit(t *testing.T, limit time.Duration, stderr *bytes.Buffer, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, godwitBin(t), args...)
	var out []byte
	var err error
	if stderr != nil {
		cmd.Stderr = stderr
		out, err = cmd.Output()
	} else {
		out, err = cmd.CombinedOutput()
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("godwit %s did not finish within %v: %w", args[0], limit, err)
	}
	return out, err
}

// needLong skips a test that takes minutes in the nested host unless
// GODWIT_TEST_LONG=1: CI's integration stage has 20 minutes, retries
// included. `GODWIT_TEST_LONG=1 make test` runs them (see docs/testing.md).
func needLong(t *testing.T) {
	t.Helper()
	if os.Getenv("GODWIT_TEST_LONG") != "1" {
		t.Skip("takes minutes in the nested host; set GODWIT_TEST_LONG=1 to run")
	}
}
