package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"godwit/migrate"
	"godwit/migrate/secure"
	"godwit/vmm/api"
)

// channelFlags are the flags of the authenticated migration channel
// (package migrate/secure), shared by migrate, receive, pingpong and demo.
// peerName explains --tls-peer-name for the command; a `NAME` in it is
// the placeholder --help shows.
func channelFlags(peerName string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "psk-file", Usage: "authenticate the peer with the pre-shared key in `FILE` (at least 16 bytes, e.g. from head -c 32 /dev/urandom | base64) and encrypt the migration (AES-256-GCM); both sides need the same key"},
		&cli.StringFlag{Name: "tls-cert", Usage: "mutual TLS 1.3 instead: this side's PEM certificate `FILE` (with --tls-key and --tls-ca)"},
		&cli.StringFlag{Name: "tls-key", Usage: "mutual TLS: the PEM private key `FILE` of --tls-cert"},
		&cli.StringFlag{Name: "tls-ca", Usage: "mutual TLS: PEM `FILE` of the CA certificates that verify the peer's certificate"},
		&cli.StringFlag{Name: "tls-peer-name", Usage: "mutual TLS: " + peerName},
	}
}

// channelFiles returns the channel flags' files with absolute paths (the
// migrate command hands them to a VM process with another working
// directory).
func channelFiles(c *cli.Context) (secure.Files, error) {
	f := secure.Files{
		PSKFile:  c.String("psk-file"),
		CertFile: c.String("tls-cert"),
		KeyFile:  c.String("tls-key"),
		CAFile:   c.String("tls-ca"),
		PeerName: c.String("tls-peer-name"),
	}
	for _, p := range []*string{&f.PSKFile, &f.CertFile, &f.KeyFile, &f.CAFile} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return f, err
		}
		*p = abs
	}
	return f, nil
}

// loadChannel reads and checks the channel flags, so that a bad file is a
// CLI error before anything starts. It returns the files (absolute) and
// their Config, nil without flags.
func loadChannel(c *cli.Context) (secure.Files, *secure.Config, error) {
	f, err := channelFiles(c)
	if err != nil {
		return f, nil, cli.Exit(err.Error(), 2)
	}
	cfg, err := f.Load()
	if err != nil {
		return f, nil, cli.Exit("authenticated channel: "+err.Error()+" (--psk-file, --tls-cert, --tls-key, --tls-ca, --tls-peer-name)", 2)
	}
	return f, cfg, nil
}

// requestChannel copies the channel files into a migrate request.
func requestChannel(req *api.MigrateRequest, f secure.Files) {
	req.PSKFile, req.TLSCert, req.TLSKey, req.TLSCA, req.TLSPeerName = f.PSKFile, f.CertFile, f.KeyFile, f.CAFile, f.PeerName
}

// channelName names the channel for logs.
func channelName(cfg *secure.Config) string {
	if cfg == nil {
		return "plain"
	}
	return cfg.Mode().String()
}

// receiveChannelArgs are the `godwit receive` flags for the channel files.
func receiveChannelArgs(f secure.Files) []string {
	var args []string
	for _, a := range []struct{ flag, v string }{
		{"--psk-file", f.PSKFile}, {"--tls-cert", f.CertFile}, {"--tls-key", f.KeyFile},
		{"--tls-ca", f.CAFile}, {"--tls-peer-name", f.PeerName},
	} {
		if a.v != "" {
			args = append(args, a.flag, a.v)
		}
	}
	return args
}

// refuseTimeout bounds the ERROR frame sent to an unauthenticated source
// and the wait for it to hang up.
const refuseTimeout = 2 * time.Second

// acceptChannel authenticates the source on a freshly accepted conn,
// within timeout, and returns the channel the migration runs on (conn
// itself when cfg is nil). Nothing of the VM is read before the peer is
// authenticated. A source that does not speak the channel at all gets an
// ERROR frame in the plain protocol, so that it reports why.
func acceptChannel(ctx context.Context, conn net.Conn, cfg *secure.Config, timeout time.Duration, log *slog.Logger) (net.Conn, error) {
	if cfg == nil {
		return conn, nil
	}
	if timeout <= 0 {
		timeout = secure.DefaultHandshakeTimeout
	}
	sc := secure.Server(conn, cfg)
	hctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("the source did not complete the handshake within %v (--idle-timeout)", timeout))
	defer cancel()
	if err := sc.Handshake(hctx); err != nil {
		if errors.Is(err, secure.ErrNotSecure) {
			how := "--psk-file"
			if cfg.Mode() == secure.ModeTLS {
				how = "--tls-cert, --tls-key and --tls-ca"
			}
			refusePlain(conn, fmt.Sprintf("the destination requires an authenticated migration channel: migrate with %s", how))
		}
		return nil, err
	}
	log.Info("migration peer authenticated", "channel", sc.Mode().String(), "peer", sc.Peer(), "from", conn.RemoteAddr().String())
	return sc, nil
}

// refusePlain answers a source that sent its HELLO in the clear with an
// ERROR frame, then waits (briefly) for it to hang up, so that closing
// with its HELLO unread does not reset the connection before it has read
// the reason.
func refusePlain(conn net.Conn, reason string) {
	conn.SetDeadline(time.Now().Add(refuseTimeout))
	if migrate.WriteError(conn, reason) != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(conn, 64<<20))
}
