package guest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// qemuRAM is the RAM size of the QEMU test VM.
const qemuRAM = 64 << 20

// buildQEMUBoot assembles testdata/qemu_boot.S into a 64 KiB BIOS image, or
// skips the test when the tools are missing.
func buildQEMUBoot(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping QEMU run in -short mode")
	}
	for _, tool := range []string{"qemu-system-x86_64", "as", "ld", "objcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not on PATH; cannot run the guest under QEMU", tool)
		}
	}
	if v, err := exec.Command("as", "--version").Output(); err != nil || !bytes.Contains(v, []byte("x86_64")) {
		t.Skip("as is not a GNU x86-64 assembler")
	}
	dir := t.TempDir()
	run := func(name string, args ...string) {
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	obj, elf, bin := filepath.Join(dir, "boot.o"), filepath.Join(dir, "boot.elf"), filepath.Join(dir, "boot.bin")
	run("as", "--64", "-o", obj, filepath.Join("testdata", "qemu_boot.S"))
	run("ld", "-m", "elf_x86_64", "-nostdlib", "--build-id=none", "-e", "_start", "-Ttext=0xf0000", "-o", elf, obj)
	run("objcopy", "-O", "binary", "-j", ".text", elf, bin)
	return bin
}

// qmp is a minimal QMP client: one command at a time, waiting for its reply.
type qmp struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialQMP(path string, deadline time.Time) (*qmp, error) {
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			_ = c.SetDeadline(deadline)
			q := &qmp{conn: c, r: bufio.NewReader(c)}
			if _, err := q.r.ReadBytes('\n'); err != nil { // greeting
				c.Close()
				return nil, err
			}
			return q, q.do("qmp_capabilities", nil)
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (q *qmp) do(cmd string, args any) error {
	req, err := json.Marshal(map[string]any{"execute": cmd, "arguments": args})
	if args == nil {
		req, err = json.Marshal(map[string]any{"execute": cmd})
	}
	if err != nil {
		return err
	}
	if _, err := q.conn.Write(append(req, '\n')); err != nil {
		return err
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("qmp %s: %w", cmd, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Desc string `json:"desc"`
			} `json:"error"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return fmt.Errorf("qmp %s: %w", cmd, err)
		}
		if resp.Error != nil {
			return fmt.Errorf("qmp %s: %s", cmd, resp.Error.Desc)
		}
		if resp.Return != nil {
			return nil
		}
		// An asynchronous event: keep reading.
	}
}

// runQEMU boots the guest with the given parameter block, waits until the
// serial output contains want, pauses the VM and returns the serial output
// and the RAM image.
func runQEMU(t *testing.T, boot string, block []byte, want string) (serial string, image []byte) {
	t.Helper()
	dir := t.TempDir()
	paramFile, serialFile := filepath.Join(dir, "params.bin"), filepath.Join(dir, "serial.txt")
	memFile, sock := filepath.Join(dir, "mem.bin"), filepath.Join(dir, "qmp.sock")
	if err := os.WriteFile(paramFile, block, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("qemu-system-x86_64",
		"-machine", "pc", "-accel", "tcg", "-m", fmt.Sprintf("%dM", qemuRAM>>20),
		"-bios", boot, "-display", "none", "-vga", "none", "-nic", "none", "-monitor", "none",
		"-no-reboot",
		"-device", "loader,file=guest.bin,addr=0x100000,force-raw=on",
		"-device", "loader,file="+paramFile+fmt.Sprintf(",addr=%#x,force-raw=on", ParamAddr),
		"-serial", "file:"+serialFile,
		"-qmp", "unix:"+sock+",server=on,wait=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting qemu: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()

	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, _ := os.ReadFile(serialFile)
		serial = string(b)
		if strings.Contains(serial, want) {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("qemu exited (%v) before printing %q; serial:\n%s\nstderr:\n%s", err, want, serial, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %q; serial:\n%s", want, serial)
		}
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
	image, err = os.ReadFile(memFile)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(serialFile)
	return string(b), image
}

// TestGuestUnderQEMU runs the real binary under QEMU's TCG emulator, with a
// boot stub in place of the VMM, and checks its serial output, the memory
// pattern, the status area and that nothing else in RAM was written.
func TestGuestUnderQEMU(t *testing.T) {
	boot := buildQEMUBoot(t)
	good := DefaultParams(qemuRAM)
	good.HeartbeatEvery = 1
	small := good
	small.RangeStart, small.RangeEnd, small.HeartbeatEvery = MinRangeStart, MinRangeStart+3*PageSize, 100000
	badRange := good
	badRange.RangeEnd -= 8
	badMagic := good.Encode()
	badMagic[0] = 'X'
	tests := []struct {
		name      string
		p         Params
		block     []byte // overrides p.Encode() when non-nil
		want      string
		wantState State
	}{
		{"default range", good, nil, HeartbeatPrefix + "3\n", StateRunning},
		{"smallest range", small, nil, HeartbeatPrefix + "100000\n", StateRunning},
		{"unaligned range", badRange, nil, BadParamsLine + "\n", StateBadParams},
		{"bad magic", good, badMagic, BadParamsLine + "\n", StateNotStarted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			block := tt.block
			if block == nil {
				block = tt.p.Encode()
			}
			serial, img := runQEMU(t, boot, block, tt.want)
			st, err := ParseStatus(img[ParamAddr : ParamAddr+ParamSize])
			if tt.block != nil {
				// The header is invalid on purpose; read the state directly.
				st.State, err = State(binary.LittleEndian.Uint64(img[ParamAddr+OffState:])), nil
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.State != tt.wantState {
				t.Fatalf("state = %v, want %v", st.State, tt.wantState)
			}
			if !bytes.Equal(img[LoadAddr:LoadAddr+len(Binary)], Binary) {
				t.Error("guest image in RAM was modified")
			}
			// Between the parameter block page and the stack page nothing
			// may be written (the boot stub uses 0x1000-0x3fff).
			if i := bytes.IndexFunc(img[ParamAddr+PageSize:StackTop-PageSize], func(r rune) bool { return r != 0 }); i >= 0 {
				t.Errorf("low memory written at %#x", ParamAddr+PageSize+i)
			}
			if tt.wantState != StateRunning {
				if serial != BadParamsLine+"\n" {
					t.Errorf("serial = %q, want only %q", serial, BadParamsLine+"\n")
				}
				return
			}
			// The VM may be stopped in the middle of a line: check only
			// complete lines.
			lines := strings.Split(serial, "\n")
			lines = lines[:len(lines)-1]
			if len(lines) == 0 {
				t.Fatalf("no complete line on the serial port: %q", serial)
			}
			if lines[0] != Banner(tt.p) {
				t.Errorf("banner = %q, want %q", lines[0], Banner(tt.p))
			}
			for i, l := range lines[1:] {
				n, ok := ParseHeartbeat(l)
				if !ok || n != uint64(i+1)*tt.p.HeartbeatEvery {
					t.Errorf("line %d = %q, want heartbeat %d", i+1, l, uint64(i+1)*tt.p.HeartbeatEvery)
				}
			}
			res, err := Check(img, tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if err := res.MatchPasses(st.Passes); err != nil {
				t.Error(err)
			}
			if st.Passes < uint64(len(lines)-1)*tt.p.HeartbeatEvery || st.Alive == 0 {
				t.Errorf("status %+v behind %d heartbeats", st, len(lines)-1)
			}
			for gpa := tt.p.RangeStart; gpa < tt.p.RangeEnd; gpa += PageSize {
				if bytes.ContainsFunc(img[gpa+8:gpa+PageSize], func(r rune) bool { return r != 0 }) {
					t.Fatalf("page %#x written beyond its counter", gpa)
				}
			}
			if tt.p.RangeEnd < qemuRAM && bytes.ContainsFunc(img[tt.p.RangeEnd:], func(r rune) bool { return r != 0 }) {
				t.Error("RAM above the range was written")
			}
			t.Logf("%+v, status %+v", res, st)
		})
	}
}
