package net

import (
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"godwit/devices/tap"
	"godwit/devices/virtio/virtiotest"
)

// pipeTap is a Backend over one end of a SOCK_SEQPACKET socket pair: like
// a tap, every read and write moves one whole message, and the descriptor
// is nonblocking and polled by the runtime, so read deadlines work the
// same way. The test holds the other end (peer).
type pipeTap struct {
	*tap.Tap
	peer *os.File

	mu        sync.Mutex
	offload   uint
	failWrite bool
}

var errInjected = errors.New("injected write error")

// newPipeTap returns a connected pipeTap; both ends close when the test
// ends.
func newPipeTap(t testing.TB) *pipeTap {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		// Room for a backlog's worth of large frames in flight.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	tp, err := tap.FromFile(os.NewFile(uintptr(fds[0]), "tap"))
	if err != nil {
		t.Fatal(err)
	}
	p := &pipeTap{Tap: tp, peer: os.NewFile(uintptr(fds[1]), "peer")}
	t.Cleanup(func() {
		p.Tap.Close()
		p.peer.Close()
	})
	return p
}

func (p *pipeTap) SetOffload(flags uint) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.offload = flags
	return nil
}

func (p *pipeTap) Offload() uint {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.offload
}

func (p *pipeTap) Write(b []byte) (int, error) {
	if p.failing() {
		return 0, errInjected
	}
	return p.Tap.Write(b)
}

func (p *pipeTap) WriteBuffers(bufs [][]byte) (int, error) {
	if p.failing() {
		return 0, errInjected
	}
	return p.Tap.WriteBuffers(bufs)
}

// failing reports whether writes fail (failWrite).
func (p *pipeTap) failing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failWrite
}

// inject sends a packet (header and frame) to the device, as the host
// side of a tap would.
func (p *pipeTap) inject(t testing.TB, pkt []byte) {
	t.Helper()
	if _, err := p.peer.Write(pkt); err != nil {
		t.Fatal(err)
	}
}

// next returns the next packet the device wrote, failing the test after
// virtiotest.WaitTimeout (a bound on a hung test, not a delay).
func (p *pipeTap) next(t testing.TB) []byte {
	t.Helper()
	p.peer.SetReadDeadline(time.Now().Add(virtiotest.WaitTimeout))
	buf := make([]byte, maxPacket+1)
	n, err := p.peer.Read(buf)
	if err != nil {
		t.Fatalf("reading what the device sent to the tap: %v", err)
	}
	return buf[:n]
}

// none checks that the device wrote nothing more to the tap: the packets
// of a test are written synchronously by ProcessQueue, before the used
// entry the test already waited for.
func (p *pipeTap) none(t testing.TB) {
	t.Helper()
	p.peer.SetReadDeadline(time.Now())
	buf := make([]byte, maxPacket+1)
	if n, err := p.peer.Read(buf); err == nil {
		t.Fatalf("unexpected packet on the tap: %x", buf[:n])
	}
}

// testMAC is the MAC of the devices under test.
var testMAC = [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// ethFrame returns an Ethernet frame of n bytes (n ≥ 14) from src to dst
// whose payload differs per position and seed.
func ethFrame(n int, seed byte) []byte {
	f := make([]byte, n)
	copy(f, []byte{0x52, 0x54, 0x00, 0xaa, 0xbb, seed})
	copy(f[6:], []byte{0x02, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], 0x88b5)
	for i := ethHeaderSize; i < n; i++ {
		f[i] = byte(i*7+i/256) ^ seed
	}
	return f
}

// packet returns a header with flags, gso type and checksum fields,
// followed by frame.
func packet(flags, gso byte, csumStart, csumOff uint16, frame []byte) []byte {
	h := make([]byte, hdrSize)
	h[hdrFlags], h[hdrGSOType] = flags, gso
	binary.LittleEndian.PutUint16(h[hdrCsumStart:], csumStart)
	binary.LittleEndian.PutUint16(h[hdrCsumOffset:], csumOff)
	return append(h, frame...)
}

// gsoPacket returns a GSO packet as the tap or a driver gives it: partial
// checksum at the TCP header after IPv4 (offsets are not checked here),
// hdr_len and gso_size set.
func gsoPacket(gso byte, hdrLen, gsoSize uint16, frame []byte) []byte {
	p := packet(hdrFNeedsCsum, gso, 34, 16, frame)
	binary.LittleEndian.PutUint16(p[hdrHdrLen:], hdrLen)
	binary.LittleEndian.PutUint16(p[hdrGSOSize:], gsoSize)
	return p
}

// rig is a network device on a virtiotest machine with live queues: rx on
// vector 1, tx on 2, ctrl on 3, configuration changes on 0.
type rig struct {
	t     testing.TB
	m     *virtiotest.Machine
	d     *virtiotest.Driver
	rx    *virtiotest.Queue
	tx    *virtiotest.Queue
	ctrl  *virtiotest.Queue
	dev   *Device
	tap   *pipeTap
	acked uint64
}

// newRig builds a device over a pipeTap, negotiates the offered features
// in want and activates all three queues (64 entries each).
func newRig(t testing.TB, want uint64) *rig {
	t.Helper()
	p := newPipeTap(t)
	dev, err := New(p, Options{MAC: testMAC})
	if err != nil {
		t.Fatal(err)
	}
	dev.delays = []time.Duration{0, time.Millisecond, time.Millisecond}
	t.Cleanup(func() { dev.Close() })
	return newRigFor(t, dev, p, want)
}

func newRigFor(t testing.TB, dev *Device, p *pipeTap, want uint64) *rig {
	t.Helper()
	vr := virtiotest.NewRig(t, dev, want, 64, 64, 64)
	return &rig{t: t, m: vr.M, d: vr.D, dev: dev, tap: p, acked: vr.Acked,
		rx: vr.Queues[rxQueue], tx: vr.Queues[txQueue], ctrl: vr.Queues[ctrlQueue]}
}

// Chains are posted with virtiotest's chain helpers.
type seg = virtiotest.Seg

var ro, wr = virtiotest.RO, virtiotest.WR

func wrs(ns ...uint32) []seg {
	var s []seg
	for _, n := range ns {
		s = append(s, wr(n))
	}
	return s
}

// post publishes a chain on q (without a kick).
func (r *rig) post(q *virtiotest.Queue, segs []seg) virtiotest.Posted { return q.Post(segs) }

// vector returns the MSI-X vector of q.
func vector(q *virtiotest.Queue) int { return q.Index + 1 }

// send posts a transmit chain, kicks and waits for it to be used.
func (r *rig) send(segs []seg) virtiotest.UsedElem {
	r.t.Helper()
	p := r.post(r.tx, segs)
	r.tx.Kick()
	r.d.WaitMSI(vector(r.tx))
	used := r.tx.TakeUsed()
	if len(used) != 1 || used[0].ID != uint32(p.Head) {
		r.t.Fatalf("tx used %+v, want one entry for head %d", used, p.Head)
	}
	return used[0]
}

// written returns the bytes the device wrote into the writable segments
// of p, in order, up to n bytes.
func (r *rig) written(p virtiotest.Posted, n uint32) []byte {
	var out []byte
	for i, s := range p.Segs {
		if !s.Write || uint32(len(out)) >= n {
			continue
		}
		k := min(s.N, n-uint32(len(out)))
		out = append(out, r.d.Mem(p.Addrs[i], uint64(k))...)
	}
	return out
}

// control posts a control request (class, command, data; ack byte) and
// returns the ack.
func (r *rig) control(class, cmd byte, data []byte) byte {
	r.t.Helper()
	segs := []seg{ro([]byte{class, cmd})}
	if len(data) > 0 {
		segs = append(segs, ro(data))
	}
	p := r.post(r.ctrl, append(segs, wr(1)))
	r.ctrl.Kick()
	r.d.WaitMSI(vector(r.ctrl))
	used := r.ctrl.TakeUsed()
	if len(used) != 1 || used[0].ID != uint32(p.Head) || used[0].Len != 1 {
		r.t.Fatalf("ctrl used %+v, want head %d length 1", used, p.Head)
	}
	return r.d.Mem(p.Addrs[len(p.Addrs)-1], 1)[0]
}

// configStatus reads the configuration's status field.
func (r *rig) configStatus() uint16 { return uint16(r.d.Read(r.d.DeviceCfg+cfgStatus, 2)) }
