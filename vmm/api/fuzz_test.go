package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fuzzVM is a Controller and Migrator that records the requests that get
// through the server's checks and touches no file.
type fuzzVM struct {
	mu       sync.Mutex
	dumps    []DumpRequest
	migrates []MigrateRequest
}

func (f *fuzzVM) Info() VMInfo                   { return VMInfo{State: "running", Exits: map[string]uint64{}} }
func (f *fuzzVM) Pause(context.Context) error    { return nil }
func (f *fuzzVM) Resume(context.Context) error   { return nil }
func (f *fuzzVM) Shutdown(context.Context) error { return nil }
func (f *fuzzVM) DumpMemory(_ context.Context, path string, gpa, length uint64) error {
	f.mu.Lock()
	f.dumps = append(f.dumps, DumpRequest{Path: path, GPA: gpa, Len: length})
	f.mu.Unlock()
	return nil
}
func (f *fuzzVM) StartMigration(_ context.Context, req MigrateRequest) error {
	f.mu.Lock()
	f.migrates = append(f.migrates, req)
	f.mu.Unlock()
	return nil
}
func (f *fuzzVM) MigrationStatus() MigrationInfo        { return MigrationInfo{Status: "none"} }
func (f *fuzzVM) CancelMigration(context.Context) error { return nil }
func (f *fuzzVM) WaitMigration(context.Context, time.Duration) MigrationInfo {
	return MigrationInfo{Status: "none"}
}

// FuzzAPIRequest sends requests built from the input to the API handler:
// any method (a route's, or another), any route path (or another path),
// any query and any body. The server must never panic nor answer 5xx (the
// fake VM fails nothing), always answer JSON (an "error" for every
// refusal), and pass the VM only requests that satisfy the documented
// checks.
func FuzzAPIRequest(f *testing.F) {
	for i := range routes {
		f.Add(uint8(i), uint8(i), "", []byte(`{}`))
	}
	f.Add(uint8(4), uint8(4), "", []byte(`{"path":"/tmp/x","gpa":4096,"len":8192}`))
	f.Add(uint8(5), uint8(5), "", []byte(`{"to":"tcp:127.0.0.1:7000","downtime_ms":100,"compress":"lz4"}`))
	f.Add(uint8(5), uint8(5), "", []byte(`{"to":"unix:/x","bandwidth":-1}`))
	f.Add(uint8(6), uint8(6), "wait_ms=500", []byte(nil))
	f.Add(uint8(6), uint8(6), "wait_ms=99999999999", []byte(nil))
	f.Add(uint8(200), uint8(1), "", []byte(`{"force":true}`))
	f.Add(uint8(0), uint8(200), "", []byte(strings.Repeat("[", MaxBodyBytes+1)))
	methods := []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete, "BREW"}
	f.Fuzz(func(t *testing.T, method, path uint8, query string, body []byte) {
		vm := &fuzzVM{}
		h := NewServer(vm, nil).Handler()
		m := methods[int(method)%len(methods)]
		if int(method) < len(routes) {
			m = routes[method].method
		}
		p := "/no/such/path"
		if int(path) < len(routes) {
			p = routes[path].path
		}
		req := httptest.NewRequest(m, "http://godwit"+p, bytes.NewReader(body))
		req.URL.RawQuery = query
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		res := w.Result()
		switch res.StatusCode {
		case http.StatusOK, http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("%s %s?%s: status %d: %s", m, p, query, res.StatusCode, w.Body.String())
		}
		var answer map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %v: %q", m, p, err, w.Body.String())
		}
		if _, hasErr := answer["error"]; hasErr != (res.StatusCode != http.StatusOK) {
			t.Fatalf("%s %s: status %d with body %s", m, p, res.StatusCode, w.Body.String())
		}
		for _, d := range vm.dumps {
			if !filepath.IsAbs(d.Path) || strings.IndexByte(d.Path, 0) >= 0 || d.Len > ^uint64(0)-d.GPA {
				t.Fatalf("the VM was asked to dump %+v", d)
			}
		}
		for _, mr := range vm.migrates {
			if mr.validate() != nil {
				t.Fatalf("the VM was asked to migrate with %+v", mr)
			}
		}
	})
}
