package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// readNewc reads an archive back with ReadCPIO, failing the test on error.
func readNewc(t *testing.T, b []byte) []CPIOEntry {
	t.Helper()
	e, err := ReadCPIO(b)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func buildArchive(t *testing.T, fill func(w *CPIOWriter) error) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewCPIOWriter(&buf)
	if err := fill(w); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%blockSize != 0 {
		t.Fatalf("archive length %d not a multiple of %d", buf.Len(), blockSize)
	}
	return buf.Bytes()
}

func TestCPIOWriter(t *testing.T) {
	tests := []struct {
		name string
		fill func(w *CPIOWriter) error
		want []CPIOEntry
	}{
		{
			name: "file creates parents",
			fill: func(w *CPIOWriter) error { return w.Bytes("/a/b/c.txt", 0o644, []byte("hello")) },
			want: []CPIOEntry{
				{"a", modeDir | 0o755, ""},
				{"a/b", modeDir | 0o755, ""},
				{"a/b/c.txt", modeRegular | 0o644, "hello"},
			},
		},
		{
			name: "dir once, symlink, odd sizes",
			fill: func(w *CPIOWriter) error {
				for _, err := range []error{
					w.Dir("bin", 0o700),
					w.Dir("/bin/", 0o755),
					w.Symlink("/bin/sh", "/bin/busybox"),
					w.Bytes("bin/x", 0o755, []byte("abc")),
					w.Bytes("empty", 0o600, nil),
				} {
					if err != nil {
						return err
					}
				}
				return nil
			},
			want: []CPIOEntry{
				{"bin", modeDir | 0o700, ""},
				{"bin/sh", modeSymlink | 0o777, "/bin/busybox"},
				{"bin/x", modeRegular | 0o755, "abc"},
				{"empty", modeRegular | 0o600, ""},
			},
		},
		{
			name: "dot-dot cannot escape",
			fill: func(w *CPIOWriter) error { return w.Bytes("../../etc/x", 0o644, []byte("1")) },
			want: []CPIOEntry{
				{"etc", modeDir | 0o755, ""},
				{"etc/x", modeRegular | 0o644, "1"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := readNewc(t, buildArchive(t, tt.fill))
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("entries\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestCPIOWriterErrors(t *testing.T) {
	tests := []struct {
		name string
		op   func(w *CPIOWriter) error
	}{
		{"root name", func(w *CPIOWriter) error { return w.Bytes("/", 0o644, nil) }},
		{"empty name", func(w *CPIOWriter) error { return w.Dir("", 0o755) }},
		{"empty symlink target", func(w *CPIOWriter) error { return w.Symlink("x", "") }},
		{"short body", func(w *CPIOWriter) error { return w.File("x", 0o644, 10, bytes.NewReader([]byte("abc"))) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(NewCPIOWriter(&bytes.Buffer{})); err == nil {
				t.Error("want an error, got nil")
			}
		})
	}
}

// TestCPIOToolRoundTrip extracts a concatenation of two archives with GNU
// cpio (as the kernel does with a base and an overlay) and checks the files.
func TestCPIOToolRoundTrip(t *testing.T) {
	tool, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio tool not installed")
	}
	base := buildArchive(t, func(w *CPIOWriter) error {
		if err := w.Bytes("/etc/motd", 0o644, []byte("base\n")); err != nil {
			return err
		}
		return w.Symlink("/bin/sh", "busybox")
	})
	overlay := buildArchive(t, func(w *CPIOWriter) error {
		return w.Bytes("/payload.sh", 0o755, []byte("#!/bin/sh\nexit 7\n"))
	})
	dir := t.TempDir()
	for i, arc := range [][]byte{base, overlay} {
		cmd := exec.Command(tool, "-i", "-d", "--quiet")
		cmd.Dir = dir
		cmd.Stdin = bytes.NewReader(arc)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("archive %d: cpio -i: %v: %s", i, err, out)
		}
	}
	tests := []struct {
		path, content string
		perm          os.FileMode
	}{
		{"etc/motd", "base\n", 0o644},
		{"payload.sh", "#!/bin/sh\nexit 7\n", 0o755},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			p := filepath.Join(dir, tt.path)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.content {
				t.Errorf("content %q, want %q", b, tt.content)
			}
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != tt.perm {
				t.Errorf("perm %v, want %v", st.Mode().Perm(), tt.perm)
			}
		})
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || target != "busybox" {
		t.Errorf("bin/sh -> %q (%v), want busybox", target, err)
	}
	cmd := exec.Command(tool, "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(base)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	if want := "etc\netc/motd\nbin\nbin/sh\n"; string(out) != want {
		t.Errorf("cpio -t listed %q, want %q", out, want)
	}
}

func TestReadCPIORejects(t *testing.T) {
	good := buildArchive(t, func(w *CPIOWriter) error { return w.Bytes("f", 0o644, []byte("data")) })
	tests := []struct {
		name string
		b    []byte
	}{
		{"bad magic", []byte("070707" + string(good[6:]))},
		{"truncated", good[:120]},
		{"garbage", []byte("hello")},
		{"bad hex", append([]byte("070701zzzzzzzz"), good[14:]...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ReadCPIO(tt.b); err == nil {
				t.Error("want an error")
			}
		})
	}
}
