package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit/migrate"
	"godwit/migrate/migratetest"
)

const testRAM = 8 << 20

// connPair returns two connected ends, closed when the test ends.
type connPair func(tb testing.TB) (src, dst net.Conn)

func pipePair(tb testing.TB) (net.Conn, net.Conn) {
	a, b := net.Pipe()
	tb.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func tcpPair(tb testing.TB) (net.Conn, net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		tb.Fatal(r.err)
	}
	tb.Cleanup(func() { a.Close(); r.c.Close() })
	return a, r.c
}

var transports = []struct {
	name string
	pair connPair
}{{"pipe", pipePair}, {"tcp", tcpPair}}

func newVM(tb testing.TB) *migratetest.VM {
	tb.Helper()
	vm, err := migratetest.New(testRAM, 2)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { vm.Close() })
	return vm
}

// result is the outcome of both sides of one migration.
type result struct {
	stats     migrate.Stats
	err       error
	target    migrate.Target
	destStats migrate.DestStats
	destErr   error
}

// migrate runs Receive on dst in a goroutine and Send on src, and closes
// both ends once both sides returned.
func migrateOnce(ctx, destCtx context.Context, src, dst net.Conn, vm migrate.Source, f *migratetest.Factory, opts migrate.Options) result {
	return migrateOnceWith(ctx, destCtx, src, dst, vm, f, opts, migrate.ReceiveOptions{})
}

// migrateOnceWith is migrateOnce with the receiver's options.
func migrateOnceWith(ctx, destCtx context.Context, src, dst net.Conn, vm migrate.Source, f *migratetest.Factory, opts migrate.Options, ropts migrate.ReceiveOptions) result {
	var r result
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.target, r.destStats, r.destErr = migrate.Receive(destCtx, dst, f.New, ropts)
		if r.destErr != nil {
			dst.Close()
		}
	}()
	r.stats, r.err = migrate.Send(ctx, src, vm, opts)
	src.Close()
	wg.Wait()
	dst.Close()
	return r
}

// checkSuccess asserts a completed migration: the destination holds the
// source's RAM at pause time and its state, the source stays paused.
func checkSuccess(t *testing.T, vm *migratetest.VM, r result) *migratetest.Target {
	t.Helper()
	if r.err != nil || r.destErr != nil {
		t.Fatalf("Send: %v; Receive: %v", r.err, r.destErr)
	}
	tgt := r.target.(*migratetest.Target)
	if err := migratetest.CompareMemory(vm.Memory(), tgt.Memory()); err != nil {
		t.Fatalf("destination RAM differs from the source at pause time: %v", err)
	}
	want, err := vm.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if got := tgt.Sections(); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored sections %+v, want %+v", got, want)
	}
	if !tgt.Started() || tgt.Discarded() {
		t.Fatalf("target started=%v discarded=%v", tgt.Started(), tgt.Discarded())
	}
	if !vm.Paused() || vm.Logging() || vm.Throttle() != 0 {
		t.Fatalf("source paused=%v logging=%v throttle=%d after success", vm.Paused(), vm.Logging(), vm.Throttle())
	}
	if r.stats.Status != migrate.StatusCompleted || r.destStats.Status != migrate.StatusCompleted {
		t.Fatalf("status %q / %q", r.stats.Status, r.destStats.Status)
	}
	if r.stats.Rounds < 2 || r.stats.Rounds != r.destStats.Rounds {
		t.Fatalf("rounds: source %d, destination %d", r.stats.Rounds, r.destStats.Rounds)
	}
	if r.stats.Pages != r.destStats.Pages {
		t.Fatalf("pages: source %+v, destination %+v", r.stats.Pages, r.destStats.Pages)
	}
	if p := r.stats.Pages; p.Normal+p.Zero+p.Compressed < testRAM/4096 {
		t.Fatalf("sent %+v pages, RAM has %d", p, testRAM/4096)
	}
	if r.stats.TransferredBytes != r.destStats.ReceivedBytes {
		t.Fatalf("sent %d bytes, received %d", r.stats.TransferredBytes, r.destStats.ReceivedBytes)
	}
	return tgt
}

// checkSourceIntact asserts the source runs on as before a failed
// migration.
func checkSourceIntact(t *testing.T, vm *migratetest.VM, st migrate.Stats) {
	t.Helper()
	if vm.Paused() || vm.Logging() || vm.Throttle() != 0 {
		t.Fatalf("source after failure: paused=%v logging=%v throttle=%d", vm.Paused(), vm.Logging(), vm.Throttle())
	}
	if vm.Calls(migratetest.OpStartDirtyLog) > vm.Calls(migratetest.OpStopDirtyLog) {
		t.Fatalf("dirty log started %d times, stopped %d", vm.Calls(migratetest.OpStartDirtyLog), vm.Calls(migratetest.OpStopDirtyLog))
	}
	if st.Status != migrate.StatusFailed && st.Status != migrate.StatusCancelled {
		t.Fatalf("status %q after failure", st.Status)
	}
	if st.Error == "" {
		t.Fatal("failed migration without an error in its stats")
	}
}

// migrateAgain checks the source can still migrate after a failure.
func migrateAgain(t *testing.T, vm *migratetest.VM, pair connPair) {
	t.Helper()
	src, dst := pair(t)
	r := migrateOnce(context.Background(), context.Background(), src, dst, vm, &migratetest.Factory{}, migrate.Options{})
	checkSuccess(t, vm, r)
}

func TestMigrate(t *testing.T) {
	guests := []struct {
		name string
		set  func(vm *migratetest.VM)
		run  bool // dirty concurrently from a goroutine
	}{
		{name: "idle"},
		{name: "dirty per round", set: func(vm *migratetest.VM) { vm.DirtyPerRound = 300 }},
		{name: "concurrent guest", run: true},
		{name: "manual dirty log", set: func(vm *migratetest.VM) { vm.ManualDirty, vm.DirtyPerRound = true, 300 }},
		{name: "manual dirty log, concurrent guest", set: func(vm *migratetest.VM) { vm.ManualDirty = true }, run: true},
	}
	for _, tr := range transports {
		for _, comp := range []migrate.Compression{migrate.CompressionNone, migrate.CompressionLZ4} {
			for _, g := range guests {
				t.Run(tr.name+"/"+comp.String()+"/"+g.name, func(t *testing.T) {
					vm := newVM(t)
					if g.set != nil {
						g.set(vm)
					}
					var wg sync.WaitGroup
					stop := func() {}
					if g.run {
						ctx, cancel := context.WithCancel(context.Background())
						stop = func() { cancel(); wg.Wait() }
						wg.Add(1)
						go func() { defer wg.Done(); vm.RunGuest(ctx, 8) }()
					}
					var traces []migrate.RoundRecord
					var progress []migrate.Progress
					src, dst := tr.pair(t)
					r := migrateOnce(context.Background(), context.Background(), src, dst, vm, &migratetest.Factory{}, migrate.Options{
						Compression: comp,
						Trace:       func(rt migrate.RoundRecord) { traces = append(traces, rt) },
						Progress:    func(p migrate.Progress) { progress = append(progress, p) },
					})
					stop()
					checkSuccess(t, vm, r)
					if len(traces) != r.stats.Rounds || !traces[len(traces)-1].Paused {
						t.Fatalf("%d traces for %d rounds", len(traces), r.stats.Rounds)
					}
					if traces[0].PagesSent != testRAM/4096 || traces[0].Decision == "" {
						t.Fatalf("round 0 trace %+v", traces[0])
					}
					if len(progress) != r.stats.Rounds || progress[0].TotalPages != testRAM/4096 {
						t.Fatalf("progress %+v", progress)
					}
					if comp == migrate.CompressionLZ4 && r.stats.Pages.Compressed == 0 {
						t.Fatal("LZ4 compressed no page of text-like RAM")
					}
					if comp == migrate.CompressionNone && r.stats.Pages.Compressed != 0 {
						t.Fatal("compressed pages without compression")
					}
					// A manual log is re-armed stretch by stretch in
					// every running round, never in the paused one.
					if clears := vm.Calls(migratetest.OpClearDirty); vm.ManualDirty != (clears > 0) {
						t.Fatalf("%d ClearDirty calls with ManualDirty %v", clears, vm.ManualDirty)
					}
				})
			}
		}
	}
}

// TestMigrateSparseRAM migrates a guest whose RAM is mostly holes of its
// memfd, with and without a manual dirty log: round 0 sends the holes as
// zero pages without reading them, and a hole the guest writes after the
// scan (every round dirties pages) is sent in a later round.
func TestMigrateSparseRAM(t *testing.T) {
	for _, manual := range []bool{false, true} {
		t.Run(fmt.Sprintf("manual=%v", manual), func(t *testing.T) {
			vm, err := migratetest.NewEmpty(testRAM, 1)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { vm.Close() })
			vm.ManualDirty, vm.DirtyPerRound = manual, 50
			vm.Tick(200)
			src, dst := tcpPair(t)
			r := migrateOnce(context.Background(), context.Background(), src, dst, vm, &migratetest.Factory{}, migrate.Options{Compression: migrate.CompressionLZ4})
			checkSuccess(t, vm, r)
			if r.stats.Pages.Zero < testRAM/4096/2 {
				t.Fatalf("pages %+v: the unwritten half of RAM did not go as zero pages", r.stats.Pages)
			}
		})
	}
}

func TestAutoConverge(t *testing.T) {
	tests := []struct {
		name         string
		opts         migrate.Options
		wantThrottle int
		wantRounds   int // 0: any
	}{
		{
			// A guest dirtying 50 pages a round never gets under a 1ns
			// target until the throttle reaches 99% (50×1% = 0 pages).
			name:         "throttles up to convergence",
			opts:         migrate.Options{DowntimeTarget: 1, AutoConverge: true, MaxRounds: 200},
			wantThrottle: migrate.ThrottleMax,
		},
		{
			name:       "round limit without auto-converge",
			opts:       migrate.Options{DowntimeTarget: 1, MaxRounds: 5},
			wantRounds: 6, // 5 iterative rounds and the final one
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := newVM(t)
			vm.DirtyPerRound = 50
			var decisions []string
			tt.opts.Trace = func(rt migrate.RoundRecord) { decisions = append(decisions, rt.Decision) }
			src, dst := pipePair(t)
			r := migrateOnce(context.Background(), context.Background(), src, dst, vm, &migratetest.Factory{}, tt.opts)
			checkSuccess(t, vm, r)
			if r.stats.ThrottlePct != tt.wantThrottle {
				t.Fatalf("throttle reached %d%%, want %d%% (decisions %v)", r.stats.ThrottlePct, tt.wantThrottle, decisions)
			}
			if tt.wantRounds != 0 && r.stats.Rounds != tt.wantRounds {
				t.Fatalf("%d rounds, want %d", r.stats.Rounds, tt.wantRounds)
			}
			throttles := strings.Count(strings.Join(decisions, ","), "throttle")
			if (tt.wantThrottle > 0) != (throttles > 0) {
				t.Fatalf("decisions %v", decisions)
			}
		})
	}
}

func TestRefusedConfig(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			vm := newVM(t)
			src, dst := tr.pair(t)
			r := migrateOnce(context.Background(), context.Background(), src, dst, vm, &migratetest.Factory{MaxMemory: 4 << 20}, migrate.Options{})
			want := "VM needs 8 MiB of RAM, this host allows 4 MiB"
			if !errors.Is(r.err, migrate.ErrRefused) || !strings.Contains(r.err.Error(), want) {
				t.Fatalf("Send error %v, want the factory's %q", r.err, want)
			}
			if r.destErr == nil || !strings.Contains(r.destErr.Error(), want) {
				t.Fatalf("Receive error %v", r.destErr)
			}
			checkSourceIntact(t, vm, r.stats)
			if n := vm.Calls(migratetest.OpStartDirtyLog); n != 0 {
				t.Fatalf("dirty log started %d times before ACCEPT", n)
			}
			migrateAgain(t, vm, tr.pair)
		})
	}
}

// cutConn is the destination's end: after limit bytes, a read runs cut
// (which closes the connection or cancels a context) and fails.
type cutConn struct {
	net.Conn
	mu    sync.Mutex
	limit int
	cut   func()
}

func (c *cutConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.limit <= 0 {
		c.mu.Unlock()
		c.cut()
		return 0, io.ErrClosedPipe
	}
	if len(p) > c.limit {
		p = p[:c.limit]
	}
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.limit -= n
	c.mu.Unlock()
	return n, err
}

func TestDestinationDies(t *testing.T) {
	phases := []struct {
		name  string
		limit int  // bytes the destination reads before dying
		pause bool // die when the source pauses instead
	}{
		{name: "during handshake", limit: 10},
		{name: "mid round 0", limit: 1 << 20},
		{name: "after pause", pause: true},
	}
	for _, tr := range transports {
		for _, ph := range phases {
			t.Run(tr.name+"/"+ph.name, func(t *testing.T) {
				vm := newVM(t)
				src, dst := tr.pair(t)
				limit := ph.limit
				if ph.pause {
					limit = 1 << 40
					vm.OnPause = func() { dst.Close() }
				}
				cc := &cutConn{Conn: dst, limit: limit, cut: func() { dst.Close() }}
				var wg sync.WaitGroup
				wg.Add(1)
				var destErr error
				f := &migratetest.Factory{}
				go func() {
					defer wg.Done()
					_, _, destErr = migrate.Receive(context.Background(), cc, f.New, migrate.ReceiveOptions{})
					dst.Close()
				}()
				st, err := migrate.Send(context.Background(), src, vm, migrate.Options{})
				src.Close()
				wg.Wait()
				if err == nil || destErr == nil {
					t.Fatalf("Send: %v; Receive: %v", err, destErr)
				}
				checkSourceIntact(t, vm, st)
				if ph.pause && vm.Calls(migratetest.OpResume) != 1 {
					t.Fatalf("Resume called %d times", vm.Calls(migratetest.OpResume))
				}
				for _, tgt := range f.Targets() {
					if !tgt.Discarded() || tgt.Started() {
						t.Fatal("destination target not discarded")
					}
				}
				vm.OnPause = nil
				migrateAgain(t, vm, tr.pair)
			})
		}
	}
}

func TestCancel(t *testing.T) {
	type hooks struct {
		vm      *migratetest.VM
		f       *migratetest.Factory
		opts    *migrate.Options
		cancel  context.CancelFunc // the source's
		dcancel context.CancelFunc // the destination's
		dst     net.Conn
	}
	tests := []struct {
		name      string
		setup     func(h *hooks)
		wantErr   error
		destFirst bool // the destination's cancellation: source sees its ERROR
	}{
		{name: "source: after round 0", wantErr: context.Canceled, setup: func(h *hooks) {
			h.opts.Progress = func(p migrate.Progress) { h.cancel() }
		}},
		{name: "source: while pausing", wantErr: context.Canceled, setup: func(h *hooks) {
			h.vm.OnPause = h.cancel
		}},
		{name: "destination: mid round", wantErr: migrate.ErrPeerAborted, destFirst: true, setup: func(h *hooks) {
			h.dst = &cutConn{Conn: h.dst, limit: 1 << 20, cut: h.dcancel}
		}},
		{name: "destination: between rounds", wantErr: migrate.ErrPeerAborted, destFirst: true, setup: func(h *hooks) {
			h.opts.Progress = func(p migrate.Progress) { h.dcancel() }
		}},
	}
	for _, tr := range transports {
		for _, tt := range tests {
			t.Run(tr.name+"/"+tt.name, func(t *testing.T) {
				vm := newVM(t)
				src, dst := tr.pair(t)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				dctx, dcancel := context.WithCancel(context.Background())
				defer dcancel()
				h := &hooks{vm: vm, f: &migratetest.Factory{}, opts: &migrate.Options{}, cancel: cancel, dcancel: dcancel, dst: dst}
				tt.setup(h)
				var wg sync.WaitGroup
				wg.Add(1)
				var destErr error
				go func() {
					defer wg.Done()
					_, _, destErr = migrate.Receive(dctx, h.dst, h.f.New, migrate.ReceiveOptions{})
					dst.Close()
				}()
				st, err := migrate.Send(ctx, src, vm, *h.opts)
				src.Close()
				wg.Wait()
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Send error %v, want %v", err, tt.wantErr)
				}
				if destErr == nil {
					t.Fatal("destination succeeded")
				}
				if tt.destFirst && !errors.Is(destErr, context.Canceled) {
					t.Fatalf("Receive error %v, want cancellation", destErr)
				}
				if tt.destFirst && !strings.Contains(err.Error(), "context canceled") {
					t.Fatalf("source error %v does not carry the destination's reason", err)
				}
				checkSourceIntact(t, vm, st)
				for _, tgt := range h.f.Targets() {
					if !tgt.Discarded() {
						t.Fatal("destination target not discarded")
					}
				}
			})
		}
	}
}

// TestTimeouts checks both sides give up on a silent peer. The timeouts
// are what is tested; no assertion depends on how long anything took.
// TestCancelAfterComplete checks cancellation past the point of no
// return: once COMPLETE is sent, Send ignores ctx and the migration
// completes, so the guest never runs on both sides.
func TestCancelAfterComplete(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			vm := newVM(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f := &migratetest.Factory{OnStart: func(context.Context) { cancel() }}
			src, dst := tr.pair(t)
			r := migrateOnce(ctx, context.Background(), src, dst, vm, f, migrate.Options{})
			if ctx.Err() == nil {
				t.Fatal("the hook did not cancel")
			}
			checkSuccess(t, vm, r)
		})
	}
}

func TestTimeouts(t *testing.T) {
	t.Run("source timeout with a silent destination", func(t *testing.T) {
		vm := newVM(t)
		src, dst := pipePair(t)
		go io.Copy(io.Discard, dst)
		st, err := migrate.Send(context.Background(), src, vm, migrate.Options{Timeout: 20 * time.Millisecond})
		if !errors.Is(err, migrate.ErrTimeout) {
			t.Fatalf("Send error %v, want ErrTimeout", err)
		}
		checkSourceIntact(t, vm, st)
	})
	sides := []struct {
		name string
		wrap func(c net.Conn) io.ReadWriter
	}{
		{name: "deadlines", wrap: func(c net.Conn) io.ReadWriter { return c }},
		{name: "close watchdog", wrap: func(c net.Conn) io.ReadWriter {
			return struct {
				io.Reader
				io.Writer
				io.Closer
			}{c, c, c}
		}},
	}
	for _, s := range sides {
		t.Run("destination idle timeout/"+s.name, func(t *testing.T) {
			src, dst := pipePair(t)
			go io.Copy(io.Discard, src) // a source that sends nothing
			tgt, st, err := migrate.Receive(context.Background(), s.wrap(dst), (&migratetest.Factory{}).New,
				migrate.ReceiveOptions{IdleTimeout: 20 * time.Millisecond})
			if !errors.Is(err, migrate.ErrTimeout) || tgt != nil || st.Status != migrate.StatusFailed {
				t.Fatalf("Receive = %v, %v, %q; want ErrTimeout", tgt, err, st.Status)
			}
		})
	}
}

func TestSourceFailures(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		op      migratetest.Op
		manual  bool // a manual dirty log (migrate.DirtyClearer)
		wantErr string
	}{
		{migratetest.OpConfig, false, "reading the VM configuration"},
		{migratetest.OpStartDirtyLog, false, "starting the dirty log"},
		{migratetest.OpFetchDirty, false, "fetching the dirty log"},
		{migratetest.OpPause, false, "pausing the VM"},
		{migratetest.OpSaveState, false, "saving the VM state"},
		{migratetest.OpClearDirty, true, "re-arming the dirty log"},
		{migratetest.OpSaveState, true, "saving the VM state"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/manual=%v", tt.op, tt.manual), func(t *testing.T) {
			vm := newVM(t)
			vm.ManualDirty = tt.manual
			vm.Fail = func(op migratetest.Op) error {
				if op == tt.op {
					return boom
				}
				return nil
			}
			src, dst := pipePair(t)
			f := &migratetest.Factory{}
			r := migrateOnce(context.Background(), context.Background(), src, dst, vm, f, migrate.Options{})
			if !errors.Is(r.err, boom) || !strings.Contains(r.err.Error(), tt.wantErr) {
				t.Fatalf("Send error %v, want %q", r.err, tt.wantErr)
			}
			checkSourceIntact(t, vm, r.stats)
			if tt.op != migratetest.OpConfig && (r.destErr == nil || !strings.Contains(r.destErr.Error(), "boom")) {
				t.Fatalf("destination error %v does not carry the source's reason", r.destErr)
			}
			vm.Fail = nil
			migrateAgain(t, vm, pipePair)
		})
	}
}

func TestTargetFailures(t *testing.T) {
	tests := []migratetest.Op{migratetest.OpRestoreState, migratetest.OpStart}
	for _, op := range tests {
		t.Run(string(op), func(t *testing.T) {
			vm := newVM(t)
			f := &migratetest.Factory{Fail: func(o migratetest.Op) error {
				if o == op {
					return errors.New("device rejected its state")
				}
				return nil
			}}
			src, dst := pipePair(t)
			r := migrateOnce(context.Background(), context.Background(), src, dst, vm, f, migrate.Options{})
			if !errors.Is(r.err, migrate.ErrPeerAborted) || !strings.Contains(r.err.Error(), "device rejected its state") {
				t.Fatalf("Send error %v", r.err)
			}
			checkSourceIntact(t, vm, r.stats)
			if vm.Calls(migratetest.OpResume) != 1 {
				t.Fatal("source not resumed")
			}
			if tg := f.Targets(); len(tg) != 1 || !tg[0].Discarded() {
				t.Fatal("target not discarded")
			}
		})
	}
}
