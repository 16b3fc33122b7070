package gcquiet

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestStartStop(t *testing.T) {
	pct := debug.SetGCPercent(100)
	defer debug.SetGCPercent(pct)
	lim := debug.SetMemoryLimit(math.MaxInt64)
	defer debug.SetMemoryLimit(lim)

	stop1 := Start()
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Fatalf("GC percent while quiet: %d, want -1 (off)", got)
	}
	if got := debug.SetMemoryLimit(-1); got == math.MaxInt64 || got < Headroom {
		t.Fatalf("memory limit while quiet: %d, want the runtime's memory plus %d", got, Headroom)
	}
	stop2 := Start()
	stop1()
	stop1() // a second call does nothing
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Fatalf("GC percent with one holder left: %d, want -1", got)
	}
	stop2()
	if got := debug.SetGCPercent(-1); got != 100 {
		t.Fatalf("GC percent after the last stop: %d, want 100 restored", got)
	}
	debug.SetGCPercent(100)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("memory limit after the last stop: %d, want it restored", got)
	}
}
