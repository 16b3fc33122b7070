package migrate

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"godwit/vmm/memory"
)

// testTarget is a minimal Target over memory.New RAM.
type testTarget struct {
	mem        *memory.Memory
	sections   []Section
	started    bool
	discarded  bool
	restoreErr error
}

func (t *testTarget) Memory() *memory.Memory { return t.mem }
func (t *testTarget) RestoreState(s []Section) error {
	if t.restoreErr != nil {
		return t.restoreErr
	}
	t.sections = s
	return nil
}
func (t *testTarget) Start(context.Context) error { t.started = true; return nil }
func (t *testTarget) Discard()                    { t.discarded = true }

// newTestMemory returns RAM of size bytes, closed when the test ends.
func newTestMemory(tb testing.TB, size uint64) *memory.Memory {
	tb.Helper()
	m, err := memory.New(size)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// factoryFor returns a factory that hands out t for the config "ok" and
// refuses anything else.
func factoryFor(t *testTarget) TargetFactory {
	return func(cfg []byte) (Target, error) {
		if string(cfg) != "ok" {
			return nil, errors.New("config not ok")
		}
		return t, nil
	}
}

// stream builds a byte stream of frames for the receiver.
type stream struct{ bytes.Buffer }

func (s *stream) frame(typ frameType, flags uint16, payload []byte) *stream {
	s.Write(appendFrame(nil, typ, flags, payload))
	return s
}

func (s *stream) hello(mem *memory.Memory, cfg string) *stream {
	h := hello{version: MinProtocolVersion, pageSize: memory.PageSize, config: []byte(cfg)}
	for _, r := range mem.Regions() {
		h.regions = append(h.regions, regionDesc{GPA: r.GPA, Size: r.Size})
	}
	return s.frame(frameHello, 0, h.append(nil))
}

func (s *stream) begin(round uint32) *stream {
	return s.frame(frameMemoryBegin, 0, binary.LittleEndian.AppendUint32(nil, round))
}

func (s *stream) end(round uint32, pages uint64) *stream {
	return s.frame(frameRoundEnd, 0, roundEnd{round: round, pages: pages}.append(nil))
}

// allPages appends PAGE_BATCH frames covering every page of mem, read
// from src (same layout), and returns the page count.
func (s *stream) allPages(src *memory.Memory, comp Compression) uint64 {
	enc := &batchEncoder{comp: comp}
	var n uint64
	for i, r := range src.Regions() {
		bm := make([]uint64, (r.Pages()+63)/64)
		for p := uint64(0); p < r.Pages(); p++ {
			bm[p/64] |= 1 << (p % 64)
		}
		var pos uint64
		var b batch
		b.region = i
		for nextBatch(bm, r.Pages(), &pos, &b) {
			out, c := enc.appendFrame(nil, src.RegionHost(i), &b)
			s.Write(out)
			n += c.pages()
		}
	}
	return n
}

func (s *stream) state(sections []Section) *stream {
	b, err := encodeState(sections)
	if err != nil {
		panic(err)
	}
	return s.frame(frameState, 0, b)
}

// scriptConn feeds a fixed stream to Receive and records its answers.
type scriptConn struct {
	r io.Reader
	w bytes.Buffer
}

func (c *scriptConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// replies decodes the frames Receive wrote.
func (c *scriptConn) replies(tb testing.TB) []frame {
	tb.Helper()
	fr := newFrameReader(bytes.NewReader(c.w.Bytes()))
	var out []frame
	for {
		f, err := fr.next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			tb.Fatalf("bad reply stream: %v", err)
		}
		f.payload = append([]byte(nil), f.payload...)
		out = append(out, f)
	}
}
