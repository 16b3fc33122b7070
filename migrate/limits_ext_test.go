package migrate_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"godwit/migrate"
	"godwit/migrate/migratetest"
)

// closeOnly hides a connection's deadlines: the receiver can only close
// it to end a stalled read or write.
type closeOnly struct{ c net.Conn }

func (c closeOnly) Read(p []byte) (int, error)  { return c.c.Read(p) }
func (c closeOnly) Write(p []byte) (int, error) { return c.c.Write(p) }
func (c closeOnly) Close() error                { return c.c.Close() }

// hangBound bounds a Receive that should time out after 100ms: reaching it
// means the receiver hung.
const hangBound = 20 * time.Second

// TestReceiveIdleTimeout: a source that stalls anywhere — before HELLO,
// inside a frame, between rounds, or by not reading what the receiver
// writes — fails the migration with ErrTimeout after the idle timeout,
// on connections with deadlines and on ones the receiver can only close.
func TestReceiveIdleTimeout(t *testing.T) {
	vm, err := migratetest.New(2<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	cfg, err := vm.Config()
	if err != nil {
		t.Fatal(err)
	}
	payload, err := migrate.HelloPayload(migrate.MinProtocolVersion, vm.Memory().Regions(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	hello := migrate.AppendFrame(nil, migrate.FrameHello, 0, payload)
	readAccept := func(t *testing.T, src net.Conn) {
		typ, _, _, err := migrate.ReadFrame(src)
		if err != nil || typ != migrate.FrameAccept {
			t.Errorf("the receiver answered %s, %v; want ACCEPT", migrate.FrameName(typ), err)
		}
	}
	stalls := []struct {
		name   string
		source func(t *testing.T, src net.Conn) // returns once the source stalls
		state  string
	}{
		{"silent before HELLO", func(*testing.T, net.Conn) {}, "WaitHello"},
		{"inside HELLO", func(t *testing.T, src net.Conn) { src.Write(hello[:len(hello)/2]) }, "WaitHello"},
		{"between rounds", func(t *testing.T, src net.Conn) {
			src.Write(hello)
			readAccept(t, src)
		}, "WaitMemory"},
		{"inside a round", func(t *testing.T, src net.Conn) {
			src.Write(hello)
			readAccept(t, src)
			src.Write(migrate.AppendFrame(nil, migrate.FrameMemoryBegin, 0, []byte{0, 0, 0, 0}))
		}, "InRound"},
		{"never reading", func(t *testing.T, src net.Conn) { src.Write(hello) }, "read nothing"},
	}
	conns := []struct {
		name string
		wrap func(net.Conn) io.ReadWriter
	}{
		{"deadlines", func(c net.Conn) io.ReadWriter { return c }},
		{"close only", func(c net.Conn) io.ReadWriter { return closeOnly{c} }},
	}
	for _, c := range conns {
		for _, st := range stalls {
			t.Run(c.name+"/"+st.name, func(t *testing.T) {
				src, dst := net.Pipe()
				defer src.Close()
				defer dst.Close()
				f := &migratetest.Factory{}
				done := make(chan error, 1)
				start := time.Now()
				go func() {
					_, _, err := migrate.Receive(context.Background(), c.wrap(dst), f.New, migrate.ReceiveOptions{IdleTimeout: 100 * time.Millisecond})
					done <- err
				}()
				st.source(t, src)
				select {
				case err := <-done:
					if !errors.Is(err, migrate.ErrTimeout) || !strings.Contains(err.Error(), st.state) {
						t.Fatalf("Receive = %v, want ErrTimeout mentioning %q", err, st.state)
					}
					t.Logf("timed out after %v: %v", time.Since(start), err)
				case <-time.After(hangBound):
					t.Fatalf("Receive still running after %v: a stalled source hangs it", hangBound)
				}
				for _, tgt := range f.Targets() {
					if !tgt.Discarded() {
						t.Error("a target was left undiscarded")
					}
				}
			})
		}
	}
}

// stateBoundedFactory makes fake targets that declare a bound on their
// state.
type stateBoundedFactory struct {
	f   *migratetest.Factory
	max int
}

type stateBoundedTarget struct {
	migrate.Target
	max int
}

func (t stateBoundedTarget) MaxStateBytes() int { return t.max }

func (b stateBoundedFactory) New(cfg []byte) (migrate.Target, error) {
	t, err := b.f.New(cfg)
	if err != nil {
		return nil, err
	}
	return stateBoundedTarget{t, b.max}, nil
}

// TestReceiveStateBound migrates the fake VM to a destination whose
// targets declare a state bound (migrate.StateBounder): below what the VM
// saves, the destination refuses the state from the STATE frame's header
// and the source keeps running; at the bound, the migration succeeds.
func TestReceiveStateBound(t *testing.T) {
	vm := newVM(t)
	state, err := func() (int, error) {
		if err := vm.Pause(context.Background()); err != nil {
			return 0, err
		}
		defer vm.Resume(context.Background())
		s, err := vm.SaveState()
		n := 4
		for _, sec := range s {
			n += 2 + len(sec.ID) + 4 + 4 + len(sec.Data)
		}
		return n, err
	}()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		max     int
		wantErr string
	}{
		{"too small", state - 1, "VM state exceeds"},
		{"exact", state, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src, dst := pipePair(t)
			b := stateBoundedFactory{f: &migratetest.Factory{}, max: tt.max}
			var destErr error
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _, destErr = migrate.Receive(context.Background(), dst, b.New, migrate.ReceiveOptions{})
				dst.Close()
			}()
			st, err := migrate.Send(context.Background(), src, vm, migrate.Options{})
			src.Close()
			<-done
			if tt.wantErr == "" {
				if err != nil || destErr != nil {
					t.Fatalf("Send: %v; Receive: %v", err, destErr)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || destErr == nil {
				t.Fatalf("Send: %v; Receive: %v; want both to fail with %q", err, destErr, tt.wantErr)
			}
			checkSourceIntact(t, vm, st)
		})
	}
}
