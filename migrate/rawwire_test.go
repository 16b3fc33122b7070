package migrate

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"godwit/vmm/memory"
)

// TestRawWire checks the exported frame helpers against the engine's own
// reader and HELLO parser.
func TestRawWire(t *testing.T) {
	regions, err := memory.Layout(32 << 20)
	if err != nil {
		t.Fatal(err)
	}
	p, err := HelloPayload(7, regions, []byte(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseHello(p)
	if err != nil {
		t.Fatalf("parseHello: %v", err)
	}
	if h.version != 7 || h.pageSize != memory.PageSize || len(h.regions) != len(regions) ||
		h.regions[0].Size != regions[0].Size || string(h.config) != `{"x":1}` {
		t.Fatalf("HELLO round trip: %+v", h)
	}
	if _, err := HelloPayload(ProtocolVersion, make([]memory.Region, MaxRegions+1), nil); err == nil {
		t.Error("HelloPayload accepted too many regions")
	}
	if _, err := HelloPayload(ProtocolVersion, regions, make([]byte, MaxConfigSize+1)); err == nil {
		t.Error("HelloPayload accepted an oversize config")
	}

	stream := AppendFrame(nil, FrameHello, 0, p)
	stream = AppendFrame(stream, FrameState, 1, []byte("abc"))
	r := bytes.NewReader(stream)
	typ, flags, payload, err := ReadFrame(r)
	if err != nil || typ != FrameHello || flags != 0 || !bytes.Equal(payload, p) {
		t.Fatalf("first frame: %s %d %d bytes, %v", FrameName(typ), flags, len(payload), err)
	}
	typ, flags, payload, err = ReadFrame(r)
	if err != nil || typ != FrameState || flags != 1 || string(payload) != "abc" {
		t.Fatalf("second frame: %s %d %q, %v", FrameName(typ), flags, payload, err)
	}
	if _, _, _, err := ReadFrame(r); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
	if FrameHeaderSize+len(p)+FrameTrailerSize != len(AppendFrame(nil, FrameHello, 0, p)) {
		t.Error("FrameHeaderSize + payload + FrameTrailerSize is not the frame's size")
	}

	bad := AppendFrame(nil, FrameComplete, 0, nil)
	bad[len(bad)-1] ^= 1
	if _, _, _, err := ReadFrame(bytes.NewReader(bad)); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("corrupt frame: %v", err)
	}
	if got := FrameName(99); !strings.Contains(got, "0x0063") {
		t.Errorf("FrameName(99) = %q", got)
	}
}
