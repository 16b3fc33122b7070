package migrate

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// FuzzHello feeds arbitrary HELLO payloads to their decoder: it must never
// panic, and what it accepts is within its bounds (regions, configuration
// size: nothing larger than the payload was allocated) and re-encodes to
// the same bytes (for a version this side does not speak, to a prefix:
// the fields another version adds stay unread).
func FuzzHello(f *testing.F) {
	h := hello{version: ProtocolVersion, pageSize: pageSize, config: []byte(`{"memory_bytes":2097152}`),
		regions: []regionDesc{{GPA: 0, Size: 2 << 20}, {GPA: 4 << 30, Size: 1 << 20}}}
	good := h.append(nil)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(hello{version: 1}.append(nil))
	f.Add(append([]byte("GODWITMX"), good[8:]...))
	many := append([]byte(Magic), 2, 0, 0, 0, 0, 16, 0, 0, 0xff, 0xff, 0xff, 0xff)
	f.Add(many)
	f.Fuzz(func(t *testing.T, p []byte) {
		h, err := parseHello(p)
		if err != nil {
			return
		}
		if len(h.regions) > MaxRegions || len(h.config) > MaxConfigSize || 16*len(h.regions)+len(h.config) > len(p) {
			t.Fatalf("accepted %d regions and %d config bytes from %d bytes", len(h.regions), len(h.config), len(p))
		}
		// Another version may append fields, which stay unread so that
		// the receiver refuses the version by name.
		again := h.append(nil)
		supported := h.version >= MinProtocolVersion && h.version <= ProtocolVersion
		if len(again) > len(p) || !bytes.Equal(again, p[:len(again)]) || supported && len(again) != len(p) {
			t.Fatalf("accepted % x, which re-encodes as % x", p, again)
		}
	})
}

// FuzzStateSections feeds arbitrary bytes to the decoder of the VM state
// (all STATE chunks together): it must never panic, and what it accepts
// has at most MaxSections sections, IDs of 1 to MaxSectionID bytes, no
// ID twice, and re-encodes to the same bytes.
func FuzzStateSections(f *testing.F) {
	good, err := encodeState(testSections)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-1])
	dup, _ := encodeState([]Section{{ID: "a", Version: 1}, {ID: "a", Version: 2}})
	f.Add(dup)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{1, 0, 0, 0, 1, 0, 'x', 1, 0, 0, 0, 0xf0, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		sections, err := decodeState(b)
		if err != nil {
			return
		}
		if len(sections) > MaxSections || 10*len(sections) > len(b) {
			t.Fatalf("%d sections from %d bytes", len(sections), len(b))
		}
		seen := map[string]bool{}
		for _, s := range sections {
			if len(s.ID) == 0 || len(s.ID) > MaxSectionID || seen[s.ID] {
				t.Fatalf("accepted section ID %q", s.ID)
			}
			seen[s.ID] = true
		}
		again, err := encodeState(sections)
		if err != nil {
			t.Fatalf("accepted sections do not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatal("accepted state does not re-encode to its bytes")
		}
	})
}

// FuzzControlPayloads feeds arbitrary payloads to the decoders of the
// small control frames: ROUND_END (in the layout of each protocol
// version), ROUND_ACK, and the reason text of REFUSE and ERROR. They must
// never panic; accepted payloads re-encode to the same bytes, and a reason
// comes out as valid UTF-8 without control characters (it is printed).
func FuzzControlPayloads(f *testing.F) {
	f.Add(roundEnd{round: 3, pages: 512, bytes: 1 << 20}.appendVersion(nil, 2))
	f.Add(roundEnd{round: 3, pages: 512, bytes: 1 << 20, diskBlocks: 7}.appendVersion(nil, 3))
	f.Add(roundAck{round: 1, applyNs: 5e6}.appendVersion(nil, 3))
	f.Add(roundAck{round: 1, applyNs: 5e6, readWaitNs: 3e6, workNs: 4e6}.appendVersion(nil, 4))
	f.Add([]byte("refused: \x1b[31mred\x1b[0m \xff\xfe"))
	f.Fuzz(func(t *testing.T, p []byte) {
		for _, v := range []uint32{MinProtocolVersion, ProtocolVersion} {
			if r, err := parseRoundEndVersion(p, v); err == nil {
				if again := r.appendVersion(nil, v); !bytes.Equal(again, p) {
					t.Fatalf("ROUND_END v%d % x re-encodes as % x", v, p, again)
				}
			}
		}
		for _, v := range []uint32{MinProtocolVersion, ProtocolVersion} {
			if a, err := parseRoundAckVersion(p, v); err == nil {
				if again := a.appendVersion(nil, v); !bytes.Equal(again, p) {
					t.Fatalf("ROUND_ACK v%d % x re-encodes as % x", v, p, again)
				}
			}
		}
		s := parseReason(p)
		if !utf8.ValidString(s) {
			t.Fatalf("reason %q is not valid UTF-8", s)
		}
		for _, r := range s {
			if (r < 0x20 && r != '\t') || r == 0x7f {
				t.Fatalf("reason %q keeps control character %#x", s, r)
			}
		}
	})
}
