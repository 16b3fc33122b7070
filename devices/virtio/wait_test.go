package virtio_test

import (
	"context"
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"

	"godwit/devices/virtio/virtiotest"
)

// newEventfd returns an eventfd closed when the test ends, as the VMM
// makes one per queue for KVM_IOEVENTFD.
func newEventfd(t *testing.T) int {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// signalFD adds 1 to an eventfd, as KVM does when the guest writes a
// registered notify address.
func signalFD(t *testing.T, fd int) {
	t.Helper()
	if _, err := unix.Write(fd, binary.NativeEndian.AppendUint64(nil, 1)); err != nil {
		t.Fatal(err)
	}
}

// TestWatchNotifyFD notifies queues only through the eventfds the worker
// watches (no notify register write): every signal gets the queue
// processed, also one that arrives while the transport is paused (on
// Resume), several in a row (each after the last was serviced, so none
// coalesce), and one across a save and restore.
func TestWatchNotifyFD(t *testing.T) {
	tests := []struct {
		name    string
		queue   int
		rounds  int
		paused  bool // signal while paused, then resume
		restore bool // save and restore (the worker restarts) before signalling
	}{
		{"running", 0, 3, false, false},
		{"second queue", 1, 2, false, false},
		{"while paused", 0, 2, true, false},
		{"after restore", 1, 2, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sink{}
			m := virtiotest.NewMachine(t, s)
			d := virtiotest.NewDriver(t, m)
			qs := virtiotest.Activate(t, virtiotest.Suite{QueueSize: 8}, d)
			fds := []int{newEventfd(t), newEventfd(t)}
			for i, fd := range fds {
				if err := m.Transport.WatchNotifyFD(i, fd); err != nil {
					t.Fatal(err)
				}
			}
			if tt.restore {
				state, err := m.Transport.SaveState()
				if err != nil {
					t.Fatal(err)
				}
				if err := m.Transport.RestoreState(state); err != nil {
					t.Fatal(err)
				}
			}
			q := qs[tt.queue]
			for r := 0; r < tt.rounds; r++ {
				if tt.paused {
					if err := m.Transport.Pause(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
				head := q.AvailIdx % q.Size
				q.SetDesc(head, d.Alloc(8, 8), 8, virtiotest.DescWrite, 0)
				q.Publish(head)
				signalFD(t, fds[tt.queue])
				if tt.paused {
					// Pause waited for the worker: nothing can run.
					if got := q.UsedIdx(); got != q.LastUsed {
						t.Fatalf("round %d: processed while paused", r)
					}
					if err := m.Transport.Resume(); err != nil {
						t.Fatal(err)
					}
				}
				d.WaitMSI(tt.queue + 1)
				if used := q.TakeUsed(); len(used) != 1 || used[0].ID != uint32(head) {
					t.Fatalf("round %d: used %+v, want head %d", r, used, head)
				}
				q.SetUsedEvent(q.LastUsed)
			}
		})
	}
}

// TestWatchNotifyFDErrors: one eventfd per queue, only real queues, none
// after Close; Unwatch frees the queue for another eventfd.
func TestWatchNotifyFDErrors(t *testing.T) {
	m := virtiotest.NewMachine(t, &sink{})
	a, b := newEventfd(t), newEventfd(t)
	steps := []struct {
		name    string
		do      func() error
		wantErr bool
	}{
		{"watch queue 0", func() error { return m.Transport.WatchNotifyFD(0, a) }, false},
		{"second eventfd for queue 0", func() error { return m.Transport.WatchNotifyFD(0, b) }, true},
		{"queue out of range", func() error { return m.Transport.WatchNotifyFD(2, b) }, true},
		{"negative queue", func() error { return m.Transport.WatchNotifyFD(-1, b) }, true},
		{"not a descriptor", func() error { return m.Transport.WatchNotifyFD(1, -1) }, true},
		{"unwatch with the wrong eventfd", func() error {
			m.Transport.UnwatchNotifyFD(0, b)
			return m.Transport.WatchNotifyFD(0, b)
		}, true},
		{"unwatch, then another eventfd", func() error {
			m.Transport.UnwatchNotifyFD(0, a)
			return m.Transport.WatchNotifyFD(0, b)
		}, false},
		{"after close", func() error {
			m.Transport.Close()
			m.Transport.Notify(0) // harmless after Close
			return m.Transport.WatchNotifyFD(1, a)
		}, true},
	}
	for _, s := range steps {
		if err := s.do(); (err != nil) != s.wantErr {
			t.Errorf("%s: error %v, want error %v", s.name, err, s.wantErr)
		}
	}
}
