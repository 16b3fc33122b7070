package blk

import (
	"errors"

	"golang.org/x/sys/unix"
)

// maxIOV bounds the buffers of one preadv/pwritev call (the kernel's
// IOV_MAX).
const maxIOV = 1024

// vectored is a backend that reads and writes several buffers in one
// system call: a request's data is usually one guest page per buffer, so
// a 1 MiB request is one call instead of 256.
type vectored interface {
	// ReadVAt fills bufs in order from off and returns the bytes read;
	// it stops early only at the end of the file or on an error.
	ReadVAt(bufs [][]byte, off int64) (int, error)
	// WriteVAt writes bufs in order at off and returns the bytes
	// written; fewer than all only with an error.
	WriteVAt(bufs [][]byte, off int64) (int, error)
}

// ReadVAt implements vectored with preadv(2), retried after short reads.
func (f imageFile) ReadVAt(bufs [][]byte, off int64) (int, error) {
	return f.loopV(bufs, off, unix.Preadv)
}

// WriteVAt implements vectored with pwritev(2), retried after short
// writes.
func (f imageFile) WriteVAt(bufs [][]byte, off int64) (int, error) {
	return f.loopV(bufs, off, unix.Pwritev)
}

// errShortRead is a read that hit the end of the image.
var errShortRead = errors.New("read past the end of the image")

// loopV calls op until every buffer is done, at most maxIOV buffers at a
// time, trimming what each call completed.
func (f imageFile) loopV(bufs [][]byte, off int64, op func(int, [][]byte, int64) (int, error)) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	total := 0
	rest := append([][]byte(nil), bufs...)
	var opErr error
	if err := rc.Control(func(fd uintptr) {
		for len(rest) > 0 {
			if len(rest[0]) == 0 {
				rest = rest[1:]
				continue
			}
			n, err := op(int(fd), rest[:min(len(rest), maxIOV)], off+int64(total))
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				opErr = err
				return
			}
			if n == 0 {
				opErr = errShortRead
				return
			}
			total += n
			for n > 0 {
				if n < len(rest[0]) {
					rest[0] = rest[0][n:]
					n = 0
				} else {
					n -= len(rest[0])
					rest = rest[1:]
				}
			}
		}
	}); err != nil {
		return total, err
	}
	return total, opErr
}
