package binenc

import (
	"errors"
	"testing"
)

type pair struct {
	A uint32
	B [2]uint16
}

func TestRoundTrip(t *testing.T) {
	b := []byte{7}
	b = le.AppendUint16(b, 0x1234)
	b = le.AppendUint32(b, 0xdeadbeef)
	b = le.AppendUint64(b, 1<<60)
	b = AppendBlob(b, []byte("abc"))
	b = AppendBlob(b, nil)
	b = le.AppendUint32(b, 2)
	b = AppendFixed(b, []pair{{1, [2]uint16{2, 3}}, {4, [2]uint16{5, 6}}})

	d := NewDecoder(b)
	if d.U8() != 7 || d.U16() != 0x1234 || d.U32() != 0xdeadbeef || d.U64() != 1<<60 {
		t.Fatal("integers do not round-trip")
	}
	if got := d.Blob(3); string(got) != "abc" {
		t.Fatalf("blob %q", got)
	}
	if got := d.Blob(3); got != nil {
		t.Fatalf("empty blob %q, want nil", got)
	}
	ps := make([]pair, d.Count(2, "pairs"))
	d.Fixed(ps)
	if err := d.Finish(); err != nil {
		t.Fatal(err)
	}
	if ps[1].B[1] != 6 {
		t.Fatalf("pairs %+v", ps)
	}
}

func TestFailuresStick(t *testing.T) {
	d := NewDecoder([]byte{1, 2, 3})
	if d.U32() != 0 || !errors.Is(d.Err(), ErrTruncated) {
		t.Fatalf("short read: %v", d.Err())
	}
	if d.U8() != 0 || d.Take(0) != nil || d.Len() != 3 {
		t.Fatal("a read after a failure returned data")
	}

	d = NewDecoder(le.AppendUint32(nil, 5))
	if n := d.Count(4, "things"); n != 0 || !errors.Is(d.Err(), ErrTooLarge) {
		t.Fatalf("count 5 of at most 4: %d, %v", n, d.Err())
	}

	// A blob length beyond its bound fails before the input is looked at.
	d = NewDecoder(le.AppendUint32(nil, 1<<31))
	if d.Blob(1<<20) != nil || !errors.Is(d.Err(), ErrTooLarge) {
		t.Fatalf("huge blob: %v", d.Err())
	}

	d = NewDecoder([]byte{1, 2})
	d.U8()
	if err := d.Finish(); err == nil {
		t.Fatal("trailing byte accepted")
	}

	d = NewDecoder(nil)
	d.Fixed(map[int]int{})
	if d.Err() == nil {
		t.Fatal("a map decoded")
	}
}

func TestTakeCapsCapacity(t *testing.T) {
	b := []byte{1, 2, 3, 4}
	p := NewDecoder(b).Take(2)
	p = append(p, 9)
	if b[2] != 3 {
		t.Fatal("append through Take overwrote the input")
	}
	_ = p
}

// FuzzDecoder runs a decoding program from the input over the input's
// tail: each op byte selects a read. It must never panic, never return
// more bytes than the input holds, and once it fails stay failed.
func FuzzDecoder(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4}, AppendBlob([]byte{1, 0, 2, 0, 0, 0}, []byte("xyz")))
	f.Add([]byte{5, 5, 6}, le.AppendUint32(nil, 1<<30))
	f.Fuzz(func(t *testing.T, ops, in []byte) {
		d := NewDecoder(in)
		got := 0
		failed := false
		for _, op := range ops {
			before := d.Len()
			switch op % 7 {
			case 0:
				d.U8()
			case 1:
				d.U16()
			case 2:
				d.U32()
			case 3:
				d.U64()
			case 4:
				got += len(d.Take(int(op >> 3)))
			case 5:
				got += len(d.Blob(64))
			case 6:
				ps := make([]pair, d.Count(8, "pairs"))
				d.Fixed(ps)
			}
			if d.Len() > before {
				t.Fatal("the input grew")
			}
			if failed && d.Err() == nil {
				t.Fatal("a failure did not stick")
			}
			failed = d.Err() != nil
		}
		if got > len(in) {
			t.Fatalf("returned %d bytes of a %d-byte input", got, len(in))
		}
		if err := d.Finish(); err == nil && d.Len() != 0 {
			t.Fatal("Finish accepted trailing bytes")
		}
	})
}
