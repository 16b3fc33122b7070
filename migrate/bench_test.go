package migrate

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// BenchmarkEncodeBatch measures encoding one full batch (1024 pages,
// 4 MiB) of each kind of page, with and without LZ4. Bytes/s is guest RAM
// encoded per second.
func BenchmarkEncodeBatch(b *testing.B) {
	mem := newTestMemory(b, 8<<20)
	host := mem.RegionHost(0)
	kinds := []string{"zero", "random", "text"}
	for _, kind := range kinds {
		rnd := rand.New(rand.NewPCG(7, 7))
		for i := 0; i < MaxBatchPages; i++ {
			fillPage(host[i*pageSize:(i+1)*pageSize], kind, rnd)
		}
		var bt batch
		bt.count = MaxBatchPages
		for i := range bt.present {
			bt.present[i] = ^uint64(0)
		}
		for _, comp := range []Compression{CompressionNone, CompressionLZ4} {
			b.Run(kind+"/"+comp.String(), func(b *testing.B) {
				enc := &batchEncoder{comp: comp}
				buf := make([]byte, 0, maxBatchFrame+lz4Room)
				b.SetBytes(MaxBatchPages * pageSize)
				var out []byte
				for b.Loop() {
					out, _ = enc.appendFrame(buf[:0], host, &bt)
				}
				b.ReportMetric(float64(len(out))/float64(MaxBatchPages*pageSize), "wire/ram")
			})
		}
	}
}

// isZeroWords is the word-wise alternative to isZero, kept for the
// comparison in BenchmarkIsZero.
func isZeroWords(p []byte) bool {
	var acc uint64
	for i := 0; i+64 <= len(p); i += 64 {
		acc |= binary.LittleEndian.Uint64(p[i:]) | binary.LittleEndian.Uint64(p[i+8:]) |
			binary.LittleEndian.Uint64(p[i+16:]) | binary.LittleEndian.Uint64(p[i+24:]) |
			binary.LittleEndian.Uint64(p[i+32:]) | binary.LittleEndian.Uint64(p[i+40:]) |
			binary.LittleEndian.Uint64(p[i+48:]) | binary.LittleEndian.Uint64(p[i+56:])
		if acc != 0 {
			return false
		}
	}
	return true
}

func BenchmarkIsZero(b *testing.B) {
	page := make([]byte, pageSize)
	impls := []struct {
		name string
		f    func([]byte) bool
	}{{"memequal", isZero}, {"words", isZeroWords}}
	for _, im := range impls {
		b.Run(im.name, func(b *testing.B) {
			b.SetBytes(pageSize)
			for b.Loop() {
				if !im.f(page) {
					b.Fatal("zero page not zero")
				}
			}
		})
	}
}

// BenchmarkApplyBatch measures the destination decoding a batch of mixed
// pages.
func BenchmarkApplyBatch(b *testing.B) {
	for _, comp := range []Compression{CompressionNone, CompressionLZ4} {
		b.Run(comp.String(), func(b *testing.B) {
			src := newTestMemory(b, 4<<20)
			host := src.RegionHost(0)
			rnd := rand.New(rand.NewPCG(3, 3))
			kinds := []string{"zero", "random", "text", "text"}
			for i := 0; i < MaxBatchPages; i++ {
				fillPage(host[i*pageSize:(i+1)*pageSize], kinds[i%4], rnd)
			}
			var bt batch
			bt.count = MaxBatchPages
			for i := range bt.present {
				bt.present[i] = ^uint64(0)
			}
			out, _ := (&batchEncoder{comp: comp}).appendFrame(nil, host, &bt)
			payload := out[headerSize : len(out)-trailerSize]
			sink := newBatchSink(newTestMemory(b, 4<<20), false)
			b.SetBytes(MaxBatchPages * pageSize)
			for b.Loop() {
				sink.newRound()
				if _, err := sink.apply(payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
