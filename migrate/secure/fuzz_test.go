package secure

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// fuzzKey is the record key of the fuzz targets and their seed corpus.
var fuzzKey = testPSK(9)

// splitChunks cuts p into chunks of at most MaxRecordPayload bytes,
// using the first byte of p (if any) to vary the chunk size.
func splitChunks(p []byte) []string {
	size := MaxRecordPayload
	if len(p) > 0 {
		size = int(p[0])%MaxRecordPayload + 1
	}
	var out []string
	for len(p) > 0 {
		n := min(len(p), size)
		out = append(out, string(p[:n]))
		p = p[n:]
	}
	return out
}

// FuzzRecordDecoder feeds the record reader (1) arbitrary bytes, which
// it must reject or decode without panicking and without returning more
// than it read, and (2) a genuine stream sealing plain, with bit flip-1
// flipped when flip > 0: intact it must decode to plain exactly, altered
// it must fail with ErrCorrupt.
func FuzzRecordDecoder(f *testing.F) {
	f.Add(bytes.Join(sealRecords(f, fuzzKey, "hello", "world"), nil), []byte("page data"), uint32(0))
	f.Add([]byte{1, 0xff, 0xff, 0xff}, []byte{}, uint32(1))
	f.Fuzz(func(t *testing.T, stream, plain []byte, flip uint32) {
		got, err := io.ReadAll(readerOf{newReader(t, fuzzKey, stream)})
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("arbitrary stream: error %v is not ErrCorrupt", err)
		}
		if len(got) > len(stream) {
			t.Fatalf("decoded %d bytes from %d", len(got), len(stream))
		}

		sealed := bytes.Join(sealRecords(t, fuzzKey, splitChunks(plain)...), nil)
		if flip > 0 {
			bit := int(flip-1) % (len(sealed) * 8)
			sealed[bit/8] ^= 1 << (bit % 8)
		}
		got, err = io.ReadAll(readerOf{newReader(t, fuzzKey, sealed)})
		if flip > 0 {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("altered stream: error %v, want ErrCorrupt", err)
			}
			return
		}
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("intact stream: %v, %d of %d bytes", err, len(got), len(plain))
		}
	})
}

// scripted is a connection whose peer says the bytes of r and ignores
// what it is told.
type scripted struct{ r io.Reader }

func (s scripted) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s scripted) Write(p []byte) (int, error) { return len(p), nil }

// FuzzHandshakeMessage feeds the handshake message decoder arbitrary
// bytes: a message it accepts must respect its type's bounds and
// re-encode to the same bytes. The same bytes, as everything a peer says,
// must never complete either side's handshake: a valid proof needs the
// key and this side's fresh nonce.
func FuzzHandshakeMessage(f *testing.F) {
	f.Add(appendMsg(nil, msgClientHello, bytes.Repeat([]byte{1}, nonceLen)))
	f.Add(appendMsg(nil, msgAlert, alertBody(alertWrongKey, "wrong pre-shared key")))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := readMsg(bytes.NewReader(data))
		if err == nil {
			lo, hi, ok := bodyBounds(m.typ)
			if !ok || len(m.body) < lo || len(m.body) > hi {
				t.Fatalf("accepted %s with a body of %d bytes", m.typ, len(m.body))
			}
			if enc := appendMsg(nil, m.typ, m.body); !bytes.Equal(enc, data[:len(enc)]) {
				t.Fatalf("re-encoded % x, read % x", enc, data[:len(enc)])
			}
		}
		for _, client := range []bool{true, false} {
			if _, _, err := pskHandshake(scripted{bytes.NewReader(data)}, fuzzKey, client); err == nil {
				t.Fatalf("handshake (client %v) completed against scripted bytes", client)
			}
		}
	})
}

// TestWriteFuzzSeeds regenerates the committed seed corpus under
// testdata/fuzz when GODWIT_WRITE_FUZZ_SEEDS=1. The corpus holds no
// secret: fuzzKey is a fixed test key.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("GODWIT_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set GODWIT_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	write := func(target, name string, args ...any) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, a := range args {
			switch v := a.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			case uint32:
				fmt.Fprintf(&b, "uint32(%d)\n", v)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	recs := sealRecords(t, fuzzKey, "alpha", "bravo", "charlie")
	all := bytes.Join(recs, nil)
	long := bytes.Repeat([]byte("godwit "), 400)
	for name, stream := range map[string][]byte{
		"intact":          all,
		"no-close":        bytes.Join(recs[:3], nil),
		"reordered":       bytes.Join([][]byte{recs[1], recs[0], recs[2], recs[3]}, nil),
		"cut":             all[:len(all)-7],
		"oversized":       {recData, 0xff, 0xff, 0x00},
		"close-only":      recs[3],
		"unknown-type":    append([]byte{9}, all[1:]...),
		"long-and-intact": bytes.Join(sealRecords(t, fuzzKey, splitChunks(long)...), nil),
	} {
		write("FuzzRecordDecoder", name, stream, []byte("some page data"), uint32(0))
	}
	write("FuzzRecordDecoder", "flip-header", all, []byte("x"), uint32(3))
	write("FuzzRecordDecoder", "flip-tag", all, bytes.Repeat([]byte{0}, 300), uint32(9000))
	write("FuzzRecordDecoder", "multi-record", []byte{}, long, uint32(0))

	nonce := bytes.Repeat([]byte{0x5a}, nonceLen)
	mac := bytes.Repeat([]byte{0xa5}, macLen)
	for name, data := range map[string][]byte{
		"client-hello":     appendMsg(nil, msgClientHello, nonce),
		"server-hello":     appendMsg(nil, msgServerHello, append(append([]byte(nil), nonce...), mac...)),
		"client-proof":     appendMsg(nil, msgClientProof, mac),
		"server-done":      appendMsg(nil, msgServerDone, mac),
		"alert-wrong-key":  appendMsg(nil, msgAlert, alertBody(alertWrongKey, "")),
		"alert-protocol":   appendMsg(nil, msgAlert, alertBody(alertProtocol, "unexpected \x01 message")),
		"hello-then-proof": append(appendMsg(nil, msgClientHello, nonce), appendMsg(nil, msgClientProof, mac)...),
		"wrong-version":    {'G', 'W', 'S', 'C', 2, 1, 32, 0},
		"long-length":      {'G', 'W', 'S', 'C', 1, 5, 0xff, 0xff},
		"unknown-type":     {'G', 'W', 'S', 'C', 1, 99, 0, 0},
		"tls-client-hello": {0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03},
		"migration-hello":  fakeHello,
		"short":            {'G', 'W'},
	} {
		write("FuzzHandshakeMessage", name, data)
	}
}
