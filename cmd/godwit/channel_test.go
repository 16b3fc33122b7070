package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"godwit/internal/testpki"
	"godwit/migrate"
	"godwit/migrate/migratetest"
	"godwit/migrate/secure"
)

// testCert writes a CA and a certificate it signed for name (also a DNS
// SAN) and 127.0.0.1 into dir, made up at run time, and returns the
// paths of the certificate, its key and the CA.
func testCert(t *testing.T, dir, name string) (cert, key, ca string) {
	t.Helper()
	c := testpki.NewCA(t, "test CA")
	l := c.Issue(t, name, time.Hour)
	return testpki.WriteFile(t, dir, "cert.pem", l.CertPEM), testpki.WriteFile(t, dir, "key.pem", l.KeyPEM), testpki.WriteFile(t, dir, "ca.pem", c.PEM)
}

func TestChannelFlagErrors(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "psk")
	short := filepath.Join(dir, "short")
	os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	os.WriteFile(short, []byte("hunter2\n"), 0o600)
	cert, ckey, ca := testCert(t, dir, "dest.example")
	missing := filepath.Join(dir, "missing")
	recv := []string{"receive", "--listen", "tcp:127.0.0.1:0"}
	mig := []string{"migrate", "--api-sock", filepath.Join(dir, "none.sock"), "--to", "tcp:127.0.0.1:1"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"migrate missing key file", append(mig, "--psk-file", missing), "pre-shared key file: open"},
		{"migrate short key", append(mig, "--psk-file", short), "holds 7 bytes, want at least 16"},
		{"migrate tls without CA", append(mig, "--tls-cert", cert, "--tls-key", ckey), "together"},
		{"receive key and tls", append(recv, "--psk-file", key, "--tls-ca", ca), "mutually exclusive"},
		{"receive cert without key", append(recv, "--tls-cert", cert, "--tls-ca", ca), "together"},
		{"receive key as certificate", append(recv, "--tls-cert", ckey, "--tls-key", ckey, "--tls-ca", ca), "TLS certificate"},
		{"receive peer name with psk", append(recv, "--psk-file", key, "--tls-peer-name", "x"), "needs TLS"},
		{"demo missing key file", []string{"demo", "--psk-file", missing}, "pre-shared key file"},
		{"pingpong short key", []string{"pingpong", "--psk-file", short}, "want at least 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runGodwit(t, tt.args...)
			if code != 2 {
				t.Errorf("exit code %d, want 2; stderr %q", code, stderr)
			}
			if lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n"); len(lines) != 1 || !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q: want one line mentioning %q", stderr, tt.want)
			}
		})
	}
}

// receiver is a `godwit receive` child process.
type receiver struct {
	addr   string
	lines  chan string // stderr lines after the listen line
	exited chan error
}

// startReceive runs `godwit receive --listen tcp:127.0.0.1:0 args...` and
// returns once it listens.
func startReceive(t *testing.T, args ...string) *receiver {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"receive", "--listen", "tcp:127.0.0.1:0", "--serial", "none"}, args...)...)
	cmd.Env = append(os.Environ(), "GODWIT_TEST_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	r := &receiver{lines: make(chan string, 100), exited: make(chan error, 1)}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if _, rest, ok := strings.Cut(sc.Text(), "listen="); ok && strings.Contains(sc.Text(), "waiting for a migrating VM") {
			r.addr = strings.TrimPrefix(strings.Fields(rest)[0], "tcp:")
			break
		}
	}
	if r.addr == "" {
		t.Fatal("the receiver exited without listening")
	}
	go func() {
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		close(r.lines)
		r.exited <- cmd.Wait()
	}()
	return r
}

// wait returns the receiver's remaining stderr and its exit code.
func (r *receiver) wait(t *testing.T) (string, int) {
	t.Helper()
	var out []string
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-r.lines:
			if ok {
				out = append(out, l)
				continue
			}
			err := <-r.exited
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return strings.Join(out, "\n"), ee.ExitCode()
			}
			return strings.Join(out, "\n"), 0
		case <-timeout:
			t.Fatalf("the receiver did not exit; its stderr:\n%s", strings.Join(out, "\n"))
		}
	}
}

func (r *receiver) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestReceiveRefusesUnauthenticated runs `godwit receive` with an
// authenticated channel against sources with wrong or no credentials: no
// KVM is needed, since each is refused before its HELLO is read.
func TestReceiveRefusesUnauthenticated(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "psk")
	os.WriteFile(keyFile, []byte("the right key, 32 bytes or so..\n"), 0o600)
	cert, key, ca := testCert(t, dir, "source.example")
	tlsCfg := func(peer string) *secure.Config {
		cfg, err := secure.Files{CertFile: cert, KeyFile: key, CAFile: ca, PeerName: peer}.Load()
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	vm, err := migratetest.New(4<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	tests := []struct {
		name       string
		args       []string
		source     func(net.Conn) error // the migration source's side
		sourceWant string
		recvWant   string
	}{
		{
			name: "wrong key", args: []string{"--psk-file", keyFile},
			source: func(c net.Conn) error {
				return secure.Client(c, &secure.Config{PSK: []byte("a wrong key of 32 bytes or so...")}).Handshake(context.Background())
			},
			sourceWant: "wrong pre-shared key",
			recvWant:   "refused the migrating peer: migration peer failed authentication: wrong pre-shared key",
		},
		{
			name: "unauthenticated source", args: []string{"--psk-file", keyFile},
			source: func(c net.Conn) error {
				_, err := migrate.Send(context.Background(), c, vm, migrate.Options{})
				return err
			},
			sourceWant: "the destination requires an authenticated migration channel: migrate with --psk-file",
			recvWant:   "does not use the same authenticated channel",
		},
		{
			name: "unauthenticated source, tls", args: []string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", ca},
			source: func(c net.Conn) error {
				_, err := migrate.Send(context.Background(), c, vm, migrate.Options{})
				return err
			},
			sourceWant: "migrate with --tls-cert, --tls-key and --tls-ca",
			recvWant:   "did not start a TLS handshake",
		},
		{
			name: "tls peer name mismatch", args: []string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", ca, "--tls-peer-name", "other.example"},
			source: func(c net.Conn) error {
				return secure.Client(c, tlsCfg("127.0.0.1")).Handshake(context.Background())
			},
			sourceWant: "refused our certificate",
			recvWant:   `not the expected peer "other.example"`,
		},
		{
			name: "silent source", args: []string{"--psk-file", keyFile, "--idle-timeout", "200ms"},
			source: func(c net.Conn) error {
				io.Copy(io.Discard, c)
				return errors.New("the receiver hung up")
			},
			sourceWant: "hung up",
			recvWant:   "the source did not complete the handshake within 200ms",
		},
		{
			// The right key gets past authentication to the migration
			// protocol, where this made-up VM is refused (its
			// configuration is the fake VM's): proof that the channel
			// carries the migration.
			name: "right key", args: []string{"--psk-file", keyFile},
			source: func(c net.Conn) error {
				_, err := migrate.Send(context.Background(), secure.Client(c, &secure.Config{PSK: []byte("the right key, 32 bytes or so..")}), vm, migrate.Options{})
				return err
			},
			sourceWant: "destination refused the migration",
			recvWant:   "receiving the VM failed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startReceive(t, tt.args...)
			conn := r.dial(t)
			err := tt.source(conn)
			conn.Close() // as the source VM does once Send returns
			if err == nil || !strings.Contains(err.Error(), tt.sourceWant) {
				t.Errorf("source: %v, want an error mentioning %q", err, tt.sourceWant)
			}
			stderr, code := r.wait(t)
			if code != 1 || !strings.Contains(stderr, tt.recvWant) {
				t.Errorf("receiver: exit %d, stderr:\n%s\nwant exit 1 mentioning %q", code, stderr, tt.recvWant)
			}
			if vm.Paused() || vm.Logging() {
				t.Errorf("the source VM is paused=%v logging=%v", vm.Paused(), vm.Logging())
			}
		})
	}
}
