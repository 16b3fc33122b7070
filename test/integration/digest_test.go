package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// digestBlock is the unit of contentDigest: blocks of zeros are skipped.
const digestBlock = 4096

// contentDigest returns a SHA-256 digest of a file's content that reads
// only its data extents (SEEK_DATA/SEEK_HOLE): the hash runs over the
// offset and bytes of every 4 KiB block that is not all zeros, then the
// file size. Two files with the same content have the same digest however
// each is allocated (a hole and written zeros hash alike), so a sparse
// 64 MiB image with 4 MiB of data costs 4 MiB of reading and hashing, not
// 64: under the nested host's TCG, SHA-256 runs at about 16 MB/s and
// hashing whole images took half of every storage hop.
func contentDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	size := fi.Size()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	zero := make([]byte, digestBlock)
	var next int64 // the first block not hashed yet
	for next < size {
		data, err := unix.Seek(int(f.Fd()), next, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole from next on
		}
		if err != nil {
			return "", err
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return "", err
		}
		start := max(next, data&^(digestBlock-1))
		end := min(size, (hole+digestBlock-1)&^(digestBlock-1))
		for off := start; off < end; {
			n := int(min(int64(len(buf)), end-off))
			if _, err := f.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
				return "", err
			}
			for b := 0; b < n; b += digestBlock {
				block := buf[b:min(b+digestBlock, n)]
				if bytes.Equal(block, zero[:len(block)]) {
					continue
				}
				h.Write(binary.LittleEndian.AppendUint64(nil, uint64(off)+uint64(b)))
				h.Write(block)
			}
			off += int64(n)
		}
		next = end
	}
	h.Write(binary.LittleEndian.AppendUint64(nil, uint64(size)))
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fileSHA returns the content digest (contentDigest) of the file at path.
func fileSHA(t *testing.T, path string) string {
	t.Helper()
	sum, err := contentDigest(path)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// TestContentDigest checks that contentDigest depends on a file's
// content only: the same bytes sparse or written out give one digest, and
// a changed byte, a moved block or another size another.
func TestContentDigest(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("godwit!"), 3000) // 21000 bytes: not block-aligned
	type write struct {
		off  int64
		data []byte
	}
	file := func(name string, size int64, writes ...write) string {
		t.Helper()
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		for _, w := range writes {
			if _, err := f.WriteAt(w.data, w.off); err != nil {
				t.Fatal(err)
			}
		}
		return fileSHA(t, p)
	}
	const size = 8 << 20
	changed := append([]byte(nil), data...)
	changed[20999] ^= 1
	base := file("sparse", size, write{3 << 20, data})
	for _, tt := range []struct {
		name   string
		digest string
		same   bool
	}{
		{"written zeros around the data", file("dense", size, write{0, make([]byte, size)}, write{3 << 20, data}), true},
		{"data at the very end", file("end", size, write{size - int64(len(data)), data}), false},
		{"one bit changed", file("changed", size, write{3 << 20, changed}), false},
		{"moved by a block", file("moved", size, write{3<<20 + digestBlock, data}), false},
		{"another size", file("larger", size+digestBlock, write{3 << 20, data}), false},
		{"empty", file("empty", 0), false},
	} {
		if got := tt.digest == base; got != tt.same {
			t.Errorf("%s: same digest as the sparse file: %v, want %v", tt.name, got, tt.same)
		}
	}
	if end, again := file("end2", size, write{size - int64(len(data)), data}), file("end3", size, write{size - int64(len(data)), data}); end != again {
		t.Errorf("one content, two digests: %s, %s", end, again)
	}
}
