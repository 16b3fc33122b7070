package guest

import (
	_ "embed"
	"fmt"
	"strconv"
	"strings"
)

// Binary is the flat test-guest image, built from guest.S by build.sh. It is
// loaded at LoadAddr and entered at its first byte.
//
//go:embed guest.bin
var Binary []byte

// Guest memory layout constants of the execution contract.
const (
	// LoadAddr is the GPA where Binary is loaded; it is also the entry point.
	LoadAddr = 0x100000
	// ParamAddr is the GPA of the parameter block; RSI holds it on entry.
	ParamAddr = 0x5000
	// StackTop is the initial RSP; the stack grows down from it.
	StackTop = 0x80000
	// MaxImageSize bounds len(Binary); the guest owns [LoadAddr, LoadAddr+MaxImageSize).
	MaxImageSize = 64 << 10
	// MinRangeStart is the lowest GPA the dirtied range may start at: it keeps
	// the range clear of low memory (page tables, parameter block, stack) and
	// of the guest image. The guest enforces the same bound.
	MinRangeStart = LoadAddr + MaxImageSize
	// PageSize is the granularity of the dirtied range.
	PageSize = 4096
	// ChunkPages is the number of pages the guest dirties between two
	// rate-limit checks.
	ChunkPages = 64
)

// Serial output of the guest.
const (
	// BannerPrefix starts every line the guest prints about itself.
	BannerPrefix = "godwit test guest"
	// BadParamsLine is printed (followed by "\n") when the parameters are invalid.
	BadParamsLine = BannerPrefix + ": bad parameters"
	// HeartbeatPrefix starts each heartbeat line, followed by the pass count
	// in decimal and "\n".
	HeartbeatPrefix = "heartbeat "
	// DefaultSerialPort is the COM1 base port.
	DefaultSerialPort = 0x3f8
)

// Banner returns the first line the guest prints for p, without the "\n".
func Banner(p Params) string {
	return fmt.Sprintf("%s: range 0x%016x-0x%016x", BannerPrefix, p.RangeStart, p.RangeEnd)
}

// ParseHeartbeat reports whether line (with or without its line ending) is
// a heartbeat line and returns its pass count.
func ParseHeartbeat(line string) (passes uint64, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimRight(line, "\r\n"), HeartbeatPrefix)
	if !found || rest == "" || rest[0] < '0' || rest[0] > '9' {
		return 0, false
	}
	n, err := strconv.ParseUint(rest, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}
