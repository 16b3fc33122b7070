package guest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBootImageLayout(t *testing.T) {
	l, err := ParseBootImage(BootImage)
	if err != nil {
		t.Fatal(err)
	}
	if l.Size != 8192 || len(BootImage) != 8192 {
		t.Errorf("size %d (image %d bytes), want 8192", l.Size, len(BootImage))
	}
	if l.ParamsOffset != 0x40 {
		t.Errorf("parameter block at %#x, want 0x40", l.ParamsOffset)
	}
	// The image carries the test guest unchanged.
	if got := BootImage[l.PayloadOffset : l.PayloadOffset+l.PayloadSize]; !bytes.Equal(got, Binary) {
		t.Errorf("the included test guest (%d bytes) differs from guest.bin (%d bytes)", len(got), len(Binary))
	}
	p, err := BootImageParams(BootImage)
	if err != nil {
		t.Fatal(err)
	}
	want := Params{RangeStart: 2 << 20, RangeEnd: 64 << 20, HeartbeatEvery: 1, SerialPort: DefaultSerialPort}
	if p != want {
		t.Errorf("default parameters %+v, want %+v", p, want)
	}
}

func TestPatchBootImage(t *testing.T) {
	orig := append([]byte(nil), BootImage...)
	p := Params{RangeStart: 2 << 20, RangeEnd: 34 << 20, HeartbeatEvery: 3, MaxPagesPerSec: 25000, SerialPort: DefaultSerialPort}
	img, err := PatchBootImage(BootImage, p, 128<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(BootImage, orig) {
		t.Fatal("PatchBootImage modified its input")
	}
	got, err := BootImageParams(img)
	if err != nil {
		t.Fatal(err)
	}
	if got != p {
		t.Errorf("patched parameters %+v, want %+v", got, p)
	}
	// Only the parameter block changed.
	l, _ := ParseBootImage(img)
	for i := range img {
		if i >= l.ParamsOffset && i < l.ParamsOffset+ParamSize {
			continue
		}
		if img[i] != orig[i] {
			t.Fatalf("byte %#x changed outside the parameter block", i)
		}
	}

	bad := []struct {
		name string
		p    Params
		ram  uint64
	}{
		{"tsc set", Params{RangeStart: 2 << 20, RangeEnd: 4 << 20, TSCKHz: 1000, SerialPort: DefaultSerialPort}, 64 << 20},
		{"range beyond RAM", Params{RangeStart: 2 << 20, RangeEnd: 128 << 20, SerialPort: DefaultSerialPort}, 64 << 20},
		{"range below the image", Params{RangeStart: 0x100000, RangeEnd: 4 << 20, SerialPort: DefaultSerialPort}, 64 << 20},
		{"unaligned", Params{RangeStart: 2 << 20, RangeEnd: 4<<20 + 8, SerialPort: DefaultSerialPort}, 64 << 20},
		{"no serial port", Params{RangeStart: 2 << 20, RangeEnd: 4 << 20}, 64 << 20},
	}
	for _, tt := range bad {
		if _, err := PatchBootImage(BootImage, tt.p, tt.ram); err == nil {
			t.Errorf("%s: PatchBootImage accepted %+v", tt.name, tt.p)
		}
	}
}

func TestParseBootImageRejects(t *testing.T) {
	l, err := ParseBootImage(BootImage)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	tests := []struct {
		name   string
		mutate func([]byte) []byte
	}{
		{"short", func(b []byte) []byte { return b[:100] }},
		{"magic", func(b []byte) []byte { b[BootImageMagicOffset] = 'X'; return b }},
		{"version", func(b []byte) []byte { le.PutUint32(b[bootOffVersion:], 2); return b }},
		{"size field", func(b []byte) []byte { le.PutUint32(b[bootOffSize:], 4096); return b }},
		{"truncated", func(b []byte) []byte { le.PutUint32(b[bootOffSize:], 4096); return b[:4096] }},
		{"params offset", func(b []byte) []byte { le.PutUint32(b[bootOffParams:], 0x1f0); return b }},
		{"payload offset", func(b []byte) []byte { le.PutUint32(b[bootOffPayload:], 0x10); return b }},
		{"payload size", func(b []byte) []byte { le.PutUint32(b[bootOffPayloadSize:], 1<<20); return b }},
		{"boot signature", func(b []byte) []byte { b[511] = 0; return b }},
		{"end marker", func(b []byte) []byte { b[len(b)-1] = 0; return b }},
		{"param block magic", func(b []byte) []byte { b[l.ParamsOffset] = 'X'; return b }},
	}
	for _, tt := range tests {
		img := tt.mutate(append([]byte(nil), BootImage...))
		if _, err := ParseBootImage(img); err == nil {
			t.Errorf("%s: ParseBootImage accepted a broken image", tt.name)
		}
		if _, err := PatchBootImage(img, DefaultParams(64<<20), 64<<20); err == nil {
			t.Errorf("%s: PatchBootImage accepted a broken image", tt.name)
		}
	}
}

// TestBootImageReproducible rebuilds boot.bin with build.sh and compares
// it with the embedded copy.
func TestBootImageReproducible(t *testing.T) {
	for _, tool := range []string{"sh", "as", "ld", "objcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not on PATH (%v); cannot rebuild boot.bin", tool, err)
		}
	}
	if v, err := exec.Command("as", "--version").Output(); err != nil || !bytes.Contains(v, []byte("x86_64")) {
		t.Skipf("as on PATH is not a GNU x86-64 assembler (%v); cannot rebuild boot.bin", err)
	}
	out := t.TempDir()
	if b, err := exec.Command("sh", "build.sh", out).CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	built, err := os.ReadFile(filepath.Join(out, "boot.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(built, BootImage) {
		t.Fatalf("build.sh output (%d bytes) differs from the embedded boot.bin (%d bytes): run ./build.sh and commit boot.bin", len(built), len(BootImage))
	}
}

// TestBootImageUnderSeaBIOS boots the patched image from a raw disk under
// QEMU's TCG emulator with its SeaBIOS (the path `godwit bench --peer
// qemu` takes with KVM), with and without a rate limit (which makes the
// image calibrate the TSC), and checks the serial output, the memory
// pattern and the parameter block the test guest received.
func TestBootImageUnderSeaBIOS(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping QEMU run in -short mode")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not on PATH")
	}
	// Subtest names end up in temporary paths, which QEMU's option syntax
	// forbids to hold '=' or ','.
	for name, rate := range map[string]uint64{"unlimited": 0, "limited": 50000} {
		t.Run(name, func(t *testing.T) {
			p := Params{RangeStart: 2 << 20, RangeEnd: 6 << 20, HeartbeatEvery: 1, MaxPagesPerSec: rate, SerialPort: DefaultSerialPort}
			img, err := PatchBootImage(BootImage, p, qemuRAM)
			if err != nil {
				t.Fatal(err)
			}
			mem := bootUnderSeaBIOS(t, img, HeartbeatPrefix+"3")
			block := mem[ParamAddr : ParamAddr+ParamSize]
			got, err := DecodeParams(block)
			if err != nil {
				t.Fatal(err)
			}
			st, err := ParseStatus(block)
			if err != nil {
				t.Fatal(err)
			}
			if st.State != StateRunning || st.Passes < 3 {
				t.Errorf("status %+v, want running with at least 3 passes", st)
			}
			if rate == 0 && got.TSCKHz != 0 {
				t.Errorf("tsc_khz %d without a rate limit, want 0 (not measured)", got.TSCKHz)
			}
			if rate != 0 && got.TSCKHz < 1000 {
				t.Errorf("tsc_khz %d with a rate limit: the calibration did not run", got.TSCKHz)
			}
			got.TSCKHz = 0
			if got != p {
				t.Errorf("the guest's parameter block %+v, want %+v", got, p)
			}
			if !bytes.Equal(mem[LoadAddr:LoadAddr+len(Binary)], Binary) {
				t.Error("the test guest in RAM differs from guest.bin")
			}
			res, err := Check(mem, p)
			if err != nil {
				t.Fatal(err)
			}
			if err := res.MatchPasses(st.Passes); err != nil {
				t.Error(err)
			}
		})
	}
}

// bootUnderSeaBIOS boots img as a raw IDE disk under QEMU (TCG), waits for
// a serial line starting with want, stops the VM and returns its RAM.
func bootUnderSeaBIOS(t *testing.T, img []byte, want string) []byte {
	t.Helper()
	dir := t.TempDir()
	disk, memFile, sock := filepath.Join(dir, "disk.img"), filepath.Join(dir, "mem.bin"), filepath.Join(dir, "qmp.sock")
	if err := os.WriteFile(disk, img, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", fmt.Sprintf("%dM", qemuRAM>>20),
		"-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio",
		"-drive", "file="+disk+",format=raw,if=ide",
		"-qmp", "unix:"+sock+",server=on,wait=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting qemu: %v", err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	deadline := time.Now().Add(2 * time.Minute)
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	var seen []string
	for found := false; !found; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("qemu exited before printing %q; serial:\n%s\nstderr:\n%s", want, strings.Join(seen, "\n"), stderr.String())
			}
			seen = append(seen, l)
			found = strings.HasPrefix(l, want)
		case <-timer.C:
			t.Fatalf("no %q within 2 minutes; serial:\n%s", want, strings.Join(seen, "\n"))
		}
	}
	if len(seen) == 0 || !strings.HasPrefix(seen[0], BannerPrefix+": range ") {
		t.Errorf("first serial line %q, want the banner", seen[0])
	}
	q, err := dialQMP(sock, deadline)
	if err != nil {
		t.Fatalf("qmp: %v", err)
	}
	defer q.conn.Close()
	if err := q.do("stop", nil); err != nil {
		t.Fatal(err)
	}
	if err := q.do("pmemsave", map[string]any{"val": 0, "size": qemuRAM, "filename": memFile}); err != nil {
		t.Fatal(err)
	}
	mem, err := os.ReadFile(memFile)
	if err != nil {
		t.Fatal(err)
	}
	return mem
}
