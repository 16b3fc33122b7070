package devices

import (
	"sync"
	"sync/atomic"
)

// Sink is a Device that absorbs accesses: reads return zero, writes are
// counted and the last byte written is kept (port 0x80 POST codes, which
// firmware and Linux also use as an I/O delay).
type Sink struct {
	name   string
	reads  atomic.Uint64
	writes atomic.Uint64
	last   atomic.Uint32
}

// NewSink returns a sink called name.
func NewSink(name string) *Sink { return &Sink{name: name} }

// Name returns the name given to NewSink.
func (s *Sink) Name() string { return s.name }

// Read implements Device: every byte reads zero.
func (s *Sink) Read(offset uint64, data []byte) {
	s.reads.Add(1)
	clear(data)
}

// Write implements Device: the write is counted and its first byte kept.
func (s *Sink) Write(offset uint64, data []byte) {
	s.writes.Add(1)
	if len(data) > 0 {
		s.last.Store(uint32(data[0]))
	}
}

// Counts returns how many reads and writes the sink absorbed.
func (s *Sink) Counts() (reads, writes uint64) { return s.reads.Load(), s.writes.Load() }

// Last returns the first byte of the latest write (the last POST code), 0
// before any write.
func (s *Sink) Last() byte { return byte(s.last.Load()) }

// System control port A (0x92) bits.
const (
	port92Reset = 0x01 // write 1: fast CPU reset
	port92A20   = 0x02 // A20 gate enabled
)

// Port92 is system control port A (0x92, "fast A20 and reset"). Bit 1 (A20
// gate) reads back what was written; KVM guests always see A20 enabled, so
// it has no other effect. Writing bit 0 set resets the machine.
type Port92 struct {
	mu    sync.Mutex
	value byte
	reset func()
}

// NewPort92 returns the port with A20 enabled; reset (may be nil) is called
// from the vCPU thread, without the port's lock held, when the guest
// requests a reset.
func NewPort92(reset func()) *Port92 { return &Port92{value: port92A20, reset: reset} }

// Read implements Device: the first byte is the port (bit 0 reads 0); any
// further bytes read 0xff.
func (p *Port92) Read(offset uint64, data []byte) {
	FillOnes(data)
	if offset != 0 || len(data) == 0 {
		return
	}
	p.mu.Lock()
	data[0] = p.value
	p.mu.Unlock()
}

// Write implements Device: the first byte sets A20 and may request a reset.
func (p *Port92) Write(offset uint64, data []byte) {
	if offset != 0 || len(data) == 0 {
		return
	}
	v := data[0]
	p.mu.Lock()
	p.value = v & port92A20
	p.mu.Unlock()
	if v&port92Reset != 0 && p.reset != nil {
		p.reset()
	}
}
