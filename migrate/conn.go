package migrate

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// deadliner is the part of net.Conn the engine uses to unblock I/O.
type deadliner interface {
	SetDeadline(t time.Time) error
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// longAgo is a deadline in the past: it fails pending and future I/O at once.
var longAgo = time.Unix(1, 0)

// farewellTimeout bounds the write of a last ERROR frame to a peer that may
// no longer read.
const farewellTimeout = 2 * time.Second

// link wraps the connection with what cancellation needs: a way to unblock
// pending reads and writes (deadlines when the connection has them, Close
// otherwise) and a record that it happened.
type link struct {
	rw          io.ReadWriter
	dl          deadliner
	closer      io.Closer
	interrupted atomic.Bool
	watchdog    *time.Timer // idle timer for connections without deadlines
	idleFired   atomic.Bool

	// farewellMu orders interrupt against farewell: once the farewell
	// has set its write deadline, an interrupt (the source's reader
	// ending) fails only reads, and does not cut the farewell short.
	farewellMu  sync.Mutex
	farewelling bool
}

func newLink(rw io.ReadWriter) *link {
	l := &link{rw: rw}
	l.dl, _ = rw.(deadliner)
	l.closer, _ = rw.(io.Closer)
	return l
}

// canInterrupt reports whether blocked I/O on the link can be unblocked.
func (l *link) canInterrupt() bool { return l.dl != nil || l.closer != nil }

// interrupt fails pending and future I/O on the link.
func (l *link) interrupt() {
	l.interrupted.Store(true)
	switch {
	case l.dl != nil:
		l.farewellMu.Lock()
		if l.farewelling {
			l.dl.SetReadDeadline(longAgo)
		} else {
			l.dl.SetDeadline(longAgo)
		}
		l.farewellMu.Unlock()
	case l.closer != nil:
		l.closer.Close()
	}
}

// watch interrupts the link when ctx is done. The returned stop detaches
// it; it reports whether ctx was still live, and when it was not, it waits
// for the interrupt to finish, so a later farewell is not cut short by it.
// stop may be called more than once.
func (l *link) watch(ctx context.Context) (stop func() bool) {
	fired := make(chan struct{})
	after := context.AfterFunc(ctx, func() {
		l.interrupt()
		close(fired)
	})
	var once sync.Once
	var live bool
	return func() bool {
		once.Do(func() {
			live = after()
			if !live {
				<-fired
			}
		})
		return live
	}
}

// armIdle bounds the next read to d. It never undoes an interrupt.
func (l *link) armIdle(d time.Duration) { l.arm(d, deadliner.SetReadDeadline) }

// disarmIdle lifts the idle bound while the engine is busy, not reading.
func (l *link) disarmIdle() { l.disarm(deadliner.SetReadDeadline) }

// arm bounds the next read or write to d: with the deadline set sets
// when the link has deadlines, else with the idle watchdog, which closes
// the connection when it fires. It never undoes an interrupt.
func (l *link) arm(d time.Duration, set func(deadliner, time.Time) error) {
	if d <= 0 {
		return
	}
	if l.dl != nil {
		set(l.dl, time.Now().Add(d))
		if l.interrupted.Load() {
			l.dl.SetDeadline(longAgo)
		}
		return
	}
	if l.closer == nil {
		return
	}
	if l.watchdog == nil {
		l.watchdog = time.AfterFunc(d, func() {
			l.idleFired.Store(true)
			l.interrupt()
		})
		return
	}
	l.watchdog.Reset(d)
}

// disarm lifts the bound arm set with set.
func (l *link) disarm(set func(deadliner, time.Time) error) {
	if l.dl != nil {
		set(l.dl, time.Time{})
		if l.interrupted.Load() {
			l.dl.SetDeadline(longAgo)
		}
	}
	if l.watchdog != nil {
		l.watchdog.Stop()
	}
}

// farewell writes a last frame (ERROR) on a best-effort basis: with a
// short write deadline when the link has deadlines, not at all when it was
// interrupted and cannot be revived.
func (l *link) farewell(frame []byte) {
	if l.dl != nil {
		l.farewellMu.Lock()
		l.farewelling = true
		l.dl.SetWriteDeadline(time.Now().Add(farewellTimeout))
		l.farewellMu.Unlock()
	} else if l.interrupted.Load() {
		return
	}
	l.rw.Write(frame)
}

// clearDeadlines leaves the connection as the caller gave it.
func (l *link) clearDeadlines() {
	if l.dl != nil && !l.interrupted.Load() {
		l.dl.SetDeadline(time.Time{})
	}
}

// limiter is a token bucket over bytes, allowing debt: a write of n bytes
// takes n tokens, and when the balance is negative the writer waits until
// it would be zero again. Time is injected so the arithmetic is tested
// without a clock.
type limiter struct {
	rate   float64 // bytes per second
	burst  float64 // largest balance
	tokens float64
	last   time.Time
	now    func() time.Time
	wait   func(ctx context.Context, d time.Duration) error
}

func newLimiter(rate int64) *limiter {
	burst := max(float64(rate)/20, 64<<10) // 50 ms worth, at least 64 KiB
	return &limiter{rate: float64(rate), burst: burst, tokens: burst, now: time.Now, wait: sleepCtx}
}

// take accounts n bytes, waiting as needed to hold the rate.
func (l *limiter) take(ctx context.Context, n int) error {
	now := l.now()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	l.tokens -= float64(n)
	if l.tokens >= 0 {
		return nil
	}
	return l.wait(ctx, time.Duration(-l.tokens/l.rate*float64(time.Second)))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// frameWriter writes whole frames to the link, paced by an optional
// limiter, and counts bytes. It is used by one goroutine at a time.
type frameWriter struct {
	ctx   context.Context
	w     io.Writer
	lim   *limiter
	chunk int
	mu    sync.Mutex
	n     uint64
	cut   []byte // the rest of a frame a failed write left half sent
}

// write writes p, one or more whole frames. When it fails after part of
// a frame went out, it keeps the rest for unfinished.
func (fw *frameWriter) write(p []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	whole := len(p)
	for len(p) > 0 {
		c := len(p)
		if fw.lim != nil {
			c = min(c, fw.chunk)
			if err := fw.lim.take(fw.ctx, c); err != nil {
				fw.keepCut(p, whole)
				return err
			}
		}
		n, err := fw.w.Write(p[:c])
		fw.n += uint64(n)
		if err != nil {
			fw.keepCut(p[n:], whole)
			return err
		}
		p = p[c:]
	}
	return nil
}

// keepCut records rest, what a failed write of whole bytes did not send,
// unless nothing at all was sent. It copies: the caller reuses buffers.
func (fw *frameWriter) keepCut(rest []byte, whole int) {
	if len(rest) < whole {
		fw.cut = append([]byte(nil), rest...)
	}
}

// unfinished returns, once, the rest of the frame the last failed write
// cut off (nil if none): sent ahead of a farewell ERROR, it brings the
// peer back to a frame boundary so that it reads the ERROR as one. It is
// at most one PAGE_BATCH (MaxPayload), sent unpaced within the farewell's
// deadline.
func (fw *frameWriter) unfinished() []byte {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	b := fw.cut
	fw.cut = nil
	return b
}

func (fw *frameWriter) written() uint64 {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.n
}
