package secure

import (
	"io"
	"net"
	"testing"
	"time"
)

// pump writes total bytes to w in writes of 256 KiB (about a migration
// frame) while r reads them, and returns how long it took.
func pump(b *testing.B, w, r net.Conn, total int) time.Duration {
	buf := make([]byte, 256<<10)
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := io.CopyBuffer(io.Discard, io.LimitReader(r, int64(total)), make([]byte, 256<<10))
		done <- err
	}()
	for n := 0; n < total; n += len(buf) {
		if _, err := w.Write(buf[:min(len(buf), total-n)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// BenchmarkThroughput moves 64 MiB per iteration one way over plain
// loopback TCP, over the pre-shared-key channel and over TLS, in the same
// run, and reports each throughput and the channels' share of plain TCP's.
// Handshakes are not timed.
func BenchmarkThroughput(b *testing.B) {
	const total = 64 << 20
	p := newPKIs(b)
	type channel struct {
		name string
		w, r net.Conn
		took time.Duration
	}
	plainW, plainR := tcpPair(b)
	pw, pr := tcpPair(b)
	pc, ps := Client(pw, &Config{PSK: testPSK(1)}), Server(pr, &Config{PSK: testPSK(1)})
	tw, tr := tcpPair(b)
	tc, ts := Client(tw, tlsConfig(p.src, p.ca, "dest.example")), Server(tr, tlsConfig(p.dst, p.ca, ""))
	for _, pair := range [][2]*Conn{{pc, ps}, {tc, ts}} {
		if cerr, serr := handshakeBoth(b, pair[0], pair[1]); cerr != nil || serr != nil {
			b.Fatal(cerr, serr)
		}
	}
	chans := []*channel{{name: "tcp", w: plainW, r: plainR}, {name: "psk", w: pc, r: ps}, {name: "tls", w: tc, r: ts}}
	b.SetBytes(total * int64(len(chans)))
	var n int
	for b.Loop() {
		for _, c := range chans {
			c.took += pump(b, c.w, c.r, total)
		}
		n++
	}
	rate := func(c *channel) float64 { return float64(n) * total / 1e6 / c.took.Seconds() }
	for _, c := range chans {
		b.ReportMetric(rate(c), c.name+"-MB/s")
	}
	b.ReportMetric(rate(chans[1])/rate(chans[0]), "psk/tcp")
	b.ReportMetric(rate(chans[2])/rate(chans[0]), "tls/tcp")
}
