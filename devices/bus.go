package devices

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Device is a port-I/O or MMIO device. offset is relative to the base the
// device was registered at; len(data) is 1, 2, 4 or 8. Implementations must
// tolerate any offset and any length (including accesses that run past the
// end of the registered range): the values come from the guest.
type Device interface {
	// Read fills data with the value at offset.
	Read(offset uint64, data []byte)
	// Write stores data at offset.
	Write(offset uint64, data []byte)
}

// BusEntry describes one registered range, for diagnostics.
type BusEntry struct {
	// Base is the first address of the range.
	Base uint64
	// Size is the length of the range in bytes (or ports).
	Size uint64
	// Name is the name given at registration.
	Name string
}

// busRange is one registered range; last is inclusive so that a range may
// end at the top of the address space.
type busRange struct {
	base, last uint64
	name       string
	dev        Device
}

// Bus dispatches guest accesses to the devices registered on it. Lookups
// are lock-free (a copy-on-write slice sorted by base, binary searched);
// registration takes a mutex and publishes a new slice. A Bus is safe for
// concurrent use by several vCPU threads.
type Bus struct {
	name    string
	mu      sync.Mutex // serialises Register
	ranges  atomic.Pointer[[]busRange]
	unReads atomic.Uint64
	unWrite atomic.Uint64
}

// NewBus returns an empty bus; name ("pio" or "mmio") appears in errors.
func NewBus(name string) *Bus {
	b := &Bus{name: name}
	b.ranges.Store(&[]busRange{})
	return b
}

// Register adds d at [base, base+size). It rejects a zero size, a range that
// wraps past the top of the address space, a nil device and a range that
// overlaps one already registered (the error names both devices).
func (b *Bus) Register(base, size uint64, name string, d Device) error {
	if d == nil {
		return fmt.Errorf("%s bus: device %q: nil device", b.name, name)
	}
	if size == 0 {
		return fmt.Errorf("%s bus: device %q at %#x: size is zero", b.name, name, base)
	}
	last := base + (size - 1)
	if last < base {
		return fmt.Errorf("%s bus: device %q at %#x size %#x: range wraps past the end of the address space", b.name, name, base, size)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old := *b.ranges.Load()
	i := 0
	for i < len(old) && old[i].base < base {
		i++
	}
	// Only the neighbours can overlap because the existing ranges are disjoint and sorted.
	for _, j := range []int{i - 1, i} {
		if j < 0 || j >= len(old) {
			continue
		}
		o := old[j]
		if base <= o.last && o.base <= last {
			return fmt.Errorf("%s bus: device %q [%#x-%#x] overlaps device %q [%#x-%#x]",
				b.name, name, base, last, o.name, o.base, o.last)
		}
	}
	next := make([]busRange, 0, len(old)+1)
	next = append(next, old[:i]...)
	next = append(next, busRange{base: base, last: last, name: name, dev: d})
	next = append(next, old[i:]...)
	b.ranges.Store(&next)
	return nil
}

// find returns the range holding addr.
func (b *Bus) find(addr uint64) (busRange, bool) {
	rs := *b.ranges.Load()
	// Binary search for the last range with base <= addr.
	lo, hi := 0, len(rs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if rs[m].base <= addr {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return busRange{}, false
	}
	r := rs[lo-1]
	if addr > r.last {
		return busRange{}, false
	}
	return r, true
}

// Read dispatches a read at addr to the device whose range holds addr. It
// returns false when no device does; data is then filled with all ones (as
// an open bus reads) and the access is counted.
func (b *Bus) Read(addr uint64, data []byte) bool {
	r, ok := b.find(addr)
	if !ok {
		b.unReads.Add(1)
		FillOnes(data)
		return false
	}
	r.dev.Read(addr-r.base, data)
	return true
}

// Write dispatches a write at addr to the device whose range holds addr. It
// returns false when no device does; the write is then dropped and counted.
func (b *Bus) Write(addr uint64, data []byte) bool {
	r, ok := b.find(addr)
	if !ok {
		b.unWrite.Add(1)
		return false
	}
	r.dev.Write(addr-r.base, data)
	return true
}

// Unhandled returns how many reads and writes hit no device.
func (b *Bus) Unhandled() (reads, writes uint64) {
	return b.unReads.Load(), b.unWrite.Load()
}

// Devices lists the registered ranges sorted by base.
func (b *Bus) Devices() []BusEntry {
	rs := *b.ranges.Load()
	out := make([]BusEntry, len(rs))
	for i, r := range rs {
		out[i] = BusEntry{Base: r.base, Size: r.last - r.base + 1, Name: r.name}
	}
	return out
}

// FillOnes sets every byte of data to 0xff, the value of an open bus.
func FillOnes(data []byte) {
	for i := range data {
		data[i] = 0xff
	}
}

// ErrInvalidState is wrapped by every error a RestoreState method returns
// for bytes it refuses.
var ErrInvalidState = errors.New("invalid device state")
