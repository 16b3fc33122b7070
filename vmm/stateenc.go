package vmm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// errState wraps every rejection of saved state.
var errState = errors.New("invalid saved state")

// stateEncoder appends fixed-size little-endian values to a section.
type stateEncoder struct{ buf bytes.Buffer }

// put appends v (a fixed-size value: a kernel ABI mirror or an integer).
func (e *stateEncoder) put(v any) {
	// binary.Write into a bytes.Buffer only fails for types that are not
	// fixed-size, which is a programming error caught by the tests.
	if err := binary.Write(&e.buf, binary.LittleEndian, v); err != nil {
		panic(fmt.Sprintf("vmm: encoding %T: %v", v, err))
	}
}

// bytes returns the encoding.
func (e *stateEncoder) bytes() []byte { return e.buf.Bytes() }

// stateDecoder reads what stateEncoder wrote, treating it as untrusted.
type stateDecoder struct {
	r    *bytes.Reader
	what string
	err  error
}

func newStateDecoder(what string, b []byte) *stateDecoder {
	return &stateDecoder{r: bytes.NewReader(b), what: what}
}

// get reads v; after the first error it does nothing.
func (d *stateDecoder) get(v any) {
	if d.err != nil {
		return
	}
	if binary.Size(v) > d.r.Len() {
		d.err = fmt.Errorf("%w: %s: truncated (need %d more bytes, have %d)", errState, d.what, binary.Size(v), d.r.Len())
		return
	}
	if err := binary.Read(d.r, binary.LittleEndian, v); err != nil {
		d.err = fmt.Errorf("%w: %s: %v", errState, d.what, err)
	}
}

// count reads a uint32 count and checks it against max.
func (d *stateDecoder) count(max int, of string) int {
	var n uint32
	d.get(&n)
	if d.err == nil && int64(n) > int64(max) {
		d.err = fmt.Errorf("%w: %s: %d %s, at most %d", errState, d.what, n, of, max)
	}
	if d.err != nil {
		return 0
	}
	return int(n)
}

// finish reports the first error, or trailing bytes.
func (d *stateDecoder) finish() error {
	if d.err != nil {
		return d.err
	}
	if d.r.Len() != 0 {
		return fmt.Errorf("%w: %s: %d trailing bytes", errState, d.what, d.r.Len())
	}
	return nil
}

var _ io.Reader = (*bytes.Reader)(nil)
