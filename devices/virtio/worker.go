package virtio

import (
	"context"
	"fmt"
	"sync/atomic"
)

// maxRounds bounds how often the worker re-processes one queue after
// re-arming notifications before it lets the other queues run.
const maxRounds = 16

// worker is one run of the device's worker goroutine.
type worker struct {
	quit     atomic.Bool
	done     chan struct{}
	stopping bool
}

// startWorkerLocked starts the worker if the device is active, not paused
// and none runs; mu is held. The set of live queues is fixed for the
// worker's lifetime: enabling a queue restarts the worker.
func (t *Transport) startWorkerLocked() {
	if t.w != nil || !t.activated || t.paused || t.closed {
		return
	}
	live := make([]bool, t.nq)
	for i, q := range t.queues {
		live[i] = q.ready
	}
	w := &worker{done: make(chan struct{})}
	t.w = w
	go t.run(w, live)
}

// stopWorkerLocked stops the worker and waits for it; mu is held. The
// worker never takes mu, so this cannot deadlock; it waits for a
// ProcessQueue call in progress to return.
func (t *Transport) stopWorkerLocked() {
	_ = t.stopWorkerCtx(context.Background())
}

// stopWorkerCtx is stopWorkerLocked that gives up waiting when ctx ends;
// the worker then still stops, and the next call waits for it again.
func (t *Transport) stopWorkerCtx(ctx context.Context) error {
	w := t.w
	if w == nil {
		return nil
	}
	if !w.stopping {
		w.stopping = true
		w.quit.Store(true)
		t.wait.kick()
	}
	select {
	case <-w.done:
		t.w = nil
		return nil
	case <-ctx.Done():
		return fmt.Errorf("virtio: waiting for the device worker: %w", ctx.Err())
	}
}

// run is the worker goroutine: it services notified queues until stopped.
// Notifications are flags (one per queue), set by Notify or by the
// worker itself when a queue's eventfd fires (wait.go), so any number of
// notifications while a queue is being processed coalesce into one more
// pass.
func (t *Transport) run(w *worker, live []bool) {
	defer close(w.done)
	for {
		for i := range live {
			if w.quit.Load() {
				return
			}
			if live[i] && t.pending[i].Swap(false) {
				t.service(i)
			}
		}
		if w.quit.Load() {
			return
		}
		if err := t.wait.sleep(t.pending, live, &w.quit); err != nil {
			t.deviceError(err)
			return
		}
	}
}

// service lets the device process queue i until no buffers arrive after
// notifications are re-armed (§2.7.10), sending used-buffer
// notifications as it goes.
func (t *Transport) service(i int) {
	q := t.queues[i]
	defer t.mirrors[i].publish(q)
	for round := 0; q.broken == nil; round++ {
		if err := q.DisableNotify(); err != nil {
			t.deviceError(err)
			return
		}
		err := t.dev.ProcessQueue(i)
		if err == nil {
			err = q.broken
		}
		t.signalQueue(i)
		if err != nil {
			t.deviceError(q.fail("queue %d: %v", i, err))
			return
		}
		more, err := q.ArmNotify()
		if err != nil {
			t.deviceError(err)
			return
		}
		if !more {
			return
		}
		if round == maxRounds {
			t.Notify(i) // come back after the other queues
			return
		}
	}
}

// Pause stops the worker (after the ProcessQueue call in progress, if
// any) and pauses the device. Notifications that arrive while paused are
// kept and processed on Resume. Pausing a paused transport does nothing
// more; if ctx ends before the worker stopped, Pause returns its error and
// a later Pause waits again.
func (t *Transport) Pause(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.paused = true
	if err := t.stopWorkerCtx(ctx); err != nil {
		return err
	}
	if !t.devPaused {
		t.dev.Pause()
		t.devPaused = true
	}
	return nil
}

// Resume undoes Pause; resuming a running transport does nothing.
func (t *Transport) Resume() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.paused {
		return nil
	}
	t.paused = false
	if t.devPaused {
		t.dev.Resume()
		t.devPaused = false
	}
	t.startWorkerLocked()
	return nil
}

// Close stops the worker for good (VM teardown). It is idempotent.
func (t *Transport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	t.stopWorkerLocked()
	t.wait.close()
	return nil
}
