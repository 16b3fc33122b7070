package boot

import "fmt"

// Mode is the CPU mode the boot CPU starts in.
type Mode int

const (
	// RealMode starts the CPU in real mode with flat zero-based segments
	// (boot sectors and flat real-mode images).
	RealMode Mode = iota
	// LongMode starts the CPU in 64-bit mode with paging on, the GDT and
	// identity map written by WriteLongModeSetup (Linux, flat 64-bit images).
	LongMode
)

// String returns the mode's name.
func (m Mode) String() string {
	switch m {
	case RealMode:
		return "real mode"
	case LongMode:
		return "long mode"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}
