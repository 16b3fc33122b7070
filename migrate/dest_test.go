package migrate

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"godwit/vmm/memory"
)

const destTestRAM = 2 << 20

var testSections = []Section{{ID: "vcpu/0", Version: 1, Data: []byte("regs")}, {ID: "dev/rng", Version: 2}}

// sourceRAM returns RAM with recognisable content.
func sourceRAM(tb testing.TB) *memory.Memory {
	m := newTestMemory(tb, destTestRAM)
	h := m.RegionHost(0)
	for i := 0; i < len(h); i += 3 * pageSize {
		copy(h[i:], "page content")
	}
	return m
}

// prefixes bring a receiver into each state.
func prefixes(src *memory.Memory) map[recvState]func(s *stream) {
	fullRound := func(s *stream) {
		s.hello(src, "ok").begin(0)
		n := s.allPages(src, CompressionLZ4)
		s.end(0, n)
	}
	state, _ := encodeState(testSections)
	return map[recvState]func(s *stream){
		stateWaitHello:     func(s *stream) {},
		stateWaitMemory:    func(s *stream) { s.hello(src, "ok") },
		stateInRound:       func(s *stream) { s.hello(src, "ok").begin(0) },
		stateBetweenRounds: fullRound,
		stateWaitState: func(s *stream) {
			fullRound(s)
			s.frame(frameState, 0, state)
		},
	}
}

// receiveScript runs Receive over a fixed stream.
func receiveScript(t *testing.T, in []byte, tgt *testTarget) (*scriptConn, Target, error) {
	t.Helper()
	conn := &scriptConn{r: bytes.NewReader(in)}
	got, _, err := Receive(context.Background(), conn, factoryFor(tgt), ReceiveOptions{})
	return conn, got, err
}

func TestReceiveHappyPath(t *testing.T) {
	tests := []struct {
		name   string
		comp   Compression
		rounds int
		chunks int
	}{
		{name: "one round raw", comp: CompressionNone, rounds: 1},
		{name: "three rounds lz4", comp: CompressionLZ4, rounds: 3},
		{name: "state in chunks", comp: CompressionLZ4, rounds: 2, chunks: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := sourceRAM(t)
			var s stream
			s.hello(src, "ok")
			for r := 0; r < tt.rounds; r++ {
				s.begin(uint32(r))
				n := s.allPages(src, tt.comp)
				s.end(uint32(r), n)
			}
			state, _ := encodeState(testSections)
			if tt.chunks > 0 {
				step := len(state)/tt.chunks + 1
				for off := 0; off < len(state); off += step {
					var flags uint16
					if off+step < len(state) {
						flags = flagMore
					}
					s.frame(frameState, flags, state[off:min(off+step, len(state))])
				}
			} else {
				s.frame(frameState, 0, state)
			}
			s.frame(frameComplete, 0, nil)
			tgt := &testTarget{mem: newTestMemory(t, destTestRAM)}
			conn, got, err := receiveScript(t, s.Bytes(), tgt)
			if err != nil {
				t.Fatalf("Receive: %v", err)
			}
			if got != tgt || !tgt.started || tgt.discarded {
				t.Fatalf("target %v started=%v discarded=%v", got, tgt.started, tgt.discarded)
			}
			if !bytes.Equal(src.RegionHost(0), tgt.mem.RegionHost(0)) {
				t.Fatal("destination RAM differs from the source")
			}
			if len(tgt.sections) != 2 || tgt.sections[0].ID != "vcpu/0" || string(tgt.sections[0].Data) != "regs" {
				t.Fatalf("restored sections %+v", tgt.sections)
			}
			// ACCEPT, a ROUND_ACK per round in order, RESUMED.
			replies := conn.replies(t)
			if len(replies) != tt.rounds+2 || replies[0].typ != frameAccept || replies[len(replies)-1].typ != frameResumed {
				t.Fatalf("replies %v", replies)
			}
			for r, f := range replies[1 : tt.rounds+1] {
				a, err := parseRoundAckVersion(f.payload, MinProtocolVersion) // the version the stream spoke
				if f.typ != frameRoundAck || err != nil || a.round != uint32(r) {
					t.Fatalf("reply %d: %v %+v %v, want ROUND_ACK(%d)", r+1, f.typ, a, err, r)
				}
			}
		})
	}
}

func TestReceiveRejectsOutOfOrder(t *testing.T) {
	src := sourceRAM(t)
	one := &stream{}
	one.allPages(src, CompressionNone)
	batchFrame := func() []byte { // first PAGE_BATCH of the full copy
		f, _ := newFrameReader(bytes.NewReader(one.Bytes())).next()
		return appendFrame(nil, framePageBatch, 0, f.payload)
	}()
	fr := func(typ frameType, flags uint16, p []byte) []byte { return appendFrame(nil, typ, flags, p) }
	helloFrame := func() []byte { var s stream; return s.hello(src, "ok").Bytes() }()
	begin := func(r uint32) []byte { return fr(frameMemoryBegin, 0, binary.LittleEndian.AppendUint32(nil, r)) }
	end := func(r uint32, n uint64) []byte { return fr(frameRoundEnd, 0, roundEnd{round: r, pages: n}.append(nil)) }
	ack := func(r uint32) []byte {
		return fr(frameRoundAck, 0, roundAck{round: r, applyNs: 1}.appendVersion(nil, ProtocolVersion))
	}
	state, _ := encodeState(testSections)
	tests := []struct {
		state   recvState
		name    string
		frame   []byte
		wantErr string
	}{
		{stateWaitHello, "ACCEPT", fr(frameAccept, 0, nil), "unexpected ACCEPT frame in state WaitHello"},
		{stateWaitHello, "REFUSE", fr(frameRefuse, 0, []byte("no")), "unexpected REFUSE"},
		{stateWaitHello, "MEMORY_BEGIN", begin(0), "unexpected MEMORY_BEGIN frame in state WaitHello"},
		{stateWaitHello, "PAGE_BATCH", batchFrame, "unexpected PAGE_BATCH"},
		{stateWaitHello, "STATE", fr(frameState, 0, state), "unexpected STATE"},
		{stateWaitHello, "COMPLETE", fr(frameComplete, 0, nil), "unexpected COMPLETE"},
		{stateWaitHello, "RESUMED", fr(frameResumed, 0, make([]byte, 16)), "unexpected RESUMED"},
		{stateWaitMemory, "second HELLO", helloFrame, "unexpected HELLO frame in state WaitMemory"},
		{stateWaitMemory, "round 1 first", begin(1), "expected round 0"},
		{stateWaitMemory, "PAGE_BATCH", batchFrame, "unexpected PAGE_BATCH frame in state WaitMemory"},
		{stateWaitMemory, "ROUND_END", end(0, 0), "unexpected ROUND_END"},
		{stateWaitMemory, "STATE", fr(frameState, 0, state), "unexpected STATE"},
		{stateWaitMemory, "COMPLETE", fr(frameComplete, 0, nil), "unexpected COMPLETE"},
		{stateInRound, "HELLO", helloFrame, "unexpected HELLO frame in state InRound"},
		{stateInRound, "nested MEMORY_BEGIN", begin(1), "unexpected MEMORY_BEGIN frame in state InRound"},
		{stateInRound, "STATE", fr(frameState, 0, state), "unexpected STATE frame in state InRound"},
		{stateInRound, "COMPLETE", fr(frameComplete, 0, nil), "unexpected COMPLETE"},
		{stateInRound, "ROUND_END of another round", end(3, 0), "ROUND_END for round 3 inside round 0"},
		{stateInRound, "ROUND_END with wrong count", end(0, 5), "source sent 5 pages, 0 arrived"},
		{stateBetweenRounds, "HELLO", helloFrame, "unexpected HELLO frame in state BetweenRounds"},
		{stateBetweenRounds, "PAGE_BATCH", batchFrame, "unexpected PAGE_BATCH frame in state BetweenRounds"},
		{stateBetweenRounds, "ROUND_END", end(0, 0), "unexpected ROUND_END"},
		{stateBetweenRounds, "repeated round", begin(0), "MEMORY_BEGIN for round 0, expected round 1"},
		{stateBetweenRounds, "skipped round", begin(2), "expected round 1"},
		{stateBetweenRounds, "COMPLETE without STATE", fr(frameComplete, 0, nil), "unexpected COMPLETE frame in state BetweenRounds"},
		{stateWaitState, "second STATE", fr(frameState, 0, state), "previous STATE chunk was the last"},
		{stateWaitState, "MEMORY_BEGIN", begin(1), "unexpected MEMORY_BEGIN frame in state WaitState"},
		{stateWaitState, "PAGE_BATCH", batchFrame, "unexpected PAGE_BATCH frame in state WaitState"},
		{stateWaitState, "HELLO", helloFrame, "unexpected HELLO"},
		{stateWaitState, "RESUMED", fr(frameResumed, 0, make([]byte, 16)), "unexpected RESUMED"},
		// ROUND_ACK travels D→S only: a source sending one is hostile.
		{stateWaitHello, "ROUND_ACK", ack(0), "unexpected ROUND_ACK frame in state WaitHello"},
		{stateWaitMemory, "ROUND_ACK", ack(0), "unexpected ROUND_ACK frame in state WaitMemory"},
		{stateInRound, "ROUND_ACK", ack(0), "unexpected ROUND_ACK frame in state InRound"},
		{stateBetweenRounds, "ROUND_ACK", ack(0), "unexpected ROUND_ACK frame in state BetweenRounds"},
		{stateBetweenRounds, "ROUND_ACK of a future round", ack(7), "unexpected ROUND_ACK frame in state BetweenRounds"},
		{stateWaitState, "ROUND_ACK", ack(0), "unexpected ROUND_ACK frame in state WaitState"},
		{stateInRound, "page twice in one round", append(append([]byte(nil), batchFrame...), batchFrame...), "sent twice in one round"},
	}
	pre := prefixes(src)
	for _, tt := range tests {
		t.Run(tt.state.String()+"/"+tt.name, func(t *testing.T) {
			var s stream
			pre[tt.state](&s)
			s.Write(tt.frame)
			tgt := &testTarget{mem: newTestMemory(t, destTestRAM)}
			conn, got, err := receiveScript(t, s.Bytes(), tgt)
			checkFailed(t, conn, got, tgt, err, tt.wantErr, tt.state != stateWaitHello)
		})
	}
}

// checkFailed asserts a clean protocol failure: error text, no target
// returned, target discarded, ERROR sent last.
func checkFailed(t *testing.T, conn *scriptConn, got Target, tgt *testTarget, err error, wantErr string, built bool) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), wantErr) {
		t.Fatalf("error %v, want it to contain %q", err, wantErr)
	}
	if got != nil {
		t.Fatal("Receive returned a target on failure")
	}
	if built && (!tgt.discarded || tgt.started) {
		t.Fatalf("target discarded=%v started=%v", tgt.discarded, tgt.started)
	}
	replies := conn.replies(t)
	if len(replies) == 0 || replies[len(replies)-1].typ != frameError {
		t.Fatalf("replies %v, want ERROR last", replies)
	}
	if reason := string(replies[len(replies)-1].payload); !strings.Contains(reason, wantErr) {
		t.Fatalf("ERROR reason %q does not explain %q", reason, wantErr)
	}
}

func TestReceiveFailures(t *testing.T) {
	src := sourceRAM(t)
	state, _ := encodeState(testSections)
	full := func(s *stream) *stream {
		s.hello(src, "ok").begin(0)
		s.end(0, s.allPages(src, CompressionNone))
		return s
	}
	tests := []struct {
		name       string
		build      func(s *stream)
		restoreErr error
		wantErr    string
		proto      bool
	}{
		{name: "EOF mid round", build: func(s *stream) { s.hello(src, "ok").begin(0) }, wantErr: "closed the connection in state InRound"},
		{name: "EOF inside a frame", build: func(s *stream) {
			s.hello(src, "ok").begin(0)
			s.Truncate(s.Len() - 2)
		}, wantErr: "unexpected EOF"},
		{name: "bad checksum", build: func(s *stream) {
			s.hello(src, "ok").begin(0)
			s.Bytes()[s.Len()-1] ^= 1
		}, wantErr: "checksum", proto: true},
		{name: "unknown frame type", build: func(s *stream) { s.hello(src, "ok").frame(42, 0, nil) }, wantErr: "unknown frame type 0x002a", proto: true},
		{name: "missing pages at COMPLETE", build: func(s *stream) {
			s.hello(src, "ok").begin(0).end(0, 0)
			s.frame(frameState, 0, state).frame(frameComplete, 0, nil)
		}, wantErr: "512 pages never sent", proto: true},
		{name: "incomplete state at COMPLETE", build: func(s *stream) {
			full(s).frame(frameState, flagMore, state[:3]).frame(frameComplete, 0, nil)
		}, wantErr: "STATE is incomplete", proto: true},
		{name: "corrupt state", build: func(s *stream) {
			full(s).frame(frameState, 0, state[:len(state)-1])
		}, wantErr: "truncated", proto: true},
		{name: "state too large", build: func(s *stream) {
			full(s)
			chunk := make([]byte, maxStateChunk)
			for range MaxStateSize/maxStateChunk + 1 {
				s.frame(frameState, flagMore, chunk)
			}
		}, wantErr: "exceeds", proto: true},
		{name: "bad batch", build: func(s *stream) {
			s.hello(src, "ok").begin(0).frame(framePageBatch, 0, batchPayload(5, 0, 1, []byte{1}, []byte{1}))
		}, wantErr: "round 0: migration protocol error: PAGE_BATCH region 5 out of range", proto: true},
		{name: "restore fails", build: func(s *stream) {
			full(s).frame(frameState, 0, state).frame(frameComplete, 0, nil)
		}, restoreErr: errors.New("vcpu/0: bad registers"), wantErr: "vcpu/0: bad registers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s stream
			tt.build(&s)
			tgt := &testTarget{mem: newTestMemory(t, destTestRAM), restoreErr: tt.restoreErr}
			conn, got, err := receiveScript(t, s.Bytes(), tgt)
			checkFailed(t, conn, got, tgt, err, tt.wantErr, true)
			if errors.Is(err, ErrProtocol) != tt.proto {
				t.Fatalf("errors.Is(ErrProtocol) = %v, want %v", !tt.proto, tt.proto)
			}
		})
	}
}

func TestReceiveRefuses(t *testing.T) {
	src := sourceRAM(t)
	withHello := func(h hello) []byte {
		for _, r := range src.Regions() {
			h.regions = append(h.regions, regionDesc{r.GPA, r.Size})
		}
		return appendFrame(nil, frameHello, 0, h.append(nil))
	}
	bigger := newTestMemory(t, 4<<20)
	tests := []struct {
		name    string
		in      []byte
		wantErr string
		refused bool // REFUSE, not ERROR
	}{
		{name: "factory refuses", in: withHello(hello{version: MinProtocolVersion, pageSize: 4096, config: []byte("bad")}), wantErr: "config not ok", refused: true},
		{name: "version", in: withHello(hello{version: 7, pageSize: 4096, config: []byte("ok")}), wantErr: "protocol version 7 not supported", refused: true},
		{name: "page size", in: withHello(hello{version: MinProtocolVersion, pageSize: 65536, config: []byte("ok")}), wantErr: "page size 65536", refused: true},
		{name: "layout mismatch", in: (&stream{}).hello(bigger, "ok").Bytes(), wantErr: "memory layout mismatch", refused: true},
		{name: "bad magic", in: appendFrame(nil, frameHello, 0, append([]byte("NOTGODWT"), make([]byte, 16)...)), wantErr: "not a godwit migration stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tgt := &testTarget{mem: newTestMemory(t, destTestRAM)}
			conn, got, err := receiveScript(t, tt.in, tgt)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || got != nil {
				t.Fatalf("Receive = %v, %v; want error containing %q", got, err, tt.wantErr)
			}
			replies := conn.replies(t)
			want := frameError
			if tt.refused {
				want = frameRefuse
			}
			if len(replies) != 1 || replies[0].typ != want || !strings.Contains(string(replies[0].payload), tt.wantErr) {
				t.Fatalf("replies %v, want one %v carrying %q", replies, want, tt.wantErr)
			}
		})
	}
}

func TestReceivePeerError(t *testing.T) {
	src := sourceRAM(t)
	for state, pre := range prefixes(src) {
		t.Run(state.String(), func(t *testing.T) {
			var s stream
			pre(&s)
			s.frame(frameError, 0, []byte("source VM crashed"))
			tgt := &testTarget{mem: newTestMemory(t, destTestRAM)}
			conn, got, err := receiveScript(t, s.Bytes(), tgt)
			if !errors.Is(err, ErrPeerAborted) || !strings.Contains(err.Error(), "source VM crashed") || got != nil {
				t.Fatalf("Receive = %v, %v", got, err)
			}
			for _, f := range conn.replies(t) {
				if f.typ == frameError {
					t.Fatal("answered the source's ERROR with ERROR")
				}
			}
			if state != stateWaitHello && !tgt.discarded {
				t.Fatal("target not discarded")
			}
		})
	}
}

// TestReceiveAllocationBound feeds streams whose lengths claim far more
// than they carry, and checks the heap allocated stays within the
// receiver's constant bounds.
func TestReceiveAllocationBound(t *testing.T) {
	src := sourceRAM(t)
	header := func(typ frameType, n uint32) []byte {
		b := binary.LittleEndian.AppendUint16(nil, uint16(typ))
		b = binary.LittleEndian.AppendUint16(b, 0)
		return binary.LittleEndian.AppendUint32(b, n)
	}
	tests := []struct {
		name     string
		build    func(s *stream)
		maxAlloc uint64
	}{
		{name: "4 GiB frame claim", build: func(s *stream) { s.hello(src, "ok").Write(header(frameState, 0xffffffff)) }, maxAlloc: 2 << 20},
		{name: "max payload claim, no data", build: func(s *stream) {
			s.hello(src, "ok").begin(0).Write(header(framePageBatch, MaxPayload))
		}, maxAlloc: MaxPayload + 2<<20},
		{name: "huge state section claim", build: func(s *stream) {
			s.hello(src, "ok").begin(0)
			s.end(0, s.allPages(src, CompressionNone))
			b := []byte{1, 0, 0, 0, 1, 0, 'x', 1, 0, 0, 0}
			s.frame(frameState, 0, binary.LittleEndian.AppendUint32(b, 0xfffffff0))
		}, maxAlloc: MaxPayload + 4<<20},
		{name: "huge section count", build: func(s *stream) {
			s.hello(src, "ok").begin(0)
			s.end(0, s.allPages(src, CompressionNone))
			s.frame(frameState, 0, binary.LittleEndian.AppendUint32(nil, 0xffffffff))
		}, maxAlloc: MaxPayload + 4<<20},
		{name: "huge config claim", build: func(s *stream) {
			h := hello{version: 1, pageSize: 4096}
			b := h.append(nil)
			binary.LittleEndian.PutUint32(b[len(b)-4:], 0xffffffff)
			s.frame(frameHello, 0, b)
		}, maxAlloc: 2 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s stream
			tt.build(&s)
			in := s.Bytes()
			tgt := &testTarget{mem: newTestMemory(t, destTestRAM)}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, _, err := Receive(context.Background(), &scriptConn{r: bytes.NewReader(in)}, factoryFor(tgt), ReceiveOptions{})
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("hostile stream accepted")
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > tt.maxAlloc {
				t.Fatalf("allocated %d bytes, bound %d", got, tt.maxAlloc)
			}
		})
	}
}

// blockingConn is a connection without deadlines or Close.
type blockingConn struct {
	io.Reader
	io.Writer
}

func TestReceiveCancelledBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tgt := &testTarget{mem: newTestMemory(t, destTestRAM)}
	var out bytes.Buffer
	_, st, err := Receive(ctx, blockingConn{bytes.NewReader(nil), &out}, factoryFor(tgt), ReceiveOptions{})
	if !errors.Is(err, context.Canceled) || st.Status != StatusCancelled {
		t.Fatalf("Receive = %v, status %q", err, st.Status)
	}
}

// TestReceiveDamagedBatch: the receiver's workers verify batch checksums
// (the reader defers them): a page batch damaged on the way fails the
// migration with the checksum's error, whether the damage hits its data or
// the fields the reader parses first, and also when the reader meets the
// end of the stream before a worker has checked the batch; none of its
// pages reaches RAM.
func TestReceiveDamagedBatch(t *testing.T) {
	const payloadHeader = 4 + 8 + 4 + 1 + 1 // region, first, count, present, zero
	tests := []struct {
		name string
		at   int  // offset of the flipped byte in the PAGE_BATCH payload
		cut  bool // the stream ends after the batch (the source closed)
	}{
		{name: "page data", at: payloadHeader + 3 + 100},
		{name: "region field", at: 0},
		{name: "present bitmap", at: 16},
		{name: "page data, then the end of the stream", at: payloadHeader + 3 + 100, cut: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := sourceRAM(t)
			page := bytes.Repeat([]byte{0xab}, pageSize)
			var s stream
			s.hello(src, "ok").begin(0)
			at := s.Len() + headerSize + tt.at
			s.frame(framePageBatch, flagXXH64, batchPayload(0, 0, 1, []byte{1}, []byte{0}, pageRec(encRaw, page)))
			if !tt.cut {
				s.end(0, 1)
			}
			s.Bytes()[at] ^= 0x40
			tgt := &testTarget{mem: newTestMemory(t, destTestRAM)}
			conn, got, err := receiveScript(t, s.Bytes(), tgt)
			checkFailed(t, conn, got, tgt, err, "PAGE_BATCH frame checksum mismatch", true)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v is not a protocol error", err)
			}
			if first := tgt.mem.RegionHost(0)[:pageSize]; !bytes.Equal(first, make([]byte, pageSize)) {
				t.Fatal("a page of the damaged batch reached RAM")
			}
		})
	}
}
