// Package qmp is a small client of the QEMU Machine Protocol (QMP): JSON
// objects over a socket, a greeting, capabilities negotiation, commands
// answered by replies matched on their "id", and asynchronous events. It
// has what `godwit bench --peer qemu` needs: run commands, wait for events
// (MIGRATION), and read query-migrate into typed statistics.
//
// Protocol reference: QEMU's docs/interop/qmp-spec.rst. Every message is
// one JSON object; the client sends {"execute": C, "arguments": A, "id": N}
// and the server answers {"return": R, "id": N} or {"error": {"class",
// "desc"}, "id": N}, with {"event": E, "data": D, "timestamp": T} objects
// interleaved at any time.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// maxMessage bounds one message from the server.
const maxMessage = 16 << 20

// maxEvents bounds the events a Client keeps; older ones are dropped.
const maxEvents = 1024

// Error is an error reply.
type Error struct {
	// Class is QMP's error class (GenericError, CommandNotFound, ...).
	Class string `json:"class"`
	// Desc is the human-readable description.
	Desc string `json:"desc"`
}

// Error returns "Class: Desc".
func (e *Error) Error() string { return e.Class + ": " + e.Desc }

// Event is an asynchronous message from the server.
type Event struct {
	// Name is the event name, e.g. "MIGRATION".
	Name string
	// Data is the event's data object, verbatim.
	Data json.RawMessage
	// Time is the server's timestamp.
	Time time.Time
}

// message is any object the server sends.
type message struct {
	QMP       json.RawMessage `json:"QMP"`
	Return    json.RawMessage `json:"return"`
	Error     *Error          `json:"error"`
	ID        json.RawMessage `json:"id"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// reply is the answer to one command.
type reply struct {
	ret json.RawMessage
	err error
}

// Client is a QMP connection. Its methods are safe for concurrent use.
type Client struct {
	conn net.Conn

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan reply
	events  []Event       // the most recent events
	total   int           // events received so far, kept or dropped
	changed chan struct{} // closed and replaced whenever events grow or the connection ends
	readErr error         // why the reader stopped; set once
	done    chan struct{} // closed when the reader stops
}

// Dial connects to a QMP server on a unix socket (or "tcp:HOST:PORT"),
// reads its greeting and leaves capabilities negotiation mode
// (qmp_capabilities). ctx bounds the whole handshake.
func Dial(ctx context.Context, addr string) (*Client, error) {
	network, address := "unix", addr
	if a, ok := strings.CutPrefix(addr, "tcp:"); ok {
		network, address = "tcp", a
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	c, err := NewClient(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// ErrExited is DialWhenReady's error when the QEMU process exits before
// its QMP socket accepts.
var ErrExited = errors.New("QEMU exited before its QMP socket accepted")

// DialWhenReady dials addr (see Dial) until QEMU's QMP socket accepts,
// backing off from 10 ms to 500 ms between attempts, and gives up when
// exited is closed (ErrExited, wrapped with the last dial error) or after
// timeout (ctx's error, likewise).
func DialWhenReady(ctx context.Context, addr string, exited <-chan struct{}, timeout time.Duration) (*Client, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	backoff := 10 * time.Millisecond
	for {
		c, err := Dial(ctx, addr)
		if err == nil {
			return c, nil
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-exited:
			t.Stop()
			return nil, fmt.Errorf("%w (last error: %v)", ErrExited, err)
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("QMP socket %s: %w (last error: %v)", addr, ctx.Err(), err)
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// NewClient runs the QMP handshake on conn (greeting, qmp_capabilities)
// within ctx and returns the client, which owns conn from then on.
func NewClient(ctx context.Context, conn net.Conn) (*Client, error) {
	r := bufio.NewReaderSize(conn, 64<<10)
	dec := json.NewDecoder(&limitedReader{r: r})
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	var greeting message
	err := dec.Decode(&greeting)
	stop()
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("qmp: reading the greeting: %w", err)
	}
	if greeting.QMP == nil {
		return nil, errors.New("qmp: the server's first message is not a QMP greeting")
	}
	_ = conn.SetReadDeadline(time.Time{})
	c := &Client{conn: conn, pending: map[uint64]chan reply{}, changed: make(chan struct{}), done: make(chan struct{})}
	go c.read(dec)
	if _, err := c.Execute(ctx, "qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// limitedReader fails a message longer than maxMessage bytes (the decoder
// reads at most what one value needs plus its buffer).
type limitedReader struct {
	r *bufio.Reader
	n int
}

// Read reads from the buffered connection, counting the bytes since the
// last newline.
func (l *limitedReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	for _, b := range p[:n] {
		if b == '\n' {
			l.n = 0
		} else {
			l.n++
		}
	}
	if l.n > maxMessage {
		return n, fmt.Errorf("qmp: a message longer than %d bytes", maxMessage)
	}
	return n, err
}

// read dispatches the server's messages until the connection ends.
func (c *Client) read(dec *json.Decoder) {
	var err error
	for {
		var m message
		if err = dec.Decode(&m); err != nil {
			break
		}
		switch {
		case m.Event != "":
			ev := Event{Name: m.Event, Data: m.Data,
				Time: time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)}
			c.mu.Lock()
			c.events = append(c.events, ev)
			c.total++
			if len(c.events) > maxEvents {
				c.events = c.events[len(c.events)-maxEvents:]
			}
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
		case m.Return != nil || m.Error != nil:
			var id uint64
			if json.Unmarshal(m.ID, &id) != nil {
				continue // not ours: we always send a numeric id
			}
			c.mu.Lock()
			ch := c.pending[id]
			delete(c.pending, id)
			c.mu.Unlock()
			if ch == nil {
				continue
			}
			if m.Error != nil {
				ch <- reply{err: m.Error}
			} else {
				ch <- reply{ret: m.Return}
			}
		}
	}
	c.mu.Lock()
	c.readErr = fmt.Errorf("qmp: connection ended: %w", err)
	for id, ch := range c.pending {
		ch <- reply{err: c.readErr}
		delete(c.pending, id)
	}
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	close(c.done)
}

// Execute runs a command (arguments may be nil) and returns its "return"
// value, or the server's *Error. ctx bounds the wait for the reply.
func (c *Client) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	c.mu.Lock()
	if c.readErr != nil {
		err := c.readErr
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	id := c.nextID
	ch := make(chan reply, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	req := map[string]any{"execute": command, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		c.forget(id)
		return nil, fmt.Errorf("qmp: %s: %w", command, err)
	}
	c.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetWriteDeadline(dl)
	}
	_, err = c.conn.Write(append(b, '\n'))
	_ = c.conn.SetWriteDeadline(time.Time{})
	c.wmu.Unlock()
	if err != nil {
		c.forget(id)
		return nil, fmt.Errorf("qmp: sending %s: %w", command, err)
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("qmp: %s: %w", command, r.err)
		}
		return r.ret, nil
	case <-ctx.Done():
		c.forget(id)
		return nil, fmt.Errorf("qmp: %s: no reply: %w", command, ctx.Err())
	}
}

// forget drops a pending command whose reply nobody waits for any more.
func (c *Client) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// WaitEvent returns the first event received on this connection (among
// the last 1024 kept) for which match is true, waiting for one until ctx
// ends or the connection does.
func (c *Client) WaitEvent(ctx context.Context, match func(Event) bool) (Event, error) {
	seen := 0 // events looked at, counted from the first ever received
	for {
		c.mu.Lock()
		evs, base, changed, readErr := c.events, c.total-len(c.events), c.changed, c.readErr
		c.mu.Unlock()
		for _, ev := range evs[max(seen-base, 0):] {
			if match(ev) {
				return ev, nil
			}
		}
		seen = base + len(evs)
		if readErr != nil {
			return Event{}, readErr
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close closes the connection; pending commands fail.
func (c *Client) Close() error { return c.conn.Close() }
