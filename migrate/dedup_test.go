package migrate

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
)

// copyRec is an encCopy page record naming page of region.
func copyRec(region uint32, page uint64) []byte {
	b := []byte{encCopy, copyRecordLen, 0}
	b = binary.LittleEndian.AppendUint32(b, region)
	return binary.LittleEndian.AppendUint64(b, page)
}

// TestCopyRecords feeds copy records to the destination's sink: a copy
// of a page the round sent with data lands at ROUND_END; every other copy
// fails the migration, before anything is copied where it names a page
// outside RAM.
func TestCopyRecords(t *testing.T) {
	data := bytes.Repeat([]byte{0xa7}, pageSize)
	tests := []struct {
		name    string
		batches [][]byte
		wantErr string
	}{
		{name: "copy of an earlier page of the batch",
			batches: [][]byte{batchPayload(0, 0, 2, []byte{3}, []byte{0}, pageRec(encRaw, data), copyRec(0, 0))}},
		{name: "copy of a later page of the batch",
			batches: [][]byte{batchPayload(0, 0, 2, []byte{3}, []byte{0}, copyRec(0, 1), pageRec(encRaw, data))}},
		{name: "copy of a page of another batch of the round",
			batches: [][]byte{batchPayload(0, 7, 1, []byte{1}, []byte{0}, copyRec(0, 100)), batchPayload(0, 100, 1, []byte{1}, []byte{0}, pageRec(encRaw, data))}},
		{name: "copy of a page the round did not send",
			batches: [][]byte{batchPayload(0, 0, 1, []byte{1}, []byte{0}, copyRec(0, 5))}, wantErr: "which this round did not send with data"},
		{name: "copy of a zero page",
			batches: [][]byte{batchPayload(0, 0, 2, []byte{3}, []byte{1}, copyRec(0, 0))}, wantErr: "which this round did not send with data"},
		{name: "copy of itself",
			batches: [][]byte{batchPayload(0, 3, 1, []byte{1}, []byte{0}, copyRec(0, 3))}, wantErr: "which this round did not send with data"},
		{name: "page outside the region",
			batches: [][]byte{batchPayload(0, 0, 1, []byte{1}, []byte{0}, copyRec(0, 512))}, wantErr: "outside RAM"},
		{name: "region out of range",
			batches: [][]byte{batchPayload(0, 0, 1, []byte{1}, []byte{0}, copyRec(1, 0))}, wantErr: "outside RAM"},
		{name: "short copy record",
			batches: [][]byte{batchPayload(0, 0, 1, []byte{1}, []byte{0}, []byte{encCopy, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0})}, wantErr: "has length 8, want 12"},
		{name: "truncated copy record",
			batches: [][]byte{batchPayload(0, 0, 1, []byte{1}, []byte{0}, copyRec(0, 1)[:9])}, wantErr: "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := newTestMemory(t, 2<<20)
			sink := newBatchSink(mem, true)
			sink.newRound()
			var c batchCounts
			var err error
			for _, p := range tt.batches {
				var b preparedBatch
				if _, err = sink.prepare(p, &b); err != nil {
					break
				}
				var bc batchCounts
				if bc, err = sink.run(&b); err != nil {
					break
				}
				c.add(bc)
			}
			if err == nil {
				err = sink.copyPages()
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.deduplicated != 1 || c.normal != 1 {
				t.Fatalf("counts %+v, want 1 normal and 1 deduplicated", c)
			}
			host := mem.RegionHost(0)
			for pn := uint64(0); pn < 512; pn++ {
				if !isZero(host[pn*pageSize:(pn+1)*pageSize]) && !bytes.Equal(host[pn*pageSize:(pn+1)*pageSize], data) {
					t.Fatalf("page %d holds neither zeros nor the data", pn)
				}
			}
		})
	}
}

// TestEncoderDeduplicates encodes batches of a RAM holding repeated pages
// and checks that each repeat travels as a copy within a round, never
// across rounds, not after the page it names changed, and that the
// destination ends with the source's RAM.
func TestEncoderDeduplicates(t *testing.T) {
	src := newTestMemory(t, 2<<20)
	host := src.RegionHost(0)
	rnd := rand.New(rand.NewPCG(3, 4))
	fillPage(host[0:pageSize], "text", rnd)
	fillPage(host[pageSize:2*pageSize], "random", rnd)
	copy(host[10*pageSize:], host[:pageSize])  // same batch as page 0
	copy(host[300*pageSize:], host[:pageSize]) // next batch
	copy(host[301*pageSize:], host[pageSize:2*pageSize])
	batchOf := func(first uint64, count int) *batch {
		b := &batch{first: first, count: count}
		for i := 0; i < count; i++ {
			b.present[i/64] |= 1 << (i % 64)
		}
		return b
	}
	table := newDedupTable([][]byte{host})
	dst := newTestMemory(t, 2<<20)
	sink := newBatchSink(dst, true)
	// round encodes batches in one round, calling afterFirst (if set)
	// once the first is encoded, then applies them all at the
	// destination and performs its copies.
	round := func(afterFirst func(), batches ...*batch) batchCounts {
		t.Helper()
		table.reset()
		sink.newRound()
		var total batchCounts
		var frames [][]byte
		for i, b := range batches {
			enc := &batchEncoder{comp: CompressionLZ4, flags: flagXXH64, dedup: table}
			out, c := enc.appendFrame(nil, host, b)
			total.add(c)
			frames = append(frames, out)
			if i == 0 && afterFirst != nil {
				afterFirst()
			}
		}
		for _, out := range frames {
			var pb preparedBatch
			if _, err := sink.prepare(out[headerSize:len(out)-trailerSize], &pb); err != nil {
				t.Fatal(err)
			}
			if _, err := sink.run(&pb); err != nil {
				t.Fatal(err)
			}
		}
		if err := sink.copyPages(); err != nil {
			t.Fatal(err)
		}
		return total
	}
	if c := round(nil, batchOf(0, 256), batchOf(256, 256)); c.deduplicated != 3 {
		t.Fatalf("round 0: %+v, want 3 deduplicated pages", c)
	}
	if !bytes.Equal(dst.RegionHost(0), host) {
		t.Fatal("destination RAM differs after round 0")
	}
	// A later round sends page 300 alone: page 0 is not this round's.
	if c := round(nil, batchOf(300, 1)); c.deduplicated != 0 {
		t.Fatalf("round 1: %+v, want no deduplicated page", c)
	}
	// Page 0 changes after the round sent it: page 10, equal to what
	// was sent, must not name it.
	if c := round(func() { host[100] ^= 0xff }, batchOf(0, 1), batchOf(10, 1)); c.deduplicated != 0 {
		t.Fatalf("page 10 named page 0 after it changed: %+v", c)
	}
	if !bytes.Equal(dst.RegionHost(0)[10*pageSize:11*pageSize], host[10*pageSize:11*pageSize]) {
		t.Fatal("page 10 differs")
	}
}
