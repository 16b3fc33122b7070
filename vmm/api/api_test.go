package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeVM is a Controller with a tiny state machine and injectable errors.
type fakeVM struct {
	mu      sync.Mutex
	state   string
	memSize uint64
	calls   []string
	// failWith, if set, is returned by the next operation.
	failWith error
}

func newFakeVM() *fakeVM {
	return &fakeVM{state: "running", memSize: 1 << 20}
}

func (f *fakeVM) Info() VMInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return VMInfo{
		State:    f.state,
		Config:   VMConfig{MemoryBytes: f.memSize, CPUs: 2, Guest: "test-guest", Serial: "stdio"},
		UptimeMS: 1234,
		Exits:    map[string]uint64{"io": 10, "hlt": 3, "unhandled_pio_reads": 1},
	}
}

// op records a call and applies a state transition from -> to.
func (f *fakeVM) op(name, from, to string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, name)
	if err := f.failWith; err != nil {
		f.failWith = nil
		return err
	}
	if from != "" && f.state != from {
		return fmt.Errorf("%w: cannot %s a %s VM", ErrInvalidState, name, f.state)
	}
	f.state = to
	return nil
}

func (f *fakeVM) Pause(context.Context) error    { return f.op("pause", "running", "paused") }
func (f *fakeVM) Resume(context.Context) error   { return f.op("resume", "paused", "running") }
func (f *fakeVM) Shutdown(context.Context) error { return f.op("shutdown", "", "stopped") }

// DumpMemory writes the requested range of a zero-filled RAM to path.
func (f *fakeVM) DumpMemory(_ context.Context, path string, gpa, length uint64) error {
	if err := f.op("dump", "", f.Info().State); err != nil {
		return err
	}
	if gpa > f.memSize || length > f.memSize-gpa {
		return fmt.Errorf("%w: range [%#x, +%#x) is outside RAM", ErrBadRequest, gpa, length)
	}
	if length == 0 {
		length = f.memSize - gpa
	}
	return os.WriteFile(path, make([]byte, length), 0o600)
}

func (f *fakeVM) callList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func TestRoutes(t *testing.T) {
	dumpPath := filepath.Join(t.TempDir(), "mem.bin")
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		state      string // initial VM state; "" = running
		fail       error
		wantStatus int
		wantErr    string // substring of the JSON error; "" for success
		wantAllow  string
		wantBody   string // substring of a successful body
		wantCalls  []string
	}{
		{name: "info", method: "GET", path: "/vm", wantStatus: 200, wantBody: `"state":"running"`},
		{name: "info exits", method: "GET", path: "/vm", wantStatus: 200, wantBody: `"unhandled_pio_reads":1`},
		{name: "pause", method: "PUT", path: "/vm/pause", wantStatus: 200, wantBody: `{"state":"paused"}`, wantCalls: []string{"pause"}},
		{name: "pause empty object", method: "PUT", path: "/vm/pause", body: "{}", wantStatus: 200, wantBody: `"paused"`, wantCalls: []string{"pause"}},
		{name: "pause unknown field", method: "PUT", path: "/vm/pause", body: `{"force":true}`, wantStatus: 400, wantErr: `unknown field "force"`},
		{name: "pause not JSON", method: "PUT", path: "/vm/pause", body: `pause!`, wantStatus: 400, wantErr: "invalid JSON"},
		{name: "pause when stopped", method: "PUT", path: "/vm/pause", state: "stopped", wantStatus: 409, wantErr: "cannot pause a stopped VM", wantCalls: []string{"pause"}},
		{name: "resume", method: "PUT", path: "/vm/resume", state: "paused", wantStatus: 200, wantBody: `"running"`, wantCalls: []string{"resume"}},
		{name: "resume when running", method: "PUT", path: "/vm/resume", wantStatus: 409, wantErr: "invalid VM state", wantCalls: []string{"resume"}},
		{name: "shutdown", method: "PUT", path: "/vm/shutdown", wantStatus: 200, wantBody: `"stopped"`, wantCalls: []string{"shutdown"}},
		{name: "shutdown internal error", method: "PUT", path: "/vm/shutdown", fail: errors.New("vcpu 0 stuck"), wantStatus: 500, wantErr: "vcpu 0 stuck", wantCalls: []string{"shutdown"}},
		{name: "dump", method: "PUT", path: "/vm/dump-memory", body: `{"path":"` + dumpPath + `","gpa":4096,"len":8192}`, wantStatus: 200, wantBody: `"bytes":8192`, wantCalls: []string{"dump"}},
		{name: "dump to end of RAM", method: "PUT", path: "/vm/dump-memory", body: `{"path":"` + dumpPath + `","gpa":4096}`, wantStatus: 200, wantBody: fmt.Sprintf(`"bytes":%d`, 1<<20-4096), wantCalls: []string{"dump"}},
		{name: "dump path only", method: "PUT", path: "/vm/dump-memory", body: `{"path":"` + dumpPath + `"}`, wantStatus: 200, wantBody: fmt.Sprintf(`"bytes":%d`, 1<<20), wantCalls: []string{"dump"}},
		{name: "dump outside RAM", method: "PUT", path: "/vm/dump-memory", body: `{"path":"` + dumpPath + `","gpa":1048576,"len":1}`, wantStatus: 400, wantErr: "outside RAM", wantCalls: []string{"dump"}},
		{name: "dump internal error", method: "PUT", path: "/vm/dump-memory", body: `{"path":"` + dumpPath + `"}`, fail: errors.New("disk full"), wantStatus: 500, wantErr: "disk full", wantCalls: []string{"dump"}},
		{name: "dump wrapped conflict", method: "PUT", path: "/vm/dump-memory", body: `{"path":"` + dumpPath + `"}`, fail: fmt.Errorf("dumping: %w", ErrInvalidState), wantStatus: 409, wantErr: "invalid VM state", wantCalls: []string{"dump"}},
		{name: "dump empty body", method: "PUT", path: "/vm/dump-memory", wantStatus: 400, wantErr: "body is empty"},
		{name: "dump no path", method: "PUT", path: "/vm/dump-memory", body: `{"gpa":0}`, wantStatus: 400, wantErr: `"path" is required`},
		{name: "dump relative path", method: "PUT", path: "/vm/dump-memory", body: `{"path":"mem.bin"}`, wantStatus: 400, wantErr: "must be absolute"},
		{name: "dump NUL in path", method: "PUT", path: "/vm/dump-memory", body: `{"path":"/tmp/a\u0000b"}`, wantStatus: 400, wantErr: "NUL"},
		{name: "dump unknown field", method: "PUT", path: "/vm/dump-memory", body: `{"path":"/tmp/x","length":5}`, wantStatus: 400, wantErr: `unknown field "length"`},
		{name: "dump negative gpa", method: "PUT", path: "/vm/dump-memory", body: `{"path":"/tmp/x","gpa":-1}`, wantStatus: 400, wantErr: "invalid JSON"},
		{name: "dump fractional len", method: "PUT", path: "/vm/dump-memory", body: `{"path":"/tmp/x","len":1.5}`, wantStatus: 400, wantErr: "invalid JSON"},
		{name: "dump gpa over 64 bits", method: "PUT", path: "/vm/dump-memory", body: `{"path":"/tmp/x","gpa":18446744073709551616}`, wantStatus: 400, wantErr: "invalid JSON"},
		{name: "dump gpa as string", method: "PUT", path: "/vm/dump-memory", body: `{"path":"/tmp/x","gpa":"0"}`, wantStatus: 400, wantErr: "invalid JSON"},
		{name: "dump range overflow", method: "PUT", path: "/vm/dump-memory", body: `{"path":"/tmp/x","gpa":18446744073709551615,"len":2}`, wantStatus: 400, wantErr: "overflows"},
		{name: "dump trailing data", method: "PUT", path: "/vm/dump-memory", body: `{"path":"/tmp/x"} {"path":"/tmp/y"}`, wantStatus: 400, wantErr: "trailing data"},
		{name: "dump array", method: "PUT", path: "/vm/dump-memory", body: `["/tmp/x"]`, wantStatus: 400, wantErr: "invalid JSON"},
		{name: "dump oversize body", method: "PUT", path: "/vm/dump-memory", body: `{"path":"/` + strings.Repeat("a", MaxBodyBytes) + `"}`, wantStatus: 413, wantErr: "exceeds 65536 bytes"},
		{name: "pause oversize body", method: "PUT", path: "/vm/pause", body: strings.Repeat(" ", MaxBodyBytes+1), wantStatus: 413, wantErr: "exceeds"},
		{name: "info wrong method", method: "POST", path: "/vm", wantStatus: 405, wantErr: "method POST not allowed", wantAllow: "GET"},
		{name: "pause wrong method", method: "GET", path: "/vm/pause", wantStatus: 405, wantErr: "not allowed", wantAllow: "PUT"},
		{name: "dump wrong method", method: "POST", path: "/vm/dump-memory", body: `{"path":"/tmp/x"}`, wantStatus: 405, wantErr: "not allowed", wantAllow: "PUT"},
		{name: "unknown path", method: "GET", path: "/nope", wantStatus: 404, wantErr: "no such API path"},
		{name: "trailing slash", method: "GET", path: "/vm/", wantStatus: 404, wantErr: "no such API path"},
		{name: "root", method: "GET", path: "/", wantStatus: 404, wantErr: "no such API path"},
		{name: "reserved migrate", method: "PUT", path: "/vm/migrate/send", wantStatus: 404, wantErr: "no such API path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := newFakeVM()
			if tt.state != "" {
				vm.state = tt.state
			}
			vm.failWith = tt.fail
			h := NewServer(vm, nil).Handler()
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.body))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if got := rec.Header().Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
			if tt.wantErr != "" {
				var er ErrorResponse
				dec := json.NewDecoder(rec.Body)
				dec.DisallowUnknownFields()
				if err := dec.Decode(&er); err != nil {
					t.Fatalf("error body is not {\"error\": ...}: %v", err)
				}
				if !strings.Contains(er.Error, tt.wantErr) {
					t.Errorf("error = %q, want it to contain %q", er.Error, tt.wantErr)
				}
			} else if !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("body = %s, want it to contain %s", rec.Body, tt.wantBody)
			}
			if got := vm.callList(); strings.Join(got, ",") != strings.Join(tt.wantCalls, ",") {
				t.Errorf("controller calls = %v, want %v", got, tt.wantCalls)
			}
		})
	}
}

// startServer serves vm on a fresh socket and returns its path. The server
// is closed at the end of the test, and Serve must then return nil.
func startServer(t *testing.T, vm Controller) (*Server, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	s := NewServer(vm, nil)
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(sock) }()
	select {
	case <-s.Ready():
	case err := <-errc:
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("Serve after Close: %v", err)
		}
	})
	return s, sock
}

func TestSocketRoundTrip(t *testing.T) {
	vm := newFakeVM()
	s, sock := startServer(t, vm)
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want a socket with 0600", fi.Mode())
	}

	ctx := context.Background()
	c := NewClient(sock)
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if info.State != "running" || info.Config.CPUs != 2 || info.Exits["hlt"] != 3 {
		t.Errorf("Info = %+v", info)
	}

	steps := []struct {
		name      string
		call      func() error
		wantState string
		wantCode  int // 0: success
	}{
		{"pause", func() error { return c.Pause(ctx) }, "paused", 0},
		{"pause again", func() error { return c.Pause(ctx) }, "paused", http.StatusConflict},
		{"resume", func() error { return c.Resume(ctx) }, "running", 0},
		{"shutdown", func() error { return c.Shutdown(ctx) }, "stopped", 0},
		{"resume stopped", func() error { return c.Resume(ctx) }, "stopped", http.StatusConflict},
	}
	for _, st := range steps {
		err := st.call()
		var ae *APIError
		switch {
		case st.wantCode == 0 && err != nil:
			t.Errorf("%s: %v", st.name, err)
		case st.wantCode != 0 && (!errors.As(err, &ae) || ae.StatusCode != st.wantCode):
			t.Errorf("%s: error %v, want an APIError with status %d", st.name, err, st.wantCode)
		case st.wantCode != 0 && !strings.Contains(err.Error(), "cannot"):
			t.Errorf("%s: error %q does not carry the server's message", st.name, err)
		}
		if got := vm.Info().State; got != st.wantState {
			t.Errorf("after %s: state %q, want %q", st.name, got, st.wantState)
		}
	}

	out := filepath.Join(t.TempDir(), "dump.bin")
	n, err := c.DumpMemory(ctx, out, 0x1000, 0)
	if err != nil {
		t.Fatalf("DumpMemory: %v", err)
	}
	if n != 1<<20-0x1000 {
		t.Errorf("DumpMemory bytes = %d, want %d", n, 1<<20-0x1000)
	}
	_, err = c.DumpMemory(ctx, "relative.bin", 0, 0)
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest || !strings.Contains(ae.Message, "absolute") {
		t.Errorf("DumpMemory(relative) error = %v, want 400 about an absolute path", err)
	}

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still present after Close: %v", err)
	}
	_, err = NewClient(sock).Info(ctx)
	if err == nil || !strings.HasPrefix(err.Error(), "no godwit VM listening on "+sock+": ") {
		t.Errorf("Info after Close: error %v, want \"no godwit VM listening on %s: ...\"", err, sock)
	}
}

func TestServeSocketPath(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string) // creates whatever is at path
		exists  bool                            // prepare leaves something at path
		wantErr string                          // "" = Serve must succeed
		keep    bool                            // the original file must survive
	}{
		{name: "nothing there", prepare: func(*testing.T, string) {}},
		{name: "stale socket", prepare: func(t *testing.T, path string) {
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			ln.SetUnlinkOnClose(false)
			ln.Close()
		}, exists: true},
		{name: "regular file", prepare: func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, exists: true, wantErr: "is not a socket", keep: true},
		{name: "directory", prepare: func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, exists: true, wantErr: "is not a socket", keep: true},
		{name: "symlink", prepare: func(t *testing.T, path string) {
			if err := os.Symlink(filepath.Join(filepath.Dir(path), "elsewhere"), path); err != nil {
				t.Fatal(err)
			}
		}, exists: true, wantErr: "is not a socket", keep: true},
		{name: "live socket", prepare: func(t *testing.T, path string) {
			ln, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
		}, exists: true, wantErr: "another process is already serving", keep: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "api.sock")
			tt.prepare(t, sock)
			before, err := os.Lstat(sock)
			if (err == nil) != tt.exists {
				t.Fatalf("setup: Lstat(%s) = %v, want exists=%v", sock, err, tt.exists)
			}
			if tt.wantErr == "" {
				s := NewServer(newFakeVM(), nil)
				errc := make(chan error, 1)
				go func() { errc <- s.Serve(sock) }()
				select {
				case <-s.Ready():
				case err := <-errc:
					t.Fatalf("Serve: %v", err)
				}
				if _, err := NewClient(sock).Info(context.Background()); err != nil {
					t.Errorf("Info: %v", err)
				}
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				if err := <-errc; err != nil {
					t.Errorf("Serve returned %v after Close", err)
				}
				return
			}
			err = NewServer(newFakeVM(), nil).Serve(sock)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Serve error = %v, want it to contain %q", err, tt.wantErr)
			}
			after, statErr := os.Lstat(sock)
			if tt.keep && (statErr != nil || !os.SameFile(before, after)) {
				t.Errorf("%s at the socket path was replaced or removed (%v)", tt.name, statErr)
			}
		})
	}
}

func TestServerLifecycle(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, s *Server, sock string) error
	}{
		{"close before serve", func(t *testing.T, s *Server, sock string) error {
			if err := s.Close(); err != nil {
				return err
			}
			if err := s.Serve(sock); err == nil {
				return errors.New("Serve after Close succeeded")
			}
			if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("socket created after Close: %v", err)
			}
			return nil
		}},
		{"close twice", func(t *testing.T, s *Server, sock string) error {
			errc := make(chan error, 1)
			go func() { errc <- s.Serve(sock) }()
			select {
			case <-s.Ready():
			case err := <-errc:
				return err
			}
			if err := s.Close(); err != nil {
				return err
			}
			if err := s.Close(); err != nil {
				return fmt.Errorf("second Close: %w", err)
			}
			return <-errc
		}},
		{"empty path", func(t *testing.T, s *Server, _ string) error {
			if err := s.Serve(""); err == nil {
				return errors.New("Serve(\"\") succeeded")
			}
			if err := s.Listen(""); err == nil {
				return errors.New("Listen(\"\") succeeded")
			}
			return nil
		}},
		{"listen, a client waits, serve", func(t *testing.T, s *Server, sock string) error {
			if err := s.Listen(sock); err != nil {
				return err
			}
			if err := s.Listen(sock); err == nil {
				return errors.New("second Listen succeeded")
			}
			// The client may connect before Serve runs (the socket
			// is bound): its request is answered either way.
			infoErr := make(chan error, 1)
			go func() {
				_, err := NewClient(sock).Info(context.Background())
				infoErr <- err
			}()
			errc := make(chan error, 1)
			go func() { errc <- s.Serve(sock) }()
			if err := <-infoErr; err != nil {
				return fmt.Errorf("Info: %w", err)
			}
			if err := s.Close(); err != nil {
				return err
			}
			if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("socket left after Close: %v", err)
			}
			return <-errc
		}},
		{"listen, close without serving", func(t *testing.T, s *Server, sock string) error {
			if err := s.Listen(sock); err != nil {
				return err
			}
			if err := s.Close(); err != nil {
				return err
			}
			if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("socket left after Close: %v", err)
			}
			if err := s.Serve(sock); err == nil {
				return errors.New("Serve after Close succeeded")
			}
			return nil
		}},
		{"serve another path than listened", func(t *testing.T, s *Server, sock string) error {
			defer s.Close()
			if err := s.Listen(sock); err != nil {
				return err
			}
			if err := s.Serve(sock + ".other"); err == nil || !strings.Contains(err.Error(), "after Listen") {
				return fmt.Errorf("Serve of another path: %v, want an error about Listen", err)
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "api.sock")
			if err := tt.run(t, NewServer(newFakeVM(), nil), sock); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestClientErrors(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "not-a-socket")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		sock    string
		wantErr string
	}{
		{"no socket", filepath.Join(dir, "missing.sock"), "no godwit VM listening on " + filepath.Join(dir, "missing.sock") + ": "},
		{"regular file", regular, "no godwit VM listening on " + regular + ": "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewClient(tt.sock).Info(context.Background())
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Errorf("error = %v, want prefix %q", err, tt.wantErr)
			}
		})
	}
}

func TestAPIErrorFromBody(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		body    string
		wantMsg string
	}{
		{"json error", 409, `{"error":"VM is stopped"}`, "VM is stopped"},
		{"json with extra fields", 400, `{"error":"bad gpa","code":7}`, "bad gpa"},
		{"plain text", 502, "bad gateway\n", "bad gateway"},
		{"empty", 503, "", "Service Unavailable"},
		{"control characters", 500, `{"error":"a\u001b[31mb\r\nc"}`, "a[31mbc"},
		{"long text", 500, strings.Repeat("x", 500), strings.Repeat("x", 200) + "..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := apiError(tt.status, []byte(tt.body))
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("not an APIError: %v", err)
			}
			if ae.StatusCode != tt.status || ae.Message != tt.wantMsg {
				t.Errorf("got (%d, %q), want (%d, %q)", ae.StatusCode, ae.Message, tt.status, tt.wantMsg)
			}
		})
	}
}

// TestAPIDocCoversRoutes checks that docs/api.yaml documents every route the
// server has, and nothing the server lacks, by reading the paths section by
// indentation (no YAML dependency).
func TestAPIDocCoversRoutes(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", "docs", "api.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	documented := map[string]bool{}
	inPaths, cur := false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "\t") {
			t.Fatalf("api.yaml contains a tab, which YAML forbids: %q", line)
		}
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		switch {
		case indent == 0:
			inPaths = trimmed == "paths:"
		case !inPaths:
		case indent == 2 && strings.HasSuffix(trimmed, ":"):
			cur = strings.TrimSuffix(trimmed, ":")
		case indent == 4 && strings.HasSuffix(trimmed, ":"):
			documented[strings.ToUpper(strings.TrimSuffix(trimmed, ":"))+" "+cur] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	for _, rt := range routes {
		served[rt.method+" "+rt.path] = true
		if !documented[rt.method+" "+rt.path] {
			t.Errorf("route %s %s is not documented in docs/api.yaml", rt.method, rt.path)
		}
	}
	for r := range documented {
		if !served[r] {
			t.Errorf("docs/api.yaml documents %s, which the server does not serve", r)
		}
	}
}

func FuzzDumpRequest(f *testing.F) {
	for _, seed := range []string{
		`{"path":"/tmp/x","gpa":0,"len":0}`,
		`{"path":"/tmp/x","gpa":18446744073709551615}`,
		`{"path":"rel"}`,
		`{"path":""}`,
		`{"path":"/a","extra":1}`,
		`{"path":"/a"}{}`,
		`{"gpa":-1}`,
		`null`,
		``,
		`{"path":"/a\u0000"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeDumpRequest(bytes.NewReader(data))
		if err != nil {
			if got := statusOf(err); got != http.StatusBadRequest {
				t.Fatalf("decode error %q maps to status %d, want 400", err, got)
			}
			return
		}
		if req.Path == "" || !filepath.IsAbs(req.Path) || req.Len > ^uint64(0)-req.GPA {
			t.Fatalf("accepted an invalid request %+v", req)
		}
		// What was accepted survives a round trip unchanged.
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeDumpRequest(bytes.NewReader(again))
		if err != nil || back != req {
			t.Fatalf("round trip of %+v gave %+v, %v", req, back, err)
		}
	})
}
