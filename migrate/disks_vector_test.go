package migrate

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// vecDisk is a memDisk that reads and writes several buffers at once
// (vectorReader, vectorWriter), at most chunk bytes a call when chunk is
// set (a short read or write), and counts the vectored calls.
type vecDisk struct {
	*memDisk
	chunk         int
	reads, writes int
	sizes         []int // bytes asked of each WritevAt
}

func (d *vecDisk) ReadvAt(bufs [][]byte, off int64) (int, error) {
	d.reads++
	n := 0
	for _, p := range bufs {
		if d.chunk > 0 && n+len(p) > d.chunk {
			p = p[:d.chunk-n]
		}
		k, err := d.ReadAt(p, off+int64(n))
		n += k
		if err != nil || k < len(p) || n == d.chunk {
			return n, err
		}
	}
	return n, nil
}

func (d *vecDisk) WritevAt(bufs [][]byte, off int64) (int, error) {
	d.writes++
	total := 0
	for _, p := range bufs {
		total += len(p)
	}
	d.sizes = append(d.sizes, total)
	n := 0
	for _, p := range bufs {
		if off+int64(n+len(p)) > int64(len(d.data)) {
			return n, errors.New("write past the end")
		}
		k, _ := d.WriteAt(p, off+int64(n))
		n += k
	}
	return n, nil
}

// runsOf returns the lengths in bytes of the runs of at least two
// adjacent non-zero blocks of d within each batch of diskBatchBlocks
// blocks: what the sink writes with one WritevAt (a lone block goes
// with WriteAt).
func runsOf(d *memDisk) []int {
	var runs []int
	cur := 0
	for b := uint64(0); b < diskBlocks(d.Size()); b++ {
		off, n := blockSpan(d.Size(), b)
		if b%diskBatchBlocks == 0 && cur > 0 {
			runs, cur = append(runs, cur), 0
		}
		if bytes.Equal(d.data[off:off+n], zeroBlock[:n]) {
			if cur > 0 {
				runs, cur = append(runs, cur), 0
			}
			continue
		}
		cur += int(n)
	}
	if cur > 0 {
		runs = append(runs, cur)
	}
	var long []int
	for _, r := range runs {
		if r > DiskBlockSize {
			long = append(long, r)
		}
	}
	return long
}

// TestDiskVectored moves a disk of random, text and zero blocks with a
// short last block through the encoder and the sink, read and written a
// block at a time or with vectored calls (also short ones): the copy is
// exact, a vectored source is read with a call per run of present blocks
// (more when its reads come short), and without compression a vectored
// target gets one write per run of adjacent non-zero blocks (runsOf).
func TestDiskVectored(t *testing.T) {
	const size = 70*DiskBlockSize + 1536
	tests := []struct {
		name       string
		vecSrc     bool
		chunk      int
		vecDst     bool
		comp       Compression
		wantWrites bool // check WritevAt calls against runsOf
	}{
		{"readat to writeat", false, 0, false, CompressionNone, false},
		{"readv to writev", true, 0, true, CompressionNone, true},
		{"short readv to writev", true, 100000, true, CompressionNone, true},
		{"readv to writeat, lz4", true, 0, false, CompressionLZ4, false},
		{"short readv to writev, lz4", true, 65536 + 7, true, CompressionLZ4, false},
		{"readat to writev, lz4", false, 0, true, CompressionLZ4, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := sampleDisk(size, 11)
			copy(data.data[size-1536:], "the short last block")
			var src SourceDisk = data
			vsrc := &vecDisk{memDisk: data, chunk: tt.chunk}
			if tt.vecSrc {
				src = vsrc
			}
			out := newMemDisk(size)
			var dst TargetDisk = out
			vdst := &vecDisk{memDisk: out}
			if tt.vecDst {
				dst = vdst
			}
			sink := newDiskSink([]TargetDisk{dst})
			sink.newRound(0)
			enc := &batchEncoder{comp: tt.comp}
			bm := make([]uint64, 2)
			data.Allocated(bm)
			var pos uint64
			b := diskBatch{}
			batches := 0
			var c batchCounts
			for nextDiskBatch(bm, diskBlocks(size), &pos, diskBatchBlocks, &b) {
				f, fc, err := enc.appendDiskFrame(nil, src, size, &b)
				if err != nil {
					t.Fatal(err)
				}
				got, err := sink.apply(f[headerSize : len(f)-trailerSize])
				if err != nil {
					t.Fatal(err)
				}
				if got != fc {
					t.Fatalf("encoded %+v, applied %+v", fc, got)
				}
				c.add(got)
				batches++
			}
			if !bytes.Equal(data.data, out.data) {
				t.Fatal("received disk differs")
			}
			if c.pages() != diskBlocks(size) || c.zero == 0 || (tt.comp == CompressionLZ4) != (c.compressed > 0) {
				t.Fatalf("counts %+v", c)
			}
			if tt.vecSrc && tt.chunk == 0 && vsrc.reads != batches {
				t.Fatalf("%d vectored reads for %d batches of adjacent blocks", vsrc.reads, batches)
			}
			if tt.vecSrc && tt.chunk > 0 && vsrc.reads <= batches {
				t.Fatalf("%d vectored reads for %d batches, reads cut at %d bytes", vsrc.reads, batches, tt.chunk)
			}
			if tt.wantWrites {
				want := runsOf(data)
				if len(vdst.sizes) != len(want) {
					t.Fatalf("writes of %v bytes, want %v", vdst.sizes, want)
				}
				for i := range want {
					if vdst.sizes[i] != want[i] {
						t.Fatalf("writes of %v bytes, want %v", vdst.sizes, want)
					}
				}
			}
		})
	}
}

// TestDiskReadRunErrors shows a disk that reads short or fails makes the
// encoder fail cleanly, leaving dst as it was.
func TestDiskReadRunErrors(t *testing.T) {
	tests := []struct {
		name string
		disk SourceDisk
	}{
		{"readat past the end", newMemDisk(DiskBlockSize)},
		{"readv past the end", &vecDisk{memDisk: newMemDisk(DiskBlockSize)}},
		{"readv short at the end", &vecDisk{memDisk: newMemDisk(DiskBlockSize), chunk: 1000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := &batchEncoder{}
			// A batch of two blocks on a disk of one: the second
			// reads past the end.
			b := diskBatch{count: 2, present: 3}
			prefix := []byte("kept")
			got, _, err := enc.appendDiskFrame(prefix, tt.disk, 2*DiskBlockSize, &b)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error %v, want an unexpected EOF", err)
			}
			if string(got) != "kept" {
				t.Fatalf("dst %q after the error", got)
			}
		})
	}
}

// TestDiskLZ4Adaptive shows the encoder stops trying LZ4 after a stretch
// of blocks that do not shrink, tries every lz4ProbeBlocks-th block
// meanwhile, and compresses again from the first one that shrinks.
func TestDiskLZ4Adaptive(t *testing.T) {
	random := func(seed uint64) []byte {
		p := make([]byte, DiskBlockSize)
		rand.NewChaCha8([32]byte{byte(seed)}).Read(p)
		return p
	}
	text := bytes.Repeat([]byte("godwit "), DiskBlockSize/7+1)[:DiskBlockSize]
	tests := []struct {
		name           string
		random, texts  int
		wantCompressed int
	}{
		{"text only", 0, 20, 20},
		{"short random stretch", lz4GiveUpBlocks - 1, 20, 20},
		// The stretch ends 8 blocks after a try: the text block
		// tried next is the (lz4ProbeBlocks-8)-th.
		{"long random stretch", 2*lz4GiveUpBlocks + 8, 20, 20 - (lz4ProbeBlocks - 8) + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.random + tt.texts
			d := newMemDisk(n * DiskBlockSize)
			for i := range tt.random {
				copy(d.data[i*DiskBlockSize:], random(uint64(i)))
			}
			for i := tt.random; i < n; i++ {
				copy(d.data[i*DiskBlockSize:], text)
			}
			enc := &batchEncoder{comp: CompressionLZ4}
			var c batchCounts
			for first := 0; first < n; first++ {
				b := diskBatch{first: uint64(first), count: 1, present: 1}
				_, bc, err := enc.appendDiskFrame(nil, d, d.Size(), &b)
				if err != nil {
					t.Fatal(err)
				}
				c.add(bc)
			}
			if c.compressed != uint64(tt.wantCompressed) || c.normal != uint64(n-tt.wantCompressed) {
				t.Fatalf("counts %+v, want %d compressed", c, tt.wantCompressed)
			}
		})
	}
}
