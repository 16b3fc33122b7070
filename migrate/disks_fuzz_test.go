package migrate

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The storage decoders' fuzz targets. Their seed corpus is committed
// under testdata/fuzz (TestWriteStorageFuzzSeeds regenerates it) and
// runs with every `go test`.

// fuzzDiskSize is the disk of the storage fuzz targets: 20 blocks and a
// short one of 512 bytes.
const fuzzDiskSize = 20*DiskBlockSize + 512

// FuzzStorage feeds arbitrary STORAGE payloads to its decoder: it must
// never panic, and what it accepts must be canonical (it re-encodes to
// the same bytes) and within its bounds.
func FuzzStorage(f *testing.F) {
	for _, seed := range storageSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		s, err := parseStorage(p)
		if err != nil {
			return
		}
		if again := s.append(nil); !bytes.Equal(again, p) {
			t.Fatalf("accepted %x, which re-encodes as %x", p, again)
		}
		if len(s.disks) > MaxDisks || (!s.included() && len(s.disks) > 0) {
			t.Fatalf("accepted %d disks (included %v)", len(s.disks), s.included())
		}
		for _, d := range s.disks {
			if d.size == 0 || d.size > MaxDiskSize || d.size%512 != 0 || d.blockSize != DiskBlockSize {
				t.Fatalf("accepted disk %+v", d)
			}
		}
	})
}

// FuzzDiskBatch feeds arbitrary DISK_BATCH payloads to the decoder over
// a small disk in memory: it must never panic nor write outside the disk
// (the fake's slices would panic), and what it counts must be what the
// bitmaps say.
func FuzzDiskBatch(f *testing.F) {
	for _, seed := range diskBatchSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		sink := newDiskSink([]TargetDisk{newMemDisk(fuzzDiskSize)})
		sink.newRound(1)
		c, err := sink.apply(p)
		if err == nil && (c.pages() == 0 || c.pages() > MaxDiskBatchBlocks) {
			t.Fatalf("accepted a batch of %d blocks", c.pages())
		}
	})
}

// FuzzReceiveStorage runs the whole receiver on a valid HELLO of version
// 3 and STORAGE for one disk, followed by arbitrary bytes: it must never
// panic, and it must fail (discarding the target, whose disk is never
// committed) unless the bytes form a complete migration.
func FuzzReceiveStorage(f *testing.F) {
	ram := []regionDesc{{GPA: 0, Size: destTestRAM}}
	prefix := storageStream(&stream{}, ram, fuzzDiskSize)
	for _, seed := range receiveStorageSeeds(f) {
		f.Add(seed)
	}
	mem := newTestMemory(f, destTestRAM)
	f.Fuzz(func(t *testing.T, data []byte) {
		in := append(bytes.Clone(prefix.Bytes()), data...)
		disk := newMemDisk(fuzzDiskSize)
		tgt := &storageTarget{testTarget: testTarget{mem: mem}, disks: []TargetDisk{disk}}
		got, _, err := Receive(t.Context(), &scriptConn{r: bytes.NewReader(in)}, storageFactory(tgt), ReceiveOptions{})
		if err != nil && (got != nil || !tgt.discarded || tgt.started) {
			t.Fatalf("failed receive: target %v discarded=%v started=%v", got, tgt.discarded, tgt.started)
		}
		if err == nil && (!tgt.started || tgt.discarded || disk.commits != 1) {
			t.Fatalf("successful receive: started=%v discarded=%v commits=%d", tgt.started, tgt.discarded, disk.commits)
		}
	})
}

// storageSeeds are STORAGE payloads: valid ones and each kind of refusal.
func storageSeeds() map[string][]byte {
	one := storageInfo{flags: storageFlagIncluded, disks: []diskDesc{{size: fuzzDiskSize, blockSize: DiskBlockSize}}}
	return map[string][]byte{
		"none":          storageInfo{}.append(nil),
		"one-disk":      one.append(nil),
		"two-disks":     storageInfo{flags: 1, disks: []diskDesc{{512, DiskBlockSize}, {MaxDiskSize, DiskBlockSize}}}.append(nil),
		"unknown-flag":  storageInfo{flags: 0x80000001}.append(nil),
		"odd-size":      storageInfo{flags: 1, disks: []diskDesc{{513, DiskBlockSize}}}.append(nil),
		"block-size":    storageInfo{flags: 1, disks: []diskDesc{{512, 4096}}}.append(nil),
		"count-too-big": append(storageInfo{flags: 1}.append(nil)[:4], 0xff, 0xff, 0xff, 0xff),
		"trailing":      append(one.append(nil), 1),
	}
}

// diskBatchSeeds are DISK_BATCH payloads: encoded ones, raw and LZ4, the
// short last block, and hostile ones.
func diskBatchSeeds(tb testing.TB) map[string][]byte {
	src := seedDisk()
	out := map[string][]byte{}
	for _, comp := range []Compression{CompressionNone, CompressionLZ4} {
		enc := &batchEncoder{comp: comp}
		// Raw seeds stay small: a zero block and the short last one.
		batches := []diskBatch{{first: 19, count: 2, present: 3}}
		if comp == CompressionLZ4 {
			batches = append(batches, diskBatch{first: 0, count: 4, present: 0xf})
		}
		for _, b := range batches {
			fr, _, err := enc.appendDiskFrame(nil, src, src.Size(), &b)
			if err != nil {
				tb.Fatal(err)
			}
			out[fmt.Sprintf("%s-%d", comp, b.first)] = fr[headerSize : len(fr)-trailerSize]
		}
	}
	out["zero-blocks"] = diskPayload(0, 0, 9, []byte{0xff, 1}, []byte{0xff, 1})
	out["outside"] = diskPayload(0, 20, 2, []byte{3}, []byte{3})
	out["lz4-tiny"] = append(diskPayload(0, 0, 1, []byte{1}, []byte{0}), blockRec(encLZ4, []byte{0x1f, 0, 1, 0})...)
	out["huge-length"] = diskPayload(0, 0, 1, []byte{1}, []byte{0}, []byte{encRaw, 0xff, 0xff, 0xff, 0xff})
	return out
}

// seedDisk returns the disk of the seeds: compressible text in blocks 0
// to 9 (each its own), zeros in 10 to 19, text in the short last block,
// so that the committed corpus stays small.
func seedDisk() *memDisk {
	d := newMemDisk(fuzzDiskSize)
	for b := 0; b < 10; b++ {
		blk := d.data[b*DiskBlockSize : (b+1)*DiskBlockSize]
		for i := range blk {
			blk[i] = "godwit disk "[i%12] + byte(b)
		}
	}
	copy(d.data[20*DiskBlockSize:], "the short last block")
	return d
}

// receiveStorageSeeds are what may follow HELLO and STORAGE: a complete
// migration (a round of every page and block, a round with one rewritten
// block, state, COMPLETE) and broken ones.
func receiveStorageSeeds(tb testing.TB) map[string][]byte {
	srcRAM := newTestMemory(tb, destTestRAM)
	copy(srcRAM.RegionHost(0)[3*pageSize:], "page content")
	disk := seedDisk()
	var full stream
	full.begin(0)
	pages := full.allPages(srcRAM, CompressionLZ4)
	var blocks uint64
	bm := make([]uint64, 1)
	disk.Allocated(bm)
	enc := &batchEncoder{comp: CompressionLZ4}
	var pos uint64
	b := diskBatch{}
	for nextDiskBatch(bm, diskBlocks(fuzzDiskSize), &pos, diskBatchBlocks, &b) {
		fr, c, err := enc.appendDiskFrame(nil, disk, disk.Size(), &b)
		if err != nil {
			tb.Fatal(err)
		}
		full.Write(fr)
		blocks += c.pages()
	}
	full.frame(frameRoundEnd, 0, roundEnd{round: 0, pages: pages, diskBlocks: blocks}.appendVersion(nil, 3))
	full.begin(1)
	full.frame(frameDiskBatch, 0, diskPayload(0, 20, 1, []byte{1}, []byte{1}))
	full.frame(frameRoundEnd, 0, roundEnd{round: 1, diskBlocks: 1}.appendVersion(nil, 3))
	full.state(testSections).frame(frameComplete, 0, nil)
	return map[string][]byte{
		"complete":      full.Bytes(),
		"round0-start":  (&stream{}).begin(0).Bytes(),
		"disk-only":     (&stream{}).begin(0).frame(frameDiskBatch, 0, diskPayload(0, 0, 1, []byte{1}, []byte{1})).Bytes(),
		"v2-round-end":  (&stream{}).begin(0).end(0, 0).Bytes(),
		"error":         (&stream{}).frame(frameError, 0, []byte("x")).Bytes(),
		"storage-twice": (&stream{}).frame(frameStorage, 0, storageInfo{}.append(nil)).Bytes(),
	}
}

// TestWriteStorageFuzzSeeds regenerates the committed seed corpus of the
// storage fuzz targets under testdata/fuzz when
// GODWIT_WRITE_FUZZ_SEEDS=1.
func TestWriteStorageFuzzSeeds(t *testing.T) {
	if os.Getenv("GODWIT_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set GODWIT_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	for target, seeds := range map[string]map[string][]byte{
		"FuzzStorage":        storageSeeds(),
		"FuzzDiskBatch":      diskBatchSeeds(t),
		"FuzzReceiveStorage": receiveStorageSeeds(t),
	} {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
