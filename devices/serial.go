package devices

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// IRQLine is an interrupt line a device drives. The VMM implements it with
// KVM_IRQ_LINE on the in-kernel irqchip. Devices call SetLevel only when the
// level changes (and once after RestoreState), while holding their own
// lock: SetLevel must not call back into the device.
type IRQLine interface {
	// SetLevel drives the line high (asserted) or low.
	SetLevel(high bool)
}

// Register offsets of the 8250/16550A UART (PC16550D datasheet, table II).
const (
	serialRBR = 0 // receive buffer (read), THR transmit holding (write), DLL with DLAB
	serialIER = 1 // interrupt enable, DLM with DLAB
	serialIIR = 2 // interrupt identification (read), FCR FIFO control (write)
	serialLCR = 3 // line control
	serialMCR = 4 // modem control
	serialLSR = 5 // line status
	serialMSR = 6 // modem status
	serialSCR = 7 // scratch

	// SerialPorts is the number of I/O ports a UART occupies.
	SerialPorts = 8
	// SerialFIFOSize is the depth of the emulated receive FIFO. Host input
	// beyond it is dropped and counted (and flags an overrun).
	SerialFIFOSize = 64
)

// Register bits.
const (
	ierRDI  = 0x01 // received data available
	ierTHRI = 0x02 // transmitter holding register empty
	ierRLSI = 0x04 // receiver line status
	ierMSI  = 0x08 // modem status
	ierMask = 0x0f // bits 4-7 read as zero on a 16550A (Linux probes bit 6)

	iirNoInt = 0x01
	iirMSI   = 0x00
	iirTHRI  = 0x02
	iirRDI   = 0x04
	iirRLSI  = 0x06
	iirFIFO  = 0xc0 // both bits set: 16550A with FIFO enabled

	fcrEnable    = 0x01
	fcrClearRX   = 0x02
	fcrClearTX   = 0x04
	fcrDMA       = 0x08
	fcrTrigger   = 0xc0
	fcrStoreMask = fcrEnable | fcrDMA | fcrTrigger

	lcrDLAB = 0x80

	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10
	mcrMask = 0x1f

	lsrDR   = 0x01
	lsrOE   = 0x02
	lsrTHRE = 0x20
	lsrTEMT = 0x40

	msrDCTS      = 0x01
	msrDDSR      = 0x02
	msrTERI      = 0x04
	msrDDCD      = 0x08
	msrDeltaMask = 0x0f
	msrCTS       = 0x10
	msrDSR       = 0x20
	msrRI        = 0x40
	msrDCD       = 0x80
)

// serialRegs is the guest-visible state of the UART: everything SaveState
// records.
type serialRegs struct {
	ier, lcr, mcr, scr, dll, dlm, fcr byte

	lsrErr     byte // sticky LSR error bits (OE), cleared by reading LSR
	msrDelta   byte // MSR delta bits, cleared by reading MSR
	thrPending bool // THR-empty interrupt armed
	rx         [SerialFIFOSize]byte
	rxHead     int
	rxLen      int
}

// SerialStats are counters for diagnostics.
type SerialStats struct {
	// InputDropped counts host bytes dropped because the receive FIFO was
	// full or the UART was in loopback mode.
	InputDropped uint64
	// OutputBytes counts bytes written to the output.
	OutputBytes uint64
	// OutputErrors counts failed writes to the output.
	OutputErrors uint64
}

// Serial is an 8250/16550A UART: what Linux's 8250 driver (probe, console,
// interrupt-driven tty) and simple polled guests use. Transmission is
// instantaneous, so THRE and TEMT are always set. The receive FIFO holds
// SerialFIFOSize bytes whether or not the guest enabled the FIFO; the
// receive interrupt fires as soon as one byte is ready (no trigger levels or
// timeouts). Baud rate and line settings are stored but have no effect.
type Serial struct {
	mu    sync.Mutex
	r     serialRegs
	level bool // last level given to irq
	irq   IRQLine

	outMu sync.Mutex // orders output without holding mu
	out   io.Writer

	space     chan struct{} // a byte left the receive FIFO (for PumpInput)
	done      chan struct{} // closed by Close
	closeOnce sync.Once

	inDropped, outBytes, outErrors atomic.Uint64
}

// NewSerial returns a UART in its reset state. Transmitted bytes go to out
// (nil discards them); write errors are counted, not returned. out is
// written from the vCPU thread without the UART lock held, so it should not
// block for long: wrap a slow sink in a buffered or asynchronous writer.
// irq may be nil.
func NewSerial(out io.Writer, irq IRQLine) *Serial {
	s := &Serial{
		irq:   irq,
		out:   out,
		space: make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	s.r.dll = 0x0c // 9600 baud with the PC's 1.8432 MHz clock
	return s
}

// Read implements Device. Each byte of a wide access reads the register at
// the next offset; offsets past the UART read as 0xff.
func (s *Serial) Read(offset uint64, data []byte) {
	s.mu.Lock()
	before := s.r.rxLen
	for i := range data {
		off := offset + uint64(i)
		if off < offset || off >= SerialPorts {
			data[i] = 0xff
			continue
		}
		data[i] = s.readReg(off)
	}
	s.updateIRQ()
	freed := s.r.rxLen < before
	s.mu.Unlock()
	if freed {
		s.signalSpace()
	}
}

// Write implements Device. Each byte of a wide access writes the register
// at the next offset; offsets past the UART are ignored.
func (s *Serial) Write(offset uint64, data []byte) {
	var buf [8]byte
	out := buf[:0]
	s.mu.Lock()
	before := s.r.rxLen
	for i, v := range data {
		off := offset + uint64(i)
		if off < offset || off >= SerialPorts {
			continue
		}
		if s.writeReg(off, v) {
			out = append(out, v)
		}
	}
	s.updateIRQ()
	freed := s.r.rxLen < before
	s.mu.Unlock()
	if freed {
		s.signalSpace()
	}
	if len(out) > 0 {
		s.emit(out)
	}
}

// readReg reads one register; s.mu is held.
func (s *Serial) readReg(off uint64) byte {
	r := &s.r
	switch off {
	case serialRBR:
		if r.lcr&lcrDLAB != 0 {
			return r.dll
		}
		return s.popRX()
	case serialIER:
		if r.lcr&lcrDLAB != 0 {
			return r.dlm
		}
		return r.ier
	case serialIIR:
		id := s.interruptID()
		if id == iirTHRI {
			// Reading IIR acknowledges a THR-empty interrupt it reports.
			r.thrPending = false
		}
		if r.fcr&fcrEnable != 0 {
			id |= iirFIFO
		}
		return id
	case serialLCR:
		return r.lcr
	case serialMCR:
		return r.mcr
	case serialLSR:
		v := byte(lsrTHRE|lsrTEMT) | r.lsrErr
		if r.rxLen > 0 {
			v |= lsrDR
		}
		r.lsrErr = 0
		return v
	case serialMSR:
		v := s.modemStatus() | r.msrDelta
		r.msrDelta = 0
		return v
	case serialSCR:
		return r.scr
	}
	return 0xff
}

// writeReg writes one register and reports whether v is a byte to
// transmit; s.mu is held.
func (s *Serial) writeReg(off uint64, v byte) bool {
	r := &s.r
	switch off {
	case serialRBR:
		if r.lcr&lcrDLAB != 0 {
			r.dll = v
			return false
		}
		// The byte leaves at once, so the holding register is empty
		// again: writing THR clears the THR-empty interrupt and the
		// instant transmission re-arms it.
		r.thrPending = true
		if r.mcr&mcrLoop != 0 {
			if !s.pushRX(v) {
				r.lsrErr |= lsrOE
			}
			return false
		}
		return true
	case serialIER:
		if r.lcr&lcrDLAB != 0 {
			r.dlm = v
			return false
		}
		v &= ierMask
		if v&ierTHRI != 0 && r.ier&ierTHRI == 0 {
			// Enabling THRI while THR is empty raises the interrupt
			// (Linux's UART_BUG_THRE / TXEN tests rely on it).
			r.thrPending = true
		}
		r.ier = v
	case serialIIR: // FCR
		if v&fcrClearRX != 0 {
			r.rxHead, r.rxLen = 0, 0
		}
		if v&fcrEnable != 0 {
			r.fcr = v & fcrStoreMask
		} else {
			r.fcr = 0
		}
	case serialLCR:
		r.lcr = v
	case serialMCR:
		old := s.modemStatus()
		r.mcr = v & mcrMask
		r.msrDelta |= msrDeltas(old, s.modemStatus())
	case serialSCR:
		r.scr = v
	}
	// LSR and MSR writes (factory test) are ignored.
	return false
}

// modemStatus returns the MSR status bits (without deltas); s.mu is held.
// In loopback the modem outputs feed the inputs (DTR→DSR, RTS→CTS,
// OUT1→RI, OUT2→DCD); otherwise a cable with carrier is attached.
func (s *Serial) modemStatus() byte {
	m := s.r.mcr
	if m&mcrLoop == 0 {
		return msrDCD | msrDSR | msrCTS
	}
	var v byte
	if m&mcrDTR != 0 {
		v |= msrDSR
	}
	if m&mcrRTS != 0 {
		v |= msrCTS
	}
	if m&mcrOUT1 != 0 {
		v |= msrRI
	}
	if m&mcrOUT2 != 0 {
		v |= msrDCD
	}
	return v
}

// msrDeltas returns the MSR delta bits for a change of status bits.
func msrDeltas(old, cur byte) byte {
	ch := old ^ cur
	var d byte
	if ch&msrCTS != 0 {
		d |= msrDCTS
	}
	if ch&msrDSR != 0 {
		d |= msrDDSR
	}
	if ch&msrDCD != 0 {
		d |= msrDDCD
	}
	if old&msrRI != 0 && cur&msrRI == 0 {
		d |= msrTERI // trailing edge only
	}
	return d
}

// interruptID returns the highest-priority pending, enabled interrupt as
// IIR bits 0-3 (iirNoInt when none); s.mu is held.
func (s *Serial) interruptID() byte {
	r := &s.r
	switch {
	case r.ier&ierRLSI != 0 && r.lsrErr != 0:
		return iirRLSI
	case r.ier&ierRDI != 0 && r.rxLen > 0:
		return iirRDI
	case r.ier&ierTHRI != 0 && r.thrPending:
		return iirTHRI
	case r.ier&ierMSI != 0 && r.msrDelta != 0:
		return iirMSI
	}
	return iirNoInt
}

// updateIRQ drives the line to match the pending interrupts, calling
// SetLevel only on a change; s.mu is held.
func (s *Serial) updateIRQ() {
	level := s.interruptID() != iirNoInt
	if level == s.level {
		return
	}
	s.level = level
	if s.irq != nil {
		s.irq.SetLevel(level)
	}
}

// pushRX appends v to the receive FIFO and reports false when it is full.
func (s *Serial) pushRX(v byte) bool {
	r := &s.r
	if r.rxLen >= SerialFIFOSize {
		return false
	}
	r.rx[(r.rxHead+r.rxLen)%SerialFIFOSize] = v
	r.rxLen++
	return true
}

// popRX removes the oldest received byte; an empty FIFO reads 0.
func (s *Serial) popRX() byte {
	r := &s.r
	if r.rxLen == 0 {
		return 0
	}
	v := r.rx[r.rxHead]
	r.rxHead = (r.rxHead + 1) % SerialFIFOSize
	r.rxLen--
	return v
}

// signalSpace wakes PumpInput after bytes left the receive FIFO.
func (s *Serial) signalSpace() {
	select {
	case s.space <- struct{}{}:
	default:
	}
}

// emit sends transmitted bytes to the output.
func (s *Serial) emit(p []byte) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	if s.out == nil {
		return
	}
	n, err := s.out.Write(p)
	if n > 0 {
		s.outBytes.Add(uint64(n))
	}
	if err != nil {
		s.outErrors.Add(1)
	}
}

// Input queues bytes received from the host (typed by the user) in the
// receive FIFO and raises the receive interrupt when the guest enabled it.
// Bytes that do not fit are dropped, counted and flagged to the guest as an
// overrun (LSR OE). In loopback mode the line is disconnected and input is
// dropped.
func (s *Serial) Input(p []byte) {
	n := s.accept(p)
	if n == len(p) {
		return
	}
	s.inDropped.Add(uint64(len(p) - n))
	s.mu.Lock()
	s.r.lsrErr |= lsrOE
	s.updateIRQ()
	s.mu.Unlock()
}

// accept queues as many bytes of p as fit and returns how many it consumed.
// In loopback mode it consumes (drops and counts) all of them.
func (s *Serial) accept(p []byte) int {
	if len(p) == 0 {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.r.mcr&mcrLoop != 0 {
		s.inDropped.Add(uint64(len(p)))
		return len(p)
	}
	n := 0
	for n < len(p) && s.pushRX(p[n]) {
		n++
	}
	s.updateIRQ()
	return n
}

// PumpInput copies r into the receive FIFO until r returns an error (EOF
// included) or Close is called; run it in its own goroutine. Unlike Input
// it does not drop bytes when the FIFO is full: it waits for the guest to
// read. Close cannot interrupt a Read that is blocked in r.
func (s *Serial) PumpInput(r io.Reader) {
	buf := make([]byte, 256)
	for {
		n, err := r.Read(buf)
		if n < 0 || n > len(buf) {
			return // a broken reader
		}
		p := buf[:n]
		for len(p) > 0 {
			p = p[s.accept(p):]
			if len(p) == 0 {
				break
			}
			select {
			case <-s.space:
			case <-s.done:
				return
			}
		}
		if err != nil {
			return
		}
		select {
		case <-s.done:
			return
		default:
		}
	}
}

// Close makes PumpInput return once its current Read returns. It is
// idempotent and always returns nil.
func (s *Serial) Close() error {
	s.closeOnce.Do(func() { close(s.done) })
	return nil
}

// Stats returns the UART's counters.
func (s *Serial) Stats() SerialStats {
	return SerialStats{
		InputDropped: s.inDropped.Load(),
		OutputBytes:  s.outBytes.Load(),
		OutputErrors: s.outErrors.Load(),
	}
}

// Serial state encoding, version 1 (little-endian):
//
//	0  u16 version (1)
//	2  IER, LCR, MCR, SCR, DLL, DLM, FCR (7 bytes)
//	9  LSR error bits (only OE), MSR delta bits (low nibble)
//	11 flags: bit 0 THR-empty interrupt pending
//	12 u8 receive FIFO count n (<= SerialFIFOSize)
//	13 n bytes of FIFO contents, oldest first
const (
	serialStateVersion = 1
	serialStateHeader  = 13
)

// SaveState encodes the UART registers and receive FIFO.
func (s *Serial) SaveState() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &s.r
	b := make([]byte, serialStateHeader, serialStateHeader+r.rxLen)
	binary.LittleEndian.PutUint16(b[0:], serialStateVersion)
	copy(b[2:], []byte{r.ier, r.lcr, r.mcr, r.scr, r.dll, r.dlm, r.fcr, r.lsrErr, r.msrDelta})
	if r.thrPending {
		b[11] = 1
	}
	b[12] = byte(r.rxLen)
	for i := 0; i < r.rxLen; i++ {
		b = append(b, r.rx[(r.rxHead+i)%SerialFIFOSize])
	}
	return b, nil
}

// RestoreState replaces the UART state with one produced by SaveState. The
// bytes are untrusted: the length, version, reserved bits and FIFO count are
// checked, and on error the UART is unchanged. The interrupt line is then
// driven to the restored level (SetLevel is called even when unchanged, so
// the irqchip matches the device).
func (s *Serial) RestoreState(b []byte) error {
	if len(b) < serialStateHeader {
		return fmt.Errorf("serial: %w: %d bytes, need at least %d", ErrInvalidState, len(b), serialStateHeader)
	}
	if v := binary.LittleEndian.Uint16(b); v != serialStateVersion {
		return fmt.Errorf("serial: %w: version %d, want %d", ErrInvalidState, v, serialStateVersion)
	}
	var r serialRegs
	r.ier, r.lcr, r.mcr, r.scr, r.dll, r.dlm, r.fcr, r.lsrErr, r.msrDelta = b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10]
	flags, n := b[11], int(b[12])
	switch {
	case r.ier&^ierMask != 0:
		return fmt.Errorf("serial: %w: IER %#x has reserved bits", ErrInvalidState, r.ier)
	case r.mcr&^mcrMask != 0:
		return fmt.Errorf("serial: %w: MCR %#x has reserved bits", ErrInvalidState, r.mcr)
	case r.fcr&^fcrStoreMask != 0 || (r.fcr != 0 && r.fcr&fcrEnable == 0):
		return fmt.Errorf("serial: %w: FCR %#x is not a stored value", ErrInvalidState, r.fcr)
	case r.lsrErr&^lsrOE != 0:
		return fmt.Errorf("serial: %w: LSR error bits %#x", ErrInvalidState, r.lsrErr)
	case r.msrDelta&^msrDeltaMask != 0:
		return fmt.Errorf("serial: %w: MSR delta bits %#x", ErrInvalidState, r.msrDelta)
	case flags&^1 != 0:
		return fmt.Errorf("serial: %w: flags %#x", ErrInvalidState, flags)
	case n > SerialFIFOSize:
		return fmt.Errorf("serial: %w: FIFO count %d exceeds %d", ErrInvalidState, n, SerialFIFOSize)
	case len(b) != serialStateHeader+n:
		return fmt.Errorf("serial: %w: %d bytes for a FIFO of %d, want %d", ErrInvalidState, len(b), n, serialStateHeader+n)
	}
	r.thrPending = flags&1 != 0
	r.rxLen = copy(r.rx[:], b[serialStateHeader:])

	s.mu.Lock()
	s.r = r
	s.level = s.interruptID() != iirNoInt
	if s.irq != nil {
		s.irq.SetLevel(s.level)
	}
	s.mu.Unlock()
	s.signalSpace()
	return nil
}
