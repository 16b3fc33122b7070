package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRefusedCredentialsKeepSource is issue 5's first "must show" with a
// real VM: a running test guest is offered to receivers that must refuse
// it (a wrong pre-shared key, a certificate from another CA, no
// credentials against a TLS receiver). Each migration fails, the source
// still reports running and its guest's heartbeat goes on; then the right
// key moves it, and the count continues on the destination.
func TestRefusedCredentialsKeepSource(t *testing.T) {
	dir := t.TempDir()
	rightKey := writeTestFile(t, dir, "right.psk", "the right key for this migration\n")
	wrongKey := writeTestFile(t, dir, "wrong.psk", "a wrong key, of the same length.\n")
	ca := newTestCA(t, dir, "ca")
	rogue := newTestCA(t, dir, "rogue-ca")
	recvCert, recvKey := ca.issue(t, "receiver")
	rogueCert, rogueKey := rogue.issue(t, "source")

	sock := tempPath(t, "src.sock")
	src := startGodwit(t, "run", "--mem", "64M", "--api-sock", sock, "--guest-arg", "heartbeat=1")
	last := src.waitLine(func(l string) bool { _, ok := heartbeatPass(l); return ok }, "heartbeat")
	lastPass, _ := heartbeatPass(last)

	tlsReceiver := []string{"--tls-cert", recvCert, "--tls-key", recvKey, "--tls-ca", ca.cert}
	tests := []struct {
		name     string
		receiver []string // receive flags
		source   []string // migrate flags
	}{
		{"wrong pre-shared key", []string{"--psk-file", rightKey}, []string{"--psk-file", wrongKey}},
		{"certificate from another CA", tlsReceiver, []string{"--tls-cert", rogueCert, "--tls-key", rogueKey, "--tls-ca", ca.cert}},
		{"plain source, TLS receiver", tlsReceiver, nil},
	}
	for _, tc := range tests {
		_, listen, _ := startReceiver(t, "refusing", tc.receiver...)
		if _, err := migrateVM(t, sock, listen, tc.source...); err == nil {
			t.Fatalf("%s: the migration succeeded", tc.name)
		}
		if status := ctl(t, sock, "status"); !strings.Contains(status, "running") {
			t.Fatalf("%s: source after the refusal:\n%s", tc.name, status)
		}
		line := src.waitLine(func(l string) bool { n, ok := heartbeatPass(l); return ok && n > lastPass },
			tc.name+": a new heartbeat on the source after the refusal")
		lastPass, _ = heartbeatPass(line)
		t.Logf("%s: refused; the source's guest went on to heartbeat %d", tc.name, lastPass)
	}

	// The right key moves the VM: the refusals above were the
	// credentials', not a source unable to migrate.
	migrateOnward(t, src, sock, lastPass, []string{"--psk-file", rightKey}, "--psk-file", rightKey)
}

// testCA is a certificate authority made up for one test: its PEM
// certificate file and the key it signs with.
type testCA struct {
	dir, name, cert string
	key             *ecdsa.PrivateKey
	crt             *x509.Certificate
}

// newTestCA writes a fresh self-signed CA certificate to dir/NAME.pem.
func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	crt, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{dir: dir, name: name, key: key, crt: crt}
	ca.cert = writeTestFile(t, dir, name+".pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	return ca
}

// issue writes a certificate for 127.0.0.1 (both client and server use)
// signed by the CA, and its key, as dir/CA-WHO.pem and dir/CA-WHO.key.
func (ca *testCA) issue(t *testing.T, who string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: who},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.crt, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	base := ca.name + "-" + who
	certFile = writeTestFile(t, ca.dir, base+".pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = writeTestFile(t, ca.dir, base+".key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	return certFile, keyFile
}

// writeTestFile writes content to dir/name (mode 0600) and returns the path.
func writeTestFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
