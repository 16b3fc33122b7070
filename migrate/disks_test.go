package migrate

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/pierrec/lz4/v4"
)

// memDisk is a disk in memory: a SourceDisk with a written bitmap the test
// sets, and a TargetDisk that records punches, syncs and commits. Like a
// new image, it starts out zero.
type memDisk struct {
	mu        sync.Mutex
	data      []byte
	written   []uint64
	allocated []uint64 // nil: everything
	punched   int
	syncs     int
	commits   int
	commitErr error
}

func newMemDisk(size int) *memDisk {
	return &memDisk{data: make([]byte, size), written: make([]uint64, (diskBlocks(uint64(size))+63)/64)}
}

func (d *memDisk) Size() uint64 { return uint64(len(d.data)) }
func (d *memDisk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off >= int64(len(d.data)) {
		return 0, io.EOF
	}
	n := copy(p, d.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (d *memDisk) Allocated(dst []uint64) error {
	if d.allocated != nil {
		copy(dst, d.allocated)
		return nil
	}
	for b := uint64(0); b < diskBlocks(d.Size()); b++ {
		dst[b/64] |= 1 << (b % 64)
	}
	return nil
}
func (d *memDisk) TakeWritten(dst []uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, w := range d.written {
		dst[i] |= w
	}
	clear(d.written)
	return nil
}
func (d *memDisk) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return copy(d.data[off:], p), nil
}
func (d *memDisk) Zero(off, n uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.data[off : off+n])
	d.punched++
	return nil
}
func (d *memDisk) Sync() error { d.mu.Lock(); d.syncs++; d.mu.Unlock(); return nil }
func (d *memDisk) Commit() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.commits++
	return d.commitErr
}

// write is a guest write: data, then the written bit of every block.
func (d *memDisk) write(off int, p []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.data[off:], p)
	for b := off / DiskBlockSize; b <= (off+len(p)-1)/DiskBlockSize; b++ {
		d.written[b/64] |= 1 << (b % 64)
	}
}

// sampleDisk returns a disk of size bytes with random, text and zero
// blocks.
func sampleDisk(size int, seed uint64) *memDisk {
	d := newMemDisk(size)
	rnd := rand.New(rand.NewPCG(seed, seed))
	for off := 0; off < size; off += DiskBlockSize {
		blk := d.data[off:min(off+DiskBlockSize, size)]
		switch rnd.IntN(3) {
		case 0:
			for i := range blk {
				blk[i] = byte(rnd.Uint32())
			}
		case 1:
			for i := range blk {
				blk[i] = "godwit "[i%7]
			}
		}
	}
	return d
}

func TestStorageInfo(t *testing.T) {
	ok := storageInfo{flags: storageFlagIncluded, disks: []diskDesc{{size: 512, blockSize: DiskBlockSize}, {size: MaxDiskSize, blockSize: DiskBlockSize}}}
	got, err := parseStorage(ok.append(nil))
	if err != nil || got.flags != ok.flags || len(got.disks) != 2 || got.disks[1] != ok.disks[1] {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if s, err := parseStorage(storageInfo{}.append(nil)); err != nil || s.included() {
		t.Fatalf("no storage: %+v, %v", s, err)
	}
	disk := func(size uint64, bs uint32) diskDesc { return diskDesc{size: size, blockSize: bs} }
	tests := []struct {
		name    string
		p       []byte
		wantErr string
	}{
		{"truncated", []byte{1, 0, 0}, "truncated"},
		{"unknown flag", storageInfo{flags: 3}.append(nil), "unknown bits"},
		{"disks without storage", storageInfo{disks: []diskDesc{disk(512, DiskBlockSize)}}.append(nil), "without including storage"},
		{"too many disks", binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, 1), MaxDisks+1), "limit"},
		{"count beyond payload", binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, 1), 2), "truncated"},
		{"size zero", storageInfo{flags: 1, disks: []diskDesc{disk(0, DiskBlockSize)}}.append(nil), "size 0"},
		{"size not sectors", storageInfo{flags: 1, disks: []diskDesc{disk(1000, DiskBlockSize)}}.append(nil), "size 1000"},
		{"size too large", storageInfo{flags: 1, disks: []diskDesc{disk(MaxDiskSize+512, DiskBlockSize)}}.append(nil), "not a multiple"},
		{"block size", storageInfo{flags: 1, disks: []diskDesc{disk(512, 4096)}}.append(nil), "block size 4096"},
		{"trailing", append(storageInfo{flags: 1}.append(nil), 0), "trailing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseStorage(tt.p)
			if err == nil || !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("parseStorage error %v, want a protocol error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestNextDiskBatch(t *testing.T) {
	bm := make([]uint64, 3)
	set := func(bits ...uint64) {
		clear(bm)
		for _, b := range bits {
			bm[b/64] |= 1 << (b % 64)
		}
	}
	type run struct {
		first   uint64
		count   int
		present uint64
	}
	tests := []struct {
		name   string
		bits   []uint64
		blocks uint64
		limit  int
		want   []run
	}{
		{"empty", nil, 150, 16, nil},
		{"one", []uint64{5}, 150, 16, []run{{5, 1, 1}}},
		{"gap inside a batch", []uint64{5, 9}, 150, 16, []run{{5, 5, 0x11}}},
		{"split by the limit", []uint64{0, 1, 2, 3, 4}, 150, 2, []run{{0, 2, 3}, {2, 2, 3}, {4, 1, 1}}},
		{"across words", []uint64{60, 63, 64, 70}, 150, 16, []run{{60, 11, 1 | 1<<3 | 1<<4 | 1<<10}}},
		{"limit 64 across words", []uint64{10, 73}, 150, 64, []run{{10, 64, 1 | 1<<63}}},
		{"bits past the disk ignored", []uint64{149, 150, 151}, 150, 16, []run{{149, 1, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set(tt.bits...)
			var got []run
			var pos uint64
			var b diskBatch
			for nextDiskBatch(bm, tt.blocks, &pos, tt.limit, &b) {
				got = append(got, run{b.first, b.count, b.present})
			}
			if len(got) != len(tt.want) {
				t.Fatalf("runs %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("runs %+v, want %+v", got, tt.want)
				}
			}
		})
	}
}

// encodeDisk encodes every block of src marked in bm (all when nil) into
// DISK_BATCH payloads for disk index idx.
func encodeDisk(t *testing.T, src *memDisk, idx int, comp Compression, bm []uint64) [][]byte {
	t.Helper()
	blocks := diskBlocks(src.Size())
	if bm == nil {
		bm = make([]uint64, (blocks+63)/64)
		src.Allocated(bm)
	}
	enc := &batchEncoder{comp: comp}
	var out [][]byte
	var pos uint64
	b := diskBatch{disk: idx}
	for nextDiskBatch(bm, blocks, &pos, diskBatchBlocks, &b) {
		f, _, err := enc.appendDiskFrame(nil, src, src.Size(), &b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f[headerSize:len(f)-trailerSize])
	}
	return out
}

func TestDiskBatchRoundTrip(t *testing.T) {
	// 40 full blocks and a short one of 1536 bytes.
	const size = 40*DiskBlockSize + 1536
	for _, comp := range []Compression{CompressionNone, CompressionLZ4} {
		t.Run(comp.String(), func(t *testing.T) {
			src := sampleDisk(size, 7)
			copy(src.data[size-1536:], "the short last block")
			dst := newMemDisk(size)
			sink := newDiskSink([]TargetDisk{newMemDisk(512), dst})
			sink.newRound(0)
			var c batchCounts
			for _, p := range encodeDisk(t, src, 1, comp, nil) {
				n, err := sink.apply(p)
				if err != nil {
					t.Fatal(err)
				}
				c.add(n)
			}
			if !bytes.Equal(src.data, dst.data) {
				t.Fatal("received disk differs")
			}
			if c.pages() != 41 || c.zero == 0 || (comp == CompressionLZ4) != (c.compressed > 0) {
				t.Fatalf("counts %+v", c)
			}
			if !sink.touched[1] || sink.touched[0] || dst.punched != 0 {
				t.Fatalf("touched %v, punched %d", sink.touched, dst.punched)
			}
			// A later round: a block the guest cleared is punched.
			clear(src.data[DiskBlockSize : 2*DiskBlockSize])
			bm := []uint64{2}
			sink.newRound(1)
			for _, p := range encodeDisk(t, src, 1, comp, bm) {
				if _, err := sink.apply(p); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(src.data, dst.data) || dst.punched != 1 {
				t.Fatalf("after the zero block: equal %v, punched %d", bytes.Equal(src.data, dst.data), dst.punched)
			}
		})
	}
}

// diskPayload builds a DISK_BATCH payload by hand.
func diskPayload(disk uint32, first uint64, count uint32, present, zero []byte, blocks ...[]byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, disk)
	b = binary.LittleEndian.AppendUint64(b, first)
	b = binary.LittleEndian.AppendUint32(b, count)
	b = append(b, present...)
	b = append(b, zero...)
	for _, p := range blocks {
		b = append(b, p...)
	}
	return b
}

// blockRec encodes one block record.
func blockRec(enc byte, data []byte) []byte {
	b := []byte{enc}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func TestDiskBatchHostile(t *testing.T) {
	const size = 10*DiskBlockSize + 512 // 11 blocks, the last 512 bytes
	raw := bytes.Repeat([]byte{1}, DiskBlockSize)
	var c lz4.Compressor
	compress := func(p []byte) []byte {
		buf := make([]byte, lz4.CompressBlockBound(len(p)))
		n, _ := c.CompressBlock(p, buf)
		return buf[:n]
	}
	shortLZ4 := compress(bytes.Repeat([]byte("ab"), DiskBlockSize/4))
	longLZ4 := compress(bytes.Repeat([]byte("ab"), DiskBlockSize))
	tests := []struct {
		name    string
		payload []byte
		wantErr string
	}{
		{"truncated header", []byte{0, 0, 0}, "truncated"},
		{"disk out of range", diskPayload(1, 0, 1, []byte{1}, []byte{1}), "disk 1 out of range"},
		{"huge disk index", diskPayload(0xffffffff, 0, 1, []byte{1}, []byte{1}), "out of range"},
		{"count zero", diskPayload(0, 0, 0, nil, nil), "block count 0"},
		{"count too large", diskPayload(0, 0, MaxDiskBatchBlocks+1, nil, nil), "block count"},
		{"first block beyond the disk", diskPayload(0, 11, 1, []byte{1}, []byte{1}), "outside disk"},
		{"run past the end", diskPayload(0, 8, 4, []byte{1}, []byte{1}), "outside disk"},
		{"overflowing first block", diskPayload(0, 1<<63, 8, []byte{1}, []byte{1}), "outside disk"},
		{"bitmaps truncated", diskPayload(0, 0, 9, []byte{1}, nil), "truncated"},
		{"bit past count", diskPayload(0, 0, 3, []byte{0x09}, []byte{0x08}), "bits past"},
		{"zero bit not present", diskPayload(0, 0, 8, []byte{0x01}, []byte{0x03}), "not present"},
		{"no blocks", diskPayload(0, 0, 8, []byte{0}, []byte{0}), "no blocks"},
		{"raw block short", diskPayload(0, 0, 1, []byte{1}, []byte{0}, blockRec(encRaw, raw[:4096])), "length 4096"},
		{"raw last block long", diskPayload(0, 10, 1, []byte{1}, []byte{0}, blockRec(encRaw, raw[:1024])), "length 1024, want 512"},
		{"length beyond payload", diskPayload(0, 0, 1, []byte{1}, []byte{0}, blockRec(encRaw, raw)[:100]), "truncated"},
		{"huge length", diskPayload(0, 0, 1, []byte{1}, []byte{0}, []byte{encLZ4, 0xff, 0xff, 0xff, 0x7f}), "length 2147483647"},
		{"missing record", diskPayload(0, 0, 2, []byte{3}, []byte{0}, blockRec(encRaw, raw)), "truncated"},
		{"trailing bytes", append(diskPayload(0, 0, 1, []byte{1}, []byte{0}, blockRec(encRaw, raw)), 0), "trailing"},
		{"unknown encoding", diskPayload(0, 0, 1, []byte{1}, []byte{0}, blockRec(9, raw)), "unknown encoding 9"},
		{"lz4 empty", diskPayload(0, 0, 1, []byte{1}, []byte{0}, blockRec(encLZ4, nil)), "length 0"},
		{"lz4 not smaller", diskPayload(0, 0, 1, []byte{1}, []byte{0}, blockRec(encLZ4, raw)), "length 65536"},
		{"lz4 decompresses short", diskPayload(0, 0, 1, []byte{1}, []byte{0}, blockRec(encLZ4, shortLZ4)), "decompressed to 32768"},
		{"lz4 decompresses long", diskPayload(0, 0, 1, []byte{1}, []byte{0}, blockRec(encLZ4, longLZ4)), "LZ4 block 0"},
		{"lz4 garbage", diskPayload(0, 0, 1, []byte{1}, []byte{0}, blockRec(encLZ4, []byte{0xff, 0xff, 0xff})), "LZ4 block 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := newDiskSink([]TargetDisk{newMemDisk(size)})
			_, err := sink.apply(tt.payload)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrProtocol) {
				t.Fatalf("apply error %v, want a protocol error containing %q", err, tt.wantErr)
			}
		})
	}
	t.Run("block twice in one round", func(t *testing.T) {
		sink := newDiskSink([]TargetDisk{newMemDisk(size)})
		p := diskPayload(0, 2, 1, []byte{1}, []byte{1})
		if _, err := sink.apply(p); err != nil {
			t.Fatal(err)
		}
		if _, err := sink.apply(p); err == nil || !strings.Contains(err.Error(), "sent twice") {
			t.Fatalf("second apply: %v", err)
		}
		sink.newRound(1)
		if _, err := sink.apply(p); err != nil {
			t.Fatalf("the next round: %v", err)
		}
	})
}

// storageTarget is a testTarget with disks.
type storageTarget struct {
	testTarget
	disks []TargetDisk
}

func (t *storageTarget) TargetDisks() []TargetDisk { return t.disks }

// storageFactory hands out t for the config "ok".
func storageFactory(t *storageTarget) TargetFactory {
	return func(cfg []byte) (Target, error) {
		if string(cfg) != "ok" {
			return nil, errors.New("config not ok")
		}
		return t, nil
	}
}

// storageStream starts a stream of protocol version 3 for a VM with RAM
// like src's and disks of the given sizes.
func storageStream(src *stream, ram []regionDesc, sizes ...uint64) *stream {
	h := hello{version: 3, pageSize: pageSize, config: []byte("ok"), regions: ram}
	src.frame(frameHello, 0, h.append(nil))
	st := storageInfo{flags: storageFlagIncluded}
	for _, sz := range sizes {
		st.disks = append(st.disks, diskDesc{size: sz, blockSize: DiskBlockSize})
	}
	return src.frame(frameStorage, 0, st.append(nil))
}

func TestReceiveStorage(t *testing.T) {
	srcRAM := sourceRAM(t)
	ram := []regionDesc{{GPA: 0, Size: destTestRAM}}
	const size = 20*DiskBlockSize + 512
	endV3 := func(s *stream, round uint32, pages, blocks uint64) *stream {
		return s.frame(frameRoundEnd, 0, roundEnd{round: round, pages: pages, diskBlocks: blocks}.appendVersion(nil, 3))
	}
	state, _ := encodeState(testSections)
	full := func(src *memDisk) *stream {
		s := &stream{}
		storageStream(s, ram, size)
		s.begin(0)
		n := s.allPages(srcRAM, CompressionLZ4)
		var blocks uint64
		for _, p := range encodeDisk(t, src, 0, CompressionLZ4, nil) {
			s.frame(frameDiskBatch, 0, p)
			var b preparedDiskBatch
			k, _ := newDiskSink([]TargetDisk{newMemDisk(size)}).prepare(p, &b)
			blocks += k
		}
		return endV3(s, 0, n, blocks)
	}
	t.Run("happy path", func(t *testing.T) {
		src := sampleDisk(size, 3)
		dst := newMemDisk(size)
		s := full(src)
		// Round 1: the guest rewrote a block and cleared another.
		src.write(3*DiskBlockSize, bytes.Repeat([]byte{7}, 100))
		src.write(5*DiskBlockSize, make([]byte, DiskBlockSize))
		bm := make([]uint64, 1)
		src.TakeWritten(bm)
		s.begin(1)
		ps := encodeDisk(t, src, 0, CompressionNone, bm)
		for _, p := range ps {
			s.frame(frameDiskBatch, 0, p)
		}
		endV3(s, 1, 0, 2)
		s.frame(frameState, 0, state).frame(frameComplete, 0, nil)
		tgt := &storageTarget{testTarget: testTarget{mem: newTestMemory(t, destTestRAM)}, disks: []TargetDisk{dst}}
		conn := &scriptConn{r: bytes.NewReader(s.Bytes())}
		got, st, err := Receive(context.Background(), conn, storageFactory(tgt), ReceiveOptions{})
		if err != nil || got != tgt {
			t.Fatalf("Receive: %v", err)
		}
		if !bytes.Equal(src.data, dst.data) {
			t.Fatal("received disk differs")
		}
		if dst.syncs != 2 || dst.commits != 1 || dst.punched != 1 {
			t.Fatalf("syncs %d, commits %d, punches %d", dst.syncs, dst.commits, dst.punched)
		}
		if !st.Storage || st.DiskBlocks.Zero == 0 {
			t.Fatalf("destination stats %+v", st)
		}
	})
	hostile := []struct {
		name    string
		stream  func() *stream
		disks   []TargetDisk
		wantErr string
		refused bool
	}{
		{name: "v3 HELLO without STORAGE", wantErr: "unexpected MEMORY_BEGIN frame in state WaitStorage",
			stream: func() *stream {
				s := &stream{}
				h := hello{version: 3, pageSize: pageSize, config: []byte("ok"), regions: ram}
				return s.frame(frameHello, 0, h.append(nil)).begin(0)
			}},
		{name: "STORAGE in a version 2 migration", wantErr: "unexpected STORAGE frame in state WaitMemory",
			stream: func() *stream {
				s := (&stream{}).hello(srcRAM, "ok")
				return s.frame(frameStorage, 0, storageInfo{}.append(nil))
			}},
		{name: "DISK_BATCH without storage", wantErr: "in a migration without storage",
			stream: func() *stream {
				s := (&stream{}).hello(srcRAM, "ok").begin(0)
				return s.frame(frameDiskBatch, 0, diskPayload(0, 0, 1, []byte{1}, []byte{1}))
			}},
		{name: "disk count mismatch", disks: []TargetDisk{newMemDisk(size), newMemDisk(size)}, refused: true,
			wantErr: "the source sends 1 disks, the VM built here receives 2",
			stream:  func() *stream { return storageStream(&stream{}, ram, size) }},
		{name: "disk size mismatch", disks: []TargetDisk{newMemDisk(size + 512)}, refused: true,
			wantErr: "disk 0: the source sends 1311232 bytes, the image here has 1311744",
			stream:  func() *stream { return storageStream(&stream{}, ram, size) }},
		{name: "disks expected but not sent", disks: []TargetDisk{newMemDisk(size)}, refused: true,
			wantErr: "expects its 1 disks in the migration stream",
			stream:  func() *stream { return (&stream{}).hello(srcRAM, "ok") }},
		{name: "ROUND_END of version 2 in a version 3 migration", wantErr: "truncated",
			stream: func() *stream {
				s := storageStream(&stream{}, ram, size).begin(0)
				return s.end(0, 0)
			}},
		{name: "disk blocks miscounted", wantErr: "source sent 5 disk blocks, 1 arrived",
			stream: func() *stream {
				s := storageStream(&stream{}, ram, size).begin(0)
				s.frame(frameDiskBatch, 0, diskPayload(0, 0, 1, []byte{1}, []byte{1}))
				return endV3(s, 0, 0, 5)
			}},
		{name: "hostile block", wantErr: "outside disk",
			stream: func() *stream {
				s := storageStream(&stream{}, ram, size).begin(0)
				return s.frame(frameDiskBatch, 0, diskPayload(0, 21, 1, []byte{1}, []byte{1}))
			}},
		{name: "future version", wantErr: "protocol version 5 not supported (this side speaks 2 to 4)", refused: true,
			stream: func() *stream {
				h := hello{version: 5, pageSize: pageSize, config: []byte("ok"), regions: ram}
				return (&stream{}).frame(frameHello, 0, append(h.append(nil), "what version 5 adds"...))
			}},
		{name: "old version", wantErr: "protocol version 1 not supported (this side speaks 2 to 4)", refused: true,
			stream: func() *stream {
				h := hello{version: 1, pageSize: pageSize, config: []byte("ok"), regions: ram}
				return (&stream{}).frame(frameHello, 0, h.append(nil))
			}},
	}
	for _, tt := range hostile {
		t.Run(tt.name, func(t *testing.T) {
			disks := tt.disks
			if disks == nil {
				disks = []TargetDisk{newMemDisk(size)}
			}
			tgt := &storageTarget{testTarget: testTarget{mem: newTestMemory(t, destTestRAM)}, disks: disks}
			if tt.name == "DISK_BATCH without storage" || tt.name == "STORAGE in a version 2 migration" {
				tgt.disks = nil
			}
			conn := &scriptConn{r: bytes.NewReader(tt.stream().Bytes())}
			got, _, err := Receive(context.Background(), conn, storageFactory(tgt), ReceiveOptions{})
			if err == nil || got != nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Receive = %v, %v; want an error containing %q", got, err, tt.wantErr)
			}
			replies := conn.replies(t)
			last := replies[len(replies)-1]
			if want := map[bool]frameType{true: frameRefuse, false: frameError}[tt.refused]; last.typ != want {
				t.Fatalf("last reply %v, want %v", last.typ, want)
			}
		})
	}
	t.Run("commit fails", func(t *testing.T) {
		src := sampleDisk(size, 4)
		dst := newMemDisk(size)
		dst.commitErr = errors.New("EIO")
		s := full(src)
		s.frame(frameState, 0, state).frame(frameComplete, 0, nil)
		tgt := &storageTarget{testTarget: testTarget{mem: newTestMemory(t, destTestRAM)}, disks: []TargetDisk{dst}}
		_, _, err := Receive(context.Background(), &scriptConn{r: bytes.NewReader(s.Bytes())}, storageFactory(tgt), ReceiveOptions{})
		if err == nil || !strings.Contains(err.Error(), "committing disk 0: EIO") || !tgt.discarded || tgt.started {
			t.Fatalf("Receive: %v, discarded %v, started %v", err, tgt.discarded, tgt.started)
		}
	})
}

// storageSource is an idleSource with disks.
type storageSource struct {
	idleSource
	disks []SourceDisk
}

func (v *storageSource) SourceDisks() []SourceDisk { return v.disks }

// TestSendStorageHandshake checks what the source says first: HELLO of
// ProtocolVersion and STORAGE, naming the disks with storage and none
// (flags 0) without; and how it reports an old receiver's refusal of the
// version.
func TestSendStorageHandshake(t *testing.T) {
	disk := sampleDisk(3*DiskBlockSize+512, 1)
	sources := []struct {
		name     string
		vm       Source
		flags    uint32
		disks    int
		wantSize uint64
	}{
		{"without storage", &idleSource{mem: sourceRAM(t)}, 0, 0, 0},
		{"with storage", &storageSource{idleSource: idleSource{mem: sourceRAM(t)}, disks: []SourceDisk{disk}}, storageFlagIncluded, 1, disk.Size()},
	}
	for _, src := range sources {
		t.Run(src.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			go func() {
				fr := newFrameReader(b)
				f, err := fr.next()
				if err != nil || f.typ != frameHello {
					b.Close()
					return
				}
				h, _ := parseHello(f.payload)
				reason := fmt.Sprintf("protocol version %d not supported (this side speaks 3)", h.version)
				if h.version != ProtocolVersion {
					reason = fmt.Sprintf("HELLO of version %d", h.version)
				}
				f, err = fr.next()
				st, perr := parseStorage(f.payload)
				switch {
				case err != nil || f.typ != frameStorage || perr != nil:
					reason = "no STORAGE"
				case st.flags != src.flags || len(st.disks) != src.disks:
					reason = fmt.Sprintf("STORAGE flags %d with %d disks", st.flags, len(st.disks))
				case src.disks == 1 && st.disks[0].size != src.wantSize:
					reason = fmt.Sprintf("STORAGE disk size %d", st.disks[0].size)
				}
				b.Write(appendFrame(nil, frameRefuse, 0, []byte(reason)))
			}()
			_, err := Send(context.Background(), a, src.vm, Options{})
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("Send: %v", err)
			}
			if !strings.Contains(err.Error(), "not supported (this side speaks 3) (this source speaks protocol version 4: the destination's godwit is older") {
				t.Fatalf("an old receiver's refusal is not explained: %v", err)
			}
		})
	}
}
