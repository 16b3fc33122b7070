package devices

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"
)

// fakeIRQ records every SetLevel call.
type fakeIRQ struct {
	mu     sync.Mutex
	levels []bool
	high   chan struct{} // optional: signalled on every rising level
}

func (f *fakeIRQ) SetLevel(high bool) {
	f.mu.Lock()
	f.levels = append(f.levels, high)
	f.mu.Unlock()
	if high && f.high != nil {
		select {
		case f.high <- struct{}{}:
		default:
		}
	}
}

// take returns and forgets the recorded levels.
func (f *fakeIRQ) take() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.levels
	f.levels = nil
	return l
}

func rd(s *Serial, off uint64) byte {
	b := []byte{0}
	s.Read(off, b)
	return b[0]
}

func wr(s *Serial, off uint64, v byte) { s.Write(off, []byte{v}) }

// TestSerialLinuxProbe replays the register checks of Linux's
// autoconfig() and serial8250_do_startup() and expects a 16550A.
func TestSerialLinuxProbe(t *testing.T) {
	var out bytes.Buffer
	s := NewSerial(&out, nil)
	type step struct {
		what  string
		write bool
		off   uint64
		val   byte // value written, or expected value read
		mask  byte // read: compare val&mask (0 means 0xff)
	}
	steps := []step{
		// Scratch register.
		{"scratch write", true, serialSCR, 0xa5, 0},
		{"scratch read", false, serialSCR, 0xa5, 0},
		{"scratch write", true, serialSCR, 0x5a, 0},
		{"scratch read", false, serialSCR, 0x5a, 0},
		// IER: writable low nibble.
		{"IER clear", true, serialIER, 0, 0},
		{"IER reads 0", false, serialIER, 0, 0x0f},
		{"IER set", true, serialIER, 0x0f, 0},
		{"IER reads 0xf", false, serialIER, 0x0f, 0x0f},
		{"IER clear", true, serialIER, 0, 0},
		// Loopback probe: MCR = LOOP|OUT2|RTS gives MSR = DCD|CTS.
		{"loopback on", true, serialMCR, mcrLoop | 0x0a, 0},
		{"MSR in loopback", false, serialMSR, 0x90, 0xf0},
		{"loopback off", true, serialMCR, 0, 0},
		// FIFO detection: IIR bits 6-7 both set.
		{"LCR conf B", true, serialLCR, 0xbf, 0},
		{"EFR write", true, serialIIR, 0, 0},
		{"LCR 0", true, serialLCR, 0, 0},
		{"FCR enable", true, serialIIR, fcrEnable, 0},
		{"IIR FIFO bits", false, serialIIR, 0xc0, 0xc0},
		// No EFR: the EFR register (IIR with LCR 0xbf) must not read 0.
		{"LCR conf B", true, serialLCR, 0xbf, 0},
		{"EFR not zero", false, serialIIR, 0xc1, 0},
		{"LCR 0", true, serialLCR, 0, 0},
		// Not a 16750: no 64-byte FIFO bit.
		{"FCR 64 byte", true, serialIIR, fcrEnable | 0x20, 0},
		{"IIR no 64-byte bit", false, serialIIR, 0xc0, 0xe0},
		// Not an XScale: IER bit 6 (UUE) reads 0.
		{"IER UUE", true, serialIER, 0x40, 0},
		{"IER no UUE", false, serialIER, 0, 0x40},
		// Startup: clear FIFOs, LSR must not be 0xff.
		{"FCR clear", true, serialIIR, fcrEnable | fcrClearRX | fcrClearTX, 0},
		{"LSR idle", false, serialLSR, lsrTHRE | lsrTEMT, 0},
		// THRE test: enabling THRI twice raises the interrupt twice.
		{"IER THRI", true, serialIER, ierTHRI, 0},
		{"IIR THRI", false, serialIIR, 0xc2, 0},
		{"IER 0", true, serialIER, 0, 0},
		{"IER THRI again", true, serialIER, ierTHRI, 0},
		{"IIR THRI again", false, serialIIR, 0xc2, 0},
		{"IIR acknowledged", false, serialIIR, 0xc1, 0},
		{"IER 0", true, serialIER, 0, 0},
		// Normal operation: DCD, DSR, CTS asserted; leaving loopback
		// with DTR clear changed DSR once.
		{"MSR delta", false, serialMSR, msrDCD | msrDSR | msrCTS | msrDDSR, 0},
		{"MSR", false, serialMSR, msrDCD | msrDSR | msrCTS, 0},
	}
	for i, st := range steps {
		if st.write {
			wr(s, st.off, st.val)
			continue
		}
		mask := st.mask
		if mask == 0 {
			mask = 0xff
		}
		if got := rd(s, st.off); got&mask != st.val&mask {
			t.Fatalf("step %d (%s): read offset %d = %#x, want %#x (mask %#x)", i, st.what, st.off, got, st.val, mask)
		}
	}
	if out.Len() != 0 {
		t.Errorf("probe produced output %q", out.Bytes())
	}
}

func TestSerialLoopbackData(t *testing.T) {
	var out bytes.Buffer
	s := NewSerial(&out, nil)
	wr(s, serialMCR, mcrLoop)
	for _, v := range []byte{0x55, 0xaa} {
		wr(s, serialRBR, v)
		if lsr := rd(s, serialLSR); lsr&lsrDR == 0 {
			t.Fatalf("LSR %#x: no data after loopback write", lsr)
		}
		if got := rd(s, serialRBR); got != v {
			t.Errorf("loopback read %#x, want %#x", got, v)
		}
	}
	s.Input([]byte("x")) // line disconnected in loopback
	if lsr := rd(s, serialLSR); lsr&lsrDR != 0 {
		t.Errorf("host input reached the FIFO in loopback mode")
	}
	if out.Len() != 0 {
		t.Errorf("loopback writes reached the output: %q", out.Bytes())
	}
	if st := s.Stats(); st.InputDropped != 1 {
		t.Errorf("InputDropped = %d, want 1", st.InputDropped)
	}
}

func TestSerialOutput(t *testing.T) {
	var out bytes.Buffer
	s := NewSerial(&out, nil)
	for _, c := range []byte("hello\n") {
		if lsr := rd(s, serialLSR); lsr&lsrTHRE == 0 {
			t.Fatalf("THRE clear before write: LSR %#x", lsr)
		}
		wr(s, serialRBR, c)
	}
	s.Write(serialRBR, []byte("ab")) // wide: 'a' to THR, 'b' to IER
	if got := out.String(); got != "hello\na" {
		t.Errorf("output %q, want %q", got, "hello\na")
	}
	if st := s.Stats(); st.OutputBytes != 7 || st.OutputErrors != 0 {
		t.Errorf("Stats = %+v, want 7 bytes, no errors", st)
	}
	NewSerial(nil, nil).Write(serialRBR, []byte{'x'}) // nil output discards
}

// errWriter fails every write.
type errWriter struct{}

func (errWriter) Write(p []byte) (int, error) { return 0, errors.New("broken pipe") }

func TestSerialOutputErrors(t *testing.T) {
	s := NewSerial(errWriter{}, nil)
	for range 3 {
		wr(s, serialRBR, 'x')
	}
	if st := s.Stats(); st.OutputErrors != 3 || st.OutputBytes != 0 {
		t.Errorf("Stats = %+v, want 3 errors, 0 bytes", st)
	}
}

// TestSerialInterrupts checks the level sequence on the interrupt line.
func TestSerialInterrupts(t *testing.T) {
	type op struct {
		kind byte // 'r' read, 'w' write, 'i' host input
		off  uint64
		val  byte
		want byte // for reads: expected value; 0 means don't check
	}
	tests := []struct {
		name   string
		ops    []op
		levels []bool // SetLevel calls, in order
	}{
		{"nothing enabled", []op{{'i', 0, 'a', 0}, {'w', serialRBR, 'x', 0}}, nil},
		{"rx data raises and reading lowers", []op{
			{'w', serialIER, ierRDI, 0},
			{'i', 0, 'a', 0},
			{'i', 0, 'b', 0},
			{'r', serialIIR, 0, iirRDI},
			{'r', serialRBR, 0, 'a'},
			{'r', serialRBR, 0, 'b'},
		}, []bool{true, false}},
		{"enabling RDI with data pending", []op{
			{'i', 0, 'a', 0},
			{'w', serialIER, ierRDI, 0},
			{'w', serialIER, 0, 0},
		}, []bool{true, false}},
		{"THRI on enable, acked by IIR read", []op{
			{'w', serialIER, ierTHRI, 0},
			{'r', serialIIR, 0, iirTHRI},
			{'r', serialIIR, 0, iirNoInt},
		}, []bool{true, false}},
		{"THR write re-arms THRI", []op{
			{'w', serialIER, ierTHRI, 0},
			{'r', serialIIR, 0, iirTHRI},
			{'w', serialRBR, 'x', 0},
			{'r', serialIIR, 0, iirTHRI},
		}, []bool{true, false, true, false}},
		{"rewriting IER with THRI kept does not re-arm", []op{
			{'w', serialIER, ierTHRI, 0},
			{'r', serialIIR, 0, iirTHRI},
			{'w', serialIER, ierTHRI | ierRDI, 0},
		}, []bool{true, false}},
		{"disabling THRI lowers, enabling raises", []op{
			{'w', serialIER, ierTHRI, 0},
			{'w', serialIER, 0, 0},
			{'w', serialIER, ierTHRI, 0},
		}, []bool{true, false, true}},
		{"RX has priority over THR empty", []op{
			{'w', serialIER, ierTHRI | ierRDI, 0},
			{'i', 0, 'a', 0},
			{'r', serialIIR, 0, iirRDI},
			{'r', serialRBR, 0, 'a'},
			{'r', serialIIR, 0, iirTHRI},
			{'r', serialIIR, 0, iirNoInt},
		}, []bool{true, false}},
		{"IIR read does not ack THRI hidden behind RX", []op{
			{'w', serialIER, ierTHRI | ierRDI, 0},
			{'i', 0, 'a', 0},
			{'r', serialIIR, 0, iirRDI},
			{'r', serialIIR, 0, iirRDI},
			{'r', serialRBR, 0, 'a'},
			{'r', serialIIR, 0, iirTHRI},
		}, []bool{true, false}},
		{"overrun raises line status", []op{
			{'w', serialIER, ierRLSI, 0},
			{'i', 0, 0, 0},
			{'r', serialIIR, 0, iirRLSI},
			{'r', serialLSR, 0, lsrDR | lsrOE | lsrTHRE | lsrTEMT},
			{'r', serialIIR, 0, iirNoInt},
		}, []bool{true, false}},
		{"modem status change in loopback", []op{
			{'w', serialIER, ierMSI, 0},
			{'w', serialMCR, mcrLoop | mcrDTR, 0},
			{'r', serialIIR, 0, iirMSI},
			{'r', serialMSR, 0, msrDSR | msrDCTS | msrDDCD}, // CTS and DCD dropped
			{'r', serialIIR, 0, iirNoInt},
		}, []bool{true, false}},
		{"loopback THR write is received", []op{
			{'w', serialIER, ierRDI, 0},
			{'w', serialMCR, mcrLoop, 0},
			{'w', serialRBR, 'z', 0},
			{'r', serialRBR, 0, 'z'},
		}, []bool{true, false}},
		{"DLAB hides IER", []op{
			{'w', serialLCR, lcrDLAB, 0},
			{'w', serialIER, ierTHRI, 0}, // DLM, not IER
			{'w', serialLCR, 0x03, 0},
			{'r', serialIER, 0, 0},
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			irq := &fakeIRQ{}
			s := NewSerial(io.Discard, irq)
			for i, o := range tt.ops {
				switch o.kind {
				case 'w':
					wr(s, o.off, o.val)
				case 'i':
					if o.val == 0 {
						s.Input(make([]byte, SerialFIFOSize+1))
					} else {
						s.Input([]byte{o.val})
					}
				case 'r':
					got := rd(s, o.off)
					if o.off == serialIIR {
						got &^= iirFIFO
					}
					if (o.want != 0 || o.off == serialIIR) && got != o.want {
						t.Fatalf("op %d: read offset %d = %#x, want %#x", i, o.off, got, o.want)
					}
				}
			}
			got := irq.take()
			if len(got) != len(tt.levels) {
				t.Fatalf("SetLevel calls %v, want %v", got, tt.levels)
			}
			for i := range got {
				if got[i] != tt.levels[i] {
					t.Fatalf("SetLevel calls %v, want %v", got, tt.levels)
				}
			}
		})
	}
}

func TestSerialDLAB(t *testing.T) {
	var out bytes.Buffer
	s := NewSerial(&out, nil)
	wr(s, serialIER, ierRDI)
	wr(s, serialLCR, lcrDLAB|0x03)
	wr(s, serialRBR, 0x01) // DLL: 115200 baud
	wr(s, serialIER, 0x00) // DLM
	if dll, dlm := rd(s, serialRBR), rd(s, serialIER); dll != 0x01 || dlm != 0 {
		t.Errorf("divisor reads %#x/%#x, want 0x01/0x00", dll, dlm)
	}
	wr(s, serialLCR, 0x03)
	if ier := rd(s, serialIER); ier != ierRDI {
		t.Errorf("IER = %#x after DLAB cleared, want %#x", ier, ierRDI)
	}
	if lcr := rd(s, serialLCR); lcr != 0x03 {
		t.Errorf("LCR = %#x, want 0x03", lcr)
	}
	if out.Len() != 0 {
		t.Errorf("divisor write reached the output: %q", out.Bytes())
	}
	s.Input([]byte{'q'})
	wr(s, serialLCR, lcrDLAB)
	if v := rd(s, serialRBR); v != 0x01 {
		t.Errorf("offset 0 with DLAB = %#x, want DLL 0x01", v)
	}
	wr(s, serialLCR, 0)
	if v := rd(s, serialRBR); v != 'q' {
		t.Errorf("received byte %#x lost behind DLAB, want 'q'", v)
	}
}

func TestSerialFIFOOverflow(t *testing.T) {
	s := NewSerial(nil, nil)
	in := make([]byte, SerialFIFOSize+6)
	for i := range in {
		in[i] = byte(i)
	}
	s.Input(in[:10])
	s.Input(in[10:])
	if st := s.Stats(); st.InputDropped != 6 {
		t.Errorf("InputDropped = %d, want 6", st.InputDropped)
	}
	if lsr := rd(s, serialLSR); lsr&lsrOE == 0 {
		t.Errorf("LSR %#x: overrun not flagged", lsr)
	}
	if lsr := rd(s, serialLSR); lsr&lsrOE != 0 {
		t.Errorf("LSR %#x: overrun not cleared by reading LSR", lsr)
	}
	for i := range SerialFIFOSize {
		if v := rd(s, serialRBR); v != byte(i) {
			t.Fatalf("byte %d = %#x, want %#x", i, v, i)
		}
	}
	if lsr := rd(s, serialLSR); lsr&lsrDR != 0 {
		t.Errorf("LSR %#x: data ready after draining", lsr)
	}
	// FCR clears the receive FIFO.
	s.Input([]byte("abc"))
	wr(s, serialIIR, fcrEnable|fcrClearRX)
	if lsr := rd(s, serialLSR); lsr&lsrDR != 0 {
		t.Errorf("LSR %#x: FIFO not cleared by FCR", lsr)
	}
}

// busyState puts s in a state where every saved field is non-default and
// the FIFO wraps around its ring.
func busyState(s *Serial) {
	wr(s, serialLCR, lcrDLAB)
	wr(s, serialRBR, 0x03)
	wr(s, serialIER, 0x01)
	wr(s, serialLCR, 0x1b)
	wr(s, serialIER, ierRDI|ierTHRI|ierRLSI|ierMSI)
	wr(s, serialIIR, fcrEnable|0x80)
	wr(s, serialSCR, 0x42)
	s.Input(make([]byte, 50))
	for range 40 {
		rd(s, serialRBR)
	}
	s.Input([]byte("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijkl"))
	wr(s, serialMCR, mcrDTR|mcrRTS|mcrOUT2)
}

func TestSerialSaveRestore(t *testing.T) {
	src := NewSerial(nil, nil)
	busyState(src)
	saved, err := src.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	irq := &fakeIRQ{}
	dst := NewSerial(nil, irq)
	if err := dst.RestoreState(saved); err != nil {
		t.Fatalf("RestoreState: %v", err)
	}
	if l := irq.take(); len(l) != 1 || !l[0] {
		t.Errorf("restore drove the line %v, want [true]", l)
	}
	again, err := dst.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(saved, again) {
		t.Fatalf("save→restore→save differs:\n% x\n% x", saved, again)
	}
	// Both UARTs behave the same from here on.
	for _, off := range []uint64{serialLSR, serialIIR, serialRBR, serialRBR, serialIER, serialLCR, serialMCR, serialMSR, serialSCR, serialIIR} {
		if a, b := rd(src, off), rd(dst, off); a != b {
			t.Errorf("offset %d: source %#x, restored %#x", off, a, b)
		}
	}
}

func TestSerialRestoreRejects(t *testing.T) {
	good, err := NewSerial(nil, nil).SaveState()
	if err != nil {
		t.Fatal(err)
	}
	withFIFO := func(n int) []byte {
		b := append([]byte(nil), good...)
		b[12] = byte(n)
		return append(b, make([]byte, n)...)
	}
	set := func(i int, v byte) []byte {
		b := append([]byte(nil), good...)
		b[i] = v
		return b
	}
	tests := []struct {
		name  string
		state []byte
	}{
		{"nil", nil},
		{"truncated header", good[:serialStateHeader-1]},
		{"version 0", set(0, 0)},
		{"version 2", set(0, 2)},
		{"IER reserved bits", set(2, 0x10)},
		{"MCR reserved bits", set(4, 0x20)},
		{"FCR without enable", set(8, 0x80)},
		{"FCR clear bits", set(8, 0x03)},
		{"LSR bits", set(9, lsrDR)},
		{"MSR status bits", set(10, msrCTS)},
		{"flags", set(11, 2)},
		{"FIFO count too big", withFIFO(SerialFIFOSize + 1)},
		{"FIFO count 255", withFIFO(255)},
		{"FIFO truncated", withFIFO(10)[:serialStateHeader+9]},
		{"trailing bytes", append(withFIFO(3), 0)},
		{"garbage", bytes.Repeat([]byte{0xff}, 40)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSerial(nil, nil)
			busyState(s)
			before, _ := s.SaveState()
			err := s.RestoreState(tt.state)
			if !errors.Is(err, ErrInvalidState) {
				t.Fatalf("RestoreState = %v, want ErrInvalidState", err)
			}
			after, _ := s.SaveState()
			if !bytes.Equal(before, after) {
				t.Error("failed restore changed the state")
			}
		})
	}
	if err := NewSerial(nil, nil).RestoreState(withFIFO(SerialFIFOSize)); err != nil {
		t.Errorf("full FIFO rejected: %v", err)
	}
}

// TestSerialPumpInput feeds more than a FIFO's worth through PumpInput to
// a guest that reads on interrupts: nothing may be dropped.
func TestSerialPumpInput(t *testing.T) {
	irq := &fakeIRQ{high: make(chan struct{}, 1)}
	s := NewSerial(nil, irq)
	wr(s, serialIER, ierRDI)
	want := bytes.Repeat([]byte("The quick brown fox. "), 20)
	done := make(chan struct{})
	go func() {
		s.PumpInput(bytes.NewReader(want))
		close(done)
	}()
	var got []byte
	for len(got) < len(want) {
		<-irq.high
		for rd(s, serialLSR)&lsrDR != 0 {
			got = append(got, rd(s, serialRBR))
		}
	}
	<-done
	if !bytes.Equal(got, want) {
		t.Errorf("received %q, want %q", got, want)
	}
	if st := s.Stats(); st.InputDropped != 0 {
		t.Errorf("InputDropped = %d, want 0", st.InputDropped)
	}
}

// TestSerialPumpClose checks that Close releases a PumpInput waiting for
// FIFO space.
func TestSerialPumpClose(t *testing.T) {
	s := NewSerial(nil, nil)
	done := make(chan struct{})
	go func() {
		s.PumpInput(bytes.NewReader(make([]byte, 2*SerialFIFOSize)))
		close(done)
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestSerialOutOfRange checks accesses past the eight registers.
func TestSerialOutOfRange(t *testing.T) {
	var out bytes.Buffer
	s := NewSerial(&out, nil)
	tests := []struct {
		off  uint64
		size int
	}{{8, 1}, {100, 4}, {^uint64(0), 8}, {6, 4}}
	for _, tt := range tests {
		before, _ := s.SaveState()
		s.Write(tt.off, make([]byte, tt.size))
		data := make([]byte, tt.size)
		s.Read(tt.off, data)
		for i, v := range data {
			if tt.off+uint64(i) >= SerialPorts || tt.off+uint64(i) < tt.off {
				if v != 0xff {
					t.Errorf("Read(%#x, %d) byte %d = %#x, want 0xff", tt.off, tt.size, i, v)
				}
			}
		}
		if tt.off >= SerialPorts {
			after, _ := s.SaveState()
			if !bytes.Equal(before, after) {
				t.Errorf("access at %#x changed the state", tt.off)
			}
		}
	}
	if out.Len() != 0 {
		t.Errorf("out-of-range writes produced output %q", out.Bytes())
	}
}

func FuzzSerialRestore(f *testing.F) {
	s := NewSerial(nil, nil)
	busyState(s)
	seed, _ := s.SaveState()
	f.Add(seed)
	empty, _ := NewSerial(nil, nil).SaveState()
	f.Add(empty)
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		s := NewSerial(io.Discard, &fakeIRQ{})
		busyState(s)
		if !restoreOrKeep(t, s, b) {
			return
		}
		// The encoding is canonical: what restores saves back unchanged.
		again, err := s.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("restored % x, saved % x", b, again)
		}
		for off := range uint64(SerialPorts) {
			rd(s, off)
			wr(s, off, 0xff)
		}
	})
}

func FuzzSerialAccess(f *testing.F) {
	f.Add([]byte{0x83, 0x80, 0x80, 0x01, 0x83, 0x03, 0x81, 0x0f, 0x02, 0x00, 0x00, 0x05})
	f.Add([]byte{0x84, 0x10, 0x80, 'a', 0x00, 0x00, 0x40, 'x', 0x42, 0x00, 0x06})
	f.Add([]byte{0x40, 0x41, 0x42, 0x43, 0xc0, 0x11, 0x22, 0x33})
	f.Fuzz(func(t *testing.T, ops []byte) {
		irq := &fakeIRQ{}
		s := NewSerial(io.Discard, irq)
		// Each op byte: bit 7 write, bit 6 special, bits 0-3 offset (8-15
		// are out of range); writes take the next byte as the value.
		for i := 0; i < len(ops); i++ {
			op := ops[i]
			off := uint64(op & 0x0f)
			n := len(irq.levels)
			switch {
			case op&0xc0 == 0xc0:
				st, err := s.SaveState()
				if err != nil {
					t.Fatal(err)
				}
				if err := s.RestoreState(st); err != nil {
					t.Fatalf("own state rejected: %v", err)
				}
			case op&0x40 != 0:
				s.Input(ops[i:min(i+int(off)+1, len(ops))])
			case op&0x80 != 0:
				var v byte
				if i+1 < len(ops) {
					i++
					v = ops[i]
				}
				s.Write(off, []byte{v})
			default:
				s.Read(off, make([]byte, 1+int(op>>4&3)))
			}
			s.mu.Lock()
			want := s.interruptID() != iirNoInt
			s.mu.Unlock()
			levels := irq.levels
			got := len(levels) > 0 && levels[len(levels)-1]
			if got != want {
				t.Fatalf("after op %d: line %v, pending interrupt %v", i, got, want)
			}
			if op&0xc0 == 0xc0 {
				continue // RestoreState drives the line unconditionally
			}
			for j := max(n, 1); j < len(levels); j++ {
				if levels[j] == levels[j-1] {
					t.Fatalf("op %d: SetLevel(%v) repeated", i, levels[j])
				}
			}
		}
	})
}

// TestSerialConcurrent drives one UART from several vCPU-like goroutines,
// host input and state saves at once; run it with -race.
func TestSerialConcurrent(t *testing.T) {
	var out lockedBuffer
	irq := &fakeIRQ{}
	s := NewSerial(&out, irq)
	wr(s, serialIER, ierRDI|ierTHRI)
	const workers, iters = 4, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range iters {
				wr(s, serialRBR, byte('a'+w))
				rd(s, uint64(i%SerialPorts))
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range iters {
			s.Input([]byte("xy"))
		}
	}()
	go func() {
		defer wg.Done()
		for range iters / 10 {
			st, err := s.SaveState()
			if err != nil {
				t.Error(err)
				return
			}
			if err := s.RestoreState(st); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
	// Only THR is written and DLAB is never set, so every write is output.
	if n := out.Len(); n != workers*iters {
		t.Errorf("%d bytes output, want %d", n, workers*iters)
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}
