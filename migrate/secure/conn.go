package secure

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Errors of a secure channel; test with errors.Is.
var (
	// ErrAuth reports that the peer failed authentication, or refused
	// ours: a wrong pre-shared key, a certificate that does not verify or
	// does not name the expected peer, a peer in another mode or in none.
	ErrAuth = errors.New("migration peer failed authentication")
	// ErrNotSecure accompanies ErrAuth when the peer did not start this
	// side's handshake at all: it runs unprotected, or in the other mode.
	ErrNotSecure = errors.New("the peer does not use the same authenticated channel")
	// ErrCorrupt reports a pre-shared-key record stream that is
	// malformed, fails authentication (modified, reordered, replayed or
	// injected records) or was truncated.
	ErrCorrupt = errors.New("secure channel: corrupt stream")
)

// errClosed is the sticky write error after Close.
var errClosed = net.ErrClosed

// longAgo is a deadline in the past: it fails pending and later I/O.
var longAgo = time.Unix(1, 0)

// closeTimeout bounds the write of the close record in Close.
const closeTimeout = time.Second

// Conn is a migration channel over an authenticated, encrypted
// connection. It implements net.Conn; Read and Write may be called
// concurrently (one reader and one writer at a time). It is created
// unauthenticated by Client or Server; the handshake runs on the first
// Read or Write or on Handshake.
type Conn struct {
	raw    net.Conn
	cfg    *Config
	client bool
	cfgErr error

	hsMu   sync.Mutex
	hsDone atomic.Bool // hsErr and the fields below are set
	hsErr  error
	peer   string

	tls *tls.Conn     // TLS mode
	in  *recordReader // pre-shared-key mode
	out *recordWriter
}

// Client returns the dialling side's channel over raw (the migration
// source). An invalid cfg fails the handshake.
func Client(raw net.Conn, cfg *Config) *Conn { return newConn(raw, cfg, true) }

// Server returns the accepting side's channel over raw (the migration
// destination). An invalid cfg fails the handshake.
func Server(raw net.Conn, cfg *Config) *Conn { return newConn(raw, cfg, false) }

func newConn(raw net.Conn, cfg *Config, client bool) *Conn {
	c := &Conn{raw: raw, cfg: cfg, client: client, cfgErr: cfg.check(client)}
	if c.cfgErr == nil && cfg.Mode() == ModeTLS {
		if client {
			c.tls = tls.Client(raw, cfg.tlsConfig(true))
		} else {
			c.tls = tls.Server(raw, cfg.tlsConfig(false))
		}
	}
	return c
}

// Handshake authenticates the peer and sets up encryption, unless that
// already happened; it returns the handshake's result, which is final.
// ctx bounds it: when ctx ends first, the connection gets a deadline in
// the past and the handshake fails. Deadlines set on c apply too.
func (c *Conn) Handshake(ctx context.Context) error {
	if c.hsDone.Load() {
		return c.hsErr
	}
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	if c.hsDone.Load() {
		return c.hsErr
	}
	err := c.handshake(ctx)
	c.hsErr = err
	c.hsDone.Store(true)
	return err
}

// handshakeLazily runs the handshake on behalf of Read or Write, bounded
// by Config.HandshakeTimeout.
func (c *Conn) handshakeLazily() error {
	if c.hsDone.Load() {
		return c.hsErr
	}
	d := DefaultHandshakeTimeout
	if c.cfg != nil && c.cfg.HandshakeTimeout > 0 {
		d = c.cfg.HandshakeTimeout
	}
	ctx, cancel := context.WithTimeoutCause(context.Background(), d,
		fmt.Errorf("no answer from the peer within %v: %w", d, os.ErrDeadlineExceeded))
	defer cancel()
	return c.Handshake(ctx)
}

func (c *Conn) handshake(ctx context.Context) error {
	if c.cfgErr != nil {
		return c.cfgErr
	}
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("secure channel handshake: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { c.raw.SetDeadline(longAgo) })
	var err error
	if c.tls != nil {
		err = c.tlsHandshake()
	} else {
		err = c.pskHandshake()
	}
	if !stop() {
		// ctx ended: the connection now has a past deadline, whatever
		// the handshake's outcome.
		return fmt.Errorf("secure channel handshake: %w", context.Cause(ctx))
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrAuth):
		return err
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("secure channel handshake: the peer closed the connection (does it use the same pre-shared key or TLS settings?): %w", err)
	}
	return fmt.Errorf("secure channel handshake: %w", err)
}

func (c *Conn) pskHandshake() error {
	send, recv, err := pskHandshake(c.raw, c.cfg.PSK, c.client)
	if err != nil {
		return err
	}
	out, err := newDirection(send)
	if err != nil {
		return err
	}
	in, err := newDirection(recv)
	if err != nil {
		return err
	}
	c.out = &recordWriter{w: c.raw, d: out}
	c.in = &recordReader{r: c.raw, d: in}
	c.peer = "holder of the pre-shared key"
	return nil
}

// transportError reports whether err comes from the connection itself
// (deadline, closed, reset, end of stream) rather than from the peer's
// answer.
func transportError(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// Mode reports the channel's mode (0 with an invalid Config).
func (c *Conn) Mode() Mode {
	if c.cfgErr != nil {
		return 0
	}
	return c.cfg.Mode()
}

// Peer describes the authenticated peer once the handshake succeeded:
// the names in its TLS certificate, or that it holds the pre-shared key.
func (c *Conn) Peer() string {
	if !c.hsDone.Load() || c.hsErr != nil {
		return ""
	}
	return c.peer
}

// Read reads decrypted, authenticated data, after the handshake.
func (c *Conn) Read(p []byte) (int, error) {
	if err := c.handshakeLazily(); err != nil {
		return 0, err
	}
	if c.tls != nil {
		return c.tls.Read(p)
	}
	return c.in.read(p)
}

// Write encrypts and sends p, after the handshake.
func (c *Conn) Write(p []byte) (int, error) {
	if err := c.handshakeLazily(); err != nil {
		return 0, err
	}
	if c.tls != nil {
		return c.tls.Write(p)
	}
	return c.out.write(p)
}

// Close ends the stream with a close record (pre-shared key) or a TLS
// close_notify, when the handshake succeeded and no write is in progress,
// and closes the connection.
func (c *Conn) Close() error {
	if c.hsDone.Load() && c.hsErr == nil {
		if c.tls != nil {
			return c.tls.Close()
		}
		c.out.close(func() { c.raw.SetWriteDeadline(time.Now().Add(closeTimeout)) })
	}
	return c.raw.Close()
}

// LocalAddr returns the connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.raw.LocalAddr() }

// RemoteAddr returns the connection's remote address.
func (c *Conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// SetDeadline sets the read and write deadlines of the connection; they
// apply to the handshake too.
func (c *Conn) SetDeadline(t time.Time) error { return c.raw.SetDeadline(t) }

// SetReadDeadline sets the connection's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.raw.SetReadDeadline(t) }

// SetWriteDeadline sets the connection's write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

var _ net.Conn = (*Conn)(nil)
