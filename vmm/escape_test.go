package vmm

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

func TestEscapeReader(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		want  string
		quits int
	}{
		{"plain", "ls -l\r", "ls -l\r", 0},
		{"quit", "ab\x01xcd", "abcd", 1},
		{"quit upper", "\x01X", "", 1},
		{"literal ctrl-a", "a\x01\x01b", "a\x01b", 0},
		{"unknown escape dropped", "a\x01zb", "ab", 0},
		{"trailing ctrl-a held", "ab\x01", "ab", 0},
		{"two quits", "\x01x\x01x", "", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			quits := 0
			// One byte per Read, so sequences split across reads too.
			r := newEscapeReader(iotest.OneByteReader(bytes.NewReader([]byte(tt.in))), func() { quits++ })
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want || quits != tt.quits {
				t.Errorf("got %q with %d quits, want %q with %d", got, quits, tt.want, tt.quits)
			}
		})
	}
}
