package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"godwit/vmm/api"
)

// ctlFakeVM is a Controller for the ctl tests.
type ctlFakeVM struct {
	mu       sync.Mutex
	state    string
	dumpPath string
	dumpGPA  uint64
	dumpLen  uint64
}

func (f *ctlFakeVM) Info() api.VMInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return api.VMInfo{
		State:    f.state,
		Config:   api.VMConfig{MemoryBytes: 256 << 20, CPUs: 2, Guest: "linux", Kernel: "/k", Serial: "stdio"},
		UptimeMS: 83_456,
		Exits: map[string]uint64{
			"io": 500, "mmio": 20, "hlt": 7, "shutdown": 0, "unhandled_pio_reads": 3,
			"irq_window": 1, "intr": 2, "\x1b[2Jevil": 9,
		},
	}
}

func (f *ctlFakeVM) transition(from, to string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if from != "" && f.state != from {
		return fmt.Errorf("%w: VM is %s", api.ErrInvalidState, f.state)
	}
	f.state = to
	return nil
}

func (f *ctlFakeVM) Pause(context.Context) error    { return f.transition("running", "paused") }
func (f *ctlFakeVM) Resume(context.Context) error   { return f.transition("paused", "running") }
func (f *ctlFakeVM) Shutdown(context.Context) error { return f.transition("", "stopped") }

func (f *ctlFakeVM) DumpMemory(_ context.Context, path string, gpa, length uint64) error {
	f.mu.Lock()
	f.dumpPath, f.dumpGPA, f.dumpLen = path, gpa, length
	f.mu.Unlock()
	if gpa >= 256<<20 {
		return fmt.Errorf("%w: beyond RAM", api.ErrBadRequest)
	}
	if length == 0 {
		length = 256<<20 - gpa
	}
	fh, err := os.Create(path)
	if err != nil {
		return err
	}
	defer fh.Close()
	return fh.Truncate(int64(length))
}

// serveFake serves vm on a socket in a temp dir until the test ends.
func serveFake(t *testing.T, vm api.Controller) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	s := api.NewServer(vm, nil)
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(sock) }()
	select {
	case <-s.Ready():
	case err := <-errc:
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() {
		s.Close()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return sock
}

// runCtl runs `godwit ctl ...` in process and returns stdout, the error
// and its exit code (0 for no error).
func runCtl(t *testing.T, args ...string) (string, error, int) {
	t.Helper()
	var out bytes.Buffer
	app := &cli.App{
		Name:           "godwit",
		Commands:       []*cli.Command{ctlCommand()},
		Writer:         &out,
		ErrWriter:      &out,
		ExitErrHandler: func(*cli.Context, error) {},
	}
	err := app.Run(append([]string{"godwit", "ctl"}, args...))
	code := 0
	if err != nil {
		code = 1
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
	}
	return out.String(), err, code
}

func TestCtl(t *testing.T) {
	workDir := t.TempDir()
	t.Chdir(workDir)
	missing := filepath.Join(t.TempDir(), "none.sock")
	tests := []struct {
		name      string
		state     string // initial state; "" = running
		args      []string
		env       bool // pass the socket in GODWIT_API_SOCK instead of --api-sock
		wantOut   []string
		wantErr   string
		wantCode  int
		wantState string
	}{
		{name: "status", args: []string{"status"}, wantOut: []string{
			"state:   running\n", "guest:   linux\n", "memory:  256 MiB\n", "cpus:    2\n", "uptime:  1m23s\n",
			"exits:   io=500 mmio=20 [2Jevil=9 hlt=7 unhandled_pio_reads=3 intr=2 (+2 more; --json for all)\n",
		}},
		{name: "status via env", env: true, args: []string{"status"}, wantOut: []string{"state:   running"}},
		{name: "pause", args: []string{"pause"}, wantOut: []string{"VM paused\n"}, wantState: "paused"},
		{name: "pause paused", state: "paused", args: []string{"pause"}, wantErr: "pause: invalid VM state for this request: VM is paused (HTTP 409 Conflict)", wantCode: 1},
		{name: "resume", state: "paused", args: []string{"resume"}, wantOut: []string{"VM resumed\n"}, wantState: "running"},
		{name: "shutdown", args: []string{"shutdown"}, wantOut: []string{"VM shutting down\n"}, wantState: "stopped"},
		{name: "dump", args: []string{"dump-memory", "--out", "mem.bin", "--gpa", "0x1000", "--len", "8K"},
			wantOut: []string{"wrote 8192 bytes (8 KiB) of guest memory from gpa 0x1000 to " + filepath.Join(workDir, "mem.bin") + "\n"}},
		{name: "dump to end", args: []string{"dump-memory", "--out", filepath.Join(workDir, "all.bin"), "--gpa", "255M"},
			wantOut: []string{"wrote 1048576 bytes (1 MiB)"}},
		{name: "dump no out", args: []string{"dump-memory"}, wantErr: "dump-memory: --out FILE is required", wantCode: 1},
		{name: "dump bad len", args: []string{"dump-memory", "--out", "x", "--len", "12Q"}, wantErr: "dump-memory: --len: size \"12Q\": unknown suffix", wantCode: 1},
		{name: "dump bad gpa", args: []string{"dump-memory", "--out", "x", "--gpa", "-1"}, wantErr: "dump-memory: --gpa: ", wantCode: 1},
		{name: "dump outside RAM", args: []string{"dump-memory", "--out", "x", "--gpa", "1G"}, wantErr: "dump-memory: bad request: beyond RAM (HTTP 400 Bad Request)", wantCode: 1},
		{name: "extra argument", args: []string{"pause", "now"}, wantErr: "ctl pause takes no arguments", wantCode: 1},
		{name: "unknown command", args: []string{"frob"}, wantErr: `ctl: unknown command "frob"`, wantCode: 1},
		{name: "missing command", args: nil, wantErr: "ctl: missing command", wantCode: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := &ctlFakeVM{state: "running"}
			if tt.state != "" {
				vm.state = tt.state
			}
			sock := serveFake(t, vm)
			args := append([]string{"--api-sock", sock}, tt.args...)
			if tt.env {
				t.Setenv("GODWIT_API_SOCK", sock)
				args = tt.args
			}
			out, err, code := runCtl(t, args...)
			if code != tt.wantCode {
				t.Fatalf("exit code %d (err %v), want %d; output %q", code, err, tt.wantCode, out)
			}
			if tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("output %q does not contain %q", out, w)
				}
			}
			if tt.wantState != "" && vm.Info().State != tt.wantState {
				t.Errorf("VM state %q, want %q", vm.Info().State, tt.wantState)
			}
		})
	}

	t.Run("no VM", func(t *testing.T) {
		_, err, code := runCtl(t, "--api-sock", missing, "status")
		if code != 1 || err == nil || !strings.HasPrefix(err.Error(), "status: no godwit VM listening on "+missing+": ") {
			t.Errorf("got code %d, error %v; want 1, \"status: no godwit VM listening on %s: ...\"", code, err, missing)
		}
	})
	t.Run("no socket flag", func(t *testing.T) {
		t.Setenv("GODWIT_API_SOCK", "")
		_, err, code := runCtl(t, "status")
		if code != 1 || err == nil || err.Error() != "ctl: --api-sock PATH (or GODWIT_API_SOCK) is required" {
			t.Errorf("got code %d, error %v; want 1 and the --api-sock line", code, err)
		}
	})
}

func TestCtlStatusJSON(t *testing.T) {
	vm := &ctlFakeVM{state: "paused"}
	sock := serveFake(t, vm)
	out, err, _ := runCtl(t, "--api-sock", sock, "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got api.VMInfo
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("output is not VMInfo JSON: %v\n%s", err, out)
	}
	if want := vm.Info(); !reflect.DeepEqual(got, want) {
		t.Errorf("status --json = %+v, want %+v", got, want)
	}
}

func TestCtlDumpSendsAbsolutePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	vm := &ctlFakeVM{state: "paused"}
	sock := serveFake(t, vm)
	tests := []struct {
		out, gpa, length string
		wantPath         string
		wantGPA, wantLen uint64
	}{
		{"rel.bin", "1M", "4096", filepath.Join(dir, "rel.bin"), 1 << 20, 4096},
		{"sub/../x.bin", "0", "0", filepath.Join(dir, "x.bin"), 0, 0},
		{filepath.Join(dir, "abs.bin"), "0x2000", "2k", filepath.Join(dir, "abs.bin"), 0x2000, 2048},
	}
	for _, tt := range tests {
		t.Run(tt.out, func(t *testing.T) {
			if _, err, _ := runCtl(t, "--api-sock", sock, "dump-memory", "--out", tt.out, "--gpa", tt.gpa, "--len", tt.length); err != nil {
				t.Fatal(err)
			}
			vm.mu.Lock()
			defer vm.mu.Unlock()
			if vm.dumpPath != tt.wantPath || vm.dumpGPA != tt.wantGPA || vm.dumpLen != tt.wantLen {
				t.Errorf("VMM got (%q, %#x, %d), want (%q, %#x, %d)",
					vm.dumpPath, vm.dumpGPA, vm.dumpLen, tt.wantPath, tt.wantGPA, tt.wantLen)
			}
		})
	}
}

func TestSummarizeExits(t *testing.T) {
	tests := []struct {
		name  string
		exits map[string]uint64
		n     int
		want  string
	}{
		{"none", nil, 3, "none"},
		{"sorted", map[string]uint64{"a": 1, "b": 5, "c": 3}, 3, "b=5 c=3 a=1"},
		{"ties by name", map[string]uint64{"z": 2, "y": 2, "x": 9}, 3, "x=9 y=2 z=2"},
		{"truncated", map[string]uint64{"a": 1, "b": 5, "c": 3, "d": 0}, 2, "b=5 c=3 (+2 more; --json for all)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summarizeExits(tt.exits, tt.n); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// ctlFakeMigrator is a ctlFakeVM with an outgoing migration in status,
// which a cancel ends as cancelTo.
type ctlFakeMigrator struct {
	ctlFakeVM
	status, cancelTo string
}

func (f *ctlFakeMigrator) StartMigration(context.Context, api.MigrateRequest) error { return nil }

func (f *ctlFakeMigrator) MigrationStatus() api.MigrationInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	info := api.MigrationInfo{Status: f.status}
	if f.status == "cancelled" {
		info.Error = "context canceled"
	}
	return info
}

func (f *ctlFakeMigrator) CancelMigration(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.status == "active" {
		f.status = f.cancelTo
	}
	return nil
}

func (f *ctlFakeMigrator) WaitMigration(context.Context, time.Duration) api.MigrationInfo {
	return f.MigrationStatus()
}

func TestCtlCancelMigration(t *testing.T) {
	tests := []struct {
		name, status, cancelTo string
		wantOut, wantErr       string
	}{
		{name: "cancelled", status: "active", cancelTo: "cancelled", wantOut: "migration cancelled; the VM keeps running here (context canceled)\n"},
		{name: "none", status: "none", wantOut: "no migration running (last one: none)\n"},
		{name: "failed", status: "failed", wantOut: "no migration running (last one: failed)\n"},
		{name: "too late", status: "active", cancelTo: "completed", wantErr: "cancel-migration: too late"},
		{name: "stuck", status: "active", cancelTo: "active", wantErr: "cancel-migration: the migration is still active after 10ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := &ctlFakeMigrator{ctlFakeVM: ctlFakeVM{state: "running"}, status: tt.status, cancelTo: tt.cancelTo}
			sock := serveFake(t, vm)
			out, err, code := runCtl(t, "--api-sock", sock, "cancel-migration", "--wait", "10ms")
			if tt.wantErr != "" {
				if code != 1 || err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("code %d, error %v; want 1 and %q", code, err, tt.wantErr)
				}
				return
			}
			if err != nil || out != tt.wantOut {
				t.Fatalf("output %q, error %v; want %q", out, err, tt.wantOut)
			}
		})
	}
}
