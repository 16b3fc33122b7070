package storage

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Source is a disk image read by a storage migration's source: opened
// read-only, so the migration cannot modify it. Its reads see the writes
// of the VM's own descriptor (the same page cache).
type Source struct {
	f    *os.File
	size uint64
}

// OpenSource opens the image at path, whose disk is size bytes, for
// reading. The file must hold at least size bytes.
func OpenSource(path string, size uint64) (*Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening the image for the migration: %w", err)
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil || uint64(end) < size {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%d bytes, the disk has %d", end, size)
		}
		return nil, fmt.Errorf("image %s: %w", path, err)
	}
	return &Source{f: f, size: size}, nil
}

// Size returns the disk size in bytes.
func (s *Source) Size() uint64 { return s.size }

// ReadAt reads the image (pread).
func (s *Source) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }

// ReadvAt reads the image at off into bufs, in order, with one preadv(2):
// the migration engine reads a run of blocks straight into the frame it
// sends. Like preadv it may read less than asked (at the end of the
// file, after a signal); it returns the bytes read.
func (s *Source) ReadvAt(bufs [][]byte, off int64) (int, error) {
	return vectored(s.f, bufs, off, unix.Preadv)
}

// MarkData sets in dst a bit for every block of blockSize bytes that
// overlaps data of the image (bit i%64 of word i/64 is block i).
func (s *Source) MarkData(blockSize uint64, dst []uint64) error {
	return MarkData(s.f, s.size, blockSize, dst)
}

// AllocatedBytes returns the bytes the image has allocated on its file
// system, at most its size: what a copy needs at least.
func (s *Source) AllocatedBytes() (uint64, error) { return allocated(s.f, s.size) }

// Close closes the image.
func (s *Source) Close() error { return s.f.Close() }

// allocated returns the allocated bytes of f (st_blocks), at most limit.
func allocated(f *os.File, limit uint64) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	return min(uint64(st.Blocks)*512, limit), nil
}

// MarkData sets in dst a bit for every block of blockSize bytes among the
// first size bytes of f that overlaps a data extent (SEEK_DATA,
// SEEK_HOLE): the holes of a sparse file are left clear. Where the file
// system cannot tell (EINVAL), everything from there on counts as data.
// dst must hold a bit per block.
func MarkData(f *os.File, size, blockSize uint64, dst []uint64) error {
	if blockSize == 0 {
		return errors.New("storage: block size 0")
	}
	blocks := (size + blockSize - 1) / blockSize
	if uint64(len(dst))*64 < blocks {
		return fmt.Errorf("storage: bitmap of %d words for %d blocks", len(dst), blocks)
	}
	mark := func(start, end uint64) { // [start, end) in bytes
		for b := start / blockSize; b*blockSize < end; b++ {
			dst[b/64] |= 1 << (b % 64)
		}
	}
	for off := uint64(0); off < size; {
		start, err := f.Seek(int64(off), unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			return nil // no data at or after off
		case errors.Is(err, unix.EINVAL):
			mark(off, size)
			return nil
		case err != nil:
			return fmt.Errorf("storage: SEEK_DATA at %d: %w", off, err)
		}
		if uint64(start) >= size {
			return nil
		}
		end, err := f.Seek(start, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("storage: SEEK_HOLE at %d: %w", start, err)
		}
		e := min(uint64(end), size)
		if e <= uint64(start) {
			e = size // a file system that reports no hole after data
		}
		mark(uint64(start), e)
		off = e
	}
	return nil
}

// vectored runs a preadv/pwritev-like call on f's descriptor, which stays
// open meanwhile, retrying when a signal interrupts it.
func vectored(f *os.File, bufs [][]byte, off int64, call func(fd int, iovs [][]byte, off int64) (int, error)) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		for {
			n, cerr = call(int(fd), bufs, off)
			if !errors.Is(cerr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return 0, err
	}
	return n, cerr
}

// advance returns what of bufs remains after its first n bytes, without
// changing bufs.
func advance(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if n > 0 && len(bufs) > 0 {
		bufs = append([][]byte{bufs[0][n:]}, bufs[1:]...)
	}
	return bufs
}
