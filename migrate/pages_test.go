package migrate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/pierrec/lz4/v4"

	"godwit/vmm/memory"
)

// fillPage writes one of the test page kinds into p.
func fillPage(p []byte, kind string, rnd *rand.Rand) {
	switch kind {
	case "zero":
		clear(p)
	case "random":
		for i := 0; i < len(p); i += 8 {
			binary.LittleEndian.PutUint64(p[i:], rnd.Uint64())
		}
	case "text":
		var b []byte
		for len(b) < len(p) {
			b = append(b, []string{"the ", "quick ", "guest ", "page\n"}[rnd.IntN(4)]...)
		}
		copy(p, b)
	case "lastbyte":
		clear(p)
		p[len(p)-1] = 1
	}
}

// decodeOne parses a single frame and checks its type.
func decodeOne(tb testing.TB, b []byte) []byte {
	tb.Helper()
	f, err := newFrameReader(bytes.NewReader(b)).next()
	if err != nil || f.typ != framePageBatch {
		tb.Fatalf("frame: %v %v", f.typ, err)
	}
	return f.payload
}

func TestBatchRoundTrip(t *testing.T) {
	const size = 8 << 20
	src := newTestMemory(t, size)
	tests := []struct {
		name     string
		kinds    []string
		comp     Compression
		first    uint64
		count    int
		sparse   bool
		wantZero bool
		wantLZ4  bool
		wantRaw  bool
	}{
		{name: "zero pages", kinds: []string{"zero"}, comp: CompressionLZ4, count: 1024, wantZero: true},
		{name: "random raw", kinds: []string{"random"}, comp: CompressionNone, count: 100, wantRaw: true},
		{name: "random lz4 falls back to raw", kinds: []string{"random"}, comp: CompressionLZ4, count: 100, wantRaw: true},
		{name: "text raw", kinds: []string{"text"}, comp: CompressionNone, count: 64, wantRaw: true},
		{name: "text lz4", kinds: []string{"text"}, comp: CompressionLZ4, count: 64, wantLZ4: true},
		{name: "mixed lz4", kinds: []string{"zero", "random", "text", "lastbyte"}, comp: CompressionLZ4, first: 7, count: 1000, wantZero: true, wantLZ4: true, wantRaw: true},
		{name: "sparse mixed", kinds: []string{"text", "zero", "random"}, comp: CompressionLZ4, first: 3, count: 1024, sparse: true, wantZero: true, wantLZ4: true, wantRaw: true},
		{name: "single page at region end", kinds: []string{"random"}, comp: CompressionNone, first: size/memory.PageSize - 1, count: 1, wantRaw: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(1, 2))
			host := src.RegionHost(0)
			var b batch
			b.first, b.count = tt.first, tt.count
			for i := 0; i < tt.count; i++ {
				off := (tt.first + uint64(i)) * pageSize
				fillPage(host[off:off+pageSize], tt.kinds[i%len(tt.kinds)], rnd)
				if !tt.sparse || i%5 != 1 {
					b.present[i/64] |= 1 << (i % 64)
				}
			}
			enc := &batchEncoder{comp: tt.comp}
			out, c := enc.appendFrame(nil, host, &b)
			dst := newTestMemory(t, size)
			// The destination may be reusing memory: fill it with junk.
			for i := range dst.RegionHost(0) {
				dst.RegionHost(0)[i] = 0xee
			}
			sink := newBatchSink(dst, false)
			got, err := sink.apply(decodeOne(t, out))
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			if got != c {
				t.Fatalf("decoder counted %+v, encoder %+v", got, c)
			}
			if (c.zero > 0) != tt.wantZero || (c.compressed > 0) != tt.wantLZ4 || (c.normal > 0) != tt.wantRaw {
				t.Fatalf("counts %+v, want zero=%v lz4=%v raw=%v", c, tt.wantZero, tt.wantLZ4, tt.wantRaw)
			}
			dh := dst.RegionHost(0)
			var pages uint64
			for i := 0; i < tt.count; i++ {
				off := (tt.first + uint64(i)) * pageSize
				present := b.present[i/64]&(1<<(i%64)) != 0
				want := host[off : off+pageSize]
				if !present {
					want = bytes.Repeat([]byte{0xee}, pageSize)
				} else {
					pages++
				}
				if !bytes.Equal(dh[off:off+pageSize], want) {
					t.Fatalf("page %d (present=%v) differs", i, present)
				}
			}
			if c.pages() != pages {
				t.Fatalf("sent %d pages, %d present", c.pages(), pages)
			}
		})
	}
}

// batchPayload builds a PAGE_BATCH payload by hand.
func batchPayload(region uint32, first uint64, count uint32, present, zero []byte, pages ...[]byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, region)
	b = binary.LittleEndian.AppendUint64(b, first)
	b = binary.LittleEndian.AppendUint32(b, count)
	b = append(b, present...)
	b = append(b, zero...)
	for _, p := range pages {
		b = append(b, p...)
	}
	return b
}

// pageRec encodes one page record.
func pageRec(enc byte, data []byte) []byte {
	b := []byte{enc}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

func TestBatchHostile(t *testing.T) {
	const size = 2 << 20 // 512 pages, one region
	raw := bytes.Repeat([]byte{1}, pageSize)
	half := make([]byte, pageSize/2)
	var c lz4.Compressor
	small := make([]byte, 64)
	n, _ := c.CompressBlock(bytes.Repeat([]byte("ab"), pageSize/4), small) // 2048 bytes
	shortLZ4 := small[:n]
	// 8192 bytes: more than a page.
	longLZ4 := func() []byte {
		buf := make([]byte, 128)
		k, _ := c.CompressBlock(bytes.Repeat([]byte("ab"), pageSize), buf)
		return buf[:k]
	}()
	tests := []struct {
		name    string
		payload []byte
		wantErr string
	}{
		{name: "truncated header", payload: []byte{0, 0, 0}, wantErr: "truncated"},
		{name: "region out of range", payload: batchPayload(1, 0, 1, []byte{1}, []byte{1}), wantErr: "region 1 out of range"},
		{name: "huge region index", payload: batchPayload(0xffffffff, 0, 1, []byte{1}, []byte{1}), wantErr: "out of range"},
		{name: "count zero", payload: batchPayload(0, 0, 0, nil, nil), wantErr: "page count 0"},
		{name: "count too large", payload: batchPayload(0, 0, MaxBatchPages+1, nil, nil), wantErr: "page count"},
		{name: "first page beyond region", payload: batchPayload(0, 512, 1, []byte{1}, []byte{1}), wantErr: "outside region"},
		{name: "run past region end", payload: batchPayload(0, 500, 13, []byte{1, 0}, []byte{1, 0}), wantErr: "outside region"},
		{name: "overflowing first page", payload: batchPayload(0, 1<<63, 8, []byte{1}, []byte{1}), wantErr: "outside region"},
		{name: "bitmaps truncated", payload: batchPayload(0, 0, 16, []byte{1}, nil), wantErr: "truncated"},
		{name: "present bit past count", payload: batchPayload(0, 0, 3, []byte{0x09}, []byte{0x08}), wantErr: "bits past"},
		{name: "zero bit not present", payload: batchPayload(0, 0, 8, []byte{0x01}, []byte{0x03}), wantErr: "not present"},
		{name: "no pages", payload: batchPayload(0, 0, 8, []byte{0}, []byte{0}), wantErr: "no pages"},
		{name: "raw page short", payload: batchPayload(0, 0, 1, []byte{1}, []byte{0}, pageRec(encRaw, half)), wantErr: "length 2048"},
		{name: "page data truncated", payload: batchPayload(0, 0, 1, []byte{1}, []byte{0}, pageRec(encRaw, raw)[:100]), wantErr: "truncated"},
		{name: "missing page record", payload: batchPayload(0, 0, 2, []byte{3}, []byte{0}, pageRec(encRaw, raw)), wantErr: "truncated"},
		{name: "trailing bytes", payload: append(batchPayload(0, 0, 1, []byte{1}, []byte{0}, pageRec(encRaw, raw)), 0), wantErr: "trailing"},
		{name: "unknown encoding", payload: batchPayload(0, 0, 1, []byte{1}, []byte{0}, pageRec(7, raw)), wantErr: "unknown encoding 7"},
		{name: "lz4 empty", payload: batchPayload(0, 0, 1, []byte{1}, []byte{0}, pageRec(encLZ4, nil)), wantErr: "length 0"},
		{name: "lz4 not smaller", payload: batchPayload(0, 0, 1, []byte{1}, []byte{0}, pageRec(encLZ4, raw)), wantErr: "length 4096"},
		{name: "lz4 decompresses short", payload: batchPayload(0, 0, 1, []byte{1}, []byte{0}, pageRec(encLZ4, shortLZ4)), wantErr: "decompressed to 2048"},
		{name: "lz4 decompresses long", payload: batchPayload(0, 0, 1, []byte{1}, []byte{0}, pageRec(encLZ4, longLZ4)), wantErr: "LZ4 page 0"},
		{name: "lz4 garbage", payload: batchPayload(0, 0, 1, []byte{1}, []byte{0}, pageRec(encLZ4, []byte{0xff, 0xff, 0xff, 0xff})), wantErr: "LZ4 page 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := newBatchSink(newTestMemory(t, size), false)
			_, err := sink.apply(tt.payload)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrProtocol) {
				t.Fatalf("apply error %v, want a protocol error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestZeroPageClearsReusedMemory(t *testing.T) {
	mem := newTestMemory(t, 2<<20)
	host := mem.RegionHost(0)
	for i := range host[:3*pageSize] {
		host[i] = 0x5a
	}
	sink := newBatchSink(mem, false)
	c, err := sink.apply(batchPayload(0, 0, 3, []byte{7}, []byte{5}, pageRec(encRaw, bytes.Repeat([]byte{9}, pageSize))))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		page int
		want byte
	}{{0, 0}, {1, 9}, {2, 0}}
	for _, tt := range tests {
		p := host[tt.page*pageSize : (tt.page+1)*pageSize]
		if !bytes.Equal(p, bytes.Repeat([]byte{tt.want}, pageSize)) {
			t.Errorf("page %d not all %#x", tt.page, tt.want)
		}
	}
	if c.zero != 2 || c.normal != 1 {
		t.Fatalf("counts %+v", c)
	}
	if n, _, _ := sink.missing(); n != 512-3 {
		t.Fatalf("missing %d pages, want %d", n, 512-3)
	}
}

func TestNextBatch(t *testing.T) {
	type run struct {
		first uint64
		count int
		bits  int
	}
	set := func(pages uint64, idx ...uint64) []uint64 {
		bm := make([]uint64, (pages+63)/64)
		for _, i := range idx {
			bm[i/64] |= 1 << (i % 64)
		}
		return bm
	}
	all := func(pages uint64) []uint64 {
		bm := make([]uint64, (pages+63)/64)
		for i := uint64(0); i < pages; i++ {
			bm[i/64] |= 1 << (i % 64)
		}
		return bm
	}
	tests := []struct {
		name  string
		pages uint64
		bm    []uint64
		want  []run
	}{
		{name: "empty", pages: 200, bm: set(200)},
		{name: "one page", pages: 200, bm: set(200, 77), want: []run{{77, 1, 1}}},
		{name: "two far apart", pages: 5000, bm: set(5000, 3, 4000), want: []run{{3, 1, 1}, {4000, 1, 1}}},
		{name: "unaligned run", pages: 300, bm: set(300, 70, 71, 140, 199), want: []run{{70, 130, 4}}},
		{name: "full region", pages: 2500, bm: all(2500), want: []run{{0, 1024, 1024}, {1024, 1024, 1024}, {2048, 452, 452}}},
		{name: "last page", pages: 130, bm: set(130, 129), want: []run{{129, 1, 1}}},
		{name: "bits past the region ignored", pages: 65, bm: []uint64{0, ^uint64(0)}, want: []run{{64, 1, 1}}},
		{name: "window boundary", pages: 3000, bm: set(3000, 5, 5+1023, 5+1024), want: []run{{5, 1024, 2}, {1029, 1, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []run
			var pos uint64
			var b batch
			for nextBatch(tt.bm, tt.pages, &pos, &b) {
				n := 0
				for _, w := range b.present {
					for ; w != 0; w &= w - 1 {
						n++
					}
				}
				if b.present[0]&1 == 0 {
					t.Fatalf("batch at %d does not start with a present page", b.first)
				}
				got = append(got, run{b.first, b.count, n})
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestParseCompression(t *testing.T) {
	tests := []struct {
		in   string
		want Compression
		ok   bool
	}{{"none", CompressionNone, true}, {"", CompressionNone, true}, {"lz4", CompressionLZ4, true}, {"zstd", 0, false}}
	for _, tt := range tests {
		got, err := ParseCompression(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseCompression(%q) = %v, %v", tt.in, got, err)
		}
		if tt.ok && tt.in != "" && got.String() != tt.in {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
}

// TestLZ4Skip feeds the adaptive skip a sequence of pages that shrink (s)
// or not (x) and checks which pages it tries (T) and which it sends raw
// untried (-).
func TestLZ4Skip(t *testing.T) {
	fails := strings.Repeat("x", lz4FailRun)
	tries := strings.Repeat("T", lz4FailRun)
	tests := []struct {
		name  string
		pages string // outcome of each page, were it tried
		want  string // T tried, - skipped
	}{
		{"compressible pages are all tried", "ssssssss", "TTTTTTTT"},
		{"failures short of the run are all tried", fails[1:] + "s" + fails[1:], tries[1:] + "T" + tries[1:]},
		{"a run of failures skips the minimum gap", fails + "xxxxxxxxx", tries + strings.Repeat("-", lz4MinGap) + "T"},
		{"a failed sample doubles the gap", fails + strings.Repeat("x", lz4MinGap+1+2*lz4MinGap+1),
			tries + strings.Repeat("-", lz4MinGap) + "T" + strings.Repeat("-", 2*lz4MinGap) + "T"},
		{"a page that shrinks ends the skipping", fails + strings.Repeat("x", lz4MinGap) + "s" + "ss",
			tries + strings.Repeat("-", lz4MinGap) + "T" + "TT"},
		{"after a success a new run is needed", fails + strings.Repeat("x", lz4MinGap) + "s" + fails[1:] + "x",
			tries + strings.Repeat("-", lz4MinGap) + "T" + tries[1:] + "T"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var k lz4Skip
			var got strings.Builder
			for _, p := range tt.pages {
				if !k.try() {
					got.WriteByte('-')
					continue
				}
				got.WriteByte('T')
				k.result(p == 's', pageLZ4Skip)
			}
			if got.String() != tt.want {
				t.Errorf("tried\n%s\nwant\n%s", got.String(), tt.want)
			}
		})
	}
}

// TestLZ4SkipGapBound checks that in memory that never shrinks the gap
// stops growing at lz4MaxGap: one page in lz4MaxGap+1 is still tried.
func TestLZ4SkipGapBound(t *testing.T) {
	var k lz4Skip
	const pages = 100000
	for range pages {
		if k.try() {
			k.result(false, pageLZ4Skip)
		}
	}
	if k.gap != lz4MaxGap {
		t.Errorf("gap %d after %d failing pages, want %d", k.gap, pages, lz4MaxGap)
	}
	if min, max := uint64(pages/(lz4MaxGap+1)), uint64(pages/(lz4MaxGap+1)+lz4FailRun+10); k.tries < min || k.tries > max {
		t.Errorf("%d pages tried, want %d..%d", k.tries, min, max)
	}
}

// TestEncoderSkipsIncompressible encodes batches of random pages, then of
// text pages, with one encoder: random pages stop costing LZ4 attempts,
// and text pages compress again within one gap of the switch.
func TestEncoderSkipsIncompressible(t *testing.T) {
	mem := newTestMemory(t, 8<<20)
	host := mem.RegionHost(0)
	rnd := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 2*MaxBatchPages; i++ {
		kind := "random"
		if i >= MaxBatchPages {
			kind = "text"
		}
		fillPage(host[i*pageSize:(i+1)*pageSize], kind, rnd)
	}
	enc := &batchEncoder{comp: CompressionLZ4}
	var b batch
	b.count = MaxBatchPages
	for i := range b.present {
		b.present[i] = ^uint64(0)
	}
	tests := []struct {
		name          string
		first         uint64
		maxTries      uint64
		minCompressed uint64
		wantAllOnWire bool
	}{
		{"random pages", 0, MaxBatchPages / 8, 0, true},
		{"text pages after random ones", MaxBatchPages, MaxBatchPages, MaxBatchPages - lz4MaxGap, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b.first = tt.first
			before := enc.skip.tries
			frame, c := enc.appendFrame(nil, host, &b)
			if tries := enc.skip.tries - before; tries > tt.maxTries {
				t.Errorf("%d LZ4 attempts, want at most %d", tries, tt.maxTries)
			}
			if c.compressed < tt.minCompressed {
				t.Errorf("%d pages compressed, want at least %d", c.compressed, tt.minCompressed)
			}
			if c.pages() != MaxBatchPages {
				t.Errorf("%d pages encoded, want %d", c.pages(), MaxBatchPages)
			}
			// The frame decodes to the same pages.
			dst := newTestMemory(t, 8<<20)
			sink := newBatchSink(dst, true)
			if _, err := sink.apply(decodeOne(t, frame)); err != nil {
				t.Fatal(err)
			}
			off := tt.first * pageSize
			if !bytes.Equal(dst.RegionHost(0)[off:off+MaxBatchPages*pageSize], host[off:off+MaxBatchPages*pageSize]) {
				t.Error("decoded pages differ")
			}
		})
	}
}
