package vmm

import (
	"errors"
	"fmt"

	"godwit/internal/binenc"
)

// errState wraps every rejection of saved state.
var errState = errors.New("invalid saved state")

// stateEncoder appends fixed-size little-endian values to a section.
type stateEncoder struct{ buf []byte }

// put appends v (a fixed-size value: a kernel ABI mirror or an integer).
func (e *stateEncoder) put(v any) { e.buf = binenc.AppendFixed(e.buf, v) }

// bytes returns the encoding.
func (e *stateEncoder) bytes() []byte { return e.buf }

// stateDecoder reads what stateEncoder wrote, treating it as untrusted,
// and names the section in its errors.
type stateDecoder struct {
	d    *binenc.Decoder
	what string
}

func newStateDecoder(what string, b []byte) *stateDecoder {
	return &stateDecoder{d: binenc.NewDecoder(b), what: what}
}

// get reads v; after the first error it does nothing.
func (d *stateDecoder) get(v any) { d.d.Fixed(v) }

// count reads a uint32 count and checks it against max.
func (d *stateDecoder) count(max int, of string) int { return d.d.Count(max, of) }

// finish reports the first error, or trailing bytes.
func (d *stateDecoder) finish() error {
	if err := d.d.Finish(); err != nil {
		return fmt.Errorf("%w: %s: %w", errState, d.what, err)
	}
	return nil
}
