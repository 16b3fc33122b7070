package secure

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"sync"
)

// Record layout (see the package documentation).
const (
	recordHeaderLen = 4 // type u8 | length u24
	tagLen          = 16
	keyLen          = 32 // AES-256
	// MaxRecordPayload bounds the plaintext of one record, in bytes.
	MaxRecordPayload = 64 << 10
	maxRecord        = recordHeaderLen + MaxRecordPayload + tagLen

	recData  = 1
	recClose = 2

	// RekeyRecords is how many records a direction sends under one key
	// before both sides replace it (64 GiB of full records).
	RekeyRecords = 1 << 20

	// writeBatch is how many records one write to the connection carries
	// at most.
	writeBatch = 4
)

// rekeyInterval is RekeyRecords; tests lower it.
var rekeyInterval uint64 = RekeyRecords

// direction is the cipher state of one direction: its current key, the
// AEAD over it, and the next record's sequence number.
type direction struct {
	key  []byte
	aead cipher.AEAD
	seq  uint64
}

func newDirection(key []byte) (direction, error) {
	var d direction
	return d, d.setKey(key)
}

func (d *direction) setKey(key []byte) error {
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return err
	}
	d.key, d.aead = key, aead
	return nil
}

// nonce is 4 zero bytes and the sequence number, big-endian.
func (d *direction) nonce() []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], d.seq)
	return n[:]
}

// advance moves to the next record, replacing the key every
// rekeyInterval records.
func (d *direction) advance() error {
	if d.seq == math.MaxUint64 {
		return fmt.Errorf("%w: record sequence numbers exhausted", ErrCorrupt)
	}
	d.seq++
	if d.seq%rekeyInterval != 0 {
		return nil
	}
	next, err := hkdf.Expand(sha256.New, d.key, "godwit psk v1 key update", keyLen)
	if err != nil {
		return err
	}
	return d.setKey(next)
}

// recordHeader encodes a record header.
func recordHeader(typ byte, n int) [recordHeaderLen]byte {
	return [recordHeaderLen]byte{typ, byte(n), byte(n >> 8), byte(n >> 16)}
}

// recordWriter seals plaintext into records and writes them. Safe for
// concurrent use.
type recordWriter struct {
	mu  sync.Mutex
	w   io.Writer
	d   direction
	buf []byte
	err error // sticky: the stream can no longer be written
}

// seal appends one record of type typ holding p to dst.
func (rw *recordWriter) seal(dst []byte, typ byte, p []byte) ([]byte, error) {
	hdr := recordHeader(typ, len(p)+tagLen)
	dst = append(dst, hdr[:]...)
	dst = rw.d.aead.Seal(dst, rw.d.nonce(), p, hdr[:])
	return dst, rw.d.advance()
}

// write sends p as data records, up to writeBatch records per write to
// the connection. A write that fails before any byte of a batch is out
// leaves the stream intact (a deadline may be retried); one that fails
// part-way breaks it for good.
func (rw *recordWriter) write(p []byte) (int, error) {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	if rw.err != nil {
		return 0, rw.err
	}
	if rw.buf == nil && len(p) > 0 {
		rw.buf = make([]byte, 0, writeBatch*maxRecord)
	}
	n := 0
	for len(p) > n {
		saved := rw.d
		buf := rw.buf[:0]
		took := n
		for i := 0; i < writeBatch && took < len(p); i++ {
			chunk := p[took:min(len(p), took+MaxRecordPayload)]
			var err error
			if buf, err = rw.seal(buf, recData, chunk); err != nil {
				rw.err = err
				return n, err
			}
			took += len(chunk)
		}
		m, err := rw.w.Write(buf)
		if err != nil {
			if m == 0 {
				rw.d = saved
			} else {
				rw.err = fmt.Errorf("secure channel: a write failed part-way through a record, the stream is broken: %w", err)
			}
			return n, err
		}
		n = took
	}
	return n, nil
}

// close sends a close record, unless a write is in progress or the stream
// is broken, and fails later writes. before runs first (to bound the
// write).
func (rw *recordWriter) close(before func()) {
	if !rw.mu.TryLock() {
		return // a write is in progress; the caller closes the connection
	}
	defer rw.mu.Unlock()
	if rw.err != nil {
		return
	}
	rec, err := rw.seal(nil, recClose, nil)
	if err == nil {
		before()
		rw.w.Write(rec)
	}
	rw.err = fmt.Errorf("secure channel: %w", errClosed)
}

// recordReader reads and opens records. Safe for concurrent use.
type recordReader struct {
	mu         sync.Mutex
	r          io.Reader
	d          direction
	buf        []byte // raw bytes from the connection: buf[start:end] unread
	start, end int
	plain      []byte // opened data not yet returned (aliases buf)
	err        error  // sticky: io.EOF after a close record, or the stream's failure
}

// read returns plaintext from the next data records.
func (rr *recordReader) read(p []byte) (int, error) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	for len(rr.plain) == 0 {
		if rr.err != nil {
			return 0, rr.err
		}
		if err := rr.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, rr.plain)
	rr.plain = rr.plain[n:]
	return n, nil
}

// next reads and opens one record. Only errors from the connection itself
// (deadlines) leave the stream readable; a partial record stays buffered.
func (rr *recordReader) next() error {
	if rr.buf == nil {
		rr.buf = make([]byte, 2*maxRecord)
	}
	if err := rr.fill(recordHeaderLen); err != nil {
		return err
	}
	hdr := [recordHeaderLen]byte(rr.buf[rr.start:])
	typ, n := hdr[0], int(hdr[1])|int(hdr[2])<<8|int(hdr[3])<<16
	switch {
	case typ == recData && (n <= tagLen || n > MaxRecordPayload+tagLen):
		return rr.fail(fmt.Errorf("%w: record %d: data record of %d bytes, want %d..%d", ErrCorrupt, rr.d.seq, n, tagLen+1, MaxRecordPayload+tagLen))
	case typ == recClose && n != tagLen:
		return rr.fail(fmt.Errorf("%w: record %d: close record of %d bytes, want %d", ErrCorrupt, rr.d.seq, n, tagLen))
	case typ != recData && typ != recClose:
		return rr.fail(fmt.Errorf("%w: record %d: unknown record type %d", ErrCorrupt, rr.d.seq, typ))
	}
	if err := rr.fill(recordHeaderLen + n); err != nil {
		return err
	}
	body := rr.buf[rr.start+recordHeaderLen : rr.start+recordHeaderLen+n]
	plain, err := rr.d.aead.Open(body[:0], rr.d.nonce(), body, hdr[:])
	if err != nil {
		return rr.fail(fmt.Errorf("%w: record %d failed authentication (modified, reordered, replayed or injected)", ErrCorrupt, rr.d.seq))
	}
	rr.start += recordHeaderLen + n
	if err := rr.d.advance(); err != nil {
		return rr.fail(err)
	}
	if typ == recClose {
		rr.err = io.EOF
		return nil
	}
	rr.plain = plain
	return nil
}

// fill reads until n unread bytes are buffered. At the end of the stream
// it reports truncation: a peer that ends the stream sends a close
// record first.
func (rr *recordReader) fill(n int) error {
	zero := 0
	for rr.end-rr.start < n {
		if len(rr.buf)-rr.start < n {
			copy(rr.buf, rr.buf[rr.start:rr.end])
			rr.end -= rr.start
			rr.start = 0
		}
		m, err := rr.r.Read(rr.buf[rr.end:])
		rr.end += m
		switch {
		case rr.end-rr.start >= n:
			return nil
		case err == io.EOF && rr.end == rr.start:
			return rr.fail(fmt.Errorf("%w: the stream ended without a close record (truncated): %w", ErrCorrupt, io.ErrUnexpectedEOF))
		case err == io.EOF:
			return rr.fail(fmt.Errorf("%w: the stream ended inside record %d (truncated): %w", ErrCorrupt, rr.d.seq, io.ErrUnexpectedEOF))
		case err != nil:
			return err
		case m == 0:
			if zero++; zero > 100 {
				return rr.fail(io.ErrNoProgress)
			}
		}
	}
	return nil
}

// fail makes err the stream's final error and returns it.
func (rr *recordReader) fail(err error) error {
	rr.err = err
	return err
}
