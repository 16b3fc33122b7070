// Package gcquiet keeps Go's garbage collector out of a latency-critical
// stretch of a process, a live migration: the collector's stop-the-world
// phases, well under a millisecond on real CPUs, took 20-100 ms each in
// the nested host's emulated CPUs (GODEBUG=gctrace=1 during a benchmark
// migration), and one landing in the downtime lengthens it by as much. A
// migration allocates little garbage (frame buffers are reused), so
// turning the collector off for its duration costs little memory; a soft
// memory limit still collects if the heap grows by more than the headroom.
package gcquiet

import (
	"math"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// Headroom is how much the Go runtime's memory may grow while quiet before
// the collector runs anyway.
const Headroom = 256 << 20

var (
	mu      sync.Mutex
	holders int
	prevPct int
	prevLim int64
)

// Start turns the garbage collector off, with a soft memory limit of the
// runtime's current memory plus Headroom, and returns the function that
// undoes it. Nested or concurrent uses keep it off until the last undo.
// Call Start before the critical stretch: it waits for a collection in
// progress to finish.
func Start() (stop func()) {
	mu.Lock()
	defer mu.Unlock()
	if holders == 0 {
		sample := []metrics.Sample{{Name: "/memory/classes/total:bytes"}}
		metrics.Read(sample)
		limit := int64(math.MaxInt64)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			if v := sample[0].Value.Uint64(); v < math.MaxInt64-Headroom {
				limit = int64(v) + Headroom
			}
		}
		prevLim = debug.SetMemoryLimit(limit)
		prevPct = debug.SetGCPercent(-1)
	}
	holders++
	var once sync.Once
	return func() {
		once.Do(func() {
			mu.Lock()
			defer mu.Unlock()
			if holders--; holders == 0 {
				debug.SetGCPercent(prevPct)
				debug.SetMemoryLimit(prevLim)
			}
		})
	}
}
