package harness

import (
	"bytes"
	"path"
	"strings"
	"testing"
)

// FuzzConsole feeds arbitrary console output in two chunks: the output must
// be the input minus carriage returns, and a parsed exit code must come from
// a complete line holding the marker.
func FuzzConsole(f *testing.F) {
	f.Add("GODWIT-NESTED-START\r\nGODWIT-NESTED-EXIT=3\r\n", 7)
	f.Add("x\nGODWIT-NESTED-EXIT=256\n", 3)
	f.Fuzz(func(t *testing.T, s string, cut int) {
		if cut < 0 || cut > len(s) {
			cut = len(s) / 2
		}
		var buf bytes.Buffer
		c := NewConsole(&buf)
		for _, ch := range []string{s[:cut], s[cut:]} {
			if n, err := c.Write([]byte(ch)); err != nil || n != len(ch) {
				t.Fatalf("Write = %d, %v", n, err)
			}
		}
		if want := strings.ReplaceAll(s, "\r", ""); buf.String() != want {
			t.Fatalf("output %q, want %q", buf.String(), want)
		}
		if code, _, ok := c.Exit(); ok {
			if code < 0 || code > 255 || !strings.Contains(strings.ReplaceAll(s, "\r", ""), ExitMarker) {
				t.Fatalf("exit code %d from %q", code, s)
			}
		}
	})
}

// FuzzCPIOWriter writes one file with an arbitrary name and content and reads
// the archive back.
func FuzzCPIOWriter(f *testing.F) {
	f.Add("/bin/sh", []byte("#!/bin/sh\n"))
	f.Add("a/../../b", []byte{})
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		var buf bytes.Buffer
		w := NewCPIOWriter(&buf)
		if err := w.Bytes(name, 0o644, data); err != nil {
			return // rejected names (root, NUL) are fine
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		entries := readNewc(t, buf.Bytes())
		if len(entries) == 0 {
			t.Fatal("no entries")
		}
		last := entries[len(entries)-1]
		if want := path.Clean("/" + name)[1:]; last.name != want || last.data != string(data) {
			t.Fatalf("got %q (%d bytes), want %q (%d bytes)", last.name, len(last.data), want, len(data))
		}
		for _, e := range entries[:len(entries)-1] {
			if e.mode != modeDir|0o755 {
				t.Fatalf("parent %q has mode %o", e.name, e.mode)
			}
		}
	})
}
