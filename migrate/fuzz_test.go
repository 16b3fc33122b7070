package migrate

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// FuzzFrame feeds arbitrary bytes to the frame reader: it must never
// panic, and every frame it accepts must re-encode to the bytes it read.
func FuzzFrame(f *testing.F) {
	f.Add(appendFrame(nil, frameMemoryBegin, 0, []byte{1, 0, 0, 0}))
	f.Add(appendFrame(appendFrame(nil, frameState, flagMore, []byte("abc")), frameComplete, 0, nil))
	f.Add(appendFrame(nil, frameError, 0, []byte("reason")))
	f.Add(appendFrame(nil, frameResumed, 0, resumed{restoreNs: 3, startNs: 1, version: TimingsVersion, handleNs: 5}.append(nil)))
	f.Add([]byte{5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Add(appendFrame(nil, framePageBatch, flagXXH64, make([]byte, batchHeader)))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(bytes.NewReader(data))
		var off uint64
		for {
			fm, err := fr.next()
			if err != nil {
				return
			}
			again := appendFrame(nil, fm.typ, fm.flags, fm.payload)
			if !bytes.Equal(again, data[off:fr.n]) {
				t.Fatalf("frame %v does not re-encode to its bytes", fm.typ)
			}
			if len(fm.payload) > MaxPayload {
				t.Fatalf("payload of %d bytes", len(fm.payload))
			}
			off = fr.n
		}
	})
}

// FuzzPageBatch feeds arbitrary PAGE_BATCH payloads to the decoder over a
// 2 MiB RAM: it must never panic nor write outside RAM (RegionHost slices
// would panic), and what it counts must be what the bitmaps say.
func FuzzPageBatch(f *testing.F) {
	mem := newTestMemory(f, 2<<20)
	src := newTestMemory(f, 2<<20)
	fillPage(src.RegionHost(0)[:pageSize], "text", rand.New(rand.NewPCG(1, 1)))
	src.RegionHost(0)[5*pageSize] = 1
	var b batch
	b.first, b.count = 0, 8
	b.present[0] = 0xff
	for _, comp := range []Compression{CompressionNone, CompressionLZ4} {
		enc := &batchEncoder{comp: comp}
		out, _ := enc.appendFrame(nil, src.RegionHost(0), &b)
		f.Add(out[headerSize : len(out)-trailerSize])
	}
	f.Add(batchPayload(0, 511, 1, []byte{1}, []byte{1}))
	f.Add(batchPayload(0, 0, 2, []byte{3}, []byte{0}, pageRec(encRaw, make([]byte, pageSize)), copyRec(0, 0)))
	f.Fuzz(func(t *testing.T, p []byte) {
		sink := newBatchSink(mem, false)
		c, err := sink.apply(p)
		if err == nil && (c.pages() == 0 || c.pages() > MaxBatchPages) {
			t.Fatalf("accepted a batch of %d pages", c.pages())
		}
	})
}

// FuzzReceive runs the whole receiver on a valid HELLO followed by
// arbitrary bytes, over a 2 MiB VM: it must never panic, and it must fail
// (discarding the target) unless the bytes form a complete migration.
func FuzzReceive(f *testing.F) {
	mem := newTestMemory(f, 2<<20)
	src := newTestMemory(f, 2<<20)
	var prefix stream
	prefix.hello(mem, "ok")
	var full stream
	full.begin(0)
	full.end(0, full.allPages(src, CompressionLZ4))
	full.state(testSections).frame(frameComplete, 0, nil)
	f.Add(full.Bytes())
	f.Add((&stream{}).begin(0).Bytes())
	f.Add((&stream{}).begin(0).frame(framePageBatch, 0, batchPayload(0, 0, 1, []byte{1}, []byte{1})).end(0, 1).Bytes())
	f.Add((&stream{}).frame(frameError, 0, []byte("x")).Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		in := append(append([]byte(nil), prefix.Bytes()...), data...)
		tgt := &testTarget{mem: mem}
		got, _, err := Receive(t.Context(), &scriptConn{r: bytes.NewReader(in)}, factoryFor(tgt), ReceiveOptions{})
		if err != nil && (got != nil || !tgt.discarded || tgt.started) {
			t.Fatalf("failed receive: target %v discarded=%v started=%v", got, tgt.discarded, tgt.started)
		}
		if err == nil && (!tgt.started || tgt.discarded) {
			t.Fatalf("successful receive: started=%v discarded=%v", tgt.started, tgt.discarded)
		}
	})
}

// FuzzResumed feeds arbitrary RESUMED payloads to its decoder: it must
// never panic, and what it accepts must be canonical (it re-encodes to
// the same bytes) and within its bounds.
func FuzzResumed(f *testing.F) {
	f.Add(resumed{restoreNs: 3e6, startNs: 1e6, version: TimingsVersion, handleNs: 5e6}.append(nil))
	f.Add(resumed{restoreNs: 3e6, startNs: 1e6}.append(nil))
	f.Add(resumedBytes(1, 1, u16(2), u16(8), u64(5)))
	f.Add(resumedBytes(3, 3, u16(1), u16(8), u64(5)))
	f.Add(resumedBytes(1, 1, u16(1), u16(16), u64(5), u64(6)))
	f.Add(resumedBytes(1, 1, u16(1)))
	f.Add(resumedBytes(^uint64(0), 0))
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := parseResumed(p)
		if err != nil {
			return
		}
		if again := r.append(nil); !bytes.Equal(again, p) {
			t.Fatalf("accepted %x, which re-encodes as %x", p, again)
		}
		limit := uint64(MaxReportedDuration)
		if r.restoreNs > limit || r.startNs > limit || r.handleNs > limit {
			t.Fatalf("accepted out-of-bound timings %+v", r)
		}
		if r.version != 0 && (r.version != TimingsVersion || r.restoreNs+r.startNs > r.handleNs) {
			t.Fatalf("accepted inconsistent timings %+v", r)
		}
		if r.version == 0 && r.handleNs != 0 {
			t.Fatalf("handle_ns %d without a timings block", r.handleNs)
		}
	})
}
