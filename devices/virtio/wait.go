package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"godwit/internal/rawsys"
)

// What the worker sleeps on.
//
// The worker waits on an epoll set of its own, which holds the eventfds
// KVM signals when the driver notifies a queue (KVM_IOEVENTFD; the VMM
// hands them over with WatchNotifyFD) and a wake-up eventfd. The set's
// descriptor is itself on the Go poller: the worker goroutine parks there
// (no thread blocks) and, once the set has an event, takes the events
// with a non-blocking epoll_wait(2). So a notification from the guest
// wakes the worker goroutine directly: no goroutine reads the eventfd
// and hands the queue on (the VMM used to run one per queue), and the
// worker reads nothing either: the set is edge-triggered for the queue
// eventfds, so every signal after the last report is a new event, and
// the eventfd's counter, which only KVM adds to, saturates rather than
// wraps.
//
// Go code that notifies (the MMIO notify path, Host.Kick, stopping the
// worker) marks the queue pending and writes the wake-up eventfd, but
// only when the worker sleeps or is about to: sleeping and the pending
// flags are a Dekker pair (the worker sets sleeping, then looks at the
// flags; Notify sets a flag, then looks at sleeping; Go's atomics are
// sequentially consistent), so either the worker sees the flag or Notify
// sees it asleep and wakes it. The write needs no thread wake-up of its
// own: the notifying goroutine's thread, or the one parked in the Go
// poller, runs the worker next.
//
// An event that arrives while no worker runs (paused, stopped for a
// queue change, not activated yet) stays in the set's ready list, and
// the next worker gets it at its first wait: nothing is lost.
//
// (A worker blocked in epoll_wait itself, on a thread of its own, was
// measured too: as fast for guest notifications, but every wake-up from
// Go code, such as a receive kick for each frame from the tap, then
// became a cross-thread wake-up through the kernel: twice the context
// switches per received ACK in BenchmarkRx.)
//
// The epoll_wait and the eventfd reads and writes never block, and go
// through internal/rawsys: made the usual way, the first of them after a
// quiet moment woke the Go runtime's monitor thread on another CPU.

// wakeTag marks the wake-up eventfd's events; a queue's events carry the
// queue index.
const wakeTag = -1

// waiter is a transport's epoll set and wake-up eventfd.
type waiter struct {
	ep       int      // the epoll set, nonblocking; epf owns it
	epf      *os.File // ep on the Go poller, where the worker parks
	rc       syscall.RawConn
	wake     *os.File // the wake-up eventfd, blocking: never on the Go poller
	wakeRC   syscall.RawConn
	wakeFD   int // wake's descriptor, read by the worker only
	sleeping atomic.Bool
	events   []unix.EpollEvent // the worker's epoll_wait buffer
	// poll takes the set's events into events, n and err; post adds one
	// to the wake-up eventfd, which blocks only when the counter nears
	// 2^64 (the worker's reads reset it). Both are built once, so that a
	// wait or a wake-up allocates nothing.
	poll func(fd uintptr) bool
	post func(fd uintptr) bool
	n    int
	err  error

	mu      sync.Mutex
	closed  bool
	watched []int // per queue: the notification eventfd in the set, or -1
}

// newWaiter returns the waiter of a transport with nq queues.
func newWaiter(nq int) (*waiter, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("virtio: epoll_create1: %w", err)
	}
	// Nonblocking, so that os.NewFile puts it on the Go poller.
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("virtio: epoll set nonblocking: %w", err)
	}
	// Blocking, so that os.NewFile leaves it off the Go poller; only the
	// worker reads it, and only when epoll reported it readable.
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("virtio: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeTag}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		unix.Close(fd)
		unix.Close(ep)
		return nil, fmt.Errorf("virtio: epoll_ctl: %w", err)
	}
	w := &waiter{
		ep: ep, epf: os.NewFile(uintptr(ep), "virtio-epoll"),
		wake: os.NewFile(uintptr(fd), "virtio-wake"), wakeFD: fd,
		events: make([]unix.EpollEvent, nq+1), watched: make([]int, nq),
	}
	w.poll = func(fd uintptr) bool {
		w.n, w.err = rawsys.EpollPoll(int(fd), w.events)
		return w.n > 0 || w.err != nil
	}
	w.post = func(fd uintptr) bool {
		_, _ = rawsys.Write(int(fd), one)
		return true
	}
	if w.rc, err = w.epf.SyscallConn(); err != nil {
		w.epf.Close()
		w.wake.Close()
		return nil, fmt.Errorf("virtio: epoll set: %w", err)
	}
	if w.wakeRC, err = w.wake.SyscallConn(); err != nil {
		w.epf.Close()
		w.wake.Close()
		return nil, fmt.Errorf("virtio: wake-up eventfd: %w", err)
	}
	for i := range w.watched {
		w.watched[i] = -1
	}
	return w, nil
}

// watch adds fd, queue i's notification eventfd, to the set.
func (w *waiter) watch(i, fd int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.closed:
		return errors.New("virtio: transport closed")
	case i < 0 || i >= len(w.watched):
		return fmt.Errorf("virtio: no queue %d", i)
	case w.watched[i] != -1:
		return fmt.Errorf("virtio: queue %d already has a notification eventfd", i)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(i)}
	if err := unix.EpollCtl(w.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("virtio: queue %d: epoll_ctl: %w", i, err)
	}
	w.watched[i] = fd
	return nil
}

// unwatch removes fd from the set if it is queue i's.
func (w *waiter) unwatch(i, fd int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || i < 0 || i >= len(w.watched) || w.watched[i] != fd {
		return
	}
	_ = unix.EpollCtl(w.ep, unix.EPOLL_CTL_DEL, fd, nil)
	w.watched[i] = -1
}

// one is the 8-byte eventfd increment.
var one = binary.NativeEndian.AppendUint64(nil, 1)

// signal wakes the worker if it sleeps. Safe from any goroutine, also
// after close (the write then fails harmlessly).
func (w *waiter) signal() {
	if w.sleeping.CompareAndSwap(true, false) {
		_ = w.wakeRC.Write(w.post)
	}
}

// kick wakes the worker whether it sleeps or not (stopping it).
func (w *waiter) kick() {
	_ = w.wakeRC.Write(w.post)
}

// sleep waits until a notification arrives or quit is set, unless one of
// the live queues is pending already; it marks the queues whose eventfds
// fired pending. Worker only.
func (w *waiter) sleep(pending []atomic.Bool, live []bool, quit *atomic.Bool) error {
	w.sleeping.Store(true)
	if quit.Load() || anyPending(pending, live) {
		w.sleeping.Store(false)
		return nil
	}
	// The set is on the Go poller, edge-triggered: the function takes
	// what is there now, and the goroutine parks only when it found
	// nothing, until the set's next event.
	err := w.rc.Read(w.poll)
	n := w.n
	if err == nil {
		err = w.err
	}
	if err != nil {
		w.sleeping.Store(false)
		return fmt.Errorf("virtio: epoll_wait: %w", err)
	}
	w.sleeping.Store(false)
	for _, e := range w.events[:n] {
		switch i := int(e.Fd); {
		case i == wakeTag:
			// Readable, and only this goroutine reads: no blocking.
			var b [8]byte
			_, _ = rawsys.Read(w.wakeFD, b[:])
		case i >= 0 && i < len(pending):
			pending[i].Store(true)
		}
	}
	return nil
}

// anyPending reports whether a live queue has a notification pending.
func anyPending(pending []atomic.Bool, live []bool) bool {
	for i := range live {
		if live[i] && pending[i].Load() {
			return true
		}
	}
	return false
}

// close releases the set and the wake-up eventfd; the worker has stopped.
// Watched eventfds stay open (their owner closes them). Idempotent.
func (w *waiter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	w.epf.Close()
	w.wake.Close()
}
