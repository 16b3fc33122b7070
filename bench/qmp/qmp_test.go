package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// command is what the fake server received.
type command struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

// fakeServer speaks QMP on one connection: a greeting, then for every
// command the messages handle returns (events, replies; a reply without
// "id" gets the command's).
type fakeServer struct {
	t      *testing.T
	conn   net.Conn
	handle func(c command) []map[string]any

	mu   sync.Mutex
	seen []command
	got  chan string // every command's name, as it arrives
}

func (f *fakeServer) send(m any) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_, err = f.conn.Write(append(b, '\r', '\n'))
	return err
}

func (f *fakeServer) serve() {
	if f.send(map[string]any{"QMP": map[string]any{"version": map[string]any{"qemu": map[string]int{"major": 7}}, "capabilities": []string{}}}) != nil {
		return
	}
	dec := json.NewDecoder(bufio.NewReader(f.conn))
	for {
		var c command
		if err := dec.Decode(&c); err != nil {
			return
		}
		f.mu.Lock()
		f.seen = append(f.seen, c)
		f.mu.Unlock()
		select {
		case f.got <- c.Execute:
		default:
		}
		var out []map[string]any
		if c.Execute == "qmp_capabilities" {
			out = []map[string]any{{"return": map[string]any{}}}
		} else {
			out = f.handle(c)
		}
		for _, m := range out {
			if _, isEvent := m["event"]; !isEvent {
				if _, has := m["id"]; !has {
					m["id"] = c.ID
				}
			}
			if f.send(m) != nil {
				return
			}
		}
	}
}

func (f *fakeServer) commands() []command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]command(nil), f.seen...)
}

// newPair returns a client connected to a fake server through a pipe.
func newPair(t *testing.T, handle func(command) []map[string]any) (*Client, *fakeServer) {
	t.Helper()
	cc, sc := net.Pipe()
	f := &fakeServer{t: t, conn: sc, handle: handle, got: make(chan string, 64)}
	go f.serve()
	t.Cleanup(func() { sc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := NewClient(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, f
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func event(name string, data any) map[string]any {
	return map[string]any{"event": name, "data": data, "timestamp": map[string]int64{"seconds": 1700000000, "microseconds": 5}}
}

func TestExecuteAndEvents(t *testing.T) {
	c, f := newPair(t, func(cmd command) []map[string]any {
		switch cmd.Execute {
		case "query-status":
			// An event and a reply to somebody else come first.
			return []map[string]any{
				event("STOP", map[string]any{}),
				{"return": map[string]any{"status": "paused"}, "id": 9999},
				{"return": map[string]any{"status": "running", "running": true}},
			}
		}
		return []map[string]any{{"error": map[string]any{"class": "CommandNotFound", "desc": "The command " + cmd.Execute + " has not been found"}}}
	})
	ctx := testCtx(t)
	raw, err := c.Execute(ctx, "query-status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &st); err != nil || st.Status != "running" {
		t.Fatalf("query-status = %s (%v), want running", raw, err)
	}
	ev, err := c.WaitEvent(ctx, func(e Event) bool { return e.Name == "STOP" })
	if err != nil {
		t.Fatal(err)
	}
	if ev.Time.Unix() != 1700000000 {
		t.Errorf("event time %v", ev.Time)
	}

	_, err = c.Execute(ctx, "no-such-command", map[string]any{"x": 1})
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("error %v, want a CommandNotFound *Error", err)
	}
	cmds := f.commands()
	if len(cmds) != 3 || cmds[0].Execute != "qmp_capabilities" || string(cmds[2].Arguments) != `{"x":1}` {
		t.Fatalf("server saw %+v", cmds)
	}
	if string(cmds[1].Arguments) != "" {
		t.Errorf("arguments sent without any: %s", cmds[1].Arguments)
	}
}

// TestConcurrentReplies answers two commands in reverse order: each caller
// gets its own reply.
func TestConcurrentReplies(t *testing.T) {
	var mu sync.Mutex
	var held []command
	c, f := newPair(t, func(cmd command) []map[string]any {
		mu.Lock()
		defer mu.Unlock()
		held = append(held, cmd)
		if len(held) < 2 {
			return nil
		}
		var out []map[string]any
		for i := len(held) - 1; i >= 0; i-- {
			out = append(out, map[string]any{"return": map[string]any{"name": held[i].Execute}, "id": held[i].ID})
		}
		return out
	})
	_ = f
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, name := range []string{"first", "second"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw, err := c.Execute(ctx, name, nil)
			if err != nil {
				errs <- err
				return
			}
			var r struct {
				Name string `json:"name"`
			}
			if json.Unmarshal(raw, &r) != nil || r.Name != name {
				errs <- fmt.Errorf("%s got the reply %s", name, raw)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestMigrationFlow(t *testing.T) {
	info := map[string]any{
		"status": "completed", "total-time": 1234, "downtime": 56, "setup-time": 7, "expected-downtime": 40,
		"ram": map[string]any{"transferred": 99000000, "total": 268435456, "duplicate": 60000, "normal": 4000,
			"normal-bytes": 16384000, "dirty-pages-rate": 1200, "mbps": 850.5, "dirty-sync-count": 4, "remaining": 0},
	}
	c, f := newPair(t, func(cmd command) []map[string]any {
		switch cmd.Execute {
		case "migrate-set-capabilities", "migrate-set-parameters":
			return []map[string]any{{"return": map[string]any{}}}
		case "migrate":
			return []map[string]any{
				{"return": map[string]any{}},
				event("MIGRATION", map[string]any{"status": "setup"}),
				event("MIGRATION_PASS", map[string]any{"pass": 1}),
				event("MIGRATION", map[string]any{"status": "active"}),
				event("MIGRATION", map[string]any{"status": "completed"}),
			}
		case "query-migrate":
			return []map[string]any{{"return": info}}
		}
		return []map[string]any{{"error": map[string]any{"class": "GenericError", "desc": "unexpected"}}}
	})
	ctx := testCtx(t)
	if err := c.SetCapabilities(ctx, "events", "auto-converge"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Execute(ctx, "migrate-set-parameters", map[string]any{"downtime-limit": 300}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Execute(ctx, "migrate", map[string]any{"uri": "tcp:127.0.0.1:4444"}); err != nil {
		t.Fatal(err)
	}
	status, err := c.WaitMigrationEnd(ctx)
	if err != nil || status != StatusCompleted {
		t.Fatalf("WaitMigrationEnd = %q, %v", status, err)
	}
	mi, raw, err := c.QueryMigrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if mi.Status != "completed" || mi.TotalTime != 1234 || mi.Downtime != 56 || mi.SetupTime != 7 || mi.RAM == nil ||
		mi.RAM.Transferred != 99000000 || mi.RAM.DirtySyncCount != 4 || mi.RAM.Mbps != 850.5 || mi.RAM.DirtyPagesRate != 1200 {
		t.Fatalf("QueryMigrate = %+v (ram %+v)", mi, mi.RAM)
	}
	if len(raw) == 0 {
		t.Error("no verbatim answer")
	}
	cmds := f.commands()
	var caps struct {
		Capabilities []Capability `json:"capabilities"`
	}
	if err := json.Unmarshal(cmds[1].Arguments, &caps); err != nil || len(caps.Capabilities) != 2 ||
		caps.Capabilities[0] != (Capability{"events", true}) || caps.Capabilities[1] != (Capability{"auto-converge", true}) {
		t.Fatalf("migrate-set-capabilities arguments %s", cmds[1].Arguments)
	}
}

func TestTimeoutsAndClosedConnections(t *testing.T) {
	c, f := newPair(t, func(cmd command) []map[string]any { return nil }) // never answers
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Execute(ctx, "query-migrate", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unanswered command: %v, want a deadline error", err)
	}
	// A waiter and a pending command learn that the connection ended.
	waitErr := make(chan error, 1)
	go func() {
		_, err := c.WaitEvent(context.Background(), func(Event) bool { return false })
		waitErr <- err
	}()
	execErr := make(chan error, 1)
	go func() {
		_, err := c.Execute(context.Background(), "query-status", nil)
		execErr <- err
	}()
	// Close once the server has the command, so it cannot race the send.
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for name := ""; name != "query-status"; {
		select {
		case name = <-f.got:
		case err := <-execErr:
			t.Fatalf("query-status returned early: %v", err)
		case <-timer.C:
			t.Fatal("the server never received query-status")
		}
	}
	f.conn.Close()
	if err := <-execErr; err == nil {
		t.Error("a command pending on a closed connection succeeded")
	}
	if err := <-waitErr; err == nil {
		t.Error("WaitEvent on a closed connection succeeded")
	}
	<-c.Done()
	if _, err := c.Execute(context.Background(), "query-status", nil); err == nil {
		t.Error("a command on a closed connection succeeded")
	}
}

func TestHandshakeFailures(t *testing.T) {
	for name, greeting := range map[string]string{
		"not QMP":   `{"hello": 1}` + "\n",
		"not JSON":  "SSH-2.0-OpenSSH\r\n",
		"cut short": `{"QMP": `,
	} {
		t.Run(name, func(t *testing.T) {
			cc, sc := net.Pipe()
			go func() {
				sc.Write([]byte(greeting))
				sc.Close()
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if c, err := NewClient(ctx, cc); err == nil {
				c.Close()
				t.Fatal("NewClient accepted a bad greeting")
			}
		})
	}
	// A server that says nothing: the context ends the wait.
	cc, sc := net.Pipe()
	defer sc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := NewClient(ctx, cc); err == nil {
		t.Fatal("NewClient returned without a greeting")
	}
}

// TestDialUnix runs the handshake over a real unix socket.
func TestDialUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		f := &fakeServer{t: t, conn: conn, got: make(chan string, 64), handle: func(command) []map[string]any {
			return []map[string]any{{"return": map[string]any{"ok": true}}}
		}}
		f.serve()
	}()
	c, err := Dial(testCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Execute(testCtx(t), "anything", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(testCtx(t), filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Fatal("Dial to a missing socket succeeded")
	}
}

func TestTerminalAndEventStatus(t *testing.T) {
	for s, want := range map[string]bool{"completed": true, "failed": true, "cancelled": true, "active": false, "setup": false, "": false} {
		if Terminal(s) != want {
			t.Errorf("Terminal(%q) = %v", s, !want)
		}
	}
	if s, ok := MigrationEventStatus(Event{Name: "MIGRATION", Data: json.RawMessage(`{"status":"active"}`)}); !ok || s != "active" {
		t.Errorf("MIGRATION active: %q %v", s, ok)
	}
	if _, ok := MigrationEventStatus(Event{Name: "STOP", Data: json.RawMessage(`{"status":"x"}`)}); ok {
		t.Error("STOP taken for a migration event")
	}
	if _, ok := MigrationEventStatus(Event{Name: "MIGRATION", Data: json.RawMessage(`[1]`)}); ok {
		t.Error("malformed MIGRATION data accepted")
	}
}

// TestDialWhenReady: a socket that starts listening after the first
// attempts is reached; a process that exits first gives ErrExited; a
// socket that never appears gives the deadline's error.
func TestDialWhenReady(t *testing.T) {
	t.Run("socket appears", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "qmp")
		type result struct {
			c   *Client
			err error
		}
		res := make(chan result, 1)
		go func() {
			c, err := DialWhenReady(testCtx(t), path, nil, time.Minute)
			res <- result{c, err}
		}()
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		conn, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		f := &fakeServer{t: t, conn: conn, handle: func(command) []map[string]any {
			return []map[string]any{{"return": map[string]any{}}}
		}, got: make(chan string, 64)}
		go f.serve()
		r := <-res
		if r.err != nil {
			t.Fatalf("DialWhenReady: %v", r.err)
		}
		r.c.Close()
	})
	t.Run("process exited", func(t *testing.T) {
		exited := make(chan struct{})
		close(exited)
		_, err := DialWhenReady(testCtx(t), filepath.Join(t.TempDir(), "none"), exited, time.Minute)
		if !errors.Is(err, ErrExited) {
			t.Fatalf("err = %v, want ErrExited", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		_, err := DialWhenReady(testCtx(t), filepath.Join(t.TempDir(), "none"), nil, 50*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a deadline error", err)
		}
	})
}
