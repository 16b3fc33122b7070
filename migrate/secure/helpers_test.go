package secure

import (
	"context"
	"net"
	"testing"
	"time"

	"godwit/internal/testpki"
)

// tlsConfig is a TLS Config with cert, trusting ca, expecting peer.
func tlsConfig(l testpki.Leaf, ca *testpki.CA, peer string) *Config {
	c := l.TLS
	return &Config{Certificate: &c, CAs: ca.Pool, PeerName: peer}
}

// tcpPair returns two ends of a loopback TCP connection, closed when the
// test ends.
func tcpPair(tb testing.TB) (client, server net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			acc <- nil
			return
		}
		acc <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	server = <-acc
	if server == nil {
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// pipePair returns the ends of a net.Pipe, closed when the test ends.
func pipePair(tb testing.TB) (client, server net.Conn) {
	a, b := net.Pipe()
	tb.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// testPSK returns a key of n bytes derived from seed.
func testPSK(seed byte) []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = seed + byte(i)
	}
	return k
}

// handshakeBoth runs both handshakes concurrently, each bounded by a
// generous guard (a hang is a failure, not a synchronisation point); a
// side whose handshake fails closes its connection, as the commands do,
// so the other side is not left waiting.
func handshakeBoth(tb testing.TB, c, s *Conn) (cerr, serr error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		err := s.Handshake(ctx)
		if err != nil {
			s.Close()
		}
		done <- err
	}()
	cerr = c.Handshake(ctx)
	if cerr != nil {
		c.Close()
	}
	serr = <-done
	return cerr, serr
}
