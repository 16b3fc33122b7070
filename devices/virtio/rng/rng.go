// Package rng is the virtio entropy device (virtio 1.2 §5.4): one request
// queue whose device-writable buffers the device fills with bytes from the
// host's getrandom(2).
package rng

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"godwit/devices"
	"godwit/devices/virtio"
)

// Device limits.
const (
	// QueueSize is the maximum size of the request queue.
	QueueSize = 256
	// MaxPerRequest caps the bytes supplied for one request; the device
	// may return fewer bytes than the buffers hold (§5.4.6.1 only asks
	// for some entropy), which bounds the work a guest can ask for.
	MaxPerRequest = 64 << 10
)

// stateVersion is the version of the (empty) device state: the entropy
// device has no configuration (§5.4.4).
const stateVersion = 1

// RNG is the entropy device backend.
type RNG struct {
	mu    sync.Mutex
	queue *virtio.Queue
	fill  func([]byte) (int, error)
	chain virtio.Chain // the worker's, reused by every request
}

// New returns an entropy device reading from getrandom(2).
func New() *RNG { return &RNG{fill: getrandom} }

// getrandom fills p from the kernel's random pool.
func getrandom(p []byte) (int, error) {
	for {
		n, err := unix.Getrandom(p, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return n, err
	}
}

// DeviceType implements virtio.Device.
func (r *RNG) DeviceType() uint16 { return virtio.DeviceEntropy }

// Features implements virtio.Device: no device-specific features
// (§5.4.3).
func (r *RNG) Features() uint64 { return 0 }

// NumQueues implements virtio.Device: one requestq (§5.4.2).
func (r *RNG) NumQueues() int { return 1 }

// MaxQueueSize implements virtio.Device.
func (r *RNG) MaxQueueSize() uint16 { return QueueSize }

// ConfigSize implements virtio.Device: no configuration (§5.4.4).
func (r *RNG) ConfigSize() int { return 0 }

// ReadConfig implements virtio.Device.
func (r *RNG) ReadConfig(_ uint64, data []byte) { clear(data) }

// WriteConfig implements virtio.Device.
func (r *RNG) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device.
func (r *RNG) Activate(_ uint64, queues []*virtio.Queue, _ virtio.Host) error {
	if len(queues) != 1 {
		return fmt.Errorf("rng: %d queues, want 1", len(queues))
	}
	r.mu.Lock()
	r.queue = queues[0]
	r.mu.Unlock()
	return nil
}

// ProcessQueue implements virtio.Device: every chain's writable buffers
// are filled (up to MaxPerRequest bytes) and returned; readable buffers
// are ignored.
func (r *RNG) ProcessQueue(i int) error {
	r.mu.Lock()
	q := r.queue
	r.mu.Unlock()
	if i != 0 || q == nil {
		return nil
	}
	c := &r.chain
	for {
		if ok, err := q.PopInto(c); !ok {
			return err
		}
		n, err := r.serve(q, c)
		if err != nil {
			return err
		}
		if err := q.PushUsed(c.Head, n); err != nil {
			return err
		}
	}
}

// serve fills c's writable buffers and returns the bytes written.
func (r *RNG) serve(q *virtio.Queue, c *virtio.Chain) (uint32, error) {
	var total uint32
	for _, b := range c.Writable {
		want := min(uint64(b.Len), MaxPerRequest-uint64(total))
		if want == 0 {
			break
		}
		dst, err := q.Memory().WritableSlice(b.Addr, want)
		if err != nil {
			return 0, err
		}
		n, err := r.fill(dst)
		// Mark again after writing: a migration round may have taken
		// the mark WritableSlice set before the bytes landed.
		q.Memory().MarkDirty(b.Addr, want)
		total += uint32(n)
		if err != nil {
			break // return what we have; the driver asks again
		}
	}
	return total, nil
}

// Reset implements virtio.Device.
func (r *RNG) Reset() {
	r.mu.Lock()
	r.queue = nil
	r.mu.Unlock()
}

// SaveConfigState implements virtio.Device: a version number only.
func (r *RNG) SaveConfigState() ([]byte, error) { return []byte{stateVersion, 0}, nil }

// RestoreConfigState implements virtio.Device.
func (r *RNG) RestoreConfigState(data []byte) error {
	if len(data) != 2 || data[0] != stateVersion || data[1] != 0 {
		return fmt.Errorf("rng: %w: state %x", devices.ErrInvalidState, data)
	}
	return nil
}

// Pause implements virtio.Device: the device has no activity outside
// ProcessQueue.
func (r *RNG) Pause() {}

// Resume implements virtio.Device.
func (r *RNG) Resume() {}
