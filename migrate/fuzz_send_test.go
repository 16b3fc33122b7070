package migrate_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"godwit/migrate"
	"godwit/migrate/migratetest"
)

// sendFuzzRAM is the fake VM's RAM in FuzzSend: small, so that one
// migration attempt is quick.
const sendFuzzRAM = 2 << 20

// hostileDest is a destination that answers with a fixed byte script
// whatever the source sends, and ends the stream after it.
type hostileDest struct{ r io.Reader }

func (d hostileDest) Read(p []byte) (int, error)  { return d.r.Read(p) }
func (d hostileDest) Write(p []byte) (int, error) { return len(p), nil }

// recordingConn records what passes through Read.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	got bytes.Buffer
}

func (c *recordingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.got.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// destReplies runs a real migration of vm and returns every byte the
// destination wrote: a well-formed reply script.
func destReplies(f *testing.F, vm *migratetest.VM) []byte {
	src, dst := net.Pipe()
	defer src.Close()
	rec := &recordingConn{Conn: dst}
	done := make(chan error, 1)
	go func() {
		_, _, err := migrate.Receive(context.Background(), rec, (&migratetest.Factory{}).New, migrate.ReceiveOptions{})
		dst.Close()
		done <- err
	}()
	if _, err := migrate.Send(context.Background(), src, vm, migrate.Options{}); err != nil {
		f.Fatal(err)
	}
	src.Close()
	if err := <-done; err != nil {
		f.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]byte(nil), rec.got.Bytes()...)
}

// FuzzSend runs the source against a destination whose replies are the
// fuzz input (ACCEPT, REFUSE, ROUND_ACK, RESUMED, ERROR, or anything
// else). It must not panic or hang (a migration that runs into its
// timeout fails the target), and unless the replies end in RESUMED after
// a complete migration, Send fails and the source VM runs on, unpaused,
// without dirty logging or throttle.
func FuzzSend(f *testing.F) {
	seedVM, err := migratetest.New(sendFuzzRAM, 1)
	if err != nil {
		f.Fatal(err)
	}
	defer seedVM.Close()
	good := destReplies(f, seedVM)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(good[:len(good)/2])
	f.Add(migrate.AppendFrame(nil, 3, 0, []byte("no room for this VM")))
	f.Add(migrate.AppendFrame(nil, 10, 0, []byte("\x1b[2J")))
	f.Fuzz(func(t *testing.T, replies []byte) {
		vm, err := migratetest.New(sendFuzzRAM, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer vm.Close()
		st, err := migrate.Send(context.Background(), hostileDest{bytes.NewReader(replies)}, vm, migrate.Options{Timeout: 20 * time.Second})
		if errors.Is(err, migrate.ErrTimeout) {
			t.Fatalf("the migration hung until its timeout: %v", err)
		}
		if err == nil {
			if st.Status != migrate.StatusCompleted || !vm.Paused() {
				t.Fatalf("successful migration: status %q, source paused=%v", st.Status, vm.Paused())
			}
			return
		}
		if vm.Paused() || vm.Logging() || vm.Throttle() != 0 {
			t.Fatalf("source after %v: paused=%v logging=%v throttle=%d", err, vm.Paused(), vm.Logging(), vm.Throttle())
		}
		if st.Status != migrate.StatusFailed || st.Error == "" {
			t.Fatalf("failed migration with status %q, error %q", st.Status, st.Error)
		}
	})
}
