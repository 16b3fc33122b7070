package secure

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
)

// tlsAccepted is what a TLS server writes once it has verified the
// client, and what the client waits for before its handshake ends.
const tlsAccepted = "GWOK"

// tlsConfig builds the crypto/tls configuration for one side.
func (c *Config) tlsConfig(client bool) *tls.Config {
	cert := c.Certificate
	tc := &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
	}
	if client {
		tc.RootCAs = c.CAs
		tc.ServerName = c.PeerName
		// Always present the certificate, even when the server asks
		// for other CAs, so the server reports why it refuses it.
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		return tc
	}
	tc.Certificates = []tls.Certificate{*cert}
	tc.ClientCAs = c.CAs
	tc.ClientAuth = tls.RequireAndVerifyClientCert
	tc.SessionTicketsDisabled = true
	if name := c.PeerName; name != "" {
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no client certificate")
			}
			leaf := cs.PeerCertificates[0]
			if !certNames(leaf, name) {
				return fmt.Errorf("the client certificate names %s, not the expected peer %q", describeCert(leaf), name)
			}
			return nil
		}
	}
	return tc
}

// certNames reports whether cert carries name: as a DNS name (without
// regard to case), an IP address, a URI, an e-mail address, or its
// subject common name, compared exactly.
func certNames(cert *x509.Certificate, name string) bool {
	for _, d := range cert.DNSNames {
		if strings.EqualFold(d, name) {
			return true
		}
	}
	if ip := net.ParseIP(name); ip != nil {
		for _, a := range cert.IPAddresses {
			if a.Equal(ip) {
				return true
			}
		}
	}
	for _, u := range cert.URIs {
		if u.String() == name {
			return true
		}
	}
	for _, e := range cert.EmailAddresses {
		if e == name {
			return true
		}
	}
	return cert.Subject.CommonName != "" && cert.Subject.CommonName == name
}

// describeCert lists a certificate's names for messages and logs.
func describeCert(cert *x509.Certificate) string {
	var names []string
	if cn := cert.Subject.CommonName; cn != "" {
		names = append(names, "CN="+cn)
	}
	names = append(names, cert.DNSNames...)
	for _, a := range cert.IPAddresses {
		names = append(names, a.String())
	}
	for _, u := range cert.URIs {
		names = append(names, u.String())
	}
	names = append(names, cert.EmailAddresses...)
	if len(names) == 0 {
		return "no name"
	}
	return strings.Join(names, ", ")
}

// tlsHandshake runs the TLS handshake and the acceptance confirmation.
func (c *Conn) tlsHandshake() error {
	tc := c.tls
	if err := tc.Handshake(); err != nil {
		return tlsError(err, c.client)
	}
	if !c.client {
		if _, err := io.WriteString(tc, tlsAccepted); err != nil {
			return err
		}
	} else {
		var b [len(tlsAccepted)]byte
		if _, err := io.ReadFull(tc, b[:]); err != nil {
			return tlsError(err, true)
		}
		if string(b[:]) != tlsAccepted {
			return fmt.Errorf("%w: the peer's TLS confirmation is % x, want %q", ErrAuth, b, tlsAccepted)
		}
	}
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		c.peer = describeCert(certs[0])
	}
	return nil
}

// tlsError classifies a TLS handshake error: the peer's alert (it refused
// our certificate), our refusal of its certificate, or a peer that does
// not speak TLS all wrap ErrAuth; transport errors stay as they are.
func tlsError(err error, client bool) error {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		what := "it did not start a TLS handshake"
		if client {
			what = "it did not answer with TLS"
		}
		return fmt.Errorf("%w: %w: %s (%v)", ErrAuth, ErrNotSecure, what, err)
	}
	if transportError(err) {
		return err
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return fmt.Errorf("%w: the peer refused our certificate: %v", ErrAuth, err)
	}
	return fmt.Errorf("%w: %v", ErrAuth, err)
}
