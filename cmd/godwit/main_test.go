package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain lets tests run the real CLI in a child process: with
// GODWIT_TEST_MAIN=1 the test binary is godwit.
func TestMain(m *testing.M) {
	if os.Getenv("GODWIT_TEST_MAIN") == "1" {
		os.Exit(runApp(append([]string{"godwit"}, os.Args[1:]...)))
	}
	os.Exit(m.Run())
}

// runGodwit runs the CLI in a child process.
func runGodwit(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "GODWIT_TEST_MAIN=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// fakeBzImage returns a minimal image with a valid boot protocol header
// (Documentation/arch/x86/boot.rst) whose kernel needs initSize bytes.
func fakeBzImage(initSize uint32) []byte {
	img := make([]byte, 5*512+4096)
	img[0x1f1] = 4                                     // setup_sects
	img[0x200] = 0xeb                                  // jump over the header...
	img[0x201] = 0x66                                  // ...which ends at 0x268
	binary.LittleEndian.PutUint16(img[0x1fe:], 0xaa55) // boot_flag
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x020f)     // version 2.15
	img[0x211] = 0x01                                      // loadflags: LOADED_HIGH
	binary.LittleEndian.PutUint32(img[0x22c:], 0x7fffffff) // initrd_addr_max
	binary.LittleEndian.PutUint32(img[0x230:], 0x200000)   // kernel_alignment
	img[0x234] = 1                                         // relocatable_kernel
	binary.LittleEndian.PutUint16(img[0x236:], 0x3)        // xloadflags: XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
	binary.LittleEndian.PutUint32(img[0x238:], 2047)       // cmdline_size
	binary.LittleEndian.PutUint32(img[0x260:], initSize)   // init_size
	return img
}

// TestBadInputs checks that each bad input gets one clear line on stderr and
// a non-zero exit, never a panic or a stack trace.
func TestBadInputs(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	garbage := write("garbage", bytes.Repeat([]byte{0xde, 0xad}, 4096))
	empty := write("empty", nil)
	bigKernel := write("big.bzImage", fakeBzImage(64<<20))
	bigSector := write("big.bin", make([]byte, 64<<10+1))

	_, kvmErr := os.Stat("/dev/kvm")
	tests := []struct {
		name string
		args []string
		want string // substring of the one error line
		code int
	}{
		{"unknown flag", []string{"run", "--bogus"}, "flag provided but not defined: -bogus", 2},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`, 2},
		{"bad mem", []string{"run", "--mem", "12Q"}, "--mem", 2},
		{"negative mem", []string{"run", "--mem", "-1"}, "--mem", 2},
		{"mem too small", []string{"run", "--mem", "1M"}, "guest memory size", 1},
		{"cpus zero", []string{"run", "--cpus", "0"}, "--cpus 0 out of range 1..16", 2},
		{"cpus too many", []string{"run", "--cpus", "17"}, "--cpus 17 out of range 1..16", 2},
		{"bad serial", []string{"run", "--serial", "tcp:1"}, "--serial", 2},
		{"bad log level", []string{"run", "--log-level", "loud"}, "--log-level", 2},
		{"kernel and boot sector", []string{"run", "--kernel", garbage, "--boot-sector", garbage}, "mutually exclusive", 2},
		{"initrd without kernel", []string{"run", "--initrd", garbage}, "need --kernel", 2},
		{"missing kernel", []string{"run", "--kernel", filepath.Join(dir, "nope")}, "kernel: open", 1},
		{"empty kernel", []string{"run", "--kernel", empty}, "file is empty", 1},
		{"corrupt kernel", []string{"run", "--kernel", garbage}, "kernel", 1},
		{"missing initrd", []string{"run", "--kernel", bigKernel, "--initrd", filepath.Join(dir, "nope")}, "initrd: open", 1},
		{"kernel too big for RAM", []string{"run", "--kernel", bigKernel, "--mem", "16M"}, "memory too small", 1},
		{"boot sector too big", []string{"run", "--boot-sector", bigSector}, "64", 1},
		{"bad guest arg", []string{"run", "--guest-arg", "colour=blue"}, "colour", 1},
		{"guest arg form", []string{"run", "--guest-arg", "novalue"}, "want key=value", 2},
		{"run with argument", []string{"run", "extra"}, "no arguments", 2},
		{"disk without path", []string{"run", "--disk", "readonly=on"}, "path=FILE is missing", 2},
		{"disk bad key", []string{"run", "--disk", "path=" + garbage + ",cache=none"}, "unknown key", 2},
		{"disk bad readonly", []string{"run", "--disk", "path=" + garbage + ",readonly=maybe"}, "want on or off", 2},
		{"missing disk", []string{"run", "--mem", "16M", "--disk", "path=" + filepath.Join(dir, "nope.img") + ",readonly=on"}, "virtio-blk0: disk: open", 1},
		{"too many disks", append([]string{"run"}, strings.Split(strings.Repeat("--disk path="+garbage+" ", 17), " ")[:34]...), "at most 16", 2},
		{"receive bad disk map", []string{"receive", "--listen", "tcp:127.0.0.1:0", "--disk-map", "a.img"}, "want OLD=NEW", 2},
		{"receive disk mapped twice", []string{"receive", "--listen", "tcp:127.0.0.1:0", "--disk-map", "a=b", "--disk-map", "a=c"}, "mapped twice", 2},
		{"net without tap", []string{"run", "--net", "mac=52:54:00:00:00:01"}, "tap=NAME is missing", 2},
		{"net bad key", []string{"run", "--net", "tap=t0,model=e1000"}, "unknown key", 2},
		{"net multicast mac", []string{"run", "--net", "tap=t0,mac=01:00:5e:00:00:01"}, "multicast", 2},
		{"net bad mac", []string{"run", "--net", "tap=t0,mac=52:54:00"}, "six hex bytes", 2},
		{"net bad tap name", []string{"run", "--net", "tap=a/b"}, "interface name", 2},
		{"net tap twice", []string{"run", "--net", "tap=t0", "--net", "tap=t0"}, "used twice", 2},
		{"receive bad tap map", []string{"receive", "--listen", "tcp:127.0.0.1:0", "--tap-map", "tap0"}, "want OLD=NEW", 2},
		{"receive tap mapped twice", []string{"receive", "--listen", "tcp:127.0.0.1:0", "--tap-map", "a=b", "--tap-map", "a=c"}, "mapped twice", 2},
		{"receive tap map bad name", []string{"receive", "--listen", "tcp:127.0.0.1:0", "--tap-map", "a=b:c"}, "interface name", 2},
		{"ctl without socket", []string{"ctl", "status"}, "api-sock", 1},
		{"ctl no VM", []string{"ctl", "--api-sock", filepath.Join(dir, "none.sock"), "status"}, "no godwit VM listening", 1},
	}
	if kvmErr != nil {
		tests = append(tests, struct {
			name string
			args []string
			want string
			code int
		}{"no /dev/kvm", []string{"run", "--mem", "16M"}, "no /dev/kvm", 1})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runGodwit(t, tt.args...)
			if code == 0 {
				t.Fatalf("exit code 0, want non-zero; stderr %q", stderr)
			}
			if tt.code != 0 && code != tt.code {
				t.Errorf("exit code %d, want %d", code, tt.code)
			}
			if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic:") {
				t.Fatalf("stack trace on stderr:\n%s", stderr)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 {
				t.Errorf("stderr has %d lines, want one:\n%s", len(lines), stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q does not mention %q", stderr, tt.want)
			}
		})
	}
}
