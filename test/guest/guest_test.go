package guest

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

// testParams is a small range of 8 pages starting at 2 MiB.
var testParams = Params{RangeStart: 2 << 20, RangeEnd: 2<<20 + 8*PageSize, SerialPort: DefaultSerialPort}

// makeImage returns RAM from GPA 0 to p.RangeEnd with the given per-page
// counters written into the range.
func makeImage(p Params, counters []uint64) []byte {
	img := make([]byte, p.RangeEnd)
	for i, c := range counters {
		binary.LittleEndian.PutUint64(img[p.RangeStart+uint64(i)*PageSize:], c)
	}
	return img
}

func TestCheck(t *testing.T) {
	p := testParams
	gpa := func(i uint64) uint64 { return p.RangeStart + i*PageSize }
	tests := []struct {
		name     string
		counters []uint64
		image    []byte // overrides counters when non-nil
		params   *Params
		want     CheckResult
		badIndex int64 // index of the page named by a *CheckError, -1 for none
		wantErr  string
	}{
		{name: "fresh zero RAM", counters: []uint64{0, 0, 0, 0, 0, 0, 0, 0},
			want: CheckResult{Counter: 0, Boundary: -1, Pages: 8}, badIndex: -1},
		{name: "all equal", counters: []uint64{7, 7, 7, 7, 7, 7, 7, 7},
			want: CheckResult{Counter: 7, Boundary: -1, Pages: 8}, badIndex: -1},
		{name: "first pass in progress", counters: []uint64{1, 1, 1, 0, 0, 0, 0, 0},
			want: CheckResult{Counter: 1, Boundary: 3, Pages: 8}, badIndex: -1},
		{name: "prefix plus one", counters: []uint64{8, 8, 8, 8, 8, 7, 7, 7},
			want: CheckResult{Counter: 8, Boundary: 5, Pages: 8}, badIndex: -1},
		{name: "boundary at first page", counters: []uint64{8, 7, 7, 7, 7, 7, 7, 7},
			want: CheckResult{Counter: 8, Boundary: 1, Pages: 8}, badIndex: -1},
		{name: "boundary at last page", counters: []uint64{8, 8, 8, 8, 8, 8, 8, 7},
			want: CheckResult{Counter: 8, Boundary: 7, Pages: 8}, badIndex: -1},
		{name: "large counters", counters: []uint64{1 << 40, 1 << 40, 1<<40 - 1, 1<<40 - 1, 1<<40 - 1, 1<<40 - 1, 1<<40 - 1, 1<<40 - 1},
			want: CheckResult{Counter: 1 << 40, Boundary: 2, Pages: 8}, badIndex: -1},
		{name: "page plus two", counters: []uint64{5, 5, 5, 7, 5, 5, 5, 5},
			badIndex: 3, wantErr: "GPA 0x203000 holds counter 7, expected 5 or 4"},
		{name: "page plus one after equal prefix", counters: []uint64{5, 5, 6, 6, 6, 6, 6, 6},
			badIndex: 2, wantErr: "expected 5 or 4"},
		{name: "page minus one after boundary", counters: []uint64{5, 5, 4, 4, 3, 4, 4, 4},
			badIndex: 4, wantErr: "GPA 0x204000 holds counter 3, expected 4"},
		{name: "two boundaries", counters: []uint64{5, 4, 4, 5, 5, 4, 4, 4},
			badIndex: 3, wantErr: "holds counter 5, expected 4"},
		{name: "minus two", counters: []uint64{5, 5, 3, 3, 3, 3, 3, 3},
			badIndex: 2, wantErr: "expected 5 or 4"},
		{name: "zero first page then one", counters: []uint64{0, 0, 1, 1, 1, 1, 1, 1},
			badIndex: 2, wantErr: "holds counter 1, expected 0"},
		{name: "bad last page", counters: []uint64{9, 9, 9, 9, 9, 9, 9, 0},
			badIndex: 7, wantErr: "GPA 0x207000"},
		{name: "short image", image: make([]byte, p.RangeEnd-1),
			badIndex: -1, wantErr: "shorter than the range end"},
		{name: "empty image", image: []byte{},
			badIndex: -1, wantErr: "shorter than the range end"},
		{name: "empty range", image: make([]byte, p.RangeEnd), params: &Params{RangeStart: p.RangeEnd, RangeEnd: p.RangeEnd},
			badIndex: -1, wantErr: "empty"},
		{name: "unaligned range", image: make([]byte, p.RangeEnd), params: &Params{RangeStart: p.RangeStart + 8, RangeEnd: p.RangeEnd},
			badIndex: -1, wantErr: "not page aligned"},
		{name: "huge range end", image: make([]byte, p.RangeEnd), params: &Params{RangeStart: p.RangeStart, RangeEnd: 1<<64 - PageSize},
			badIndex: -1, wantErr: "shorter than the range end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pp := p
			if tt.params != nil {
				pp = *tt.params
			}
			img := tt.image
			if img == nil {
				img = makeImage(pp, tt.counters)
			}
			got, err := Check(img, pp)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Check: unexpected error %v", err)
				}
				if got != tt.want {
					t.Fatalf("Check = %+v, want %+v", got, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Check error = %v, want containing %q", err, tt.wantErr)
			}
			if got != (CheckResult{}) {
				t.Errorf("Check result on error = %+v, want zero", got)
			}
			var ce *CheckError
			isCE := errors.As(err, &ce)
			if (tt.badIndex >= 0) != isCE {
				t.Fatalf("error %v: *CheckError = %v, want %v", err, isCE, tt.badIndex >= 0)
			}
			if isCE {
				if ce.Index != uint64(tt.badIndex) || ce.GPA != gpa(uint64(tt.badIndex)) || ce.Found != tt.counters[tt.badIndex] {
					t.Errorf("CheckError = %+v, want index %d GPA %#x found %d", ce, tt.badIndex, gpa(uint64(tt.badIndex)), tt.counters[tt.badIndex])
				}
			}
		})
	}
}

// TestCheckSinglePage covers a one-page range, which can have no boundary.
func TestCheckSinglePage(t *testing.T) {
	p := Params{RangeStart: 4 << 20, RangeEnd: 4<<20 + PageSize}
	for _, c := range []uint64{0, 1, 1 << 63} {
		got, err := Check(makeImage(p, []uint64{c}), p)
		want := CheckResult{Counter: c, Boundary: -1, Pages: 1}
		if err != nil || got != want {
			t.Errorf("counter %d: Check = %+v, %v; want %+v", c, got, err, want)
		}
	}
}

// TestCheckIgnoresOutsideRange checks that bytes outside the range and
// beyond the first word of each page do not matter.
func TestCheckIgnoresOutsideRange(t *testing.T) {
	p := testParams
	img := makeImage(p, []uint64{3, 3, 2, 2, 2, 2, 2, 2})
	extra := append(img, bytes.Repeat([]byte{0xAA}, 3*PageSize)...)
	for i := range p.RangeStart {
		extra[i] = 0x55
	}
	for i := range p.Pages() {
		extra[p.RangeStart+i*PageSize+8] = 0xFF
	}
	got, err := Check(extra, p)
	want := CheckResult{Counter: 3, Boundary: 2, Pages: 8}
	if err != nil || got != want {
		t.Fatalf("Check = %+v, %v; want %+v", got, err, want)
	}
}

func TestMatchPasses(t *testing.T) {
	tests := []struct {
		name   string
		res    CheckResult
		passes uint64
		ok     bool
	}{
		{"fresh", CheckResult{Counter: 0, Boundary: -1}, 0, true},
		{"fresh claims a pass", CheckResult{Counter: 0, Boundary: -1}, 1, false},
		{"first pass in progress", CheckResult{Counter: 1, Boundary: 3}, 0, true},
		{"in progress, recorded too many", CheckResult{Counter: 1, Boundary: 3}, 1, false},
		{"complete and recorded", CheckResult{Counter: 5, Boundary: -1}, 5, true},
		{"complete, not yet recorded", CheckResult{Counter: 5, Boundary: -1}, 4, true},
		{"lagging record", CheckResult{Counter: 5, Boundary: -1}, 3, false},
		{"mid pass", CheckResult{Counter: 5, Boundary: 2}, 4, true},
		{"mid pass, recorded current", CheckResult{Counter: 5, Boundary: 2}, 5, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.res.MatchPasses(tt.passes)
			if (err == nil) != tt.ok {
				t.Fatalf("MatchPasses(%d) on %+v = %v, want ok=%v", tt.passes, tt.res, err, tt.ok)
			}
		})
	}
}

func TestEncodeGolden(t *testing.T) {
	p := Params{
		RangeStart:     0x200000,
		RangeEnd:       0x10000000,
		HeartbeatEvery: 4,
		MaxPagesPerSec: 0x0102030405060708,
		TSCKHz:         2_999_999,
		SerialPort:     0x3f8,
	}
	want := []byte{
		'G', 'D', 'W', 'T', 'P', 'A', 'R', 'M', // 0x00 magic
		0x01, 0x00, 0x00, 0x00, // 0x08 version
		0x58, 0x00, 0x00, 0x00, // 0x0C size
		0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, // 0x10 range_start
		0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, // 0x18 range_end
		0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0x20 heartbeat_every
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // 0x28 max_pages_per_sec
		0xBF, 0xC6, 0x2D, 0x00, 0x00, 0x00, 0x00, 0x00, // 0x30 tsc_khz (2999999)
		0xF8, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0x38 serial_port + reserved
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0x40 passes
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0x48 alive
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0x50 state
	}
	got := p.Encode()
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode =\n% x\nwant\n% x", got, want)
	}
	back, err := DecodeParams(got)
	if err != nil || back != p {
		t.Fatalf("DecodeParams(Encode(p)) = %+v, %v; want %+v", back, err, p)
	}
}

func TestStatus(t *testing.T) {
	good := DefaultParams(256 << 20).Encode()
	binary.LittleEndian.PutUint64(good[OffPasses:], 42)
	binary.LittleEndian.PutUint64(good[OffAlive:], 1000)
	binary.LittleEndian.PutUint64(good[OffState:], uint64(StateRunning))
	mutate := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	tests := []struct {
		name    string
		block   []byte
		want    Status
		wantErr string
	}{
		{"running", good, Status{Passes: 42, Alive: 1000, State: StateRunning}, ""},
		{"in a larger page", append(bytes.Clone(good), make([]byte, 100)...), Status{Passes: 42, Alive: 1000, State: StateRunning}, ""},
		{"short", good[:OffState], Status{}, "want at least"},
		{"nil", nil, Status{}, "want at least"},
		{"bad magic", mutate(func(b []byte) { b[0] = 'X' }), Status{}, "magic"},
		{"bad version", mutate(func(b []byte) { b[OffVersion] = 2 }), Status{}, "version 2"},
		{"bad size", mutate(func(b []byte) { b[OffSize] = 0x40 }), Status{}, "size field 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStatus(tt.block)
			passes, rerr := ReadStatus(tt.block)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || rerr == nil {
					t.Fatalf("ParseStatus error = %v, ReadStatus error = %v; want %q", err, rerr, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseStatus = %+v, %v; want %+v", got, err, tt.want)
			}
			if rerr != nil || passes != tt.want.Passes {
				t.Fatalf("ReadStatus = %d, %v; want %d", passes, rerr, tt.want.Passes)
			}
		})
	}
}

func TestStateString(t *testing.T) {
	tests := []struct {
		s    State
		want string
	}{
		{StateNotStarted, "not started"},
		{StateRunning, "running"},
		{StateBadParams, "bad parameters"},
		{State(9), "state(9)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("State(%d).String() = %q, want %q", uint64(tt.s), got, tt.want)
		}
	}
}

func TestDefaultParams(t *testing.T) {
	tests := []struct {
		lowRAMEnd uint64
		wantEnd   uint64
		valid     bool
	}{
		{256 << 20, 256 << 20, true},
		{3 << 30, 3 << 30, true},
		{256<<20 + 100, 256 << 20, true},
		{2 << 20, 2 << 20, false}, // empty range
		{1 << 20, 1 << 20, false}, // inverted range
	}
	for _, tt := range tests {
		p := DefaultParams(tt.lowRAMEnd)
		want := Params{RangeStart: 2 << 20, RangeEnd: tt.wantEnd, HeartbeatEvery: DefaultHeartbeatEvery, SerialPort: 0x3f8}
		if p != want {
			t.Errorf("DefaultParams(%#x) = %+v, want %+v", tt.lowRAMEnd, p, want)
		}
		if err := p.Validate(tt.lowRAMEnd); (err == nil) != tt.valid {
			t.Errorf("DefaultParams(%#x).Validate = %v, want valid=%v", tt.lowRAMEnd, err, tt.valid)
		}
	}
}

func TestValidate(t *testing.T) {
	const ram = 256 << 20
	base := DefaultParams(ram)
	with := func(f func(p *Params)) Params {
		p := base
		f(&p)
		return p
	}
	tests := []struct {
		name    string
		p       Params
		wantErr string
	}{
		{"default", base, ""},
		{"rate with tsc", with(func(p *Params) { p.MaxPagesPerSec = 1000; p.TSCKHz = 3_000_000 }), ""},
		{"lowest start", with(func(p *Params) { p.RangeStart = MinRangeStart }), ""},
		{"single page", with(func(p *Params) { p.RangeEnd = p.RangeStart + PageSize }), ""},
		{"range beyond RAM", with(func(p *Params) { p.RangeEnd = ram + PageSize }), "beyond the end of RAM"},
		{"start beyond RAM", with(func(p *Params) { p.RangeStart = ram; p.RangeEnd = ram + 2*PageSize }), "beyond the end of RAM"},
		{"unaligned start", with(func(p *Params) { p.RangeStart += 1 }), "not page aligned"},
		{"unaligned end", with(func(p *Params) { p.RangeEnd -= 8 }), "not page aligned"},
		{"empty", with(func(p *Params) { p.RangeEnd = p.RangeStart }), "empty"},
		{"inverted", with(func(p *Params) { p.RangeStart, p.RangeEnd = p.RangeEnd, p.RangeStart }), "empty"},
		{"over param block", with(func(p *Params) { p.RangeStart = 0 }), "below"},
		{"over stack", with(func(p *Params) { p.RangeStart = StackTop - PageSize }), "below"},
		{"over guest image", with(func(p *Params) { p.RangeStart = LoadAddr }), "below"},
		{"just below image end", with(func(p *Params) { p.RangeStart = MinRangeStart - PageSize }), "below"},
		{"zero serial port", with(func(p *Params) { p.SerialPort = 0 }), "serial port"},
		{"serial port wraps", with(func(p *Params) { p.SerialPort = 0xfffd }), "serial port"},
		{"rate without tsc", with(func(p *Params) { p.MaxPagesPerSec = 1000 }), "TSCKHz"},
		{"tsc too large", with(func(p *Params) { p.TSCKHz = 1 << 32 }), "implausible"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate(ram)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate(%+v) = %v, want nil", tt.p, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate(%+v) = %v, want error containing %q", tt.p, err, tt.wantErr)
			}
		})
	}
}

func TestParseParam(t *testing.T) {
	tests := []struct {
		key, value string
		want       Params // applied to a zero Params
		wantErr    string
	}{
		{"range-start", "2M", Params{RangeStart: 2 << 20}, ""},
		{"range-start", "0x200000", Params{RangeStart: 0x200000}, ""},
		{"range-start", "2097152", Params{RangeStart: 2097152}, ""},
		{"range-end", "1G", Params{RangeEnd: 1 << 30}, ""},
		{"range-end", "512k", Params{RangeEnd: 512 << 10}, ""},
		{"range-end", " 64M ", Params{RangeEnd: 64 << 20}, ""},
		{"heartbeat", "0", Params{}, ""},
		{"heartbeat", "16", Params{HeartbeatEvery: 16}, ""},
		{"rate", "1500", Params{MaxPagesPerSec: 1500}, ""},
		{"rate", "10K", Params{MaxPagesPerSec: 10_000}, ""},
		{"rate", "2M", Params{MaxPagesPerSec: 2_000_000}, ""},
		{"rate", "unlimited", Params{}, ""},
		{"rate", "0", Params{}, ""},
		{"colour", "blue", Params{}, `unknown parameter "colour"`},
		{"", "1", Params{}, "unknown parameter"},
		{"range-start", "", Params{}, "empty value"},
		{"range-start", "two", Params{}, "not an unsigned number"},
		{"range-start", "-4096", Params{}, "not an unsigned number"},
		{"range-start", "M", Params{}, "not an unsigned number"},
		{"range-end", "99999999999999999999", Params{}, "out of range"},
		{"range-end", "17179869184G", Params{}, "out of range"},
		{"heartbeat", "4K", Params{}, "not an unsigned number"},
		{"heartbeat", "-1", Params{}, "not an unsigned number"},
		{"rate", "1G", Params{}, "suffix G"},
		{"rate", "fast", Params{}, "not an unsigned number"},
		{"rate", "1.5M", Params{}, "not an unsigned number"},
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+tt.value, func(t *testing.T) {
			var p Params
			err := ParseParam(&p, tt.key, tt.value)
			if tt.wantErr == "" {
				if err != nil || p != tt.want {
					t.Fatalf("ParseParam = %+v, %v; want %+v", p, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseParam error = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseArg(t *testing.T) {
	tests := []struct {
		arg     string
		want    Params
		wantErr string
	}{
		{"rate=5K", Params{MaxPagesPerSec: 5000}, ""},
		{"range-end=0x1000000", Params{RangeEnd: 0x1000000}, ""},
		{"rate", Params{}, "not key=value"},
		{"speed=1", Params{}, "unknown parameter"},
	}
	for _, tt := range tests {
		var p Params
		err := ParseArg(&p, tt.arg)
		if tt.wantErr == "" {
			if err != nil || p != tt.want {
				t.Errorf("ParseArg(%q) = %+v, %v; want %+v", tt.arg, p, err, tt.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseArg(%q) error = %v, want containing %q", tt.arg, err, tt.wantErr)
		}
	}
	if err := ParseParam(nil, "rate", "1"); err == nil {
		t.Error("ParseParam(nil, ...) = nil, want error")
	}
}

func TestBannerAndHeartbeat(t *testing.T) {
	p := DefaultParams(256 << 20)
	if got, want := Banner(p), "godwit test guest: range 0x0000000000200000-0x0000000010000000"; got != want {
		t.Errorf("Banner = %q, want %q", got, want)
	}
	tests := []struct {
		line string
		want uint64
		ok   bool
	}{
		{"heartbeat 4\n", 4, true},
		{"heartbeat 18446744073709551615\r\n", 1<<64 - 1, true},
		{"heartbeat 0", 0, true},
		{"heartbeat ", 0, false},
		{"heartbeat +4", 0, false},
		{"heartbeat x", 0, false},
		{"godwit test guest: bad parameters", 0, false},
	}
	for _, tt := range tests {
		n, ok := ParseHeartbeat(tt.line)
		if n != tt.want || ok != tt.ok {
			t.Errorf("ParseHeartbeat(%q) = %d, %v; want %d, %v", tt.line, n, ok, tt.want, tt.ok)
		}
	}
}

// TestBinaryStrings checks the serial strings in the binary match the Go
// constants the harness greps for.
func TestBinaryStrings(t *testing.T) {
	// The magic appears as the little-endian immediate of a movabs.
	for _, s := range []string{BannerPrefix + ": range \x00", HeartbeatPrefix + "\x00", BadParamsLine + "\n\x00", Magic} {
		if !bytes.Contains(Binary, []byte(s)) {
			t.Errorf("Binary does not contain %q", s)
		}
	}
}

// TestBinarySanity checks the embedded image without executing it.
func TestBinarySanity(t *testing.T) {
	if len(Binary) == 0 || len(Binary) > MaxImageSize {
		t.Fatalf("len(Binary) = %d, want 1..%d", len(Binary), MaxImageSize)
	}
	// The entry point is the first byte: guest.S starts with cld (0xFC)
	// then mov ebp, 0x3f8 (BD F8 03 00 00).
	if want := []byte{0xFC, 0xBD, 0xF8, 0x03, 0x00, 0x00}; !bytes.HasPrefix(Binary, want) {
		t.Fatalf("Binary starts % x, want code starting % x", Binary[:min(len(Binary), 8)], want)
	}
	if LoadAddr+MaxImageSize != MinRangeStart || MinRangeStart%PageSize != 0 {
		t.Fatalf("MinRangeStart %#x inconsistent with LoadAddr %#x + MaxImageSize %#x", MinRangeStart, LoadAddr, MaxImageSize)
	}
	if ParamAddr+ParamSize > StackTop-4096 || StackTop > LoadAddr {
		t.Fatal("parameter block, stack and load address overlap")
	}
}

// TestBinaryReproducible rebuilds guest.bin with build.sh and compares it
// with the embedded copy.
func TestBinaryReproducible(t *testing.T) {
	for _, tool := range []string{"sh", "as", "ld", "objcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not on PATH (%v); cannot rebuild guest.bin", tool, err)
		}
	}
	if v, err := exec.Command("as", "--version").Output(); err != nil || !bytes.Contains(v, []byte("x86_64")) {
		t.Skipf("as on PATH is not a GNU x86-64 assembler (%v); cannot rebuild guest.bin", err)
	}
	out := t.TempDir()
	cmd := exec.Command("sh", "build.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	built, err := os.ReadFile(filepath.Join(out, "guest.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(built, Binary) {
		t.Fatalf("build.sh output (%d bytes) differs from the embedded guest.bin (%d bytes): run ./build.sh and commit guest.bin", len(built), len(Binary))
	}
}

// referenceCheck is a slow, obviously correct restatement of Check's rule.
func referenceCheck(counters []uint64) (CheckResult, bool) {
	first := counters[0]
	res := CheckResult{Counter: first, Boundary: -1, Pages: uint64(len(counters))}
	for i, c := range counters {
		if c > first || first-c > 1 {
			return CheckResult{}, false
		}
		if i > 0 && c > counters[i-1] {
			return CheckResult{}, false
		}
		if c != first && res.Boundary < 0 {
			res.Boundary = int64(i)
		}
	}
	return res, true
}

func FuzzCheck(f *testing.F) {
	f.Add([]byte{3, 3, 2, 2}, uint16(0), uint16(4), uint64(10))
	f.Add([]byte{1, 0, 1}, uint16(1), uint16(3), uint64(0))
	f.Add([]byte{}, uint16(0), uint16(0), uint64(1<<63))
	f.Add([]byte{0xff, 0, 7}, uint16(70), uint16(2), uint64(5))
	f.Fuzz(func(t *testing.T, data []byte, startPage, endPage uint16, base uint64) {
		// Image of up to 64 pages; counters base + data[i] (wrapping).
		const maxPages = 64
		nPages := min(len(data), maxPages)
		img := make([]byte, nPages*PageSize)
		counters := make([]uint64, nPages)
		for i := range nPages {
			counters[i] = base + uint64(data[i]%4)
			binary.LittleEndian.PutUint64(img[i*PageSize:], counters[i])
		}
		// Arbitrary params, including unaligned, inverted or out-of-image ones.
		p := Params{RangeStart: uint64(startPage) * PageSize, RangeEnd: uint64(endPage) * PageSize}
		if len(data) > 0 && data[0]&0x80 != 0 {
			p.RangeEnd += uint64(data[0] & 0x7f)
		}
		got, err := Check(img, p)
		valid := p.RangeStart < p.RangeEnd && p.RangeEnd%PageSize == 0 && p.RangeEnd <= uint64(len(img))
		if !valid {
			if err == nil {
				t.Fatalf("Check accepted invalid params %+v for a %d-byte image", p, len(img))
			}
			return
		}
		want, ok := referenceCheck(counters[startPage:endPage])
		if ok != (err == nil) || got != want {
			t.Fatalf("Check = %+v, %v; reference = %+v, %v", got, err, want, ok)
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	p := DefaultParams(256 << 20)
	img := make([]byte, p.RangeEnd)
	for i := range p.Pages() {
		c := uint64(100)
		if i < p.Pages()/2 {
			c = 101
		}
		binary.LittleEndian.PutUint64(img[p.RangeStart+i*PageSize:], c)
	}
	b.SetBytes(int64(len(img)))
	for b.Loop() {
		if _, err := Check(img, p); err != nil {
			b.Fatal(err)
		}
	}
}
