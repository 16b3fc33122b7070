package harness

import (
	"bytes"
	"path"
	"strings"
	"testing"
)

// FuzzConsole feeds arbitrary console output in two chunks: the output must
// hold no carriage return or ESC, equal the input when it had none, and a
// parsed exit code must come from output holding the marker.
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
		if strings.ContainsAny(buf.String(), "\r\x1b") {
			t.Fatalf("output %q keeps CR or ESC", buf.String())
		}
		if len(buf.String()) > len(s) {
			t.Fatalf("output %q longer than input %q", buf.String(), s)
		}
		if !strings.ContainsAny(s, "\r\x1b") && buf.String() != s {
			t.Fatalf("plain output %q changed to %q", s, buf.String())
		}
		if code, _, ok := c.Exit(); ok {
			if code < 0 || code > 255 || !strings.Contains(buf.String(), ExitMarker) {
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
		if want := path.Clean("/" + name)[1:]; last.Name != want || last.Data != string(data) {
			t.Fatalf("got %q (%d bytes), want %q (%d bytes)", last.Name, len(last.Data), want, len(data))
		}
		for _, e := range entries[:len(entries)-1] {
			if e.Mode != modeDir|0o755 {
				t.Fatalf("parent %q has mode %o", e.Name, e.Mode)
			}
		}
	})
}

// FuzzReadCPIO checks the reader never panics on arbitrary input.
func FuzzReadCPIO(f *testing.F) {
	var buf bytes.Buffer
	w := NewCPIOWriter(&buf)
	_ = w.Bytes("bin/x", 0o755, []byte("abc"))
	_ = w.Close()
	f.Add(buf.Bytes())
	f.Add([]byte("070701"))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := ReadCPIO(b)
		if err == nil && len(b) == 0 && len(entries) != 0 {
			t.Fatalf("entries from empty input: %v", entries)
		}
	})
}
