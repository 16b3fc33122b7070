// Package testpki makes throwaway certificate authorities and certificates
// for tests of the authenticated migration channel: ECDSA P-256 keys made
// for one test run, never committed and trusted nowhere else. Only tests
// import it.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority made up for one test run.
type CA struct {
	// Cert is the CA's self-signed certificate, PEM its PEM encoding.
	Cert *x509.Certificate
	PEM  []byte
	// Pool trusts Cert alone.
	Pool *x509.CertPool
	key  *ecdsa.PrivateKey
}

// Leaf is a certificate a CA issued, with its key.
type Leaf struct {
	// TLS is the pair as crypto/tls takes it.
	TLS tls.Certificate
	// CertPEM and KeyPEM are the certificate and its EC private key in
	// PEM, as godwit's --tls-cert and --tls-key files hold them.
	CertPEM, KeyPEM []byte
}

var serial atomic.Int64

func newSerial() *big.Int { return big.NewInt(serial.Add(1)) }

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return key
}

// NewCA makes a CA named name, valid from an hour ago for two hours.
func NewCA(tb testing.TB, name string) *CA {
	tb.Helper()
	key := newKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{Cert: cert, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Pool: pool, key: key}
}

// Issue makes a certificate for cn (also its DNS name) and 127.0.0.1,
// good for client and server authentication, valid from an hour ago until
// validFor from now; a negative validFor makes one that has expired.
func (ca *CA) Issue(tb testing.TB, cn string, validFor time.Duration) Leaf {
	tb.Helper()
	key := newKey(tb)
	nb, na := time.Now().Add(-time.Hour), time.Now().Add(validFor)
	if validFor < 0 {
		nb = na.Add(-time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    nb,
		NotAfter:     na,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	l := Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}
	if l.TLS, err = tls.X509KeyPair(l.CertPEM, l.KeyPEM); err != nil {
		tb.Fatal(err)
	}
	return l
}

// WriteFile writes b to dir/name with mode 0600 and returns its path.
func WriteFile(tb testing.TB, dir, name string, b []byte) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}
