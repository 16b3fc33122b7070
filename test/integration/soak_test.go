package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"godwit/migrate/pingpong"
)

// soakHops is the default length of TestSoakPingpong (GODWIT_SOAK_HOPS).
const soakHops = 100

// TestSoakPingpong bounces the test guest GODWIT_SOAK_HOPS (100) times
// between local instances with `godwit demo`, which pauses the guest after
// every hop, checks a dump of its memory and resumes it, and reports the
// downtime distribution over the hops (min, median, p99, max). Each hop
// must have been verified, the guest's counter never going back. With
// GODWIT_TEST_LONG=1 only: 100 hops take long in the nested host.
func TestSoakPingpong(t *testing.T) {
	needLong(t)
	hops := envHops(t, "GODWIT_SOAK_HOPS", soakHops)
	// A bound against a hung run, not a performance check: a minute a
	// hop is tens of times what a hop takes in the nested host.
	limit := commandTimeout + time.Duration(hops)*time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, godwitBin(t), "demo", "--hops", strconv.Itoa(hops), "--mem", "64M", "--json")
	// Every hop's line is logged as it comes: the run takes minutes, and
	// the nested host stops a run whose console stays silent.
	stdout := &lineLogger{t: t}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("did not finish within %v: %w", limit, err)
	}
	if stderr.Len() > 0 {
		t.Logf("godwit demo stderr:\n%s", stderr.String())
	}
	out := stdout.all.Bytes()
	if err != nil {
		t.Fatalf("godwit demo: %v", err)
	}
	got, err := parseDemoHops(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(got) != hops {
		t.Fatalf("the demo reported %d hops, want %d:\n%s", len(got), hops, out)
	}
	if want := fmt.Sprintf("%d hops, guest memory verified after each", hops); !strings.Contains(string(out), want) {
		t.Fatalf("the demo does not say %q:\n%s", want, out)
	}
	s := pingpong.Summarize(got)
	t.Logf("%d hops of the test guest (64 MiB), memory verified after each; per-hop downtime: min %.1f ms, median %.1f ms, p99 %.1f ms, max %.1f ms; %d bytes sent in all",
		s.Hops, s.MinMs, s.MedianMs, s.P99Ms, s.MaxMs, s.TotalBytes)
}

// envHops returns the number of hops in the environment variable name,
// or def when it is unset.
func envHops(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number of hops", name, v)
	}
	return n
}

// lineLogger logs each line written to it (shortDemoLine) and keeps
// them all.
type lineLogger struct {
	t    *testing.T
	all  bytes.Buffer
	part []byte // the line being written
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.all.Write(p)
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.t.Logf("demo| %s", shortDemoLine(l.part[:i]))
		l.part = l.part[i+1:]
	}
}

// shortDemoLine shortens a hop line of `godwit demo --json` (all of the
// hop's statistics) to the hop, its downtime and the check; other lines
// are kept.
func shortDemoLine(line []byte) string {
	var h struct {
		Hop   int `json:"hop"`
		Stats struct {
			TotalMs    float64 `json:"total_ms"`
			DowntimeMs float64 `json:"downtime_ms"`
			Rounds     int     `json:"rounds"`
		} `json:"stats"`
		Check struct {
			Counter uint64 `json:"counter"`
			Passes  uint64 `json:"passes"`
		} `json:"check"`
	}
	if !bytes.HasPrefix(line, []byte("{")) || json.Unmarshal(line, &h) != nil {
		return string(line)
	}
	return fmt.Sprintf("hop %d: total %.1f ms, downtime %.1f ms, %d rounds; memory verified, counter %d, %d passes",
		h.Hop, h.Stats.TotalMs, h.Stats.DowntimeMs, h.Stats.Rounds, h.Check.Counter, h.Check.Passes)
}

// parseDemoHops reads the hop lines of `godwit demo --json`: hops numbered
// from 1 in order, each with the check the demo made after it (a guest
// counter that never goes back). Other lines are the demo's headline and
// summary.
func parseDemoHops(out []byte) ([]pingpong.Hop, error) {
	var hops []pingpong.Hop
	var counter uint64
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("{")) {
			continue
		}
		var h struct {
			pingpong.Hop
			Check *struct {
				Counter uint64 `json:"counter"`
				Passes  uint64 `json:"passes"`
			} `json:"check"`
		}
		if err := json.Unmarshal(line, &h); err != nil {
			return nil, fmt.Errorf("demo hop line %q: %w", line, err)
		}
		if h.Hop.Hop != len(hops)+1 {
			return nil, fmt.Errorf("demo hop %d after %d hops", h.Hop.Hop, len(hops))
		}
		if h.Check == nil || h.Check.Passes == 0 {
			return nil, fmt.Errorf("demo hop %d: no memory check", h.Hop.Hop)
		}
		if h.Check.Counter < counter {
			return nil, fmt.Errorf("demo hop %d: guest counter %d, after %d", h.Hop.Hop, h.Check.Counter, counter)
		}
		counter = h.Check.Counter
		hops = append(hops, h.Hop)
	}
	return hops, sc.Err()
}

func TestParseDemoHops(t *testing.T) {
	hop := func(n int, ms float64, counter, passes uint64) string {
		return fmt.Sprintf(`{"hop":%d,"from":"vm-%d","to":"vm-%d","stats":{"downtime_ms":%g},"check":{"counter":%d,"boundary":0,"passes":%d}}`,
			n, n-1, n, ms, counter, passes)
	}
	head := "godwit demo: test guest, 64 MiB RAM, range 0x200000-0x4000000, 2 hops over loopback"
	tests := []struct {
		name    string
		out     string
		want    []float64 // downtime of each hop
		wantErr string
	}{
		{"two hops", strings.Join([]string{head, hop(1, 3.5, 10, 9), hop(2, 4, 12, 11), "godwit demo: 2 hops, guest memory verified after each; ..."}, "\n"), []float64{3.5, 4}, ""},
		{"none", head, nil, ""},
		{"gap", strings.Join([]string{hop(1, 1, 1, 1), hop(3, 1, 2, 2)}, "\n"), nil, "demo hop 3 after 1 hops"},
		{"unchecked", `{"hop":1,"stats":{"downtime_ms":1}}`, nil, "no memory check"},
		{"counter back", strings.Join([]string{hop(1, 1, 5, 1), hop(2, 1, 4, 2)}, "\n"), nil, "guest counter 4, after 5"},
		{"garbage", "{not json", nil, "demo hop line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDemoHops([]byte(tt.out))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseDemoHops error %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("parseDemoHops = %d hops, want %d", len(got), len(tt.want))
			}
			for i, h := range got {
				if h.Stats.DowntimeMs != tt.want[i] || h.Hop != i+1 {
					t.Errorf("hop %d: %+v, want downtime %v", i+1, h, tt.want[i])
				}
			}
		})
	}
}
