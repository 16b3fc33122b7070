package vmm

import (
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
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

func TestMonitorThread(t *testing.T) {
	tests := []struct {
		name string
		pid  int
		tids []int
		want int
		ok   bool
	}{
		{"main thread first", 100, []int{100, 101, 102, 107}, 101, true},
		{"unsorted", 100, []int{107, 100, 103, 101}, 101, true},
		{"only the main thread", 100, []int{100}, 0, false},
		{"none", 100, nil, 0, false},
		{"main thread not lowest", 100, []int{100, 99, 250}, 99, true},
		{"invalid ids ignored", 100, []int{0, -3, 100, 140}, 140, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := monitorThread(tt.pid, tt.tids)
			if got != tt.want || ok != tt.ok {
				t.Errorf("monitorThread(%d, %v) = %d, %v; want %d, %v", tt.pid, tt.tids, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestSlackenMonitor sets the slack where the process may (CAP_SYS_NICE,
// e.g. as root) and otherwise checks that the refusal comes back as an
// error, not a crash.
func TestSlackenMonitor(t *testing.T) {
	err := slackenMonitor()
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			t.Skipf("no CAP_SYS_NICE: %v", err)
		}
		t.Fatal(err)
	}
	tid, err := findMonitorThread()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(timerSlackPath(tid))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(monitorSlackNS) {
		t.Errorf("thread %d timer slack %s ns, want %d", tid, got, monitorSlackNS)
	}
}
