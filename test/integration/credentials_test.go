package integration

import (
	"strings"
	"testing"
	"time"

	"godwit/internal/testpki"
)

// TestRefusedCredentialsKeepSource is issue 5's first "must show" with a
// real VM: a running test guest is offered to receivers that must refuse
// it (a wrong pre-shared key, a certificate from another CA, no
// credentials against a TLS receiver). Each migration fails, the source
// still reports running and its guest's heartbeat goes on; then the right
// key moves it, and the count continues on the destination.
func TestRefusedCredentialsKeepSource(t *testing.T) {
	dir := t.TempDir()
	rightKey := testpki.WriteFile(t, dir, "right.psk", []byte("the right key for this migration\n"))
	wrongKey := testpki.WriteFile(t, dir, "wrong.psk", []byte("a wrong key, of the same length.\n"))
	ca, rogue := testpki.NewCA(t, "godwit test CA"), testpki.NewCA(t, "rogue CA")
	caFile := testpki.WriteFile(t, dir, "ca.pem", ca.PEM)
	recv, rogueSrc := ca.Issue(t, "receiver", time.Hour), rogue.Issue(t, "source", time.Hour)
	recvCert, recvKey := testpki.WriteFile(t, dir, "receiver.pem", recv.CertPEM), testpki.WriteFile(t, dir, "receiver.key", recv.KeyPEM)
	rogueCert, rogueKey := testpki.WriteFile(t, dir, "rogue.pem", rogueSrc.CertPEM), testpki.WriteFile(t, dir, "rogue.key", rogueSrc.KeyPEM)

	sock := tempPath(t, "src.sock")
	src := startGodwit(t, "run", "--mem", "64M", "--api-sock", sock, "--guest-arg", "heartbeat=1")
	last := src.waitLine(func(l string) bool { _, ok := heartbeatPass(l); return ok }, "heartbeat")
	lastPass, _ := heartbeatPass(last)

	tlsReceiver := []string{"--tls-cert", recvCert, "--tls-key", recvKey, "--tls-ca", caFile}
	tests := []struct {
		name     string
		receiver []string // receive flags
		source   []string // migrate flags
	}{
		{"wrong pre-shared key", []string{"--psk-file", rightKey}, []string{"--psk-file", wrongKey}},
		{"certificate from another CA", tlsReceiver, []string{"--tls-cert", rogueCert, "--tls-key", rogueKey, "--tls-ca", caFile}},
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
