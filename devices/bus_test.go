package devices

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// recorder is a Device that remembers its last access and counts accesses.
type recorder struct {
	mu         sync.Mutex
	lastOff    uint64
	lastWrite  []byte
	readValue  byte
	reads      atomic.Uint64
	writes     atomic.Uint64
	writeBytes atomic.Uint64
}

func (r *recorder) Read(offset uint64, data []byte) {
	r.reads.Add(1)
	r.mu.Lock()
	r.lastOff = offset
	for i := range data {
		data[i] = r.readValue
	}
	r.mu.Unlock()
}

func (r *recorder) Write(offset uint64, data []byte) {
	r.writes.Add(1)
	r.writeBytes.Add(uint64(len(data)))
	r.mu.Lock()
	r.lastOff = offset
	r.lastWrite = append([]byte(nil), data...)
	r.mu.Unlock()
}

func TestBusRegister(t *testing.T) {
	type reg struct {
		base, size uint64
		name       string
	}
	const top = ^uint64(0)
	tests := []struct {
		name     string
		existing []reg
		add      reg
		wantErr  []string // substrings; nil means success
	}{
		{"empty bus", nil, reg{0x3f8, 8, "com1"}, nil},
		{"adjacent below", []reg{{0x3f8, 8, "com1"}}, reg{0x3f0, 8, "x"}, nil},
		{"adjacent above", []reg{{0x3f8, 8, "com1"}}, reg{0x400, 1, "x"}, nil},
		{"between two", []reg{{0x10, 0x10, "a"}, {0x30, 0x10, "b"}}, reg{0x20, 0x10, "c"}, nil},
		{"same range", []reg{{0x3f8, 8, "com1"}}, reg{0x3f8, 8, "dup"}, []string{`"dup"`, `"com1"`, "overlaps"}},
		{"overlap start", []reg{{0x3f8, 8, "com1"}}, reg{0x3f0, 9, "x"}, []string{`"x"`, `"com1"`}},
		{"overlap end", []reg{{0x3f8, 8, "com1"}}, reg{0x3ff, 2, "x"}, []string{`"x"`, `"com1"`}},
		{"inside", []reg{{0x3f8, 8, "com1"}}, reg{0x3fa, 1, "x"}, []string{`"x"`, `"com1"`}},
		{"covering", []reg{{0x3f8, 8, "com1"}}, reg{0x300, 0x200, "x"}, []string{`"x"`, `"com1"`}},
		{"covering second of two", []reg{{0x10, 0x10, "a"}, {0x30, 0x10, "b"}}, reg{0x21, 0x10, "c"}, []string{`"c"`, `"b"`}},
		{"zero size", nil, reg{0x80, 0, "post"}, []string{"size is zero", `"post"`}},
		{"wraparound", nil, reg{top - 3, 8, "wrap"}, []string{"wraps", `"wrap"`}},
		{"ends at top", nil, reg{top - 7, 8, "top"}, nil},
		{"whole space but one", nil, reg{0, top, "all"}, nil},
		{"overlaps at top", []reg{{top, 1, "last"}}, reg{top - 1, 2, "x"}, []string{`"x"`, `"last"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBus("pio")
			for _, e := range tt.existing {
				if err := b.Register(e.base, e.size, e.name, &recorder{}); err != nil {
					t.Fatalf("setup Register(%#x, %#x, %q): %v", e.base, e.size, e.name, err)
				}
			}
			err := b.Register(tt.add.base, tt.add.size, tt.add.name, &recorder{})
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Register: %v", err)
				}
				if n := len(b.Devices()); n != len(tt.existing)+1 {
					t.Fatalf("Devices() has %d entries, want %d", n, len(tt.existing)+1)
				}
				return
			}
			if err == nil {
				t.Fatal("Register succeeded, want an error")
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %s", err, s)
				}
			}
			if n := len(b.Devices()); n != len(tt.existing) {
				t.Errorf("failed Register changed the bus: %d entries, want %d", n, len(tt.existing))
			}
		})
	}
}

func TestBusRegisterNilDevice(t *testing.T) {
	if err := NewBus("mmio").Register(0x1000, 0x1000, "nil", nil); err == nil {
		t.Fatal("Register with a nil device succeeded")
	}
}

func TestBusLookup(t *testing.T) {
	b := NewBus("pio")
	devs := map[string]*recorder{"a": {readValue: 0xa}, "b": {readValue: 0xb}, "top": {readValue: 0x7}}
	const top = ^uint64(0)
	for _, r := range []struct {
		base, size uint64
		name       string
	}{{0x100, 0x10, "b"}, {0x10, 0x8, "a"}, {top - 1, 2, "top"}} {
		if err := b.Register(r.base, r.size, r.name, devs[r.name]); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		addr    uint64
		dev     string // "" means unhandled
		wantOff uint64
	}{
		{0x0, "", 0},
		{0xf, "", 0},
		{0x10, "a", 0},
		{0x17, "a", 7},
		{0x18, "", 0},
		{0xff, "", 0},
		{0x100, "b", 0},
		{0x10f, "b", 0xf},
		{0x110, "", 0},
		{top - 2, "", 0},
		{top - 1, "top", 0},
		{top, "top", 1},
	}
	for _, tt := range tests {
		data := []byte{0x55, 0x55}
		ok := b.Read(tt.addr, data)
		if ok != (tt.dev != "") {
			t.Errorf("Read(%#x) handled=%v, want %v", tt.addr, ok, tt.dev != "")
			continue
		}
		if tt.dev == "" {
			if data[0] != 0xff || data[1] != 0xff {
				t.Errorf("unhandled Read(%#x) = % x, want all ones", tt.addr, data)
			}
			continue
		}
		d := devs[tt.dev]
		if data[0] != d.readValue || d.lastOff != tt.wantOff {
			t.Errorf("Read(%#x) = %#x at offset %#x, want %#x at %#x", tt.addr, data[0], d.lastOff, d.readValue, tt.wantOff)
		}
		if !b.Write(tt.addr, []byte{1, 2}) || d.lastOff != tt.wantOff || string(d.lastWrite) != "\x01\x02" {
			t.Errorf("Write(%#x) reached offset %#x with % x", tt.addr, d.lastOff, d.lastWrite)
		}
	}
	want := []BusEntry{{0x10, 8, "a"}, {0x100, 0x10, "b"}, {top - 1, 2, "top"}}
	got := b.Devices()
	if len(got) != len(want) {
		t.Fatalf("Devices() = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Devices()[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestBusUnhandled(t *testing.T) {
	b := NewBus("mmio")
	if err := b.Register(0x1000, 0x1000, "dev", &recorder{}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		write bool
		addr  uint64
	}{{false, 0}, {false, 0xfff}, {true, 0x2000}, {false, 0x1000}, {true, 0x1fff}, {false, 0x2000}, {true, 0}}
	for _, s := range steps {
		data := make([]byte, 8)
		if s.write {
			b.Write(s.addr, data)
		} else if !b.Read(s.addr, data) {
			for i, v := range data {
				if v != 0xff {
					t.Fatalf("unhandled read at %#x: byte %d = %#x, want 0xff", s.addr, i, v)
				}
			}
		}
	}
	if r, w := b.Unhandled(); r != 3 || w != 2 {
		t.Errorf("Unhandled() = %d reads, %d writes; want 3, 2", r, w)
	}
}

func TestFillOnes(t *testing.T) {
	for _, n := range []int{0, 1, 2, 4, 8} {
		b := make([]byte, n)
		FillOnes(b)
		for i, v := range b {
			if v != 0xff {
				t.Errorf("len %d: byte %d = %#x", n, i, v)
			}
		}
	}
}

// TestBusConcurrent registers devices while other goroutines access the
// bus; run it with -race.
func TestBusConcurrent(t *testing.T) {
	b := NewBus("pio")
	const workers, iters, devs = 8, 2000, 16
	rec := make([]*recorder, devs)
	for i := range rec {
		rec[i] = &recorder{readValue: byte(i)}
	}
	if err := b.Register(0, 4, "dev0", rec[0]); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i < devs; i++ {
			if err := b.Register(uint64(i)*4, 4, "dev", rec[i]); err != nil {
				t.Error(err)
			}
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := make([]byte, 1)
			for i := range iters {
				// Device 0 is always there; the others may not be yet.
				addr := uint64((i*7+w)%devs) * 4
				if i%2 == 0 {
					addr = uint64(i % 4)
				}
				if b.Read(addr, data) && data[0] != byte(addr/4) {
					t.Errorf("read %#x from device %d", data[0], addr/4)
					return
				}
				b.Write(addr, data)
			}
		}()
	}
	wg.Wait()
	var writes uint64
	for _, r := range rec {
		writes += r.writes.Load()
	}
	_, unW := b.Unhandled()
	if writes+unW != workers*iters {
		t.Errorf("%d handled + %d unhandled writes, want %d", writes, unW, workers*iters)
	}
	if rec[0].writes.Load() < workers*iters/2 {
		t.Errorf("device 0 saw %d writes, want at least %d", rec[0].writes.Load(), workers*iters/2)
	}
	if n := len(b.Devices()); n != devs {
		t.Errorf("%d devices registered, want %d", n, devs)
	}
}
