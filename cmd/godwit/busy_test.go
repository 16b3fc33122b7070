package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"godwit/migrate"
	"godwit/migrate/migratetest"
	"godwit/migrate/secure"
)

// TestReceiveOneVM runs a real `godwit receive` and connects three
// sources: the first stays silent while the second and third are refused
// at once with a reason that names the busy receiver; the first then
// migrates, undisturbed, and gets as far as this host lets it (the fake
// VM's configuration is refused: no KVM needed). With a pre-shared key,
// the refusal reaches an authenticated source over the channel.
func TestReceiveOneVM(t *testing.T) {
	vm, err := migratetest.New(4<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	keyFile := filepath.Join(t.TempDir(), "psk")
	key := []byte("the right key, 32 bytes or so..")
	if err := os.WriteFile(keyFile, append(key, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		wrap func(net.Conn) net.Conn
	}{
		{"plain", nil, func(c net.Conn) net.Conn { return c }},
		{"psk", []string{"--psk-file", keyFile}, func(c net.Conn) net.Conn { return secure.Client(c, &secure.Config{PSK: key}) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := startReceive(t, append([]string{"--idle-timeout", "30s"}, tt.args...)...)
			first := r.dial(t)
			for i := 0; i < 2; i++ {
				other := r.dial(t)
				_, err := migrate.Send(context.Background(), tt.wrap(other), vm, migrate.Options{})
				other.Close()
				if err == nil || !strings.Contains(err.Error(), "already receiving a VM") || !strings.Contains(err.Error(), "takes only one") {
					t.Fatalf("source %d: %v, want a refusal naming the busy receiver", i+2, err)
				}
				if vm.Paused() || vm.Logging() {
					t.Fatalf("refused source: paused=%v logging=%v", vm.Paused(), vm.Logging())
				}
			}
			_, err = migrate.Send(context.Background(), tt.wrap(first), vm, migrate.Options{})
			first.Close()
			if err == nil || !strings.Contains(err.Error(), "destination refused the migration") {
				t.Fatalf("first source: %v, want the receiver's verdict on its VM", err)
			}
			stderr, code := r.wait(t)
			if code != 1 || !strings.Contains(stderr, "receiving the VM failed: refused the migration") ||
				strings.Count(stderr, "refused another migrating VM") != 2 {
				t.Fatalf("receiver: exit %d, stderr:\n%s", code, stderr)
			}
		})
	}
}

// TestReceiveIdleSource: a source that connects and sends nothing makes
// `godwit receive` give up after --idle-timeout, naming the state.
func TestReceiveIdleSource(t *testing.T) {
	r := startReceive(t, "--idle-timeout", "300ms")
	c := r.dial(t)
	defer c.Close()
	stderr, code := r.wait(t)
	if code != 1 || !strings.Contains(stderr, "nothing from the source for 300ms in state WaitHello") {
		t.Fatalf("receiver: exit %d, stderr:\n%s", code, stderr)
	}
}
