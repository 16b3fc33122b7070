package vmm

import (
	"os"
	"runtime"
	"testing"
)

func TestReserveProcs(t *testing.T) {
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		t.Skip("GOMAXPROCS set in the environment: reserveProcs leaves it alone")
	}
	old := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(old)
	reserveProcs(3)
	if got, want := runtime.GOMAXPROCS(0), runtime.NumCPU()+3; got != want {
		t.Errorf("GOMAXPROCS %d after reserving 3 vCPUs, want %d", got, want)
	}
	runtime.GOMAXPROCS(1000)
	reserveProcs(3)
	if got := runtime.GOMAXPROCS(0); got != 1000 {
		t.Errorf("GOMAXPROCS lowered to %d", got)
	}
}
