// Package binenc reads and writes the little-endian encodings godwit's
// saved state uses (device sections, vCPU and VM-wide KVM state). The
// Decoder treats its input as hostile: every read is bounds-checked,
// every length and count is checked against a caller's bound before
// anything is allocated for it, and the first failure sticks, so a
// decoding function reads field after field and checks one error at the
// end (Finish), which also rejects trailing bytes.
//
// Errors name what went wrong but not which encoding: callers wrap them
// with their own context and sentinel (devices.ErrInvalidState, the vmm's
// saved-state error). The migration wire format (package migrate) has a
// decoder of the same shape in wire.go that can move onto this one.
package binenc

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrTruncated is wrapped by the error of a read past the end of the input.
var ErrTruncated = errors.New("truncated")

// ErrTooLarge is wrapped by the error of a length or count above its bound.
var ErrTooLarge = errors.New("too large")

var le = binary.LittleEndian

// Decoder reads little-endian values from a byte slice. After the first
// failure every read returns a zero value (nil for slices) and Err reports
// that failure. The zero Decoder has no input.
type Decoder struct {
	b   []byte
	err error
}

// NewDecoder returns a Decoder over b. Slices it returns from Take alias b.
func NewDecoder(b []byte) *Decoder { return &Decoder{b: b} }

// Err returns the first failure, or nil.
func (d *Decoder) Err() error { return d.err }

// Len returns the number of bytes not read yet.
func (d *Decoder) Len() int { return len(d.b) }

// Fail records err as the decoder's failure unless one is recorded
// already; callers use it for their own checks between reads.
func (d *Decoder) Fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

// Finish returns the first failure, or an error when bytes are left over.
func (d *Decoder) Finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	return d.err
}

// Take returns the next n bytes (aliasing the input, with their capacity
// capped so an append cannot overwrite what follows), or nil when fewer
// are left or n is negative.
func (d *Decoder) Take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = fmt.Errorf("%w: need %d more bytes, have %d", ErrTruncated, n, len(d.b))
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

// U8 reads a byte.
func (d *Decoder) U8() uint8 {
	if p := d.Take(1); p != nil {
		return p[0]
	}
	return 0
}

// U16 reads a little-endian uint16.
func (d *Decoder) U16() uint16 {
	if p := d.Take(2); p != nil {
		return le.Uint16(p)
	}
	return 0
}

// U32 reads a little-endian uint32.
func (d *Decoder) U32() uint32 {
	if p := d.Take(4); p != nil {
		return le.Uint32(p)
	}
	return 0
}

// U64 reads a little-endian uint64.
func (d *Decoder) U64() uint64 {
	if p := d.Take(8); p != nil {
		return le.Uint64(p)
	}
	return 0
}

// Count reads a uint32 count of things called what and checks it against
// max; on failure it returns 0, so a caller may size a slice with it.
func (d *Decoder) Count(max int, what string) int {
	n := d.U32()
	if d.err == nil && int64(n) > int64(max) {
		d.err = fmt.Errorf("%w: %d %s, at most %d", ErrTooLarge, n, what, max)
	}
	if d.err != nil {
		return 0
	}
	return int(n)
}

// Blob reads a uint32 length of at most max bytes and that many bytes, and
// returns a copy of them (nil for a zero length). The length
// is checked against max and against the input before anything is
// allocated.
func (d *Decoder) Blob(max int) []byte {
	n := d.U32()
	if d.err == nil && int64(n) > int64(max) {
		d.err = fmt.Errorf("%w: blob of %d bytes, at most %d", ErrTooLarge, n, max)
	}
	p := d.Take(int(n))
	if d.err != nil {
		return nil
	}
	return append([]byte(nil), p...)
}

// Fixed decodes a fixed-size value (an integer, an array or a struct of
// them, such as a kernel ABI mirror; a pointer to it, or a slice of them)
// into v. A type that is not fixed-size is a programming error and fails
// the decoder.
func (d *Decoder) Fixed(v any) {
	if d.err != nil {
		return
	}
	n := binary.Size(v)
	if n < 0 {
		d.err = fmt.Errorf("binenc: %T is not a fixed-size type", v)
		return
	}
	p := d.Take(n)
	if d.err != nil {
		return
	}
	if _, err := binary.Decode(p, le, v); err != nil {
		d.err = fmt.Errorf("decoding %T: %v", v, err)
	}
}

// AppendBlob appends a uint32 length and blob to b: what Blob reads.
func AppendBlob(b, blob []byte) []byte {
	return append(le.AppendUint32(b, uint32(len(blob))), blob...)
}

// AppendFixed appends the little-endian encoding of a fixed-size value
// (see Decoder.Fixed) to b. It panics for a type that is not fixed-size:
// that is a programming error, caught by the encoder's tests.
func AppendFixed(b []byte, v any) []byte {
	out, err := binary.Append(b, le, v)
	if err != nil {
		panic(fmt.Sprintf("binenc: encoding %T: %v", v, err))
	}
	return out
}
