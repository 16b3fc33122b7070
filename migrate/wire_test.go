package migrate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestFrameReader(t *testing.T) {
	valid := appendFrame(nil, frameMemoryBegin, 0, []byte{1, 0, 0, 0})
	batch := make([]byte, batchHeader)
	xxhBatch := appendFrame(nil, framePageBatch, flagXXH64, batch)
	// A batch whose flag says XXH64 but whose trailer is the CRC-32C.
	crcUnderXXH := appendFrame(nil, framePageBatch, 0, batch)
	binary.LittleEndian.PutUint16(crcUnderXXH[2:], flagXXH64)
	corrupt := func(b []byte, at int) []byte {
		b = append([]byte(nil), b...)
		b[at] ^= 0x40
		return b
	}
	header := func(typ, flags uint16, n uint32) []byte {
		b := binary.LittleEndian.AppendUint16(nil, typ)
		b = binary.LittleEndian.AppendUint16(b, flags)
		return binary.LittleEndian.AppendUint32(b, n)
	}
	tests := []struct {
		name    string
		in      []byte
		want    frameType
		wantErr string
		proto   bool
	}{
		{name: "valid", in: valid, want: frameMemoryBegin},
		{name: "valid state with more flag", in: appendFrame(nil, frameState, flagMore, []byte("x")), want: frameState},
		{name: "empty stream", in: nil, wantErr: "EOF"},
		{name: "short header", in: valid[:5], wantErr: "unexpected EOF"},
		{name: "short payload", in: valid[:10], wantErr: "unexpected EOF"},
		{name: "missing checksum", in: valid[:len(valid)-4], wantErr: "unexpected EOF"},
		{name: "bad checksum", in: corrupt(valid, len(valid)-1), wantErr: "checksum", proto: true},
		{name: "corrupted payload", in: corrupt(valid, headerSize), wantErr: "checksum", proto: true},
		{name: "unknown type", in: appendFrame(nil, 99, 0, nil), wantErr: "unknown frame type 0x0063", proto: true},
		{name: "type zero", in: appendFrame(nil, 0, 0, nil), wantErr: "unknown frame type", proto: true},
		{name: "unknown flag", in: appendFrame(nil, frameComplete, 2, nil), wantErr: "unknown flags", proto: true},
		{name: "XXH64 page batch", in: xxhBatch, want: framePageBatch},
		{name: "XXH64 disk batch", in: appendFrame(nil, frameDiskBatch, flagXXH64, make([]byte, diskBatchHeader)), want: frameDiskBatch},
		{name: "corrupted XXH64 batch", in: corrupt(xxhBatch, headerSize+3), wantErr: "PAGE_BATCH frame checksum mismatch", proto: true},
		{name: "bad XXH64 trailer", in: corrupt(xxhBatch, len(xxhBatch)-4), wantErr: "checksum", proto: true},
		{name: "CRC-32C trailer under the XXH64 flag", in: crcUnderXXH, wantErr: "checksum", proto: true},
		{name: "XXH64 flag on a control frame", in: appendFrame(nil, frameRoundEnd, flagXXH64, make([]byte, roundEndSize)), wantErr: "unknown flags", proto: true},
		{name: "more flag on batch", in: appendFrame(nil, framePageBatch, flagMore, make([]byte, batchHeader)), wantErr: "unknown flags", proto: true},
		{name: "oversize batch", in: header(uint16(framePageBatch), 0, MaxPayload+1), wantErr: "outside", proto: true},
		{name: "huge length", in: header(uint16(frameState), 0, 0xffffffff), wantErr: "outside", proto: true},
		{name: "oversize reason", in: header(uint16(frameError), 0, MaxReason+1), wantErr: "outside", proto: true},
		{name: "payload on COMPLETE", in: appendFrame(nil, frameComplete, 0, []byte{0}), wantErr: "outside", proto: true},
		{name: "short MEMORY_BEGIN", in: appendFrame(nil, frameMemoryBegin, 0, []byte{0}), wantErr: "outside", proto: true},
		{name: "short RESUMED", in: appendFrame(nil, frameResumed, 0, make([]byte, 15)), wantErr: "outside", proto: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := newFrameReader(bytes.NewReader(tt.in)).next()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("next: %v", err)
				}
				if f.typ != tt.want {
					t.Fatalf("type %v, want %v", f.typ, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
			}
			if errors.Is(err, ErrProtocol) != tt.proto {
				t.Fatalf("errors.Is(%v, ErrProtocol) = %v, want %v", err, !tt.proto, tt.proto)
			}
		})
	}
}

func TestFrameRoundTrip(t *testing.T) {
	var buf []byte
	payloads := [][]byte{nil, []byte("a"), bytes.Repeat([]byte{7}, 5000)}
	types := []frameType{frameComplete, frameError, frameState}
	for i, p := range payloads {
		buf = appendFrame(buf, types[i], 0, p)
	}
	fr := newFrameReader(bytes.NewReader(buf))
	for i, p := range payloads {
		f, err := fr.next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.typ != types[i] || !bytes.Equal(f.payload, p) {
			t.Fatalf("frame %d: got %v %d bytes, want %v %d bytes", i, f.typ, len(f.payload), types[i], len(p))
		}
	}
	if _, err := fr.next(); err != io.EOF {
		t.Fatalf("after last frame: %v, want EOF", err)
	}
	if fr.n != uint64(len(buf)) {
		t.Fatalf("counted %d bytes, stream has %d", fr.n, len(buf))
	}
}

func TestParseHello(t *testing.T) {
	good := hello{version: MinProtocolVersion, pageSize: 4096, regions: []regionDesc{{0, 1 << 20}}, config: []byte(`{"x":1}`)}
	mutate := func(f func(b []byte) []byte) []byte { return f(good.append(nil)) }
	tests := []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{name: "valid", in: good.append(nil)},
		{name: "bad magic", in: mutate(func(b []byte) []byte { b[0] = 'X'; return b }), wantErr: "bad magic"},
		{name: "truncated", in: mutate(func(b []byte) []byte { return b[:len(b)-1] }), wantErr: "truncated"},
		{name: "trailing bytes", in: mutate(func(b []byte) []byte { return append(b, 0) }), wantErr: "trailing"},
		{name: "too many regions", in: mutate(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[16:], MaxRegions+1)
			return b
		}), wantErr: "memory regions"},
		{name: "config too large", in: mutate(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[20+16:], MaxConfigSize+1)
			return b
		}), wantErr: "exceeds limit"},
		{name: "config length past end", in: mutate(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[20+16:], 1000)
			return b
		}), wantErr: "truncated"},
	}
	// Another version may append fields: they are left for its refusal.
	future := good
	future.version = ProtocolVersion + 1
	if h, err := parseHello(append(future.append(nil), "new fields"...)); err != nil || h.version != ProtocolVersion+1 {
		t.Fatalf("HELLO of a future version: %+v, %v", h, err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := parseHello(tt.in)
			if tt.wantErr == "" {
				if err != nil || h.version != MinProtocolVersion || h.pageSize != 4096 || len(h.regions) != 1 || string(h.config) != `{"x":1}` {
					t.Fatalf("parseHello = %+v, %v", h, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v, want a protocol error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestStateEncoding(t *testing.T) {
	sections := []Section{{ID: "vcpu/0", Version: 3, Data: []byte{1, 2, 3}}, {ID: "irqchip", Version: 1, Data: nil}}
	enc, err := encodeState(sections)
	if err != nil {
		t.Fatal(err)
	}
	dup, _ := encodeState([]Section{{ID: "a"}, {ID: "a"}})
	tests := []struct {
		name    string
		in      []byte
		want    int
		wantErr string
	}{
		{name: "valid", in: enc, want: 2},
		{name: "empty set", in: []byte{0, 0, 0, 0}, want: 0},
		{name: "truncated", in: enc[:len(enc)-1], wantErr: "truncated"},
		{name: "trailing", in: append(append([]byte(nil), enc...), 9), wantErr: "trailing"},
		{name: "duplicate ID", in: dup, wantErr: "duplicate"},
		{name: "too many sections", in: binary.LittleEndian.AppendUint32(nil, MaxSections+1), wantErr: "limit"},
		{name: "count beyond data", in: binary.LittleEndian.AppendUint32(nil, 5), wantErr: "truncated"},
		{name: "empty ID", in: []byte{1, 0, 0, 0, 0, 0}, wantErr: "ID length 0"},
		{name: "huge data length", in: func() []byte {
			b := []byte{1, 0, 0, 0, 1, 0, 'x', 1, 0, 0, 0}
			return binary.LittleEndian.AppendUint32(b, 0xffffffff)
		}(), wantErr: "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeState(tt.in)
			if tt.wantErr == "" {
				if err != nil || len(got) != tt.want {
					t.Fatalf("decodeState = %d sections, %v; want %d", len(got), err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
	got, _ := decodeState(enc)
	if got[0].ID != "vcpu/0" || got[0].Version != 3 || !bytes.Equal(got[0].Data, []byte{1, 2, 3}) || got[1].ID != "irqchip" {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestEncodeStateLimits(t *testing.T) {
	tests := []struct {
		name     string
		sections []Section
	}{
		{name: "empty ID", sections: []Section{{ID: ""}}},
		{name: "long ID", sections: []Section{{ID: strings.Repeat("x", MaxSectionID+1)}}},
		{name: "too many", sections: make([]Section, MaxSections+1)},
		{name: "too big", sections: []Section{{ID: "a", Data: make([]byte, MaxStateSize)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := encodeState(tt.sections); err == nil {
				t.Fatal("encodeState accepted it")
			}
		})
	}
}

func TestReason(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "plain", in: "VM needs 64 MiB", want: "VM needs 64 MiB"},
		{name: "control chars escaped", in: "a\x1b[2Jb", want: `a\x1b[2Jb`},
		{name: "invalid utf8 escaped", in: "a\xffb", want: `a\xffb`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseReason(reasonPayload(tt.in)); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	long := strings.Repeat("é", MaxReason)
	if p := reasonPayload(long); len(p) > MaxReason || !strings.HasPrefix(long, string(p)) || len(p) < MaxReason-1 {
		t.Fatalf("truncated reason has %d bytes", len(p))
	}
}
