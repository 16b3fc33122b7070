package secure

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Mode is how a Config protects a channel.
type Mode int

// The modes of a Config.
const (
	// ModePSK authenticates with a pre-shared key and encrypts with
	// AES-256-GCM records.
	ModePSK Mode = iota + 1
	// ModeTLS is mutual TLS 1.3.
	ModeTLS
)

// String names the mode as logs show it.
func (m Mode) String() string {
	switch m {
	case ModePSK:
		return "psk"
	case ModeTLS:
		return "tls"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// MinPSKLen is the shortest pre-shared key accepted, in bytes. A key file
// should hold random bytes, e.g. `head -c 32 /dev/urandom | base64`: a
// peer that connects sees one MAC computed with the key, and a short or
// guessable key could be found from it offline.
const MinPSKLen = 16

// maxPSKFile bounds how much of a key file is read.
const maxPSKFile = 4096

// DefaultHandshakeTimeout bounds a handshake that Read or Write start
// when Config.HandshakeTimeout is zero.
const DefaultHandshakeTimeout = 30 * time.Second

// Config says how to authenticate and encrypt one channel: set PSK for
// the pre-shared-key mode, or Certificate and CAs for mutual TLS. Build
// it with Files.Load, or by hand in tests. A Config must not be modified
// once a Conn uses it.
type Config struct {
	// PSK is the pre-shared key, at least MinPSKLen bytes.
	PSK []byte
	// Certificate is this side's certificate chain and private key
	// (TLS mode).
	Certificate *tls.Certificate
	// CAs verify the peer's certificate chain (TLS mode).
	CAs *x509.CertPool
	// PeerName is the identity the peer's certificate must carry (TLS
	// mode). For a client (the migration source) it is the server name
	// to verify the destination's certificate against, a DNS name or an
	// IP address, and is required. For a server it is optional: when
	// set, the client certificate must carry it as a DNS, IP, URI or
	// e-mail subject alternative name or as its subject common name,
	// compared exactly (DNS names without regard to case).
	PeerName string
	// HandshakeTimeout bounds a handshake started by Read or Write
	// (default DefaultHandshakeTimeout). Conn.Handshake is bounded by
	// its context instead. Deadlines set on the Conn apply as well.
	HandshakeTimeout time.Duration
}

// Mode reports the configured mode, or 0 when c configures neither or
// both.
func (c *Config) Mode() Mode {
	psk, tlsSet := c.PSK != nil, c.Certificate != nil || c.CAs != nil
	switch {
	case psk && !tlsSet:
		return ModePSK
	case tlsSet && !psk:
		return ModeTLS
	}
	return 0
}

// check validates c for a client (the side that dials) or a server.
func (c *Config) check(client bool) error {
	if c == nil {
		return errors.New("secure: nil Config")
	}
	switch c.Mode() {
	case ModePSK:
		if len(c.PSK) < MinPSKLen {
			return fmt.Errorf("secure: pre-shared key of %d bytes, want at least %d", len(c.PSK), MinPSKLen)
		}
		if c.PeerName != "" {
			return errors.New("secure: a peer name needs TLS; a pre-shared key names no one")
		}
	case ModeTLS:
		if c.Certificate == nil || c.CAs == nil {
			return errors.New("secure: TLS needs both a certificate and the CAs to verify the peer")
		}
		if client && c.PeerName == "" {
			return errors.New("secure: a TLS client needs the server name to verify (PeerName)")
		}
	default:
		return errors.New("secure: configure either a pre-shared key or TLS, not both or neither")
	}
	return nil
}

// Files names a Config's credentials on disk, as the CLI flags and the
// control API carry them. The zero value means no protection.
type Files struct {
	// PSKFile holds the pre-shared key: the file's bytes, less trailing
	// white space (so a line written by echo works), at least MinPSKLen
	// and at most 4096 bytes.
	PSKFile string
	// CertFile and KeyFile are this side's PEM certificate chain and
	// private key (TLS).
	CertFile, KeyFile string
	// CAFile holds the PEM CA certificates that verify the peer (TLS).
	CAFile string
	// PeerName is Config.PeerName.
	PeerName string
}

// IsZero reports whether f names no credentials at all.
func (f Files) IsZero() bool { return f == Files{} }

// Load reads and validates the credentials f names and returns the
// Config, or nil when f is zero. Errors name the offending file: a
// missing or unreadable file, a short key, a certificate that does not
// match its key or has expired, a CA file without certificates, or a mix
// of both modes.
func (f Files) Load() (*Config, error) {
	if f.IsZero() {
		return nil, nil
	}
	tlsSet := f.CertFile != "" || f.KeyFile != "" || f.CAFile != ""
	switch {
	case f.PSKFile != "" && tlsSet:
		return nil, errors.New("a pre-shared key and TLS are mutually exclusive: choose one")
	case f.PSKFile != "" && f.PeerName != "":
		return nil, errors.New("a TLS peer name needs TLS, not a pre-shared key")
	case f.PSKFile == "" && (f.CertFile == "" || f.KeyFile == "" || f.CAFile == ""):
		return nil, errors.New("TLS needs a certificate, its key and a CA file together")
	}
	if f.PSKFile != "" {
		key, err := loadPSK(f.PSKFile)
		if err != nil {
			return nil, err
		}
		return &Config{PSK: key}, nil
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s with key %s: %w", f.CertFile, f.KeyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("TLS certificate %s: %w", f.CertFile, err)
		}
	}
	now := time.Now()
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("TLS certificate %s expired on %s", f.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("TLS certificate %s is not valid before %s", f.CertFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	pem, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, fmt.Errorf("TLS CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("TLS CA file %s holds no PEM certificate", f.CAFile)
	}
	return &Config{Certificate: &cert, CAs: pool, PeerName: f.PeerName}, nil
}

// loadPSK reads a key file.
func loadPSK(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pre-shared key file: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxPSKFile+1))
	if err != nil {
		return nil, fmt.Errorf("pre-shared key file %s: %w", path, err)
	}
	if len(b) > maxPSKFile {
		return nil, fmt.Errorf("pre-shared key file %s is larger than %d bytes", path, maxPSKFile)
	}
	b = bytes.TrimRight(b, " \t\r\n")
	if len(b) < MinPSKLen {
		return nil, fmt.Errorf("pre-shared key file %s holds %d bytes, want at least %d (e.g. head -c 32 /dev/urandom | base64 > %s)",
			path, len(b), MinPSKLen, path)
	}
	return b, nil
}
