package net

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"godwit/devices/tap"
	"godwit/devices/virtio"
	"godwit/devices/virtio/virtiotest"
)

// exercise is the conformance suite's Exercise: through the live queues
// (rx vector 1, tx 2, ctrl 3) it sends a packet to the tap, receives one
// from it, and acknowledges an announcement on the control queue.
func exercise(t testing.TB, d *virtiotest.Driver, qs []*virtiotest.Queue) {
	t.Helper()
	p := d.M.Transport.Device().(*Device).tap.(*pipeTap)
	rx, tx, ctrl := qs[rxQueue], qs[txQueue], qs[ctrlQueue]
	seed := byte(tx.AvailIdx)

	out := packet(0, 0, 0, 0, ethFrame(100, seed))
	buf := d.Alloc(uint64(len(out)), 8)
	copy(d.Mem(buf, uint64(len(out))), out)
	head := tx.AvailIdx % tx.Size
	tx.SetDesc(head, buf, uint32(len(out)), 0, 0)
	tx.Publish(head)
	tx.Kick()
	d.WaitMSI(txQueue + 1)
	if used := tx.TakeUsed(); len(used) != 1 || used[0].ID != uint32(head) || used[0].Len != 0 {
		t.Fatalf("tx used %+v, want head %d length 0", used, head)
	}
	if got := p.next(t); !bytes.Equal(got, out) {
		t.Fatalf("tap got %x, driver sent %x", got, out)
	}

	in := packet(0, 0, 0, 0, ethFrame(200, seed+1))
	rbuf := d.Alloc(2048, 8)
	head = rx.AvailIdx % rx.Size
	rx.SetDesc(head, rbuf, 2048, virtiotest.DescWrite, 0)
	rx.Publish(head)
	rx.Kick()
	p.inject(t, in)
	d.WaitMSI(rxQueue + 1)
	if used := rx.TakeUsed(); len(used) != 1 || used[0].ID != uint32(head) || used[0].Len != uint32(len(in)) {
		t.Fatalf("rx used %+v, want head %d length %d", used, head, len(in))
	}
	want := append([]byte(nil), in...)
	want[hdrNumBuffers] = 1
	if got := d.Mem(rbuf, uint64(len(in))); !bytes.Equal(got, want) {
		t.Fatalf("rx buffer %x, want %x", got, want)
	}

	cmd := d.Alloc(2, 2)
	copy(d.Mem(cmd, 2), []byte{ctrlClassAnnounce, ctrlAnnounceAck})
	ack := d.Alloc(1, 1)
	d.Mem(ack, 1)[0] = virtiotest.Sentinel
	head = (ctrl.AvailIdx * 2) % ctrl.Size
	ctrl.SetDesc(head, cmd, 2, virtiotest.DescNext, head+1)
	ctrl.SetDesc(head+1, ack, 1, virtiotest.DescWrite, 0)
	ctrl.Publish(head)
	ctrl.Kick()
	d.WaitMSI(ctrlQueue + 1)
	if used := ctrl.TakeUsed(); len(used) != 1 || used[0].ID != uint32(head) {
		t.Fatalf("ctrl used %+v, want head %d", used, head)
	}
	if a := d.Mem(ack, 1)[0]; a != ctrlOK {
		t.Fatalf("ANNOUNCE_ACK answered %d", a)
	}
}

func TestConformance(t *testing.T) {
	virtiotest.Run(t, virtiotest.Suite{
		New: func() virtio.Device {
			dev, err := New(newPipeTap(t), Options{MAC: testMAC})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { dev.Close() })
			return dev
		},
		Exercise: exercise,
	})
}

func TestNewRejects(t *testing.T) {
	p := newPipeTap(t)
	for _, mac := range [][6]byte{{}, {0x01, 0, 0, 0, 0, 1}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		if _, err := New(p, Options{MAC: mac}); err == nil {
			t.Errorf("MAC %s accepted", FormatMAC(mac))
		}
	}
	if _, err := New(nil, Options{MAC: testMAC}); err == nil {
		t.Error("nil backend accepted")
	}
}

func TestIdentity(t *testing.T) {
	r := newRig(t, ^uint64(0))
	if id := r.d.Cfg32(0); id != (0x1040+virtio.DeviceNet)<<16|0x1af4 {
		t.Fatalf("IDs %#x", id)
	}
	if class := r.d.Cfg32(8) >> 8; class != pciClassEthernet {
		t.Errorf("class %#x", class)
	}
	want := uint64(FeatureCsum | FeatureGuestCsum | FeatureMAC | FeatureMrgRxbuf | FeatureStatus | FeatureCtrlVQ | FeatureGuestAnnounce |
		FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN | FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN)
	if got := r.acked & virtio.DeviceFeatureMask; got != want {
		t.Errorf("device features %#x, want %#x", got, want)
	}
	if r.acked&virtio.FeatureVersion1 == 0 {
		t.Error("no VIRTIO_F_VERSION_1")
	}
	cfg := r.d.DeviceCfg
	var mac [6]byte
	for i := range mac {
		mac[i] = byte(r.d.Read(cfg+cfgMAC+uint64(i), 1))
	}
	if mac != testMAC {
		t.Errorf("config mac %s", FormatMAC(mac))
	}
	if s := r.configStatus(); s != StatusLinkUp {
		t.Errorf("status %#x, want link up", s)
	}
	if n := r.d.Read(cfg+cfgMaxVQPairs, 2); n != 1 {
		t.Errorf("max_virtqueue_pairs %d", n)
	}
	if m := r.d.Read(cfg+cfgMTU, 2); m != 0 {
		t.Errorf("mtu %d without VIRTIO_NET_F_MTU", m)
	}
	// The driver cannot change the MAC or the status.
	r.d.Write(cfg+cfgMAC, 4, 0)
	r.d.Write(cfg+cfgStatus, 2, 0)
	if b := r.d.Read(cfg+cfgMAC, 1); byte(b) != testMAC[0] || r.configStatus() != StatusLinkUp {
		t.Error("a driver write changed the configuration")
	}
	if r.dev.MAC() != testMAC {
		t.Errorf("MAC() = %s", FormatMAC(r.dev.MAC()))
	}
	// GUEST_CSUM and GUEST_TSO* turn the tap's offloads on.
	if off, want := r.tap.Offload(), uint(tap.OffloadCsum|tap.OffloadTSO4|tap.OffloadTSO6|tap.OffloadTSOECN); off != want {
		t.Errorf("tap offload %#x with every feature, want %#x", off, want)
	}
	r2 := newRig(t, ^uint64(FeatureGuestCsum))
	if off := r2.tap.Offload(); off != 0 {
		t.Errorf("tap offload %#x without GUEST_CSUM", off)
	}
}

// TestTransmit sends one chain per case and checks what reaches the tap,
// the used entry and the counters.
func TestTransmit(t *testing.T) {
	f60 := ethFrame(60, 1)
	f100 := ethFrame(100, 2)
	f3000 := ethFrame(3000, 3)
	plain := packet(0, 0, 0, 0, f60)
	withBuffers := append([]byte(nil), plain...)
	withBuffers[hdrNumBuffers] = 7
	csum := packet(hdrFNeedsCsum, 0, 34, 16, f100)
	big := packet(0, 0, 0, 0, ethFrame(maxEthernetFrame, 3))
	tests := []struct {
		name    string
		want    uint64 // features the driver accepts
		segs    []seg
		tap     []byte // what the tap gets, nil for nothing
		dropped uint64
		errors  uint64
		fail    bool // the tap write fails
		broken  bool // the queue breaks (no used entry)
	}{
		{name: "one buffer", segs: []seg{ro(plain)}, tap: plain},
		{name: "header and frame apart", segs: []seg{ro(plain[:hdrSize]), ro(plain[hdrSize:])}, tap: plain},
		{name: "split inside fields", segs: []seg{ro(plain[:5]), ro(plain[5:15]), ro(plain[15:16]), ro(plain[16:])}, tap: plain},
		{name: "num_buffers cleared", segs: []seg{ro(withBuffers)}, tap: plain},
		{name: "writable buffer ignored", segs: []seg{ro(plain), wr(64)}, tap: plain},
		{name: "partial checksum with CSUM", segs: []seg{ro(csum)}, tap: csum},
		{name: "partial checksum without CSUM", want: ^uint64(FeatureCsum), segs: []seg{ro(csum)}, dropped: 1},
		{name: "checksum field beyond the frame", segs: []seg{ro(packet(hdrFNeedsCsum, 0, 90, 9, f100))}, dropped: 1},
		{name: "checksum field at the end", segs: []seg{ro(packet(hdrFNeedsCsum, 0, 90, 8, f100))}, tap: packet(hdrFNeedsCsum, 0, 90, 8, f100)},
		{name: "GSO without NEEDS_CSUM", segs: []seg{ro(packet(0, 1, 0, 0, f100))}, dropped: 1},
		{name: "TSO4", segs: []seg{ro(gsoPacket(hdrGSOTCPv4, 54, 1448, f3000))}, tap: gsoPacket(hdrGSOTCPv4, 54, 1448, f3000)},
		{name: "TSO6 with ECN", segs: []seg{ro(gsoPacket(hdrGSOTCPv6|hdrGSOECN, 74, 1428, f3000))}, tap: gsoPacket(hdrGSOTCPv6|hdrGSOECN, 74, 1428, f3000)},
		{name: "TSO4 without HOST_TSO4", want: ^uint64(FeatureHostTSO4), segs: []seg{ro(gsoPacket(hdrGSOTCPv4, 54, 1448, f3000))}, dropped: 1},
		{name: "ECN without HOST_ECN", want: ^uint64(FeatureHostECN), segs: []seg{ro(gsoPacket(hdrGSOTCPv4|hdrGSOECN, 54, 1448, f3000))}, dropped: 1},
		{name: "UDP GSO", segs: []seg{ro(gsoPacket(3, 42, 1400, f3000))}, dropped: 1},
		{name: "GSO size zero", segs: []seg{ro(gsoPacket(hdrGSOTCPv4, 54, 0, f3000))}, dropped: 1},
		{name: "GSO header beyond the frame", segs: []seg{ro(gsoPacket(hdrGSOTCPv4, 3001, 1448, f3000))}, dropped: 1},
		{name: "DATA_VALID on transmit", segs: []seg{ro(packet(hdrFDataValid, 0, 0, 0, f100))}, dropped: 1},
		{name: "unknown flag", segs: []seg{ro(packet(4, 0, 0, 0, f100))}, dropped: 1},
		{name: "runt frame", segs: []seg{ro(packet(0, 0, 0, 0, f60[:13]))}, dropped: 1},
		{name: "header only", segs: []seg{ro(plain[:hdrSize])}, dropped: 1},
		{name: "largest frame", segs: []seg{ro(big[:30000]), ro(big[30000:])}, tap: big},
		{name: "too large", segs: []seg{ro(big), ro([]byte{0})}, dropped: 1},
		{name: "tap write fails", fail: true, segs: []seg{ro(plain)}, errors: 1},
		{name: "short header", segs: []seg{ro(plain[:11])}, broken: true},
		{name: "no readable bytes", segs: []seg{wr(100)}, broken: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if want == 0 {
				want = ^uint64(0)
			}
			r := newRig(t, want)
			r.tap.mu.Lock()
			r.tap.failWrite = tt.fail
			r.tap.mu.Unlock()
			if tt.broken {
				r.post(r.tx, tt.segs)
				r.tx.Kick()
				r.d.WaitStatus(virtio.StatusDeviceNeedsReset, 0)
				if err := r.m.Transport.Err(); !errors.Is(err, virtio.ErrQueueBroken) {
					t.Fatalf("transport error %v, want a broken queue", err)
				}
				r.tap.none(t)
				return
			}
			if u := r.send(tt.segs); u.Len != 0 {
				t.Errorf("used length %d, want 0", u.Len)
			}
			if tt.tap != nil {
				if got := r.tap.next(t); !bytes.Equal(got, tt.tap) {
					t.Fatalf("tap got %d bytes %.40x..., want %d bytes %.40x...", len(got), got, len(tt.tap), tt.tap)
				}
			}
			r.tap.none(t)
			s := r.dev.Stats()
			var frames uint64
			if tt.tap != nil {
				frames = 1
			}
			if s.TxFrames != frames || s.TxDropped != tt.dropped || s.TxErrors != tt.errors {
				t.Errorf("stats %+v, want %d frames, %d dropped, %d errors", s, frames, tt.dropped, tt.errors)
			}
			if frames == 1 && s.TxBytes != uint64(len(tt.tap)-hdrSize) {
				t.Errorf("TxBytes %d, want %d", s.TxBytes, len(tt.tap)-hdrSize)
			}
			if st := r.d.Status(); st&virtio.StatusDeviceNeedsReset != 0 {
				t.Errorf("status %#x", st)
			}
		})
	}
}

// waitUsed collects n used entries of q, re-arming used_event after each
// batch as a driver re-enabling callbacks does.
func (r *rig) waitUsed(q *virtiotest.Queue, n int) []virtiotest.UsedElem {
	r.t.Helper()
	return r.d.WaitUsed(q, n, vector(q))
}

// guestView is the packet as the driver should see it: pkt with its
// header fixed up (flags kept or cleared, num_buffers set).
func guestView(pkt []byte, keepFlags bool, buffers uint16) []byte {
	v := append([]byte(nil), pkt...)
	if !keepFlags {
		clear(v[:hdrSize])
	}
	binary.LittleEndian.PutUint16(v[hdrNumBuffers:], buffers)
	return v
}

// TestReceive posts receive chains, injects packets from the tap side and
// checks the used entries, what landed in the buffers and the counters.
func TestReceive(t *testing.T) {
	p100 := packet(0, 0, 0, 0, ethFrame(100, 1)) // 112 bytes
	p200 := packet(0, 0, 0, 0, ethFrame(200, 2))
	valid := packet(hdrFDataValid, 0, 0, 0, ethFrame(100, 3))
	partial := packet(hdrFNeedsCsum, 0, 34, 16, ethFrame(100, 4))
	tso4 := gsoPacket(hdrGSOTCPv4, 54, 1448, ethFrame(3000, 5))
	tso6ECN := gsoPacket(hdrGSOTCPv6|hdrGSOECN, 74, 1428, ethFrame(3000, 6))
	udp := gsoPacket(3, 42, 1400, ethFrame(3000, 7))
	tests := []struct {
		name     string
		want     uint64
		chains   [][]seg
		frames   [][]byte
		used     []rxUse
		invalid  uint64
		broken   bool
		noBuffer bool // the last frames wait for buffers
	}{
		{name: "one buffer", want: ^uint64(FeatureMrgRxbuf), chains: [][]seg{wrs(2048)},
			frames: [][]byte{p100}, used: []rxUse{{0, guestView(p100, false, 1)}}},
		{name: "one buffer with MRG", chains: [][]seg{wrs(2048)},
			frames: [][]byte{p100}, used: []rxUse{{0, guestView(p100, false, 1)}}},
		{name: "chain of three buffers", want: ^uint64(FeatureMrgRxbuf), chains: [][]seg{wrs(5, 20, 2048)},
			frames: [][]byte{p100}, used: []rxUse{{0, guestView(p100, false, 1)}}},
		{name: "exactly the size", want: ^uint64(FeatureMrgRxbuf), chains: [][]seg{wrs(112)},
			frames: [][]byte{p100}, used: []rxUse{{0, guestView(p100, false, 1)}}},
		{name: "merged over two chains", chains: [][]seg{wrs(64), wrs(2048)},
			frames: [][]byte{p100}, used: []rxUse{{0, guestView(p100, false, 2)[:64]}, {1, guestView(p100, false, 2)[64:]}}},
		{name: "merged over three chains", chains: [][]seg{wrs(12), wrs(50), wrs(50), wrs(2048)},
			frames: [][]byte{p100}, used: []rxUse{{0, guestView(p100, false, 3)[:12]}, {1, guestView(p100, false, 3)[12:62]}, {2, guestView(p100, false, 3)[62:]}}},
		{name: "two frames in order", chains: [][]seg{wrs(2048), wrs(2048)},
			frames: [][]byte{p100, p200}, used: []rxUse{{0, guestView(p100, false, 1)}, {1, guestView(p200, false, 1)}}},
		{name: "DATA_VALID kept with GUEST_CSUM", chains: [][]seg{wrs(2048)},
			frames: [][]byte{valid}, used: []rxUse{{0, guestView(valid, true, 1)}}},
		{name: "DATA_VALID cleared without GUEST_CSUM", want: ^uint64(FeatureGuestCsum), chains: [][]seg{wrs(2048)},
			frames: [][]byte{valid}, used: []rxUse{{0, guestView(valid, false, 1)}}},
		{name: "partial checksum with GUEST_CSUM", chains: [][]seg{wrs(2048)},
			frames: [][]byte{partial}, used: []rxUse{{0, guestView(partial, true, 1)}}},
		{name: "partial checksum without GUEST_CSUM", want: ^uint64(FeatureGuestCsum), chains: [][]seg{wrs(2048)},
			frames: [][]byte{partial, p100}, used: []rxUse{{0, guestView(p100, false, 1)}}, invalid: 1},
		{name: "TSO4 from the tap", chains: [][]seg{wrs(2048), wrs(2048)},
			frames: [][]byte{tso4}, used: []rxUse{{0, guestView(tso4, true, 2)[:2048]}, {1, guestView(tso4, true, 2)[2048:]}}},
		{name: "TSO6 with ECN from the tap", want: ^uint64(FeatureMrgRxbuf), chains: [][]seg{wrs(4096)},
			frames: [][]byte{tso6ECN}, used: []rxUse{{0, guestView(tso6ECN, true, 1)}}},
		{name: "TSO4 without GUEST_TSO4", want: ^uint64(FeatureGuestTSO4), chains: [][]seg{wrs(4096)},
			frames: [][]byte{tso4, p100}, used: []rxUse{{0, guestView(p100, false, 1)}}, invalid: 1},
		{name: "ECN without GUEST_ECN", want: ^uint64(FeatureGuestECN), chains: [][]seg{wrs(4096)},
			frames: [][]byte{tso6ECN, p100}, used: []rxUse{{0, guestView(p100, false, 1)}}, invalid: 1},
		{name: "UDP GSO from the tap", chains: [][]seg{wrs(4096)},
			frames: [][]byte{udp, p100}, used: []rxUse{{0, guestView(p100, false, 1)}}, invalid: 1},
		{name: "runt from the tap", chains: [][]seg{wrs(2048)},
			frames: [][]byte{p100[:hdrSize+13], p100}, used: []rxUse{{0, guestView(p100, false, 1)}}, invalid: 1},
		{name: "larger than the buffer without MRG", want: ^uint64(FeatureMrgRxbuf), chains: [][]seg{wrs(150)},
			frames: [][]byte{p200, p100}, used: []rxUse{{0, guestView(p100, false, 1)}}, invalid: 1},
		{name: "waits for more buffers with MRG", chains: [][]seg{wrs(100)},
			frames: [][]byte{p200}, noBuffer: true},
		{name: "no buffers", chains: nil, frames: [][]byte{p100}, noBuffer: true},
		{name: "buffer shorter than a header", chains: [][]seg{wrs(11)}, frames: [][]byte{p100}, broken: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if want == 0 {
				want = ^uint64(0)
			}
			r := newRig(t, want)
			handled := make(chan struct{}, 16)
			r.dev.mu.Lock()
			r.dev.onFrame = func() { handled <- struct{}{} }
			r.dev.mu.Unlock()
			var posted []virtiotest.Posted
			for _, c := range tt.chains {
				posted = append(posted, r.post(r.rx, c))
			}
			r.rx.Kick()
			for _, f := range tt.frames {
				r.tap.inject(t, f)
			}
			if tt.broken {
				r.d.WaitStatus(virtio.StatusDeviceNeedsReset, 0)
				if err := r.m.Transport.Err(); !errors.Is(err, virtio.ErrQueueBroken) {
					t.Fatalf("transport error %v, want a broken queue", err)
				}
				return
			}
			if tt.noBuffer {
				for range tt.frames {
					<-handled
				}
				// The frames wait: a buffer large enough takes them.
				big := r.post(r.rx, wrs(4096))
				r.rx.Kick()
				used := r.waitUsed(r.rx, 1)
				first := 0
				if len(tt.chains) > 0 {
					first = 1 // the merged frame starts in the small chain
					if len(used) < 2 {
						used = append(used, r.waitUsed(r.rx, 1)...)
					}
				}
				if got := used[len(used)-1].ID; got != uint32(big.Head) {
					t.Fatalf("used %+v, want the new buffer (head %d) last", used, big.Head)
				}
				if len(used) != first+1 {
					t.Fatalf("used %+v", used)
				}
				return
			}
			used := r.waitUsed(r.rx, len(tt.used))
			if len(used) != len(tt.used) {
				t.Fatalf("used %+v, want %d entries", used, len(tt.used))
			}
			for i, u := range tt.used {
				p := posted[u.chain]
				if used[i].ID != uint32(p.Head) || used[i].Len != uint32(len(u.data)) {
					t.Errorf("used[%d] = %+v, want head %d length %d", i, used[i], p.Head, len(u.data))
					continue
				}
				if got := r.written(p, uint32(len(u.data))); !bytes.Equal(got, u.data) {
					t.Errorf("chain %d holds %x, want %x", u.chain, got, u.data)
				}
				// Nothing beyond the used length was written.
				if rest := r.written(p, ^uint32(0))[len(u.data):]; len(bytes.Trim(rest, string([]byte{virtiotest.Sentinel}))) != 0 {
					t.Errorf("chain %d written beyond its used length", u.chain)
				}
			}
			// Every frame was handled: those not used were dropped.
			for range tt.frames {
				<-handled
			}
			s := r.dev.Stats()
			if s.RxFrames != uint64(countFrames(tt.used)) || s.RxInvalid != tt.invalid || s.RxDropped != 0 {
				t.Errorf("stats %+v, want %d frames, %d invalid", s, countFrames(tt.used), tt.invalid)
			}
		})
	}
}

// rxUse is an expected used entry of the receive queue.
type rxUse struct {
	chain int    // index into the posted chains
	data  []byte // what the chain holds (its used length)
}

// countFrames counts the frames among used entries (a merged frame's
// header says how many entries it takes).
func countFrames(used []rxUse) int {
	n := 0
	for i := 0; i < len(used); {
		n++
		i += int(binary.LittleEndian.Uint16(used[i].data[hdrNumBuffers:]))
	}
	return n
}

// TestReceiveMarksDirty checks that a received frame's pages, and the used
// ring's, are in the VMM dirty bitmap.
func TestReceiveMarksDirty(t *testing.T) {
	r := newRig(t, ^uint64(0))
	bm := make([]uint64, virtiotest.RAMSize/4096/64)
	r.m.Mem.TakeDirty(0, bm)
	clear(bm)
	p := r.post(r.rx, wrs(3*4096))
	r.rx.Kick()
	pkt := packet(0, 0, 0, 0, ethFrame(2*4096, 9))
	r.tap.inject(t, pkt)
	r.waitUsed(r.rx, 1)
	if _, err := r.m.Mem.TakeDirty(0, bm); err != nil {
		t.Fatal(err)
	}
	dirty := func(gpa uint64) bool { return bm[gpa/4096/64]&(1<<(gpa/4096%64)) != 0 }
	for a := p.Addrs[0]; a < p.Addrs[0]+uint64(len(pkt)); a += 4096 {
		if !dirty(a) {
			t.Errorf("page %#x of the receive buffer not dirty", a)
		}
	}
	if !dirty(r.rx.Used) {
		t.Error("used ring not dirty")
	}
}

// TestBackpressure: while the driver has no room, the device reads no
// more from the tap than the one frame the receive goroutine took (the
// rest wait in the tap's queue), and once buffers come every frame is
// delivered, in order, none dropped; a frame the worker read that does not
// fit the buffers posted so far waits in the backlog.
func TestBackpressure(t *testing.T) {
	for _, tt := range []struct {
		name   string
		frames int      // frames of 100 bytes the tap holds
		first  []uint32 // buffers posted after the receive goroutine took the first frame
		then   uint32   // then buffers of this size, one at a time
	}{
		{name: "no buffers", frames: 20, then: 2048},
		// The first frame takes the 2048-byte buffer; the worker reads
		// the second, which does not fit in 64 bytes and waits, to be
		// merged over the 64 bytes and the next buffer.
		{name: "too small", frames: 5, first: []uint32{2048, 64}, then: 2048},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, ^uint64(0))
			handled := make(chan struct{}, 64)
			r.dev.mu.Lock()
			r.dev.onFrame = func() { handled <- struct{}{} }
			r.dev.mu.Unlock()
			frame := func(i int) []byte { return packet(0, 0, 0, 0, ethFrame(100, byte(i))) }
			posted := map[uint32]virtiotest.Posted{}
			post := func(sizes ...uint32) {
				for _, n := range sizes {
					p := r.post(r.rx, wrs(n))
					posted[uint32(p.Head)] = p
				}
				r.rx.Kick()
			}
			var got [][]byte // frames in delivery order, without header
			var cur []byte
			parts := 0
			take := func(used []virtiotest.UsedElem) {
				for _, u := range used {
					data := r.written(posted[u.ID], u.Len)
					delete(posted, u.ID)
					cur = append(cur, data...)
					parts++
					if parts == int(binary.LittleEndian.Uint16(cur[hdrNumBuffers:])) {
						got = append(got, cur[hdrSize:])
						cur, parts = nil, 0
					}
				}
			}
			for i := 0; i < tt.frames; i++ {
				r.tap.inject(t, frame(i))
			}
			<-handled // the receive goroutine took frame 0
			if len(tt.first) > 0 {
				post(tt.first...)
				take(r.waitUsed(r.rx, 1))
				<-handled // the worker read frame 1, which waits
			}
			// Nothing takes the backlog's frame, nothing adds to it.
			r.dev.mu.Lock()
			queued := len(r.dev.backlog)
			r.dev.mu.Unlock()
			if queued != 1 {
				t.Fatalf("%d frames in the backlog, want 1", queued)
			}
			for len(got) < tt.frames {
				post(tt.then)
				take(r.waitUsed(r.rx, 1))
			}
			for i, g := range got {
				if !bytes.Equal(g, frame(i)[hdrSize:]) {
					t.Fatalf("frame %d out of order or damaged", i)
				}
			}
			if s := r.dev.Stats(); s.RxDropped != 0 || s.RxFrames != uint64(tt.frames) {
				t.Fatalf("stats %+v, want %d frames and none dropped", s, tt.frames)
			}
		})
	}
}

// TestPauseKeepsFrames: a frame read before a pause waits in the backlog
// and travels in the saved state; one that arrives while paused stays in
// the tap's queue and is delivered after resume.
func TestPauseKeepsFrames(t *testing.T) {
	r := newRig(t, ^uint64(0))
	handled := make(chan struct{}, 4)
	r.dev.mu.Lock()
	r.dev.onFrame = func() { handled <- struct{}{} }
	r.dev.mu.Unlock()
	a := packet(0, 0, 0, 0, ethFrame(100, 0xa))
	b := packet(0, 0, 0, 0, ethFrame(100, 0xb))
	r.tap.inject(t, a)
	<-handled
	ctx := context.Background()
	if err := r.m.Transport.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	r.tap.inject(t, b) // nobody reads while paused
	st, err := r.m.Transport.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	var ts virtio.TransportState
	if err := ts.UnmarshalBinary(st); err != nil {
		t.Fatal(err)
	}
	var ns State
	if err := ns.UnmarshalBinary(ts.DeviceConfig); err != nil {
		t.Fatal(err)
	}
	if len(ns.Backlog) != 1 || !bytes.Equal(ns.Backlog[0], a) {
		t.Fatalf("saved backlog %x, want the frame read before the pause", ns.Backlog)
	}
	// A buffer the driver will post, allocated while the source's
	// allocator is at hand (the destination has the same RAM).
	buf := r.d.Alloc(2048, 8)

	// The destination delivers the saved frame.
	p2 := newPipeTap(t)
	dev2, err := New(p2, Options{MAC: testMAC})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev2.Close() })
	dst := virtiotest.NewMachine(t, dev2)
	dst.CopyRAM(r.m)
	if err := dst.Transport.RestoreState(st); err != nil {
		t.Fatal(err)
	}
	d2 := virtiotest.NewDriver(t, dst)
	rx := *r.rx
	rx.D = d2
	head := rx.AvailIdx % rx.Size
	rx.SetDesc(head, buf, 2048, virtiotest.DescWrite, 0)
	rx.Publish(head)
	rx.Kick()
	d2.WaitMSI(1)
	if u := rx.TakeUsed(); len(u) != 1 || u[0].Len != uint32(len(a)) {
		t.Fatalf("destination used %+v", u)
	}
	if got := d2.Mem(buf+hdrSize, 100); !bytes.Equal(got, a[hdrSize:]) {
		t.Fatal("destination delivered another frame")
	}

	// The source resumes and reads b.
	if err := r.m.Transport.Resume(); err != nil {
		t.Fatal(err)
	}
	<-handled
	p := r.post(r.rx, wrs(2048))
	r.rx.Kick()
	u := r.waitUsed(r.rx, 1)
	if u[0].ID != uint32(p.Head) {
		t.Fatalf("used %+v", u)
	}
	// a is still first on the source: its backlog was not cleared.
	if got := r.d.Mem(p.Addrs[0]+hdrSize, 100); !bytes.Equal(got, a[hdrSize:]) {
		t.Fatal("source did not keep its backlog across pause")
	}
	p = r.post(r.rx, wrs(2048))
	r.rx.Kick()
	r.waitUsed(r.rx, 1)
	if got := r.d.Mem(p.Addrs[0]+hdrSize, 100); !bytes.Equal(got, b[hdrSize:]) {
		t.Fatal("frame sent while paused not delivered after resume")
	}
}

// TestResetDropsBacklog: frames queued for a driver that resets are gone.
func TestResetDropsBacklog(t *testing.T) {
	r := newRig(t, ^uint64(0))
	handled := make(chan struct{}, 4)
	r.dev.mu.Lock()
	r.dev.onFrame = func() { handled <- struct{}{} }
	r.dev.mu.Unlock()
	r.tap.inject(t, packet(0, 0, 0, 0, ethFrame(100, 1)))
	<-handled
	r.d.SetStatus(0) // device reset (§2.4)
	if f, _ := r.dev.next(); f != nil {
		t.Fatal("backlog survived a reset")
	}
	// Set up again, the device works with the new driver.
	if _, err := r.d.Negotiate(^uint64(0)); err != nil {
		t.Fatal(err)
	}
	r.d.Write(r.d.Common+virtiotest.CommonConfigVector, 2, 0)
	r.rx = r.d.SetupQueue(rxQueue, 64, 1)
	r.d.DriverOK()
	p := r.post(r.rx, wrs(2048))
	r.rx.Kick()
	second := packet(0, 0, 0, 0, ethFrame(100, 2))
	r.tap.inject(t, second)
	if u := r.waitUsed(r.rx, 1); u[0].ID != uint32(p.Head) || u[0].Len != uint32(len(second)) {
		t.Fatalf("used %+v", u)
	}
	if got := r.d.Mem(p.Addrs[0]+hdrSize, 100); !bytes.Equal(got, second[hdrSize:]) {
		t.Fatal("the frame from before the reset was delivered")
	}
}

// TestAnnounce checks both halves of an announcement: RARP frames from the
// host side, and VIRTIO_NET_S_ANNOUNCE with a configuration interrupt,
// cleared by the driver's ANNOUNCE_ACK.
func TestAnnounce(t *testing.T) {
	rarp := append(make([]byte, hdrSize), RARP(testMAC)...)
	t.Run("guest announce", func(t *testing.T) {
		r := newRig(t, ^uint64(0))
		gen := r.d.Read(r.d.Common+virtiotest.CommonConfigGen, 1)
		if !r.dev.Announce() {
			t.Fatal("Announce did not ask the guest")
		}
		r.d.WaitMSI(0)
		if s := r.configStatus(); s != StatusLinkUp|StatusAnnounce {
			t.Fatalf("status %#x, want link up and announce", s)
		}
		if g := r.d.Read(r.d.Common+virtiotest.CommonConfigGen, 1); g == gen {
			t.Error("config_generation unchanged")
		}
		for i := 0; i < 3; i++ {
			if got := r.tap.next(t); !bytes.Equal(got, rarp) {
				t.Fatalf("frame %d on the tap: %x, want RARP %x", i, got, rarp)
			}
		}
		if ack := r.control(ctrlClassAnnounce, ctrlAnnounceAck, nil); ack != ctrlOK {
			t.Fatalf("ANNOUNCE_ACK answered %d", ack)
		}
		if s := r.configStatus(); s != StatusLinkUp {
			t.Fatalf("status %#x after the ack", s)
		}
		if ack := r.control(0, 0, []byte{1}); ack != ctrlErr {
			t.Errorf("VIRTIO_NET_CTRL_RX answered %d", ack)
		}
		if ack := r.control(ctrlClassAnnounce, 1, nil); ack != ctrlErr {
			t.Errorf("unknown announce command answered %d", ack)
		}
		r.tap.none(t)
		r.dev.stopAnnouncer() // past its last write: wait for its count
		if s := r.dev.Stats(); s.Announcements != 3 {
			t.Errorf("%d announcements", s.Announcements)
		}
	})
	t.Run("without GUEST_ANNOUNCE", func(t *testing.T) {
		r := newRig(t, ^uint64(FeatureGuestAnnounce))
		if r.dev.Announce() {
			t.Fatal("Announce asked a guest that did not negotiate GUEST_ANNOUNCE")
		}
		if got := r.tap.next(t); !bytes.Equal(got, rarp) {
			t.Fatalf("tap got %x, want RARP", got)
		}
		if s := r.configStatus(); s != StatusLinkUp {
			t.Errorf("status %#x", s)
		}
		if ack := r.control(ctrlClassAnnounce, ctrlAnnounceAck, nil); ack != ctrlErr {
			t.Errorf("ANNOUNCE_ACK without the feature answered %d", ack)
		}
	})
	t.Run("pause stops it", func(t *testing.T) {
		r := newRig(t, ^uint64(0))
		r.dev.delays = []time.Duration{0, time.Hour}
		r.dev.Announce()
		if got := r.tap.next(t); !bytes.Equal(got, rarp) {
			t.Fatalf("tap got %x, want RARP", got)
		}
		if err := r.m.Transport.Pause(context.Background()); err != nil {
			t.Fatal(err)
		}
		if s := r.dev.Stats(); s.Announcements != 1 {
			t.Errorf("%d announcements", s.Announcements)
		}
		if r.dev.Announce() {
			t.Error("a paused device announced")
		}
		r.dev.mu.Lock()
		running := r.dev.announcer != nil
		r.dev.mu.Unlock()
		if running {
			t.Error("announcer running while paused")
		}
	})
	t.Run("announce pending survives migration", func(t *testing.T) {
		r := newRig(t, ^uint64(0))
		r.dev.Announce()
		r.d.WaitMSI(0)
		if err := r.m.Transport.Pause(context.Background()); err != nil {
			t.Fatal(err)
		}
		st, err := r.m.Transport.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		p2 := newPipeTap(t)
		dev2, _ := New(p2, Options{MAC: testMAC})
		t.Cleanup(func() { dev2.Close() })
		dst := virtiotest.NewMachine(t, dev2)
		dst.CopyRAM(r.m)
		if err := dst.Transport.RestoreState(st); err != nil {
			t.Fatal(err)
		}
		if s := uint16(virtiotest.NewDriver(t, dst).Read(r.d.DeviceCfg+cfgStatus, 2)); s != StatusLinkUp|StatusAnnounce {
			t.Errorf("status %#x on the destination", s)
		}
	})
}

func TestRARP(t *testing.T) {
	f := RARP(testMAC)
	if len(f) != 60 {
		t.Fatalf("%d bytes", len(f))
	}
	for i, want := range []struct {
		off  int
		data []byte
	}{
		{0, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{6, testMAC[:]},
		{12, []byte{0x80, 0x35}},
		{14, []byte{0, 1, 8, 0, 6, 4, 0, 3}},
		{22, testMAC[:]},
		{28, []byte{0, 0, 0, 0}},
		{32, testMAC[:]},
		{38, make([]byte, 22)},
	} {
		if got := f[want.off : want.off+len(want.data)]; !bytes.Equal(got, want.data) {
			t.Errorf("field %d at %d: %x, want %x", i, want.off, got, want.data)
		}
	}
}

// TestControlFraming: requests without class, command or ack byte break
// the control queue.
func TestControlFraming(t *testing.T) {
	for _, tt := range []struct {
		name string
		segs []seg
	}{
		{"one readable byte", []seg{ro([]byte{3}), wr(1)}},
		{"no ack byte", []seg{ro([]byte{3, 0})}},
		{"nothing", []seg{wr(0)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, ^uint64(0))
			r.post(r.ctrl, tt.segs)
			r.ctrl.Kick()
			r.d.WaitStatus(virtio.StatusDeviceNeedsReset, 0)
		})
	}
}

func TestTapOffload(t *testing.T) {
	all := uint(tap.OffloadCsum | tap.OffloadTSO4 | tap.OffloadTSO6 | tap.OffloadTSOECN)
	for _, tt := range []struct {
		name     string
		features uint64
		want     uint
	}{
		{"nothing", 0, 0},
		{"TSO without GUEST_CSUM", FeatureGuestTSO4 | FeatureGuestTSO6 | FeatureGuestECN, 0},
		{"GUEST_CSUM", FeatureGuestCsum, tap.OffloadCsum},
		{"TSO4", FeatureGuestCsum | FeatureGuestTSO4, tap.OffloadCsum | tap.OffloadTSO4},
		{"ECN without TSO", FeatureGuestCsum | FeatureGuestECN, tap.OffloadCsum},
		{"everything", offeredFeatures, all},
	} {
		if got := tapOffload(tt.features); got != tt.want {
			t.Errorf("%s: tapOffload(%#x) = %#x, want %#x", tt.name, tt.features, got, tt.want)
		}
	}
}
