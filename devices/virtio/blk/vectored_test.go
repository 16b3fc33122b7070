package blk

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestImageFileVectored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	img := imageFile{f}
	defer img.Close()
	bufs := [][]byte{bytes.Repeat([]byte{1}, 512), {}, bytes.Repeat([]byte{2}, 4096), bytes.Repeat([]byte{3}, 1000)}
	// More buffers than one call takes.
	for i := 0; i < maxIOV+10; i++ {
		bufs = append(bufs, []byte{byte(i)})
	}
	var want []byte
	for _, b := range bufs {
		want = append(want, b...)
	}
	n, err := img.WriteVAt(bufs, 512)
	if err != nil || n != len(want) {
		t.Fatalf("WriteVAt = %d, %v; want %d", n, err, len(want))
	}
	for _, tt := range []struct {
		name    string
		sizes   []int
		off     int64
		wantN   int
		wantErr bool
	}{
		{"everything in three buffers", []int{100, 0, len(want) - 100}, 512, len(want), false},
		{"one buffer", []int{len(want)}, 512, len(want), false},
		{"past the end", []int{512, 512}, 512 + int64(len(want)) - 700, 700, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var rbufs [][]byte
			for _, s := range tt.sizes {
				rbufs = append(rbufs, make([]byte, s))
			}
			n, err := img.ReadVAt(rbufs, tt.off)
			if n != tt.wantN || (err != nil) != tt.wantErr {
				t.Fatalf("ReadVAt = %d, %v; want %d bytes, error %v", n, err, tt.wantN, tt.wantErr)
			}
			var got []byte
			for _, b := range rbufs {
				got = append(got, b...)
			}
			start := int(tt.off - 512)
			if !bytes.Equal(got[:n], want[start:start+n]) {
				t.Error("read back different bytes")
			}
		})
	}
}
