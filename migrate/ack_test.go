package migrate

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"godwit/vmm/memory"
)

// idleSource is a minimal Source: an idle guest over RAM, recording
// whether it is paused and logging.
type idleSource struct {
	mem     *memory.Memory
	mu      sync.Mutex
	paused  bool
	logging bool
}

func (v *idleSource) Config() ([]byte, error)        { return []byte("ok"), nil }
func (v *idleSource) Memory() *memory.Memory         { return v.mem }
func (v *idleSource) FetchDirty(int, []uint64) error { return nil }
func (v *idleSource) SaveState() ([]Section, error)  { return testSections, nil }
func (v *idleSource) SetThrottle(int)                {}
func (v *idleSource) StartDirtyLog() error           { v.set(&v.logging, true); return nil }
func (v *idleSource) StopDirtyLog() error            { v.set(&v.logging, false); return nil }
func (v *idleSource) Pause(context.Context) error    { v.set(&v.paused, true); return nil }
func (v *idleSource) Resume(context.Context) error   { v.set(&v.paused, false); return nil }
func (v *idleSource) set(b *bool, x bool)            { v.mu.Lock(); *b = x; v.mu.Unlock() }
func (v *idleSource) state() (paused, logging bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.paused, v.logging
}

// scriptedDest plays the destination: it answers HELLO with ACCEPT, and
// every other frame of the source with what reply returns (nil: nothing).
// It stops after sending RESUMED or ERROR, or when the source goes away.
func scriptedDest(conn net.Conn, reply func(f frame) []byte) {
	fr := newFrameReader(conn)
	for {
		f, err := fr.next()
		if err != nil {
			return
		}
		var out []byte
		if f.typ == frameHello {
			out = appendFrame(nil, frameAccept, 0, nil)
		} else {
			out = reply(f)
		}
		if len(out) == 0 {
			continue
		}
		if _, err := conn.Write(out); err != nil {
			return
		}
		if typ := frameType(out[0]) | frameType(out[1])<<8; len(out) >= 2 && (typ == frameResumed || typ == frameError) {
			return
		}
	}
}

func ackFrame(round uint32) []byte {
	return appendFrame(nil, frameRoundAck, 0, roundAck{round: round, applyNs: 1000}.appendVersion(nil, ProtocolVersion))
}

var resumedFrame = appendFrame(nil, frameResumed, 0, resumed{}.append(nil))

// TestSendRoundAcks checks the source's side of ROUND_ACK against a
// scripted, possibly hostile destination: acks must come in round order,
// only for ended rounds, all before RESUMED; a well-behaved destination
// completes the migration.
func TestSendRoundAcks(t *testing.T) {
	roundOf := func(f frame) uint32 {
		e, _ := parseRoundEnd(f.payload)
		return e.round
	}
	tests := []struct {
		name    string
		reply   func(f frame) []byte
		wantErr string // "" for success
	}{
		{name: "acks every round", reply: func(f frame) []byte {
			switch f.typ {
			case frameRoundEnd:
				return ackFrame(roundOf(f))
			case frameComplete:
				return resumedFrame
			}
			return nil
		}},
		{name: "two acks in one write", reply: func(f frame) []byte {
			switch f.typ {
			case frameRoundEnd:
				if roundOf(f) == 0 {
					return ackFrame(0)
				}
				return nil // the final round: acked with RESUMED
			case frameComplete:
				return append(ackFrame(1), resumedFrame...)
			}
			return nil
		}},
		{name: "ack before ROUND_END", reply: func(f frame) []byte {
			if f.typ == frameMemoryBegin {
				return ackFrame(0)
			}
			return nil
			// The source may read the early ack before or after it has
			// sent ROUND_END(0) (round 0 is small here): either way it
			// is refused, as premature or as a second ack of round 0.
		}, wantErr: "ROUND_ACK for round 0, "},
		{name: "ack of a future round", reply: func(f frame) []byte {
			if f.typ == frameRoundEnd {
				return ackFrame(roundOf(f) + 1)
			}
			return nil
		}, wantErr: "ROUND_ACK for round 1, whose ROUND_END was not sent"},
		{name: "duplicate ack", reply: func(f frame) []byte {
			if f.typ == frameRoundEnd {
				return append(ackFrame(0), ackFrame(0)...)
			}
			return nil
		}, wantErr: "ROUND_ACK for round 0, expected round 1"},
		{name: "ack out of order", reply: func(f frame) []byte {
			switch f.typ {
			case frameRoundEnd:
				if roundOf(f) == 0 {
					return ackFrame(0)
				}
			case frameComplete:
				return append(ackFrame(0), resumedFrame...)
			}
			return nil
		}, wantErr: "ROUND_ACK for round 0, expected round 1"},
		{name: "RESUMED without the final ack", reply: func(f frame) []byte {
			switch f.typ {
			case frameRoundEnd:
				if roundOf(f) == 0 {
					return ackFrame(0)
				}
			case frameComplete:
				return resumedFrame
			}
			return nil
		}, wantErr: "RESUMED before the ROUND_ACK of round 1"},
		{name: "malformed ack", reply: func(f frame) []byte {
			if f.typ == frameRoundEnd {
				return appendFrame(nil, frameRoundAck, 0, make([]byte, roundAckSize-1))
			}
			return nil
		}, wantErr: "ROUND_ACK frame length 11 outside"},
		{name: "ERROR instead of an ack", reply: func(f frame) []byte {
			if f.typ == frameRoundEnd {
				return appendFrame(nil, frameError, 0, []byte("out of memory"))
			}
			return nil
		}, wantErr: "out of memory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := &idleSource{mem: newTestMemory(t, destTestRAM)}
			src, dst := loopback(t)
			done := make(chan struct{})
			go func() {
				defer close(done)
				scriptedDest(dst, tt.reply)
				dst.Close()
			}()
			st, err := Send(context.Background(), src, vm, Options{})
			src.Close()
			<-done
			paused, logging := vm.state()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				if st.Rounds != 2 || st.FinalApplyMs != 1e-3 {
					t.Fatalf("stats %+v", st)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Send error %v, want it to contain %q", err, tt.wantErr)
			}
			if !strings.Contains(tt.wantErr, "out of memory") && !errors.Is(err, ErrProtocol) {
				t.Fatalf("Send error %v is not a protocol error", err)
			}
			if paused || logging || st.Status != StatusFailed {
				t.Fatalf("source after failure: paused=%v logging=%v status %q", paused, logging, st.Status)
			}
		})
	}
}

// loopback returns both ends of a loopback TCP connection, closed when the
// test ends. Unlike net.Pipe it buffers, so a scripted peer's reply does
// not block on a source that stopped reading.
func loopback(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestAssumeZeroed checks the written-page tracking: with zeroed RAM
// promised, a zero page never written costs nothing (junk placed behind
// the receiver's back survives, proving it was not touched), while a
// page written by an earlier batch is cleared; without the promise every
// zero page is cleared.
func TestAssumeZeroed(t *testing.T) {
	page := func(b byte) []byte { return bytes.Repeat([]byte{b}, pageSize) }
	tests := []struct {
		name   string
		zeroed bool
		rounds [][]byte // PAGE_BATCH payloads, one round each
		want   []byte   // first byte of pages 0..2 afterwards
	}{
		{name: "untouched zero page skipped", zeroed: true,
			rounds: [][]byte{batchPayload(0, 0, 3, []byte{7}, []byte{7})},
			want:   []byte{0xee, 0xee, 0xee}},
		{name: "written then zero is cleared", zeroed: true,
			rounds: [][]byte{
				batchPayload(0, 0, 2, []byte{3}, []byte{0}, pageRec(encRaw, page(1)), pageRec(encRaw, page(2))),
				batchPayload(0, 0, 3, []byte{7}, []byte{7}),
			},
			want: []byte{0, 0, 0xee}},
		{name: "cleared page is not cleared twice", zeroed: true,
			rounds: [][]byte{
				batchPayload(0, 1, 1, []byte{1}, []byte{0}, pageRec(encRaw, page(5))),
				batchPayload(0, 1, 1, []byte{1}, []byte{1}),
				batchPayload(0, 1, 1, []byte{1}, []byte{1}),
			},
			want: []byte{0xee, 0xee, 0xee}},
		{name: "no promise: every zero page cleared", zeroed: false,
			rounds: [][]byte{batchPayload(0, 0, 3, []byte{7}, []byte{5}, pageRec(encRaw, page(9)))},
			want:   []byte{0, 9, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := newTestMemory(t, destTestRAM)
			host := mem.RegionHost(0)
			sink := newBatchSink(mem, tt.zeroed)
			for i, p := range tt.rounds {
				if i == len(tt.rounds)-1 {
					// Junk behind the receiver's back on zero pages
					// before the last round: only pages it clears
					// lose it.
					for pg := 0; pg < 3; pg++ {
						if host[pg*pageSize] == 0 {
							host[pg*pageSize] = 0xee
						}
					}
				}
				sink.newRound()
				if _, err := sink.apply(p); err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
			}
			for pg, w := range tt.want {
				if got := host[pg*pageSize]; got != w {
					t.Errorf("page %d starts with %#x, want %#x", pg, got, w)
				}
			}
		})
	}
}

// TestWaitAckSeesPeerEnd checks that a writer waiting for a ROUND_ACK
// returns the reader's error once the reader ends: peerDone makes the
// result available before it wakes the waiter, so the woken waitAck
// finds it rather than waiting again (until the migration's timeout).
func TestWaitAckSeesPeerEnd(t *testing.T) {
	for i := 0; i < 200; i++ {
		s := &sender{ctx: context.Background(), peer: make(chan peerResult, 1)}
		s.acks.init()
		want := errors.New("reading from the destination: connection reset")
		got := make(chan error, 1)
		go func() {
			_, _, err := s.waitAck(0)
			got <- err
		}()
		s.peerDone(peerResult{err: want})
		if err := <-got; !errors.Is(err, want) {
			t.Fatalf("iteration %d: waitAck returned %v, want %v", i, err, want)
		}
	}
}

// TestFreshPagesPopulated checks which pages of a batch the receiver
// populates before writing them: with zeroed RAM promised, the data pages
// no earlier batch wrote, and populating allocates them; nothing else of
// RAM (a page in another 2 MiB, so that shmem huge pages do not blur it)
// gets allocated.
func TestFreshPagesPopulated(t *testing.T) {
	raw := pageRec(encRaw, bytes.Repeat([]byte{1}, pageSize))
	// batch returns a PAGE_BATCH of pages 0-15, those in data carrying raw
	// pages and the others zero.
	batch := func(data ...int) []byte {
		zero := []byte{0xff, 0xff}
		var recs [][]byte
		for _, p := range data {
			zero[p/8] &^= 1 << (p % 8)
			recs = append(recs, raw)
		}
		return batchPayload(0, 0, 16, []byte{0xff, 0xff}, zero, recs...)
	}
	tests := []struct {
		name      string
		zeroed    bool
		earlier   []byte // an earlier round's batch, applied; nil for none
		last      []byte
		wantFresh []int
	}{
		{name: "fresh RAM", zeroed: true, last: batch(1, 2, 5), wantFresh: []int{1, 2, 5}},
		{name: "pages written before are not fresh", zeroed: true, earlier: batch(1, 2), last: batch(1, 2, 5, 6), wantFresh: []int{5, 6}},
		{name: "no promise: nothing is fresh", zeroed: false, last: batch(1, 5)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const pages = 1024
			mem := newTestMemory(t, pages*pageSize)
			sink := newBatchSink(mem, tt.zeroed)
			if tt.earlier != nil {
				sink.newRound()
				if _, err := sink.apply(tt.earlier); err != nil {
					t.Fatal(err)
				}
			}
			sink.newRound()
			var b preparedBatch
			if _, err := sink.prepare(tt.last, &b); err != nil {
				t.Fatal(err)
			}
			var got []int
			for i := 0; i < b.count; i++ {
				if b.fresh[i/64]&(1<<(i%64)) != 0 {
					got = append(got, i)
				}
			}
			if !slices.Equal(got, tt.wantFresh) {
				t.Fatalf("fresh pages %v, want %v", got, tt.wantFresh)
			}
			sink.populate(&b)
			allocated := make([]uint64, pages/64)
			if _, err := mem.DataPages(0, 0, pages, allocated); err != nil {
				t.Fatal(err)
			}
			if !sink.noPopulate.Load() {
				for _, p := range got {
					if allocated[p/64]&(1<<(p%64)) == 0 {
						t.Errorf("fresh page %d not allocated by populate", p)
					}
				}
			}
			if far := pages - 1; allocated[far/64]&(1<<(far%64)) != 0 {
				t.Errorf("page %d allocated; nothing was sent for it", far)
			}
		})
	}
}
