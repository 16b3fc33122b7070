package migrate

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// fakeClock drives a limiter without real time: waiting advances it.
type fakeClock struct {
	now    time.Time
	waited time.Duration
}

func (c *fakeClock) limiter(rate int64) *limiter {
	l := newLimiter(rate)
	l.now = func() time.Time { return c.now }
	l.wait = func(_ context.Context, d time.Duration) error {
		c.waited += d
		c.now = c.now.Add(d)
		return nil
	}
	return l
}

func TestLimiter(t *testing.T) {
	type step struct {
		idle  time.Duration // clock advance before the write
		bytes int
	}
	tests := []struct {
		name  string
		rate  int64
		steps []step
		want  time.Duration
	}{
		{name: "within burst", rate: 1e6, steps: []step{{0, 64 << 10}}, want: 0},
		{name: "beyond burst", rate: 1e6, steps: []step{{0, 64<<10 + 100000}}, want: 100 * time.Millisecond},
		{name: "steady stream", rate: 1e6, steps: repeatStep(step{0, 100000}, 10), want: time.Second - 65536*time.Microsecond},
		{name: "idle time refills up to the burst only", rate: 1e6,
			steps: []step{{0, 64 << 10}, {time.Hour, 64<<10 + 500000}}, want: 500 * time.Millisecond},
		{name: "large burst at high rate", rate: 100e6, steps: []step{{0, 5e6}, {0, 100e6}}, want: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeClock{now: time.Unix(1000, 0)}
			l := c.limiter(tt.rate)
			for _, s := range tt.steps {
				c.now = c.now.Add(s.idle)
				if err := l.take(context.Background(), s.bytes); err != nil {
					t.Fatal(err)
				}
			}
			if d := c.waited - tt.want; d > time.Microsecond || d < -time.Microsecond {
				t.Fatalf("waited %v, want %v", c.waited, tt.want)
			}
		})
	}
}

func repeatStep[T any](s T, n int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestFrameWriterPaced(t *testing.T) {
	c := &fakeClock{now: time.Unix(1000, 0)}
	var out bytes.Buffer
	fw := &frameWriter{ctx: context.Background(), w: &out, lim: c.limiter(1e6), chunk: 50000}
	data := bytes.Repeat([]byte{3}, 1e6+64<<10)
	if err := fw.write(data); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), data) || fw.written() != uint64(len(data)) {
		t.Fatalf("wrote %d bytes, counted %d, want %d", out.Len(), fw.written(), len(data))
	}
	if d := c.waited - time.Second; d > time.Microsecond || d < -time.Microsecond {
		t.Fatalf("waited %v for 1 MB over the burst at 1 MB/s", c.waited)
	}
}

func TestSleepCtxCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sleepCtx(ctx, time.Hour); err != context.Canceled {
		t.Fatalf("sleepCtx on a cancelled context: %v", err)
	}
}
