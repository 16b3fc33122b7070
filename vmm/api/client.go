package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// Client timeouts. DefaultTimeout applies to every call whose context has no
// deadline, except DumpMemory, which takes as long as the dump takes unless
// its context says otherwise.
const (
	dialTimeout = 5 * time.Second
	// DefaultTimeout bounds a Client call whose context has no deadline.
	DefaultTimeout = 30 * time.Second
	// maxResponseBytes bounds every response body the client reads.
	maxResponseBytes = 1 << 20
)

// Client talks to a godwit control API socket.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the API socket at socketPath. It does not
// connect until the first call.
func NewClient(socketPath string) *Client {
	d := &net.Dialer{Timeout: dialTimeout}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConns:          1,
		IdleConnTimeout:       30 * time.Second,
		DisableCompression:    true,
		ExpectContinueTimeout: time.Second,
	}
	return &Client{path: socketPath, hc: &http.Client{Transport: tr}}
}

// APIError is an error response from the server.
type APIError struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Message is the server's error message.
	Message string
}

// Error returns the server's message and the status.
func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.StatusCode, http.StatusText(e.StatusCode))
}

// Info returns the VM's state, configuration, uptime and exit counters.
func (c *Client) Info(ctx context.Context) (VMInfo, error) {
	var info VMInfo
	err := c.do(ctx, http.MethodGet, "/vm", nil, &info, true)
	return info, err
}

// Pause pauses the VM.
func (c *Client) Pause(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "/vm/pause", nil, nil, true)
}

// Resume resumes a paused VM.
func (c *Client) Resume(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "/vm/resume", nil, nil, true)
}

// Shutdown stops the VM.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "/vm/shutdown", nil, nil, true)
}

// DumpMemory asks the VMM to write guest RAM from gpa (length bytes, 0 for
// to the end of RAM) to path, which must be absolute and is interpreted on
// the VMM's host. It returns the number of bytes written.
func (c *Client) DumpMemory(ctx context.Context, path string, gpa, length uint64) (int64, error) {
	var resp DumpResponse
	req := DumpRequest{Path: path, GPA: gpa, Len: length}
	if err := c.do(ctx, http.MethodPut, "/vm/dump-memory", req, &resp, false); err != nil {
		return 0, err
	}
	if resp.Bytes > math.MaxInt64 {
		return 0, fmt.Errorf("godwit API at %s reported an impossible dump size %d", c.path, resp.Bytes)
	}
	return int64(resp.Bytes), nil
}

// do sends one request and decodes a 2xx JSON response into out (if not
// nil). Responses may carry fields this client does not know: newer servers
// may add them.
func (c *Client) do(ctx context.Context, method, path string, in, out any, useDefaultTimeout bool) error {
	if _, ok := ctx.Deadline(); !ok && useDefaultTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding %s %s request: %w", method, path, err)
		}
		body = bytes.NewReader(data)
	}
	// The host part is ignored: the transport always dials the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://godwit"+path, body)
	if err != nil {
		return fmt.Errorf("building %s %s request: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.transportError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("reading response from godwit API at %s: %w", c.path, err)
	}
	if len(data) > maxResponseBytes {
		return fmt.Errorf("response from godwit API at %s exceeds %d bytes", c.path, maxResponseBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return apiError(resp.StatusCode, data)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decoding response from godwit API at %s: %w", c.path, err)
	}
	return nil
}

// transportError turns a failure to reach the server into a clear message.
func (c *Client) transportError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("godwit API at %s did not answer in time: %w", c.path, err)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("no godwit VM listening on %s: %w", c.path, op.Err)
		}
		return fmt.Errorf("cannot connect to godwit API at %s: %w", c.path, op.Err)
	}
	return fmt.Errorf("talking to godwit API at %s: %w", c.path, err)
}

// apiError builds an APIError from an error response body.
func apiError(status int, body []byte) error {
	var er ErrorResponse
	msg := ""
	if json.Unmarshal(body, &er) == nil && er.Error != "" {
		msg = er.Error
	} else {
		msg = strings.TrimSpace(string(body))
		if len(msg) > 200 {
			msg = strings.ToValidUTF8(msg[:200], "") + "..."
		}
		if msg == "" {
			msg = http.StatusText(status)
		}
	}
	return &APIError{StatusCode: status, Message: sanitize(msg)}
}

// sanitize drops control characters so a hostile message cannot drive the
// terminal it is printed on.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return -1
		}
		return r
	}, s)
}
