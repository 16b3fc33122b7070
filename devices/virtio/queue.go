package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync/atomic"

	"godwit/vmm/memory"
)

// ErrQueueBroken is wrapped by the errors of a queue the driver broke.
// The queue stays stopped until the driver resets the device.
var ErrQueueBroken = errors.New("virtqueue broken by the driver")

// fenceWord is the target of fence.
var fenceWord atomic.Uint64

// fence is a full memory barrier between the device's accesses to the
// rings (the virtio_mb of §2.7.7-2.7.10): an atomic read-modify-write is a
// locked instruction on amd64, which orders earlier stores before later
// loads, and it is a compiler barrier for the plain slice accesses around
// it.
func fence() { fenceWord.Add(1) }

// Queue is a split virtqueue (§2.7) as the device sees it. Its
// configuration is written by the driver through the transport; its
// runtime state (next available index to take, used index) belongs to
// the device worker. A Queue is not safe for concurrent use: the
// transport calls into a device's queues from one worker goroutine.
type Queue struct {
	mem *memory.Memory
	max uint16

	// Configuration (§4.1.4.3).
	size   uint16
	ready  bool
	desc   uint64 // descriptor table
	driver uint64 // available ring
	device uint64 // used ring

	// Negotiated features, set on activation.
	eventIdx bool
	indirect bool

	// Runtime state.
	lastAvail  uint16 // next available ring entry to take
	usedIdx    uint16 // next used ring entry to fill (the used idx the driver sees)
	availCache uint16 // avail idx last read
	signalled  uint16 // used idx when the driver was last interrupted
	noNotify   bool   // VIRTQ_USED_F_NO_NOTIFY is set in the used ring
	broken     error
}

// newQueue returns a queue in its reset state with maximum size max.
func newQueue(mem *memory.Memory, max uint16) *Queue {
	q := &Queue{mem: mem, max: max}
	q.reset()
	return q
}

// reset returns the queue to its state after a device reset (§4.1.4.3.1:
// queue_size reads the maximum, queue_enable 0).
func (q *Queue) reset() {
	*q = Queue{mem: q.mem, max: q.max, size: q.max}
}

// Size returns the queue size.
func (q *Queue) Size() uint16 { return q.size }

// Ready reports whether the driver enabled the queue.
func (q *Queue) Ready() bool { return q.ready }

// Broken returns the error that stopped the queue, or nil.
func (q *Queue) Broken() error { return q.broken }

// fail stops the queue.
func (q *Queue) fail(format string, args ...any) error {
	if q.broken == nil {
		q.broken = fmt.Errorf("%w: %s", ErrQueueBroken, fmt.Sprintf(format, args...))
	}
	return q.broken
}

// validSize reports whether n is a valid split queue size not above max.
func validSize(n, max uint16) bool {
	return n != 0 && n <= max && bits.OnesCount16(n) == 1
}

// ringsValid checks the ring addresses of an enabled queue: aligned as
// §2.7 requires and inside RAM.
func (q *Queue) ringsValid() error {
	n := uint64(q.size)
	areas := []struct {
		name       string
		addr, size uint64
		align      uint64
	}{
		{"descriptor table", q.desc, descSize * n, descAlign},
		{"available ring", q.driver, ringHeader + 2*n + 2, availAlign},
		{"used ring", q.device, ringHeader + usedElemSize*n + 2, usedAlign},
	}
	for _, a := range areas {
		if a.addr%a.align != 0 {
			return fmt.Errorf("%s at %#x not %d-byte aligned", a.name, a.addr, a.align)
		}
		if !q.mem.Contains(a.addr, a.size) {
			return fmt.Errorf("%s [%#x,+%#x) outside RAM", a.name, a.addr, a.size)
		}
	}
	return nil
}

// readU16 reads a little-endian u16 of a ring.
func (q *Queue) readU16(gpa uint64) (uint16, error) {
	b, err := q.mem.Slice(gpa, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(b), nil
}

// Pop takes the next descriptor chain from the available ring (§2.7.13.4
// from the device side). It returns nil, nil when the ring is empty, and
// an error wrapping ErrQueueBroken when the driver broke the queue. Each
// chain is a new allocation; a device's hot path uses PopInto.
func (q *Queue) Pop() (*Chain, error) {
	c := new(Chain)
	if ok, err := q.PopInto(c); !ok {
		return nil, err
	}
	return c, nil
}

// PopInto is Pop into a chain the caller keeps and reuses: it overwrites
// c, reusing the arrays of c.Readable and c.Writable, so that a device
// taking chains into the same few Chains allocates nothing once they have
// grown to its chains' length. It reports whether it took a chain; c's
// contents are unspecified when it did not.
func (q *Queue) PopInto(c *Chain) (bool, error) {
	if pending, err := q.Available(); err != nil || pending == 0 {
		return false, err
	}
	head, err := q.readU16(q.driver + ringHeader + 2*uint64(q.lastAvail%q.size))
	if err != nil {
		return false, q.fail("reading avail ring: %v", err)
	}
	if err := q.parseChain(head, c); err != nil {
		return false, q.fail("%v", err)
	}
	q.lastAvail++
	return true, nil
}

// Available returns how many chains the driver made available that Pop
// has not taken yet, reading the available index as Pop does (so a later
// ArmNotify compares against what is there now). An index more than the
// queue size ahead breaks the queue.
func (q *Queue) Available() (uint16, error) {
	if q.broken != nil {
		return 0, q.broken
	}
	if !q.ready {
		return 0, nil
	}
	idx, err := q.readU16(q.driver + 2)
	if err != nil {
		return 0, q.fail("reading avail idx: %v", err)
	}
	fence() // read the ring entries after the index (§2.7.13.3)
	q.availCache = idx
	pending := idx - q.lastAvail
	if pending > q.size {
		return 0, q.fail("avail idx %d is %d entries past %d, more than the queue size %d", idx, pending, q.lastAvail, q.size)
	}
	return pending, nil
}

// Unpop gives back the last n chains taken with Pop and not returned with
// PushUsed: the next Pop takes them again, in the same order. The driver
// may not change a chain it made available until the device uses it
// (§2.7.13), so the chains read back identical. A receive queue uses it
// to leave buffers in the ring when a packet does not fit in what is
// available yet (QEMU's virtqueue_unpop).
func (q *Queue) Unpop(n int) error {
	if q.broken != nil {
		return q.broken
	}
	if n < 0 || n > int(q.lastAvail-q.usedIdx) {
		return fmt.Errorf("virtqueue: Unpop of %d chains with %d outstanding", n, q.lastAvail-q.usedIdx)
	}
	q.lastAvail -= uint16(n)
	return nil
}

// PushUsed returns the chain with head id to the driver with written bytes
// written into its writable buffers (§2.7.8). The used element is written
// before the used index, so the driver never sees a half-written entry.
func (q *Queue) PushUsed(id uint16, written uint32) error {
	if q.broken != nil {
		return q.broken
	}
	if !q.ready {
		return fmt.Errorf("virtqueue not enabled")
	}
	if q.lastAvail == q.usedIdx {
		return fmt.Errorf("virtqueue: PushUsed without an outstanding chain")
	}
	if id >= q.size {
		return fmt.Errorf("virtqueue: PushUsed of head %d beyond queue size %d", id, q.size)
	}
	var e [usedElemSize]byte
	binary.LittleEndian.PutUint32(e[0:], uint32(id))
	binary.LittleEndian.PutUint32(e[4:], written)
	if err := q.mem.Write(q.device+ringHeader+usedElemSize*uint64(q.usedIdx%q.size), e[:]); err != nil {
		return q.fail("writing used ring: %v", err)
	}
	fence() // the element before the index (§2.7.8)
	if err := q.mem.WriteUint16(q.device+2, q.usedIdx+1); err != nil {
		return q.fail("writing used idx: %v", err)
	}
	q.usedIdx++
	return nil
}

// NeedsInterrupt reports whether the driver wants a used buffer
// notification for the entries pushed since the last one: with
// VIRTIO_F_EVENT_IDX when the used index passed used_event (§2.7.10),
// otherwise unless VIRTQ_AVAIL_F_NO_INTERRUPT is set (§2.7.7). It
// records that the driver is being notified when it returns true.
func (q *Queue) NeedsInterrupt() (bool, error) {
	if q.broken != nil || !q.ready || q.usedIdx == q.signalled {
		return false, q.broken
	}
	fence() // the used idx store before reading the driver's flags
	old := q.signalled
	if q.eventIdx {
		ev, err := q.readU16(q.driver + ringHeader + 2*uint64(q.size))
		if err != nil {
			return false, q.fail("reading used_event: %v", err)
		}
		q.signalled = q.usedIdx
		// vring_need_event (§2.7.10): new - event - 1 < new - old.
		return q.usedIdx-ev-1 < q.usedIdx-old, nil
	}
	flags, err := q.readU16(q.driver)
	if err != nil {
		return false, q.fail("reading avail flags: %v", err)
	}
	q.signalled = q.usedIdx
	return flags&availFNoIntr == 0, nil
}

// DisableNotify tells the driver that the device is processing the queue
// and needs no notification for the buffers it adds meanwhile (§2.7.10),
// which saves the driver's notify writes while the device drains the
// queue. Without VIRTIO_F_EVENT_IDX it sets VIRTQ_USED_F_NO_NOTIFY. With
// it there is nothing to write: avail_event stays where ArmNotify left it,
// behind the buffers the driver adds now, and the driver notifies only
// when its index crosses avail_event. ArmNotify undoes it.
func (q *Queue) DisableNotify() error {
	if q.broken != nil || !q.ready || q.eventIdx || q.noNotify {
		return q.broken
	}
	if err := q.mem.WriteUint16(q.device, usedFNoNotify); err != nil {
		return q.fail("writing used flags: %v", err)
	}
	q.noNotify = true
	return nil
}

// ArmNotify asks the driver for a notification when it makes more buffers
// available: with VIRTIO_F_EVENT_IDX by writing avail_event (§2.7.10),
// otherwise by clearing the VIRTQ_USED_F_NO_NOTIFY DisableNotify set. It
// then reports whether buffers arrived after the device last read the
// available index, in which case the caller must process the queue again
// instead of waiting.
func (q *Queue) ArmNotify() (bool, error) {
	if q.broken != nil || !q.ready {
		return false, q.broken
	}
	if q.eventIdx {
		if err := q.mem.WriteUint16(q.device+ringHeader+usedElemSize*uint64(q.size), q.availCache); err != nil {
			return false, q.fail("writing avail_event: %v", err)
		}
	} else if q.noNotify {
		if err := q.mem.WriteUint16(q.device, 0); err != nil {
			return false, q.fail("writing used flags: %v", err)
		}
		q.noNotify = false
	}
	fence() // avail_event store before re-reading the index
	idx, err := q.readU16(q.driver + 2)
	if err != nil {
		return false, q.fail("reading avail idx: %v", err)
	}
	return idx != q.availCache, nil
}

// Memory returns the guest memory the queue's buffers live in.
func (q *Queue) Memory() *memory.Memory { return q.mem }
