package blk

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"godwit/devices/virtio/virtiotest"
)

// memImage is an in-memory backend with failure injection.
type memImage struct {
	mu        sync.Mutex
	data      []byte
	failRead  bool
	failWrite bool
	failSync  bool
	syncs     int
	closed    bool
	// block, when set, makes ReadAt signal entered and wait for release.
	block   bool
	entered chan struct{}
	release chan struct{}
}

// with runs f on m under m's lock: how a test changes an image whose
// device is running. (The device may pick a request up without a
// notification, through guest memory alone, which the race detector
// does not see as synchronisation; the lock is.)
func (m *memImage) with(f func(m *memImage)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(m)
}

var errInjected = errors.New("injected I/O error")

func newMemImage(size int) *memImage { return &memImage{data: make([]byte, size)} }

func (m *memImage) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	block, entered, release := m.block, m.entered, m.release
	m.mu.Unlock()
	if block {
		entered <- struct{}{}
		<-release
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failRead {
		// A short read, as from an image truncated under the VM.
		n := copy(p[:len(p)/2], m.data[off:])
		return n, errInjected
	}
	if off >= int64(len(m.data)) {
		return 0, errInjected
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, errInjected
	}
	return n, nil
}

func (m *memImage) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failWrite {
		return 0, errInjected
	}
	if off+int64(len(p)) > int64(len(m.data)) {
		return 0, errInjected
	}
	return copy(m.data[off:], p), nil
}

func (m *memImage) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.syncs++
	if m.failSync {
		return errInjected
	}
	return nil
}

func (m *memImage) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

func (m *memImage) snapshot() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.data...)
}

func (m *memImage) syncCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.syncs
}

// Requests are posted with virtiotest's chain helpers.
type seg = virtiotest.Seg

var ro, wr = virtiotest.RO, virtiotest.WR

// header returns a request header.
func header(typ uint32, sector uint64) []byte {
	b := binary.LittleEndian.AppendUint32(nil, typ)
	b = binary.LittleEndian.AppendUint32(b, 0)
	return binary.LittleEndian.AppendUint64(b, sector)
}

// req returns the usual layout: header, data out, data in, status.
func req(typ uint32, sector uint64, out []byte, in uint32) []seg {
	s := []seg{ro(header(typ, sector))}
	if len(out) > 0 {
		s = append(s, ro(out))
	}
	if in > 0 {
		s = append(s, wr(in))
	}
	return append(s, wr(1))
}

// rig is a disk on a virtiotest machine with an active request queue.
type rig struct {
	t     testing.TB
	m     *virtiotest.Machine
	d     *virtiotest.Driver
	q     *virtiotest.Queue
	disk  *Disk
	img   *memImage
	acked uint64
}

// newRig builds a disk of size bytes over a memImage, negotiates features
// (within want) and activates a queue of 64 entries on MSI-X vector 1.
func newRig(t testing.TB, size int, opts Options, want uint64) *rig {
	t.Helper()
	img := newMemImage(size)
	disk, err := newDisk(img, uint64(size), opts)
	if err != nil {
		t.Fatal(err)
	}
	return newRigFor(t, disk, img, want)
}

func newRigFor(t testing.TB, disk *Disk, img *memImage, want uint64) *rig {
	t.Helper()
	vr := virtiotest.NewRig(t, disk, want, 64)
	return &rig{t: t, m: vr.M, d: vr.D, q: vr.Queues[0], disk: disk, img: img, acked: vr.Acked}
}

// post publishes a request (without a kick).
func (r *rig) post(segs []seg) virtiotest.Posted { return r.q.Post(segs) }

// do posts one request, kicks, waits for its completion and returns the
// used element.
func (r *rig) do(segs []seg) (virtiotest.Posted, virtiotest.UsedElem) {
	r.t.Helper()
	p := r.post(segs)
	r.q.Kick()
	r.d.WaitMSI(1)
	used := r.q.TakeUsed()
	if len(used) != 1 || used[0].ID != uint32(p.Head) {
		r.t.Fatalf("used %+v, want one entry for head %d", used, p.Head)
	}
	return p, used[0]
}

// status returns the last byte of the last segment (the status).
func (r *rig) status(p virtiotest.Posted) byte {
	last := len(p.Segs) - 1
	return r.d.Mem(p.Addrs[last]+uint64(p.Segs[last].N)-1, 1)[0]
}

// bytes returns what the device left in segment i.
func (r *rig) bytes(p virtiotest.Posted, i int) []byte { return r.q.Bytes(p, i) }

// pattern returns n bytes that differ per position and seed.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i/512) ^ seed
	}
	return b
}
