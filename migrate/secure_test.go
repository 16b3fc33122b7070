package migrate_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"godwit/migrate"
	"godwit/migrate/migratetest"
	"godwit/migrate/secure"
)

// pskPair returns TCP ends wrapped in the pre-shared-key channel, the
// source's with key src and the destination's with key dst.
func pskPair(src, dst []byte) connPair {
	return func(tb testing.TB) (net.Conn, net.Conn) {
		a, b := tcpPair(tb)
		return secure.Client(a, &secure.Config{PSK: src}), secure.Server(b, &secure.Config{PSK: dst})
	}
}

func TestMigrateOverPSK(t *testing.T) {
	key := []byte("0123456789abcdef-right-key")
	wrong := []byte("0123456789abcdef-wrong-key")

	t.Run("right key", func(t *testing.T) {
		vm := newVM(t)
		vm.DirtyPerRound = 300
		src, dst := pskPair(key, key)(t)
		r := migrateOnce(context.Background(), context.Background(), src, dst, vm, &migratetest.Factory{}, migrate.Options{})
		checkSuccess(t, vm, r)
	})

	t.Run("wrong key", func(t *testing.T) {
		vm := newVM(t)
		f := &migratetest.Factory{}
		src, dst := pskPair(key, wrong)(t)
		r := migrateOnce(context.Background(), context.Background(), src, dst, vm, f, migrate.Options{})
		for side, err := range map[string]error{"source": r.err, "destination": r.destErr} {
			t.Logf("%s: %v", side, err)
			if !errors.Is(err, secure.ErrAuth) || !strings.Contains(err.Error(), "wrong pre-shared key") {
				t.Errorf("%s: %v, want a wrong pre-shared key error", side, err)
			}
		}
		// Refused before any VM data: no HELLO read, no target built,
		// nothing counted on either side, the dirty log never started.
		if n := len(f.Targets()); n != 0 {
			t.Errorf("the destination built %d targets", n)
		}
		if r.destStats.ReceivedBytes != 0 || r.stats.TransferredBytes != 0 {
			t.Errorf("bytes moved: sent %d, received %d", r.stats.TransferredBytes, r.destStats.ReceivedBytes)
		}
		if n := vm.Calls(migratetest.OpStartDirtyLog); n != 0 {
			t.Errorf("dirty log started %d times", n)
		}
		checkSourceIntact(t, vm, r.stats)
		if vm.Tick(5) != 5 {
			t.Error("the source's guest does not run after the refusal")
		}
		migrateAgain(t, vm, pskPair(key, key))
	})

	t.Run("cancelled", func(t *testing.T) {
		// Cancelling unblocks the source's reader through the channel's
		// deadlines; the destination hears why through it.
		vm := newVM(t)
		vm.DirtyPerRound = 300
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		src, dst := pskPair(key, key)(t)
		r := migrateOnce(ctx, context.Background(), src, dst, vm, &migratetest.Factory{}, migrate.Options{
			Progress: func(migrate.Progress) { cancel() },
		})
		if !errors.Is(r.err, context.Canceled) || !errors.Is(r.destErr, migrate.ErrPeerAborted) {
			t.Fatalf("source: %v; destination: %v", r.err, r.destErr)
		}
		checkSourceIntact(t, vm, r.stats)
		migrateAgain(t, vm, pskPair(key, key))
	})

	t.Run("unprotected source", func(t *testing.T) {
		vm := newVM(t)
		f := &migratetest.Factory{}
		a, b := tcpPair(t)
		dst := secure.Server(b, &secure.Config{PSK: key})
		r := migrateOnce(context.Background(), context.Background(), a, dst, vm, f, migrate.Options{})
		t.Logf("source: %v; destination: %v", r.err, r.destErr)
		if !errors.Is(r.destErr, secure.ErrNotSecure) {
			t.Errorf("destination: %v, want ErrNotSecure", r.destErr)
		}
		if r.err == nil || len(f.Targets()) != 0 || r.destStats.ReceivedBytes != 0 {
			t.Errorf("source error %v, %d targets, %d bytes received", r.err, len(f.Targets()), r.destStats.ReceivedBytes)
		}
		checkSourceIntact(t, vm, r.stats)
		migrateAgain(t, vm, pskPair(key, key))
	})

	t.Run("refused in the source's protocol", func(t *testing.T) {
		// What `godwit receive` does with an unprotected source: answer
		// with an ERROR frame it understands.
		vm := newVM(t)
		a, b := tcpPair(t)
		go func() {
			dst := secure.Server(b, &secure.Config{PSK: key})
			if err := dst.Handshake(context.Background()); errors.Is(err, secure.ErrNotSecure) {
				migrate.WriteError(b, "this destination requires an authenticated channel")
			}
		}()
		st, err := migrate.Send(context.Background(), a, vm, migrate.Options{})
		if !errors.Is(err, migrate.ErrPeerAborted) || !strings.Contains(err.Error(), "requires an authenticated channel") {
			t.Fatalf("source: %v", err)
		}
		checkSourceIntact(t, vm, st)
	})
}
