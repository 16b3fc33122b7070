package guest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// Parameter block identity.
const (
	// Magic is the first eight bytes of the parameter block.
	Magic = "GDWTPARM"
	// Version is the parameter block version this package writes.
	Version = 1
	// ParamSize is the size in bytes of the parameter block, status area included.
	ParamSize = 0x58
)

// Byte offsets of the parameter block fields (see the package documentation).
const (
	OffMagic          = 0x00 // u64 magic
	OffVersion        = 0x08 // u32 version
	OffSize           = 0x0C // u32 block size
	OffRangeStart     = 0x10 // u64 first page of the range
	OffRangeEnd       = 0x18 // u64 end of the range, exclusive
	OffHeartbeatEvery = 0x20 // u64 passes between heartbeats
	OffMaxPagesPerSec = 0x28 // u64 dirty-rate limit
	OffTSCKHz         = 0x30 // u64 TSC frequency in kHz
	OffSerialPort     = 0x38 // u16 serial base port
	OffPasses         = 0x40 // u64 completed passes (guest-written)
	OffAlive          = 0x48 // u64 liveness counter (guest-written)
	OffState          = 0x50 // u64 guest state (guest-written)
)

// DefaultHeartbeatEvery is the default number of passes between heartbeats.
// A pass over a 256 MiB guest touches about 65k pages: about 1/30 s under
// plain QEMU TCG, but 3-4 s in the nested host (KVM under TCG, measured
// 2026-11-27), so every pass prints one to show life within seconds there.
const DefaultHeartbeatEvery = 1

// maxTSCKHz bounds Params.TSCKHz: the guest computes tsc_khz*1000 in 64 bits.
const maxTSCKHz = 1 << 32

// Params are the test guest's inputs, written into the parameter block.
type Params struct {
	// RangeStart is the page-aligned GPA of the first dirtied page.
	RangeStart uint64
	// RangeEnd is the page-aligned end of the range, exclusive.
	RangeEnd uint64
	// HeartbeatEvery is the number of passes between heartbeat lines; 0 = never.
	HeartbeatEvery uint64
	// MaxPagesPerSec limits the dirty rate; 0 = unlimited.
	MaxPagesPerSec uint64
	// TSCKHz is the guest TSC frequency (KVM_GET_TSC_KHZ); the VMM sets it.
	// It must be non-zero when MaxPagesPerSec is.
	TSCKHz uint64
	// SerialPort is the 8250 base I/O port the guest prints to.
	SerialPort uint16
}

// DefaultParams returns parameters that dirty [2 MiB, lowRAMEnd) (lowRAMEnd
// is the end of the RAM below 4 GiB, rounded down to a page), print a
// heartbeat every DefaultHeartbeatEvery passes on COM1 and do not limit the
// dirty rate. TSCKHz is left zero for the VMM to fill in.
func DefaultParams(lowRAMEnd uint64) Params {
	return Params{
		RangeStart:     2 << 20,
		RangeEnd:       lowRAMEnd &^ (PageSize - 1),
		HeartbeatEvery: DefaultHeartbeatEvery,
		SerialPort:     DefaultSerialPort,
	}
}

// Pages returns the number of pages in the range, or 0 if the range is empty
// or inverted.
func (p Params) Pages() uint64 {
	if p.RangeEnd <= p.RangeStart {
		return 0
	}
	return (p.RangeEnd - p.RangeStart) / PageSize
}

// checkRange validates the range on its own (no RAM size).
func (p Params) checkRange() error {
	switch {
	case p.RangeStart%PageSize != 0:
		return fmt.Errorf("guest: range start %#x is not page aligned", p.RangeStart)
	case p.RangeEnd%PageSize != 0:
		return fmt.Errorf("guest: range end %#x is not page aligned", p.RangeEnd)
	case p.RangeStart >= p.RangeEnd:
		return fmt.Errorf("guest: range %#x-%#x is empty", p.RangeStart, p.RangeEnd)
	}
	return nil
}

// Validate reports whether the guest accepts p in a VM whose RAM is
// contiguous from GPA 0 up to ramSize (the end of RAM below any PCI hole).
// The range must be page aligned, non-empty, start at or above MinRangeStart
// (below it lie the page tables, parameter block, stack and guest image) and
// end within RAM. The serial port must be non-zero, TSCKHz below 2^32, and
// TSCKHz must be set when a rate limit is.
func (p Params) Validate(ramSize uint64) error {
	if err := p.checkRange(); err != nil {
		return err
	}
	if p.RangeStart < MinRangeStart {
		return fmt.Errorf("guest: range start %#x is below %#x and would overlap the page tables, parameter block (%#x), stack (below %#x) or guest image (%#x-%#x)",
			p.RangeStart, MinRangeStart, ParamAddr, StackTop, LoadAddr, LoadAddr+MaxImageSize)
	}
	if p.RangeEnd > ramSize {
		return fmt.Errorf("guest: range end %#x is beyond the end of RAM %#x", p.RangeEnd, ramSize)
	}
	if p.SerialPort == 0 || p.SerialPort > math.MaxUint16-7 {
		return fmt.Errorf("guest: serial port %#x is invalid", p.SerialPort)
	}
	if p.TSCKHz >= maxTSCKHz {
		return fmt.Errorf("guest: TSC frequency %d kHz is implausible (limit %d)", p.TSCKHz, uint64(maxTSCKHz))
	}
	if p.MaxPagesPerSec != 0 && p.TSCKHz == 0 {
		return errors.New("guest: a dirty-rate limit needs TSCKHz (set it from KVM_GET_TSC_KHZ)")
	}
	return nil
}

// Encode returns the ParamSize bytes of the parameter block for p, with a
// zeroed status area. It does not validate p; call Validate first.
func (p Params) Encode() []byte {
	b := make([]byte, ParamSize)
	le := binary.LittleEndian
	copy(b[OffMagic:], Magic)
	le.PutUint32(b[OffVersion:], Version)
	le.PutUint32(b[OffSize:], ParamSize)
	le.PutUint64(b[OffRangeStart:], p.RangeStart)
	le.PutUint64(b[OffRangeEnd:], p.RangeEnd)
	le.PutUint64(b[OffHeartbeatEvery:], p.HeartbeatEvery)
	le.PutUint64(b[OffMaxPagesPerSec:], p.MaxPagesPerSec)
	le.PutUint64(b[OffTSCKHz:], p.TSCKHz)
	le.PutUint16(b[OffSerialPort:], p.SerialPort)
	return b
}

// checkHeader validates the magic, version and size of a block.
func checkHeader(block []byte) error {
	if len(block) < ParamSize {
		return fmt.Errorf("guest: parameter block is %d bytes, want at least %d", len(block), ParamSize)
	}
	if string(block[OffMagic:OffMagic+8]) != Magic {
		return fmt.Errorf("guest: parameter block magic %q, want %q", block[OffMagic:OffMagic+8], Magic)
	}
	if v := binary.LittleEndian.Uint32(block[OffVersion:]); v != Version {
		return fmt.Errorf("guest: parameter block version %d, want %d", v, Version)
	}
	if s := binary.LittleEndian.Uint32(block[OffSize:]); s < ParamSize {
		return fmt.Errorf("guest: parameter block size field %d, want at least %d", s, ParamSize)
	}
	return nil
}

// DecodeParams parses the inputs of a parameter block (for example one read
// back from guest memory). It checks the header, not the values.
func DecodeParams(block []byte) (Params, error) {
	if err := checkHeader(block); err != nil {
		return Params{}, err
	}
	le := binary.LittleEndian
	return Params{
		RangeStart:     le.Uint64(block[OffRangeStart:]),
		RangeEnd:       le.Uint64(block[OffRangeEnd:]),
		HeartbeatEvery: le.Uint64(block[OffHeartbeatEvery:]),
		MaxPagesPerSec: le.Uint64(block[OffMaxPagesPerSec:]),
		TSCKHz:         le.Uint64(block[OffTSCKHz:]),
		SerialPort:     le.Uint16(block[OffSerialPort:]),
	}, nil
}

// State is the guest's progress as recorded in the status area.
type State uint64

// Guest states.
const (
	// StateNotStarted: the guest has not validated its parameters yet.
	StateNotStarted State = 0
	// StateRunning: the parameters were accepted and passes are running.
	StateRunning State = 1
	// StateBadParams: the guest rejected its parameters and halted.
	StateBadParams State = 2
)

// String returns a readable name for s.
func (s State) String() string {
	switch s {
	case StateNotStarted:
		return "not started"
	case StateRunning:
		return "running"
	case StateBadParams:
		return "bad parameters"
	}
	return "state(" + strconv.FormatUint(uint64(s), 10) + ")"
}

// Status is the guest-written status area of the parameter block.
type Status struct {
	// Passes is the number of completed passes.
	Passes uint64
	// Alive increases while the guest runs, also during rate-limit waits.
	Alive uint64
	// State is the guest's progress.
	State State
}

// ParseStatus checks the header of block (the parameter block as read from
// guest memory at ParamAddr) and returns its status area.
func ParseStatus(block []byte) (Status, error) {
	if err := checkHeader(block); err != nil {
		return Status{}, err
	}
	le := binary.LittleEndian
	return Status{
		Passes: le.Uint64(block[OffPasses:]),
		Alive:  le.Uint64(block[OffAlive:]),
		State:  State(le.Uint64(block[OffState:])),
	}, nil
}

// ReadStatus returns the number of completed passes recorded in block (the
// parameter block as read from guest memory at ParamAddr).
func ReadStatus(block []byte) (passes uint64, err error) {
	s, err := ParseStatus(block)
	if err != nil {
		return 0, err
	}
	return s.Passes, nil
}

// ParamKeys lists the keys ParseParam accepts.
var ParamKeys = []string{"range-start", "range-end", "heartbeat", "rate"}

// ParseArg parses one "key=value" guest argument into p; see ParseParam.
func ParseArg(p *Params, arg string) error {
	key, value, ok := strings.Cut(arg, "=")
	if !ok {
		return fmt.Errorf("guest: argument %q is not key=value (keys: %s)", arg, strings.Join(ParamKeys, ", "))
	}
	return ParseParam(p, key, value)
}

// ParseParam sets one parameter from a `--guest-arg key=value` pair:
//
//	range-start, range-end  GPA: decimal or 0x-hex, optional K, M or G
//	                        suffix (KiB, MiB, GiB), e.g. 2M or 0x200000
//	heartbeat               passes between heartbeats, 0 = never
//	rate                    dirty-rate limit in pages/s, optional K (x1000)
//	                        or M (x1000000) suffix; 0 or "unlimited" = none
//
// Range alignment and bounds are checked by Validate.
func ParseParam(p *Params, key, value string) error {
	if p == nil {
		return errors.New("guest: ParseParam on nil Params")
	}
	value = strings.TrimSpace(value)
	var err error
	switch strings.TrimSpace(key) {
	case "range-start":
		p.RangeStart, err = parseScaled(value, 1<<10)
	case "range-end":
		p.RangeEnd, err = parseScaled(value, 1<<10)
	case "heartbeat":
		p.HeartbeatEvery, err = parseScaled(value, 0)
	case "rate":
		if strings.EqualFold(value, "unlimited") {
			p.MaxPagesPerSec = 0
			return nil
		}
		p.MaxPagesPerSec, err = parseScaled(value, 1000)
	default:
		return fmt.Errorf("guest: unknown parameter %q (keys: %s)", key, strings.Join(ParamKeys, ", "))
	}
	if err != nil {
		return fmt.Errorf("guest: parameter %s=%q: %w", key, value, err)
	}
	return nil
}

// parseScaled parses an unsigned integer (decimal or 0x-hex) with an
// optional K, M or G suffix meaning unit, unit^2, unit^3 (G only when
// unit is 1024). unit 0 disallows suffixes.
func parseScaled(s string, unit uint64) (uint64, error) {
	if s == "" {
		return 0, errors.New("empty value")
	}
	mult := uint64(1)
	if unit != 0 {
		switch s[len(s)-1] {
		case 'k', 'K':
			mult = unit
		case 'm', 'M':
			mult = unit * unit
		case 'g', 'G':
			if unit != 1<<10 {
				return 0, errors.New("suffix G is not allowed here (use K or M)")
			}
			mult = unit * unit * unit
		}
		if mult != 1 {
			s = s[:len(s)-1]
		}
	}
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, errors.New("not an unsigned number")
	}
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			return 0, errors.New("value out of range")
		}
		return 0, errors.New("not an unsigned number")
	}
	hi, lo := bits.Mul64(n, mult)
	if hi != 0 {
		return 0, errors.New("value out of range")
	}
	return lo, nil
}
