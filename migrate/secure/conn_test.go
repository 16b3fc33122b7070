package secure

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"godwit/internal/testpki"
)

// transfer sends n random bytes from a to b and, at the same time, n from
// b to a, in uneven writes, and checks both arrive intact.
func transfer(t *testing.T, a, b net.Conn, n int) {
	t.Helper()
	type res struct {
		sum [32]byte
		err error
	}
	send := func(c net.Conn, data []byte) chan error {
		ch := make(chan error, 1)
		go func() {
			var err error
			for off, step := 0, 1; off < len(data) && err == nil; step = (step*3+1)%(300<<10) + 1 {
				end := min(len(data), off+step)
				_, err = c.Write(data[off:end])
				off = end
			}
			ch <- err
		}()
		return ch
	}
	recv := func(c net.Conn) chan res {
		ch := make(chan res, 1)
		go func() {
			h := sha256.New()
			_, err := io.CopyN(h, c, int64(n))
			var r res
			copy(r.sum[:], h.Sum(nil))
			r.err = err
			ch <- r
		}()
		return ch
	}
	ab, ba := make([]byte, n), make([]byte, n)
	rand.Read(ab)
	rand.Read(ba)
	rb, ra := recv(b), recv(a)
	wa, wb := send(a, ab), send(b, ba)
	for _, e := range []error{<-wa, <-wb} {
		if e != nil {
			t.Fatalf("write: %v", e)
		}
	}
	for _, c := range []struct {
		r    res
		want []byte
	}{{<-rb, ab}, {<-ra, ba}} {
		if c.r.err != nil {
			t.Fatalf("read: %v", c.r.err)
		}
		if c.r.sum != sha256.Sum256(c.want) {
			t.Fatal("data arrived altered")
		}
	}
}

// pkis holds the certificates the TLS tests share.
type pkis struct {
	ca, other          *testpki.CA
	src, dst, rogueSrc testpki.Leaf
	rogueDst, expired  testpki.Leaf
}

func newPKIs(t testing.TB) pkis {
	ca, other := testpki.NewCA(t, "godwit test CA"), testpki.NewCA(t, "another CA")
	return pkis{
		ca: ca, other: other,
		src:      ca.Issue(t, "source.example", time.Hour),
		dst:      ca.Issue(t, "dest.example", time.Hour),
		rogueSrc: other.Issue(t, "source.example", time.Hour),
		rogueDst: other.Issue(t, "dest.example", time.Hour),
		expired:  ca.Issue(t, "source.example", -time.Minute),
	}
}

func TestChannelTransfers(t *testing.T) {
	p := newPKIs(t)
	modes := []struct {
		name           string
		client, server *Config
	}{
		{"psk", &Config{PSK: testPSK(1)}, &Config{PSK: testPSK(1)}},
		{"tls", tlsConfig(p.src, p.ca, "dest.example"), tlsConfig(p.dst, p.ca, "")},
		{"tls pinned", tlsConfig(p.src, p.ca, "dest.example"), tlsConfig(p.dst, p.ca, "source.example")},
		{"tls by IP", tlsConfig(p.src, p.ca, "127.0.0.1"), tlsConfig(p.dst, p.ca, "127.0.0.1")},
	}
	sizes := []int{1, 1000, MaxRecordPayload, MaxRecordPayload + 1, 5 << 20}
	pairs := []struct {
		name string
		pair func(testing.TB) (net.Conn, net.Conn)
	}{{"tcp", tcpPair}, {"pipe", pipePair}}
	for _, m := range modes {
		for _, pr := range pairs {
			t.Run(m.name+"/"+pr.name, func(t *testing.T) {
				rc, rs := pr.pair(t)
				c, s := Client(rc, m.client), Server(rs, m.server)
				if cerr, serr := handshakeBoth(t, c, s); cerr != nil || serr != nil {
					t.Fatalf("handshake: client %v; server %v", cerr, serr)
				}
				if c.Peer() == "" || s.Peer() == "" {
					t.Errorf("peers %q, %q", c.Peer(), s.Peer())
				}
				for _, n := range sizes {
					transfer(t, c, s, n)
				}
				// Close ends the stream cleanly.
				go c.Close()
				if b, err := io.ReadAll(s); err != nil || len(b) != 0 {
					t.Fatalf("after Close: %d bytes, %v; want a clean EOF", len(b), err)
				}
			})
		}
	}
}

// fakeHello is what an unprotected source sends first: a migration HELLO
// frame header and the start of its payload.
var fakeHello = []byte{1, 0, 0, 0, 40, 0, 0, 0, 'G', 'O', 'D', 'W', 'I', 'T', 'M', 'G'}

// fakeError is what an unprotected destination answers.
var fakeError = []byte{10, 0, 0, 0, 4, 0, 0, 0, 'n', 'o', 'p', 'e', 1, 2, 3, 4}

func TestHandshakeRefused(t *testing.T) {
	p := newPKIs(t)
	psk := func(seed byte) *Config { return &Config{PSK: testPSK(seed)} }
	clientCfg := tlsConfig(p.src, p.ca, "dest.example")
	serverCfg := tlsConfig(p.dst, p.ca, "")
	tests := []struct {
		name           string
		client, server *Config // nil: an unprotected peer
		clientWant     string  // substring of the client's error ("" for a plain client)
		serverWant     string
		notSecure      string // "client", "server": which side sees ErrNotSecure
	}{
		{name: "wrong psk", client: psk(1), server: psk(2),
			clientWant: "wrong pre-shared key", serverWant: "wrong pre-shared key"},
		{name: "plain client, psk receiver", server: psk(1),
			serverWant: "not a pre-shared-key handshake", notSecure: "server"},
		{name: "plain client, tls receiver", server: serverCfg,
			serverWant: "did not start a TLS handshake", notSecure: "server"},
		{name: "psk client, plain receiver", client: psk(1),
			clientWant: "not a pre-shared-key handshake", notSecure: "client"},
		{name: "tls client, plain receiver", client: clientCfg,
			clientWant: "did not answer with TLS", notSecure: "client"},
		{name: "tls client, psk receiver", client: clientCfg, server: psk(1),
			clientWant: "closed the connection", serverWant: "started a TLS handshake", notSecure: "server"},
		{name: "psk client, tls receiver", client: psk(1), server: serverCfg,
			clientWant: "closed the connection", serverWant: "did not start a TLS handshake", notSecure: "server"},
		{name: "tls server cert from another CA", client: clientCfg, server: tlsConfig(p.rogueDst, p.ca, ""),
			clientWant: "unknown authority", serverWant: "refused our certificate"},
		{name: "tls client cert from another CA", client: tlsConfig(p.rogueSrc, p.ca, "dest.example"), server: serverCfg,
			clientWant: "refused our certificate", serverWant: "unknown authority"},
		{name: "tls client trusts another CA", client: tlsConfig(p.src, p.other, "dest.example"), server: serverCfg,
			clientWant: "unknown authority", serverWant: "refused our certificate"},
		{name: "tls pinned peer name mismatch", client: clientCfg, server: tlsConfig(p.dst, p.ca, "other-source.example"),
			clientWant: "refused our certificate", serverWant: `not the expected peer "other-source.example"`},
		{name: "tls server name mismatch", client: tlsConfig(p.src, p.ca, "elsewhere.example"), server: serverCfg,
			clientWant: "elsewhere.example", serverWant: "refused our certificate"},
		{name: "tls expired client cert", client: tlsConfig(p.expired, p.ca, "dest.example"), server: serverCfg,
			clientWant: "refused our certificate", serverWant: "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, rs := tcpPair(t)
			var cerr, serr error
			var c, s *Conn
			switch {
			case tt.client == nil:
				s = Server(rs, tt.server)
				go func() {
					rc.Write(fakeHello)
					io.Copy(io.Discard, rc)
				}()
				serr = s.Handshake(context.Background())
			case tt.server == nil:
				c = Client(rc, tt.client)
				go func() {
					var b [8]byte
					io.ReadFull(rs, b[:])
					rs.Write(fakeError)
					rs.Close()
				}()
				cerr = c.Handshake(context.Background())
			default:
				c, s = Client(rc, tt.client), Server(rs, tt.server)
				cerr, serr = handshakeBoth(t, c, s)
			}
			check := func(side string, conn *Conn, err error, want string) {
				t.Helper()
				if conn == nil {
					return
				}
				if err == nil {
					t.Fatalf("%s: handshake succeeded", side)
				}
				t.Logf("%s: %v", side, err)
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s: error %q does not mention %q", side, err, want)
				}
				if want != "closed the connection" && !errors.Is(err, ErrAuth) {
					t.Errorf("%s: error %q is not ErrAuth", side, err)
				}
				if got := errors.Is(err, ErrNotSecure); got != (tt.notSecure == side) {
					t.Errorf("%s: errors.Is(ErrNotSecure) = %v for %q", side, got, err)
				}
				// Nothing from the peer is ever delivered.
				var b [64]byte
				if n, rerr := conn.Read(b[:]); n != 0 || rerr == nil || rerr.Error() != err.Error() {
					t.Errorf("%s: Read after the failed handshake: %d bytes, %v", side, n, rerr)
				}
				if n, werr := conn.Write([]byte("page data")); n != 0 || werr == nil {
					t.Errorf("%s: Write after the failed handshake: %d bytes, %v", side, n, werr)
				}
			}
			check("client", c, cerr, tt.clientWant)
			check("server", s, serr, tt.serverWant)
		})
	}
}

func TestPSKHandshakeMessages(t *testing.T) {
	// A peer that replays a recorded CLIENT_HELLO and CLIENT_PROOF from
	// an earlier session fails: the server's nonce differs.
	rc, rs := tcpPair(t)
	rec := &recorder{Conn: rc}
	c, s := Client(rec, &Config{PSK: testPSK(1)}), Server(rs, &Config{PSK: testPSK(1)})
	if cerr, serr := handshakeBoth(t, c, s); cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	sent := rec.buf.Bytes()
	rc2, rs2 := tcpPair(t)
	s2 := Server(rs2, &Config{PSK: testPSK(1)})
	go rc2.Write(sent)
	if err := s2.Handshake(context.Background()); !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "wrong pre-shared key") {
		t.Fatalf("replayed handshake: %v", err)
	}

	// A server's proof reflected as the client's proof fails.
	rc3, rs3 := tcpPair(t)
	s3 := Server(rs3, &Config{PSK: testPSK(1)})
	errc := make(chan error, 1)
	go func() { errc <- s3.Handshake(context.Background()) }()
	nc := bytes.Repeat([]byte{7}, nonceLen)
	rc3.Write(appendMsg(nil, msgClientHello, nc))
	m, err := readMsg(rc3)
	if err != nil || m.typ != msgServerHello {
		t.Fatalf("server hello: %v %v", m.typ, err)
	}
	rc3.Write(appendMsg(nil, msgClientProof, m.body[nonceLen:]))
	if err := <-errc; !errors.Is(err, ErrAuth) {
		t.Fatalf("reflected proof: %v", err)
	}
	if m, err := readMsg(rc3); err != nil || m.typ != msgAlert || m.body[0] != alertWrongKey {
		t.Fatalf("server's answer to a reflected proof: %v %v", m, err)
	}

	// A server that echoes the client's nonce is refused.
	rc4, rs4 := tcpPair(t)
	c4 := Client(rc4, &Config{PSK: testPSK(1)})
	go func() {
		m, err := readMsg(rs4)
		if err != nil {
			return
		}
		k, _ := deriveKeys(testPSK(1), m.body, m.body)
		rs4.Write(appendMsg(nil, msgServerHello, append(append([]byte(nil), m.body...), proofMAC(k.proof, labelServer, m.body, m.body)...)))
	}()
	if err := c4.Handshake(context.Background()); !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "echoed") {
		t.Fatalf("echoed nonce: %v", err)
	}
}

// recorder keeps a copy of everything written.
type recorder struct {
	net.Conn
	buf bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.buf.Write(p)
	return r.Conn.Write(p)
}

func TestForgedRecordRefused(t *testing.T) {
	rc, rs := tcpPair(t)
	c, s := Client(rc, &Config{PSK: testPSK(1)}), Server(rs, &Config{PSK: testPSK(1)})
	if cerr, serr := handshakeBoth(t, c, s); cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	if _, err := c.Write([]byte("genuine")); err != nil {
		t.Fatal(err)
	}
	// Someone on the path injects a record of its own.
	forged := recordHeader(recData, 16+5)
	rc.Write(append(forged[:], make([]byte, 21)...))
	b := make([]byte, 7)
	if _, err := io.ReadFull(s, b); err != nil || string(b) != "genuine" {
		t.Fatalf("%q %v", b, err)
	}
	if n, err := s.Read(b); n != 0 || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "record 1 failed authentication") {
		t.Fatalf("forged record: %d %v", n, err)
	}
	// The failure is final.
	if _, err := s.Read(b); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read after failure: %v", err)
	}
}

// sealRecords seals each chunk as one record with key, then a close
// record, and returns the records.
func sealRecords(t testing.TB, key []byte, chunks ...string) [][]byte {
	d, err := newDirection(key)
	if err != nil {
		t.Fatal(err)
	}
	w := &recordWriter{d: d}
	var recs [][]byte
	for _, c := range chunks {
		r, err := w.seal(nil, recData, []byte(c))
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	r, err := w.seal(nil, recClose, nil)
	if err != nil {
		t.Fatal(err)
	}
	return append(recs, r)
}

func newReader(t testing.TB, key []byte, stream []byte) *recordReader {
	d, err := newDirection(key)
	if err != nil {
		t.Fatal(err)
	}
	return &recordReader{r: bytes.NewReader(stream), d: d}
}

// readerOf adapts a recordReader to io.Reader.
type readerOf struct{ rr *recordReader }

func (r readerOf) Read(p []byte) (int, error) { return r.rr.read(p) }

func TestRecordTampering(t *testing.T) {
	key := testPSK(3)
	recs := sealRecords(t, key, "alpha", "bravo", "charlie")
	cat := func(rs ...[]byte) []byte { return bytes.Join(rs, nil) }
	flip := func(r []byte, i int) []byte {
		r = bytes.Clone(r)
		r[i] ^= 0x40
		return r
	}
	hdr := func(typ byte, n int, body int) []byte {
		h := recordHeader(typ, n)
		return append(h[:], make([]byte, body)...)
	}
	other := sealRecords(t, testPSK(4), "alpha", "bravo")
	tests := []struct {
		name   string
		stream []byte
		data   string // delivered before the error
		want   string // substring of the error; "" = clean EOF
		eof    bool   // the error is also io.ErrUnexpectedEOF
	}{
		{"intact", cat(recs...), "alphabravocharlie", "", false},
		{"ciphertext bit flipped", cat(recs[0], flip(recs[1], 6), recs[2], recs[3]), "alpha", "record 1 failed authentication", false},
		{"tag bit flipped", cat(recs[0], flip(recs[1], len(recs[1])-1), recs[2], recs[3]), "alpha", "record 1 failed authentication", false},
		{"type changed", cat(recs[0], recs[1], flip(recs[2], 0), recs[3]), "alphabravo", "unknown record type", false},
		{"length shortened", cat(recs[0], func() []byte { r := bytes.Clone(recs[1]); r[1]--; return r }(), recs[2], recs[3]), "alpha", "record 1 failed authentication", false},
		{"reordered", cat(recs[0], recs[2], recs[1], recs[3]), "alpha", "record 1 failed authentication", false},
		{"dropped", cat(recs[0], recs[2], recs[3]), "alpha", "record 1 failed authentication", false},
		{"replayed", cat(recs[0], recs[0], recs[1], recs[2], recs[3]), "alpha", "record 1 failed authentication", false},
		{"other key (reflected direction)", cat(other[0], other[1]), "", "record 0 failed authentication", false},
		{"close record removed", cat(recs[0], recs[1], recs[2]), "alphabravocharlie", "without a close record", true},
		{"cut inside a record", cat(recs[0], recs[1][:10]), "alpha", "inside record 1", true},
		{"cut inside a header", cat(recs[0], recs[1][:2]), "alpha", "inside record 1", true},
		{"close record early", cat(recs[0], recs[3]), "alpha", "record 1 failed authentication", false},
		{"length beyond the bound", hdr(recData, MaxRecordPayload+tagLen+1, 0), "", "data record of 65553 bytes", false},
		{"largest length", hdr(recData, 1<<24-1, 0), "", "data record of 16777215 bytes", false},
		{"empty data record", hdr(recData, tagLen, tagLen), "", "data record of 16 bytes", false},
		{"close record with payload", hdr(recClose, tagLen+1, 0), "", "close record of 17 bytes", false},
		{"empty stream", nil, "", "without a close record", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rr := newReader(t, key, tt.stream)
			got, err := io.ReadAll(readerOf{rr})
			if string(got) != tt.data {
				t.Errorf("delivered %q, want %q", got, tt.data)
			}
			if tt.want == "" {
				if err != nil {
					t.Fatalf("error %v, want a clean end", err)
				}
				return
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want ErrCorrupt mentioning %q", err, tt.want)
			}
			if errors.Is(err, io.ErrUnexpectedEOF) != tt.eof {
				t.Errorf("errors.Is(io.ErrUnexpectedEOF) = %v for %v", !tt.eof, err)
			}
		})
	}
}

func TestRekey(t *testing.T) {
	old := rekeyInterval
	rekeyInterval = 3
	t.Cleanup(func() { rekeyInterval = old })
	rc, rs := tcpPair(t)
	c, s := Client(rc, &Config{PSK: testPSK(1)}), Server(rs, &Config{PSK: testPSK(1)})
	if cerr, serr := handshakeBoth(t, c, s); cerr != nil || serr != nil {
		t.Fatal(cerr, serr)
	}
	first := bytes.Clone(c.out.d.key)
	transfer(t, c, s, 20*MaxRecordPayload+5)
	if c.out.d.seq < 21 || bytes.Equal(first, c.out.d.key) {
		t.Fatalf("after %d records the key did not change", c.out.d.seq)
	}
	if !bytes.Equal(c.out.d.key, s.in.d.key) {
		t.Fatal("sides disagree on the current key")
	}
}

func TestDeadlines(t *testing.T) {
	p := newPKIs(t)
	modes := []struct {
		name           string
		client, server *Config
	}{
		{"psk", &Config{PSK: testPSK(1)}, &Config{PSK: testPSK(1)}},
		{"tls", tlsConfig(p.src, p.ca, "dest.example"), tlsConfig(p.dst, p.ca, "")},
	}
	guard := func(t *testing.T, ch <-chan error) error {
		t.Helper()
		select {
		case err := <-ch:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("a deadline did not interrupt a blocked call")
			return nil
		}
	}
	for _, m := range modes {
		t.Run(m.name+"/read", func(t *testing.T) {
			rc, rs := tcpPair(t)
			c, s := Client(rc, m.client), Server(rs, m.server)
			if cerr, serr := handshakeBoth(t, c, s); cerr != nil || serr != nil {
				t.Fatal(cerr, serr)
			}
			ch := make(chan error, 1)
			go func() {
				_, err := s.Read(make([]byte, 10))
				ch <- err
			}()
			s.SetReadDeadline(time.Now())
			if err := guard(t, ch); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("blocked read: %v, want a deadline error", err)
			}
			// The stream is intact afterwards.
			s.SetReadDeadline(time.Time{})
			transfer(t, c, s, 100)
		})
		t.Run(m.name+"/handshake", func(t *testing.T) {
			_, rs := tcpPair(t) // a client that never speaks
			s := Server(rs, m.server)
			ch := make(chan error, 1)
			go func() { ch <- s.Handshake(context.Background()) }()
			s.SetDeadline(time.Now())
			if err := guard(t, ch); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("blocked handshake: %v, want a deadline error", err)
			}
		})
		t.Run(m.name+"/handshake context", func(t *testing.T) {
			_, rs := tcpPair(t)
			s := Server(rs, m.server)
			ctx, cancel := context.WithCancel(context.Background())
			ch := make(chan error, 1)
			go func() { ch <- s.Handshake(ctx) }()
			cancel()
			if err := guard(t, ch); !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled handshake: %v", err)
			}
		})
		t.Run(m.name+"/implicit handshake timeout", func(t *testing.T) {
			_, rs := tcpPair(t)
			cfg := *m.server
			cfg.HandshakeTimeout = 50 * time.Millisecond
			s := Server(rs, &cfg)
			if _, err := s.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "within 50ms") {
				t.Fatalf("read on a silent peer: %v", err)
			}
		})
	}
	t.Run("psk/partial record", func(t *testing.T) {
		rc, rs := tcpPair(t)
		c, s := Client(rc, &Config{PSK: testPSK(1)}), Server(rs, &Config{PSK: testPSK(1)})
		if cerr, serr := handshakeBoth(t, c, s); cerr != nil || serr != nil {
			t.Fatal(cerr, serr)
		}
		c.out.mu.Lock()
		rec, err := c.out.seal(nil, recData, []byte("split across a timeout"))
		c.out.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		rc.Write(rec[:9])
		ch := make(chan error, 1)
		b := make([]byte, 64)
		go func() {
			_, err := s.Read(b)
			ch <- err
		}()
		s.SetReadDeadline(time.Now())
		if err := guard(t, ch); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read of half a record: %v", err)
		}
		s.SetReadDeadline(time.Time{})
		rc.Write(rec[9:])
		n, err := s.Read(b)
		if err != nil || string(b[:n]) != "split across a timeout" {
			t.Fatalf("after the timeout: %q %v", b[:n], err)
		}
	})
	t.Run("psk/write deadline in the past", func(t *testing.T) {
		rc, rs := tcpPair(t)
		c, s := Client(rc, &Config{PSK: testPSK(1)}), Server(rs, &Config{PSK: testPSK(1)})
		if cerr, serr := handshakeBoth(t, c, s); cerr != nil || serr != nil {
			t.Fatal(cerr, serr)
		}
		c.SetWriteDeadline(time.Now().Add(-time.Second))
		if _, err := c.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("write: %v", err)
		}
		// Nothing was sent, so the stream goes on (a last ERROR frame
		// after a cancelled migration relies on this).
		c.SetWriteDeadline(time.Time{})
		transfer(t, c, s, 10)
	})
}

func TestConfigCheck(t *testing.T) {
	p := newPKIs(t)
	cert := p.src.TLS
	tests := []struct {
		name   string
		cfg    *Config
		client bool
		want   string
	}{
		{"nil", nil, true, "nil Config"},
		{"neither", &Config{}, true, "either"},
		{"both", &Config{PSK: testPSK(1), Certificate: &cert, CAs: p.ca.Pool}, true, "either"},
		{"short key", &Config{PSK: []byte("short")}, false, "at least 16"},
		{"psk with name", &Config{PSK: testPSK(1), PeerName: "x"}, false, "needs TLS"},
		{"tls without CA", &Config{Certificate: &cert}, false, "both"},
		{"tls client without name", &Config{Certificate: &cert, CAs: p.ca.Pool}, true, "server name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, _ := pipePair(t)
			c := newConn(rc, tt.cfg, tt.client)
			if err := c.Handshake(context.Background()); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestLoadFiles(t *testing.T) {
	dir := t.TempDir()
	p := newPKIs(t)
	key := testpki.WriteFile(t, dir, "key", []byte("0123456789abcdef0123\n"))
	short := testpki.WriteFile(t, dir, "short", []byte("secret\n"))
	huge := testpki.WriteFile(t, dir, "huge", bytes.Repeat([]byte("k"), 5000))
	cert := testpki.WriteFile(t, dir, "src.pem", p.src.CertPEM)
	ckey := testpki.WriteFile(t, dir, "src.key", p.src.KeyPEM)
	otherKey := testpki.WriteFile(t, dir, "dst.key", p.dst.KeyPEM)
	expired := testpki.WriteFile(t, dir, "expired.pem", p.expired.CertPEM)
	expiredKey := testpki.WriteFile(t, dir, "expired.key", p.expired.KeyPEM)
	ca := testpki.WriteFile(t, dir, "ca.pem", p.ca.PEM)
	junk := testpki.WriteFile(t, dir, "junk.pem", []byte("not PEM"))
	missing := dir + "/missing"
	tests := []struct {
		name string
		f    Files
		want string // substring of the error; "" = success
		mode Mode
	}{
		{"none", Files{}, "", 0},
		{"psk", Files{PSKFile: key}, "", ModePSK},
		{"tls", Files{CertFile: cert, KeyFile: ckey, CAFile: ca, PeerName: "dest.example"}, "", ModeTLS},
		{"missing key file", Files{PSKFile: missing}, "no such file", 0},
		{"short key", Files{PSKFile: short}, "holds 6 bytes, want at least 16", 0},
		{"huge key file", Files{PSKFile: huge}, "larger than 4096", 0},
		{"psk and tls", Files{PSKFile: key, CAFile: ca}, "mutually exclusive", 0},
		{"psk and peer name", Files{PSKFile: key, PeerName: "x"}, "needs TLS", 0},
		{"tls without CA", Files{CertFile: cert, KeyFile: ckey}, "together", 0},
		{"peer name alone", Files{PeerName: "x"}, "together", 0},
		{"key of another cert", Files{CertFile: cert, KeyFile: otherKey, CAFile: ca}, "private key does not match", 0},
		{"missing cert", Files{CertFile: missing, KeyFile: ckey, CAFile: ca}, "no such file", 0},
		{"expired cert", Files{CertFile: expired, KeyFile: expiredKey, CAFile: ca}, "expired on", 0},
		{"CA without certificates", Files{CertFile: cert, KeyFile: ckey, CAFile: junk}, "holds no PEM certificate", 0},
		{"missing CA", Files{CertFile: cert, KeyFile: ckey, CAFile: missing}, "no such file", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := tt.f.Load()
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("%v, want an error mentioning %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.mode == 0 {
				if cfg != nil {
					t.Fatalf("config %+v for no files", cfg)
				}
				return
			}
			if cfg.Mode() != tt.mode {
				t.Fatalf("mode %v, want %v", cfg.Mode(), tt.mode)
			}
			if tt.mode == ModePSK && string(cfg.PSK) != "0123456789abcdef0123" {
				t.Fatalf("key %q: trailing newline not trimmed", cfg.PSK)
			}
		})
	}
}
