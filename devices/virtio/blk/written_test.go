package blk

import (
	"math/bits"
	"slices"
	"sync"
	"testing"
)

// setBlocks lists the blocks set in a Take bitmap.
func setBlocks(bm []uint64) []uint64 {
	var out []uint64
	for w, v := range bm {
		for v != 0 {
			b := uint64(bits.TrailingZeros64(v))
			out = append(out, uint64(w)*64+b)
			v &= v - 1
		}
	}
	return out
}

func TestWrittenBlocksMark(t *testing.T) {
	const K = 1 << 10
	tests := []struct {
		name  string
		size  uint64
		marks [][2]uint64 // offset, length
		want  []uint64
	}{
		{"nothing", 1 << 20, nil, nil},
		{"one sector", 1 << 20, [][2]uint64{{0, 512}}, []uint64{0}},
		{"last byte of a block", 1 << 20, [][2]uint64{{64*K - 1, 1}}, []uint64{0}},
		{"straddles two blocks", 1 << 20, [][2]uint64{{64*K - 512, 1024}}, []uint64{0, 1}},
		{"exactly one block", 1 << 20, [][2]uint64{{128 * K, 64 * K}}, []uint64{2}},
		{"zero length", 1 << 20, [][2]uint64{{128 * K, 0}}, nil},
		{"whole disk", 1 << 20, [][2]uint64{{0, 1 << 20}}, []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}},
		{"past the end ignored", 1 << 20, [][2]uint64{{1 << 20, 512}, {1<<20 - 512, 4096}}, []uint64{15}},
		{"huge length clipped", 1 << 20, [][2]uint64{{1 << 19, ^uint64(0)}}, []uint64{8, 9, 10, 11, 12, 13, 14, 15}},
		{"partial last block", 100*K + 512, [][2]uint64{{100 * K, 512}}, []uint64{1}},
		{"across a word", 200 * 64 * K, [][2]uint64{{60 * 64 * K, 10 * 64 * K}}, []uint64{60, 61, 62, 63, 64, 65, 66, 67, 68, 69}},
		{"several words at once", 300 * 64 * K, [][2]uint64{{10 * 64 * K, 200 * 64 * K}}, nil},
		{"repeated", 1 << 20, [][2]uint64{{0, 512}, {0, 512}, {512, 512}}, []uint64{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWrittenBlocks(tt.size)
			for _, m := range tt.marks {
				w.Mark(m[0], m[1])
			}
			want := tt.want
			if tt.name == "several words at once" {
				for b := uint64(10); b < 210; b++ {
					want = append(want, b)
				}
			}
			if n := w.Count(); n != len(want) {
				t.Errorf("Count %d, want %d", n, len(want))
			}
			bm := make([]uint64, w.Words())
			n, err := w.Take(bm)
			if err != nil {
				t.Fatal(err)
			}
			if got := setBlocks(bm); n != len(want) || !slices.Equal(got, want) {
				t.Errorf("Take = %d %v, want %v", n, got, want)
			}
			// Taken means cleared.
			clear(bm)
			if n, _ := w.Take(bm); n != 0 || w.Count() != 0 {
				t.Errorf("%d blocks still set after Take", n)
			}
		})
	}
}

func TestWrittenBlocksGeometry(t *testing.T) {
	w := newWrittenBlocks(100<<10 + 512)
	if w.Blocks() != 2 || w.Words() != 1 {
		t.Fatalf("blocks %d words %d", w.Blocks(), w.Words())
	}
	if off, n := w.BlockRange(0); off != 0 || n != 64<<10 {
		t.Errorf("block 0: %d+%d", off, n)
	}
	if off, n := w.BlockRange(1); off != 64<<10 || n != 36<<10+512 {
		t.Errorf("block 1: %d+%d", off, n)
	}
	if _, n := w.BlockRange(2); n != 0 {
		t.Errorf("block 2 beyond the disk has %d bytes", n)
	}
	if _, err := w.Take(nil); err == nil {
		t.Error("Take into a too small bitmap succeeded")
	}
	// Take ORs into dst: bits already there stay.
	w.Mark(0, 1)
	dst := []uint64{2}
	if n, _ := w.Take(dst); n != 1 || dst[0] != 3 {
		t.Errorf("Take = %d, dst %#x", n, dst[0])
	}
	empty := newWrittenBlocks(0)
	if empty.Blocks() != 0 || empty.Words() != 0 {
		t.Errorf("empty disk: %d blocks", empty.Blocks())
	}
	empty.Mark(0, 512)
	if n, err := empty.Take(nil); n != 0 || err != nil {
		t.Errorf("empty Take = %d, %v", n, err)
	}
}

// TestWrittenBlocksConcurrent marks from several goroutines while another
// takes: the union of everything taken is everything marked.
func TestWrittenBlocksConcurrent(t *testing.T) {
	const blocks = 1000
	w := newWrittenBlocks(blocks * WrittenBlockSize)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for b := g; b < blocks; b += 4 {
				w.Mark(uint64(b)*WrittenBlockSize+100, 512)
			}
		}(g)
	}
	union := make([]uint64, w.Words())
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	total := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		n, err := w.Take(union)
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if got := len(setBlocks(union)); got != blocks || total != blocks {
		t.Fatalf("took %d blocks (%d counted), want %d", got, total, blocks)
	}
}
