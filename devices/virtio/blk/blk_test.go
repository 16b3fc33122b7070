package blk

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"godwit/devices/virtio"
	"godwit/devices/virtio/virtiotest"
)

// exerciser returns the conformance suite's Exercise: through the live
// request queue (vector 1) it writes a pattern to sector 8 and reads it
// back, or on a read-only disk checks that the write fails and reads the
// serial and sector 8.
func exerciser(readOnly bool) func(t testing.TB, d *virtiotest.Driver, qs []*virtiotest.Queue) {
	return func(t testing.TB, d *virtiotest.Driver, qs []*virtiotest.Queue) {
		t.Helper()
		q := qs[0]
		data := pattern(1024, byte(q.AvailIdx))
		do := func(typ uint32, out []byte, in uint32) (byte, []byte) {
			hdr := d.Alloc(16, 8)
			copy(d.Mem(hdr, 16), header(typ, 8))
			head := (q.AvailIdx * 4) % q.Size
			q.SetDesc(head, hdr, 16, virtiotest.DescNext, head+1)
			next := head + 1
			if len(out) > 0 {
				buf := d.Alloc(uint64(len(out)), 8)
				copy(d.Mem(buf, uint64(len(out))), out)
				q.SetDesc(next, buf, uint32(len(out)), virtiotest.DescNext, next+1)
				next++
			}
			var buf uint64
			if in > 0 {
				buf = d.Alloc(uint64(in), 8)
				q.SetDesc(next, buf, in, virtiotest.DescWrite|virtiotest.DescNext, next+1)
				next++
			}
			st := d.Alloc(1, 1)
			d.Mem(st, 1)[0] = virtiotest.Sentinel
			q.SetDesc(next, st, 1, virtiotest.DescWrite, 0)
			q.Publish(head)
			q.Kick()
			d.WaitMSI(1)
			used := q.TakeUsed()
			if len(used) != 1 || used[0].ID != uint32(head) {
				t.Fatalf("type %d: used %+v, want head %d", typ, used, head)
			}
			status := d.Mem(st, 1)[0]
			if status == StatusOK && used[0].Len != in+1 {
				t.Fatalf("type %d: used length %d, want %d", typ, used[0].Len, in+1)
			}
			if in == 0 {
				return status, nil
			}
			return status, d.Mem(buf, uint64(in))
		}
		if readOnly {
			if s, _ := do(TypeOut, data, 0); s != StatusIOErr {
				t.Fatalf("write to a read-only disk: status %d", s)
			}
			if s, id := do(TypeGetID, nil, IDBytes); s != StatusOK || string(bytes.TrimRight(id, "\x00")) != "conformance" {
				t.Fatalf("GET_ID: status %d, %q", s, id)
			}
			if s, got := do(TypeIn, nil, 1024); s != StatusOK || !bytes.Equal(got, make([]byte, 1024)) {
				t.Fatalf("read: status %d", s)
			}
			return
		}
		if s, _ := do(TypeOut, data, 0); s != StatusOK {
			t.Fatalf("write: status %d", s)
		}
		if s, got := do(TypeIn, nil, uint32(len(data))); s != StatusOK || !bytes.Equal(got, data) {
			t.Fatalf("read back: status %d, data equal %v", s, bytes.Equal(got, data))
		}
	}
}

// tempImage creates an image file of size bytes in dir.
func tempImage(t testing.TB, dir string, size int64) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "disk-*.img")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

func TestConformance(t *testing.T) {
	dir := t.TempDir()
	for _, ro := range []bool{false, true} {
		name := "read-write"
		if ro {
			name = "read-only"
		}
		t.Run(name, func(t *testing.T) {
			virtiotest.Run(t, virtiotest.Suite{
				New: func() virtio.Device {
					d, err := Open(tempImage(t, dir, 1<<20), Options{ReadOnly: ro, Serial: "conformance"})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { d.Close() })
					return d
				},
				Exercise: exerciser(ro),
			})
		})
	}
}

func TestIdentity(t *testing.T) {
	for _, tt := range []struct {
		name     string
		size     int
		ro       bool
		features uint64
		capacity uint64
	}{
		{"read-write", 1 << 20, false, FeatureSegMax | FeatureBlkSize | FeatureFlush, 2048},
		{"read-only", 1 << 20, true, FeatureSegMax | FeatureBlkSize | FeatureFlush | FeatureRO, 2048},
		{"partial sector dropped", 1<<20 + 511, false, FeatureSegMax | FeatureBlkSize | FeatureFlush, 2048},
		{"empty", 0, false, FeatureSegMax | FeatureBlkSize | FeatureFlush, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, tt.size, Options{ReadOnly: tt.ro}, ^uint64(0))
			if id := r.d.Cfg32(0); id != (0x1040+virtio.DeviceBlock)<<16|0x1af4 {
				t.Fatalf("IDs %#x", id)
			}
			if class := r.d.Cfg32(8) >> 8; class != pciClassStorageSCSI {
				t.Errorf("class %#x", class)
			}
			if got := r.acked & virtio.DeviceFeatureMask; got != tt.features {
				t.Errorf("device features %#x, want %#x", got, tt.features)
			}
			cfg := r.d.DeviceCfg
			if c := r.d.Read(cfg+cfgCapacity, 8); c != tt.capacity {
				t.Errorf("capacity %d, want %d", c, tt.capacity)
			}
			// Two dword reads of the 64-bit field agree with one.
			if lo, hi := r.d.Read(cfg+cfgCapacity, 4), r.d.Read(cfg+cfgCapacity+4, 4); lo|hi<<32 != tt.capacity {
				t.Errorf("capacity as dwords %#x %#x", lo, hi)
			}
			if s := r.d.Read(cfg+cfgSegMax, 4); s != SegMax {
				t.Errorf("seg_max %d", s)
			}
			if b := r.d.Read(cfg+cfgBlkSize, 4); b != 512 {
				t.Errorf("blk_size %d", b)
			}
			if v := r.d.Read(cfg+cfgSizeMax, 4); v != 0 {
				t.Errorf("size_max %d", v)
			}
			// Writes to the configuration change nothing.
			r.d.Write(cfg+cfgCapacity, 8, 5)
			if c := r.d.Read(cfg+cfgCapacity, 8); c != tt.capacity {
				t.Errorf("capacity %d after a driver write", c)
			}
			if r.disk.Capacity() != tt.capacity || r.disk.ReadOnly() != tt.ro {
				t.Errorf("Capacity %d ReadOnly %v", r.disk.Capacity(), r.disk.ReadOnly())
			}
		})
	}
}

// TestRequests drives one request per case through the transport and
// checks the status, the used length, the guest buffers, the image and the
// written-block bitmap.
func TestRequests(t *testing.T) {
	const size = 1 << 20 // 2048 sectors
	const capacity = size / SectorSize
	img := pattern(size, 0x5a)
	data := pattern(4096, 0x33)
	id20 := []byte("godwit-disk-serial-x")
	tests := []struct {
		name   string
		opts   Options
		want   uint64 // features the driver accepts
		inject func(*memImage)
		segs   []seg
		status byte
		used   uint32
		// in is the expected content of device-writable segment
		// inSeg (when in is not nil).
		inSeg int
		in    []byte
		// wrote is the byte offset of data written into the image
		// (-1 for none).
		wrote int64
		syncs int
	}{
		{name: "read 4 KiB at 0", segs: req(TypeIn, 0, nil, 4096), status: StatusOK, used: 4097, inSeg: 1, in: img[:4096], wrote: -1},
		{name: "read last sector", segs: req(TypeIn, capacity-1, nil, 512), status: StatusOK, used: 513, inSeg: 1, in: img[size-512:], wrote: -1},
		{name: "read across the end", segs: req(TypeIn, capacity-1, nil, 1024), status: StatusIOErr, used: 0, inSeg: 1, in: bytes.Repeat([]byte{virtiotest.Sentinel}, 1024), wrote: -1},
		{name: "read past the end", segs: req(TypeIn, capacity+1, nil, 512), status: StatusIOErr, wrote: -1},
		{name: "read sector overflow", segs: req(TypeIn, 1<<63, nil, 512), status: StatusIOErr, wrote: -1},
		{name: "read sector max", segs: req(TypeIn, ^uint64(0), nil, 512), status: StatusIOErr, wrote: -1},
		{name: "read empty at the end", segs: req(TypeIn, capacity, nil, 0), status: StatusOK, used: 1, wrote: -1},
		{name: "read not a sector multiple", segs: req(TypeIn, 0, nil, 100), status: StatusIOErr, wrote: -1},
		{name: "read with device-readable data", segs: req(TypeIn, 0, data[:512], 512), status: StatusIOErr, wrote: -1},
		{name: "read split over buffers, status with data", segs: []seg{ro(header(TypeIn, 2)[:5]), ro(header(TypeIn, 2)[5:]), wr(1000), wr(25)},
			status: StatusOK, used: 1025, inSeg: 2, in: img[1024 : 1024+1000], wrote: -1},
		{name: "read error", inject: func(m *memImage) { m.failRead = true }, segs: req(TypeIn, 0, nil, 4096), status: StatusIOErr, used: 2048, wrote: -1},
		{name: "write 4 KiB", segs: req(TypeOut, 16, data, 0), status: StatusOK, used: 1, wrote: 16 * 512},
		{name: "write last sector", segs: req(TypeOut, capacity-1, data[:512], 0), status: StatusOK, used: 1, wrote: size - 512},
		{name: "write across the end", segs: req(TypeOut, capacity-1, data[:1024], 0), status: StatusIOErr, used: 1, wrote: -1},
		{name: "write not a sector multiple", segs: req(TypeOut, 0, data[:700], 0), status: StatusIOErr, used: 1, wrote: -1},
		{name: "write with device-writable data", segs: req(TypeOut, 0, data[:512], 512), status: StatusIOErr, used: 0, wrote: -1},
		{name: "write to a read-only disk", opts: Options{ReadOnly: true}, segs: req(TypeOut, 0, data, 0), status: StatusIOErr, used: 1, wrote: -1},
		{name: "write header and data in one buffer", segs: []seg{ro(append(header(TypeOut, 4), data[:1024]...)), wr(1)}, status: StatusOK, used: 1, wrote: 4 * 512},
		{name: "write error", inject: func(m *memImage) { m.failWrite = true }, segs: req(TypeOut, 0, data, 0), status: StatusIOErr, used: 1, wrote: -1},
		{name: "write-through without FLUSH", want: ^uint64(FeatureFlush), segs: req(TypeOut, 1, data[:512], 0), status: StatusOK, used: 1, wrote: 512, syncs: 1},
		{name: "write-through sync error", want: ^uint64(FeatureFlush), inject: func(m *memImage) { m.failSync = true }, segs: req(TypeOut, 1, data[:512], 0), status: StatusIOErr, used: 1, wrote: 512, syncs: 1},
		{name: "flush", segs: req(TypeFlush, 0, nil, 0), status: StatusOK, used: 1, wrote: -1, syncs: 1},
		{name: "flush error", inject: func(m *memImage) { m.failSync = true }, segs: req(TypeFlush, 0, nil, 0), status: StatusIOErr, used: 1, wrote: -1, syncs: 1},
		{name: "get id", opts: Options{Serial: "disk0"}, segs: req(TypeGetID, 0, nil, IDBytes), status: StatusOK, used: IDBytes + 1,
			inSeg: 1, in: append([]byte("disk0"), make([]byte, IDBytes-5)...), wrote: -1},
		{name: "get id of 20 bytes", opts: Options{Serial: string(id20)}, segs: req(TypeGetID, 0, nil, IDBytes), status: StatusOK, used: IDBytes + 1, inSeg: 1, in: id20, wrote: -1},
		{name: "get id short buffer", opts: Options{Serial: "disk0"}, segs: req(TypeGetID, 0, nil, 3), status: StatusOK, used: 4, inSeg: 1, in: []byte("dis"), wrote: -1},
		{name: "get id long buffer", opts: Options{Serial: "disk0"}, segs: req(TypeGetID, 0, nil, 32), status: StatusOK, used: IDBytes,
			inSeg: 1, in: append(append([]byte("disk0"), make([]byte, IDBytes-5)...), bytes.Repeat([]byte{virtiotest.Sentinel}, 12)...), wrote: -1},
		{name: "discard unsupported", segs: req(TypeDiscard, 0, make([]byte, 16), 0), status: StatusUnsupp, used: 1, wrote: -1},
		{name: "write zeroes unsupported", segs: req(TypeWriteZeroes, 0, make([]byte, 16), 0), status: StatusUnsupp, used: 1, wrote: -1},
		{name: "get lifetime unsupported", segs: req(TypeGetLifetime, 0, nil, 8), status: StatusUnsupp, used: 0, wrote: -1},
		{name: "unknown type", segs: req(0xdead, 0, nil, 0), status: StatusUnsupp, used: 1, wrote: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if want == 0 {
				want = ^uint64(0)
			}
			r := newRig(t, size, tt.opts, want)
			r.img.with(func(m *memImage) {
				copy(m.data, img)
				if tt.inject != nil {
					tt.inject(m)
				}
			})
			var dirty [64]uint64
			r.m.Mem.TakeDirty(0, dirty[:])
			p, used := r.do(tt.segs)
			if s := r.status(p); s != tt.status {
				t.Errorf("status %d, want %d", s, tt.status)
			}
			if used.Len != tt.used {
				t.Errorf("used length %d, want %d", used.Len, tt.used)
			}
			if tt.in != nil {
				if got := r.bytes(p, tt.inSeg); !bytes.Equal(got[:len(tt.in)], tt.in) {
					t.Errorf("guest buffer %x..., want %x...", got[:min(32, len(got))], tt.in[:min(32, len(tt.in))])
				}
			}
			// The status byte's page was marked dirty in the VMM
			// bitmap (as is every page the device wrote).
			last := len(p.Segs) - 1
			st := p.Addrs[last] + uint64(p.Segs[last].N) - 1
			r.m.Mem.TakeDirty(0, dirty[:])
			if dirty[st/4096/64]&(1<<(st/4096%64)) == 0 {
				t.Error("status byte's page not marked dirty")
			}
			for i, s := range p.Segs {
				if s.Write && tt.status == StatusOK {
					for a := p.Addrs[i]; a < p.Addrs[i]+uint64(s.N); a += 4096 {
						if dirty[a/4096/64]&(1<<(a/4096%64)) == 0 {
							t.Errorf("page of %#x written by the device not marked dirty", a)
						}
					}
				}
			}
			after := r.img.snapshot()
			written := r.disk.Written()
			if tt.wrote < 0 {
				if !bytes.Equal(after, img) {
					t.Error("the image changed")
				}
				if n := written.Count(); n != 0 {
					t.Errorf("%d blocks marked written", n)
				}
			} else {
				var out []byte
				for _, s := range tt.segs {
					if !s.Write {
						out = append(out, s.Data...)
					}
				}
				out = out[headerSize:]
				exp := append([]byte(nil), img...)
				copy(exp[tt.wrote:], out)
				if !bytes.Equal(after, exp) {
					t.Error("image content differs from the write")
				}
				bm := make([]uint64, written.Words())
				if _, err := written.Take(bm); err != nil {
					t.Fatal(err)
				}
				for b := uint64(0); b < written.Blocks(); b++ {
					off, n := written.BlockRange(b)
					hit := uint64(tt.wrote) < off+n && off < uint64(tt.wrote)+uint64(len(out))
					if got := bm[b/64]&(1<<(b%64)) != 0; got != hit {
						t.Errorf("written block %d = %v, want %v", b, got, hit)
					}
				}
			}
			if got := r.img.syncCount(); got != tt.syncs {
				t.Errorf("%d syncs, want %d", got, tt.syncs)
			}
			if err := r.m.Transport.Err(); err != nil {
				t.Errorf("device error: %v", err)
			}
		})
	}
}

// TestBrokenFraming posts requests whose framing cannot carry a status:
// the queue stops, the device sets DEVICE_NEEDS_RESET, nothing is
// returned, and a reset brings the device back.
func TestBrokenFraming(t *testing.T) {
	tests := []struct {
		name string
		segs []seg
	}{
		{"short header", []seg{ro(header(TypeIn, 0)[:8]), wr(513)}},
		{"header split short", []seg{ro(header(TypeIn, 0)[:4]), ro(header(TypeIn, 0)[4:12]), wr(1)}},
		{"no status", []seg{ro(header(TypeFlush, 0))}},
		{"no status after data", []seg{ro(header(TypeOut, 0)), ro(make([]byte, 512))}},
		{"header device-writable", []seg{wr(16), wr(1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, 1<<20, Options{}, ^uint64(0))
			before := r.img.snapshot()
			p := r.post(tt.segs)
			r.q.Kick()
			r.d.WaitStatus(virtio.StatusDeviceNeedsReset, 0)
			if used := r.q.TakeUsed(); len(used) != 0 {
				t.Errorf("used %+v from a broken request", used)
			}
			for i, s := range p.Segs {
				if s.Write && !bytes.Equal(r.bytes(p, i), bytes.Repeat([]byte{virtiotest.Sentinel}, int(s.N))) {
					t.Errorf("segment %d written", i)
				}
			}
			if !bytes.Equal(before, r.img.snapshot()) {
				t.Error("image changed")
			}
			err := r.m.Transport.Err()
			if err == nil || !strings.Contains(err.Error(), "virtio-blk request") {
				t.Errorf("transport error %v", err)
			}
		})
	}
}

// TestBrokenFramingThenReset checks a device that needed a reset serves
// requests again once the driver reset and re-initialised it.
func TestBrokenFramingThenReset(t *testing.T) {
	r := newRig(t, 1<<20, Options{}, ^uint64(0))
	r.post([]seg{ro(header(TypeIn, 0)[:8]), wr(1)})
	r.q.Kick()
	r.d.WaitStatus(virtio.StatusDeviceNeedsReset, 0)
	// Re-initialise on the same machine (Negotiate resets).
	if _, err := r.d.Negotiate(^uint64(0)); err != nil {
		t.Fatal(err)
	}
	r.d.Write(r.d.Common+virtiotest.CommonConfigVector, 2, 0)
	r.q = r.d.SetupQueue(0, 64, 1)
	r.d.DriverOK()
	if st := r.d.Status(); st&virtio.StatusDeviceNeedsReset != 0 || st&virtio.StatusDriverOK == 0 {
		t.Fatalf("status %#x after re-initialisation", st)
	}
	p, _ := r.do(req(TypeFlush, 0, nil, 0))
	if s := r.status(p); s != StatusOK {
		t.Fatalf("status %d after reset", s)
	}
}

// TestIndirectAndManyRequests posts a batch of reads through indirect
// tables and checks that all complete with the right data.
func TestIndirectAndManyRequests(t *testing.T) {
	const size = 1 << 20
	r := newRig(t, size, Options{}, ^uint64(0))
	img := pattern(size, 9)
	r.img.with(func(m *memImage) { copy(m.data, img) })
	if r.acked&virtio.FeatureIndirectDesc == 0 {
		t.Fatal("indirect descriptors not negotiated")
	}
	type out struct {
		data, st uint64
		sector   uint64
	}
	var reqs []out
	for k := 0; k < 32; k++ {
		hdr := r.d.Alloc(16, 8)
		copy(r.d.Mem(hdr, 16), header(TypeIn, uint64(k*8)))
		data := r.d.Alloc(4096, 4096)
		st := r.d.Alloc(1, 1)
		table := r.d.Alloc(4*16, 16)
		// The data in three pieces, to exercise gathering.
		virtiotest.WriteDesc(r.d.Mem(table, 16), hdr, 16, virtiotest.DescNext, 1)
		virtiotest.WriteDesc(r.d.Mem(table+16, 16), data, 1024, virtiotest.DescWrite|virtiotest.DescNext, 2)
		virtiotest.WriteDesc(r.d.Mem(table+32, 16), data+1024, 3072, virtiotest.DescWrite|virtiotest.DescNext, 3)
		virtiotest.WriteDesc(r.d.Mem(table+48, 16), st, 1, virtiotest.DescWrite, 0)
		r.q.SetDesc(uint16(k), table, 64, virtiotest.DescIndirect, 0)
		r.q.Publish(uint16(k))
		reqs = append(reqs, out{data, st, uint64(k * 8)})
	}
	r.q.Kick()
	used := r.d.WaitUsed(r.q, len(reqs), 1)
	for k, q := range reqs {
		if used[k] != (virtiotest.UsedElem{ID: uint32(k), Len: 4097}) {
			t.Errorf("request %d: used %+v", k, used[k])
		}
		if s := r.d.Mem(q.st, 1)[0]; s != StatusOK {
			t.Errorf("request %d: status %d", k, s)
		}
		if !bytes.Equal(r.d.Mem(q.data, 4096), img[q.sector*512:q.sector*512+4096]) {
			t.Errorf("request %d: wrong data", k)
		}
	}
}

// TestPauseQuiesces checks that Pause returns only once the request in
// progress completed, and that Pause flushes the image.
func TestPauseQuiesces(t *testing.T) {
	r := newRig(t, 1<<20, Options{}, ^uint64(0))
	r.img.mu.Lock()
	r.img.block = true
	r.img.entered = make(chan struct{})
	r.img.release = make(chan struct{})
	r.img.mu.Unlock()
	r.post(req(TypeIn, 0, nil, 4096))
	r.q.Kick()
	<-r.img.entered // the worker is inside the read
	paused := make(chan error, 1)
	go func() { paused <- r.m.Transport.Pause(context.Background()) }()
	select {
	case err := <-paused:
		t.Fatalf("Pause returned (%v) with a request in flight", err)
	default:
	}
	syncs := r.img.syncCount()
	close(r.img.release)
	if err := <-paused; err != nil {
		t.Fatal(err)
	}
	// Complete as soon as Pause returned: the used entry is there.
	if idx := r.q.UsedIdx(); idx != 1 {
		t.Fatalf("used idx %d after Pause, want 1", idx)
	}
	r.d.WaitMSI(1) // and its interrupt was sent
	if got := r.img.syncCount(); got != syncs+1 {
		t.Errorf("Pause made %d syncs, want 1", got-syncs)
	}
	// A second Pause neither waits nor flushes again.
	if err := r.m.Transport.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := r.img.syncCount(); got != syncs+1 {
		t.Errorf("a second Pause flushed again")
	}
	r.img.mu.Lock()
	r.img.block = false
	r.img.mu.Unlock()
	if err := r.m.Transport.Resume(); err != nil {
		t.Fatal(err)
	}
	r.q.TakeUsed()
	p, _ := r.do(req(TypeIn, 0, nil, 512))
	if s := r.status(p); s != StatusOK {
		t.Fatalf("status %d after resume", s)
	}
}

func TestPauseFlushError(t *testing.T) {
	r := newRig(t, 1<<20, Options{}, ^uint64(0))
	r.img.with(func(m *memImage) { m.failSync = true })
	if err := r.m.Transport.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.disk.PauseErr(); err == nil {
		t.Error("PauseErr is nil after a failed flush")
	}
	// A read-only disk does not flush.
	ro := newRig(t, 1<<20, Options{ReadOnly: true}, ^uint64(0))
	if err := ro.m.Transport.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := ro.img.syncCount(); n != 0 {
		t.Errorf("read-only disk flushed %d times on pause", n)
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "a.img")
	content := pattern(3*512+100, 1)
	if err := os.WriteFile(img, content, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Open(img, Options{Serial: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Capacity() != 3 || d.Path() != img || d.Serial() != "s" {
		t.Fatalf("capacity %d path %q serial %q", d.Capacity(), d.Path(), d.Serial())
	}
	// Through the device: write sector 1, read it back, flush.
	r := newRigFor(t, d, nil, ^uint64(0))
	data := pattern(512, 0x77)
	if p, _ := r.do(req(TypeOut, 1, data, 0)); r.status(p) != StatusOK {
		t.Fatal("write failed")
	}
	if p, _ := r.do(req(TypeFlush, 0, nil, 0)); r.status(p) != StatusOK {
		t.Fatal("flush failed")
	}
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), content...)
	copy(want[512:], data)
	if !bytes.Equal(got, want) {
		t.Fatal("image file differs")
	}
	if p, u := r.do(req(TypeIn, 0, nil, 1536)); r.status(p) != StatusOK || u.Len != 1537 || !bytes.Equal(r.bytes(p, 1), want[:1536]) {
		t.Fatal("read back differs")
	}
	// The partial sector at the end is out of reach.
	if p, _ := r.do(req(TypeIn, 3, nil, 512)); r.status(p) != StatusIOErr {
		t.Fatal("read of the partial sector succeeded")
	}

	for _, tt := range []struct {
		name string
		path string
		opts Options
		want string
	}{
		{"missing", filepath.Join(dir, "nope.img"), Options{}, "no such file"},
		{"serial too long", img, Options{Serial: strings.Repeat("x", 21)}, "longer than 20"},
		{"serial with NUL", img, Options{Serial: "a\x00b"}, "NUL"},
		{"directory", dir, Options{ReadOnly: true}, "not a regular file"},
		{"character device", os.DevNull, Options{ReadOnly: true}, "not a regular file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(tt.path, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestOpenReadOnly(t *testing.T) {
	img := filepath.Join(t.TempDir(), "ro.img")
	if err := os.WriteFile(img, make([]byte, 4096), 0o444); err != nil {
		t.Fatal(err)
	}
	d, err := Open(img, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("a read-only image must open with readonly: %v", err)
	}
	d.Close()
	if os.Geteuid() != 0 {
		if _, err := Open(img, Options{}); err == nil {
			t.Fatal("a read-only file opened read-write")
		}
	}
}

// TestConfigReadWidths reads the configuration with every access width
// and offset and compares with the little-endian layout.
func TestConfigReadWidths(t *testing.T) {
	d, err := newDisk(newMemImage(1<<30), 1<<30, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var want [configSize]byte
	binary.LittleEndian.PutUint64(want[cfgCapacity:], 1<<30/512)
	binary.LittleEndian.PutUint32(want[cfgSegMax:], SegMax)
	binary.LittleEndian.PutUint32(want[cfgBlkSize:], 512)
	for _, w := range []int{1, 2, 4, 8} {
		for off := 0; off+w <= configSize; off++ {
			got := make([]byte, w)
			d.ReadConfig(uint64(off), got)
			if !bytes.Equal(got, want[off:off+w]) {
				t.Fatalf("width %d offset %d: %x, want %x", w, off, got, want[off:off+w])
			}
		}
	}
}
