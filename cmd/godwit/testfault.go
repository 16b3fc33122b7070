package main

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"

	"godwit/migrate"
)

// testFaultEnv names the environment variable that turns on the test-only
// fault injection of `godwit receive`, with which the integration tests
// kill a destination at a chosen phase of a migration (docs/testing.md).
// Unset, nothing changes. Its values:
//
//	report      log "test fault: phase P" on stderr when the migration
//	            enters phase P
//	die-in=P    the same, and SIGKILL this process when it enters P
//
// The phases, as the receiver sees the stream go by:
//
//	round0         the first PAGE_BATCH of round 0 arrives
//	iterative      the first PAGE_BATCH of a later round arrives (the
//	               final round, sent while the source is paused, looks the
//	               same here: a test keeps the source iterating)
//	disk-copy      the first DISK_BATCH arrives (a storage migration:
//	               the destination has created its images)
//	stop-and-copy  the first STATE frame arrives: the source is paused
//	before-ack     the VM is restored and started here and RESUMED is
//	               about to be sent
const testFaultEnv = "GODWIT_TEST_FAULT"

// faultPhases are the phases testFaultEnv knows.
var faultPhases = []string{"round0", "iterative", "disk-copy", "stop-and-copy", "before-ack"}

// testFault is a parsed testFaultEnv; nil when it is unset.
type testFault struct {
	dieIn string // phase to die in, "" for report only
}

// parseTestFault parses the value of testFaultEnv.
func parseTestFault(v string) (*testFault, error) {
	if v == "" {
		return nil, nil
	}
	if v == "report" {
		return &testFault{}, nil
	}
	if p, ok := strings.CutPrefix(v, "die-in="); ok && slices.Contains(faultPhases, p) {
		return &testFault{dieIn: p}, nil
	}
	return nil, fmt.Errorf("%s=%q: want report or die-in=PHASE with PHASE one of %s", testFaultEnv, v, strings.Join(faultPhases, ", "))
}

// wrap returns conn watched by the fault injection, or conn itself when f
// is nil. It must wrap the connection migrate.Receive reads frames from.
func (f *testFault) wrap(conn net.Conn, log *slog.Logger) net.Conn {
	if f == nil {
		return conn
	}
	log.Warn("test fault injection is on", "env", testFaultEnv, "die_in", f.dieIn)
	return &faultConn{Conn: conn, f: f, log: log}
}

// faultConn follows the frame headers of the stream it reads (lengths
// only: the receiver checks everything) and the frames it writes, and
// reports each phase once.
type faultConn struct {
	net.Conn
	f   *testFault
	log *slog.Logger

	hdr    [migrate.FrameHeaderSize]byte
	hn     int    // header bytes collected
	skip   uint64 // payload and checksum bytes of the current frame still to come
	rounds int    // MEMORY_BEGIN frames seen

	mu   sync.Mutex // phase runs on the reading and the writing goroutine
	seen []string
}

// Read passes the bytes on after noting the phases they start; a phase to
// die in kills the process before the receiver sees its frame.
func (c *faultConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	for b := p[:n]; len(b) > 0; {
		if c.skip > 0 {
			k := min(uint64(len(b)), c.skip)
			c.skip -= k
			b = b[k:]
			continue
		}
		k := copy(c.hdr[c.hn:], b)
		c.hn += k
		b = b[k:]
		if c.hn < len(c.hdr) {
			break
		}
		c.hn = 0
		c.skip = uint64(binary.LittleEndian.Uint32(c.hdr[4:])) + migrate.FrameTrailerSize
		switch binary.LittleEndian.Uint16(c.hdr[0:]) {
		case migrate.FrameMemoryBegin:
			c.rounds++
		case migrate.FramePageBatch:
			if c.rounds <= 1 {
				c.phase("round0")
			} else {
				c.phase("iterative")
			}
		case migrate.FrameDiskBatch:
			c.phase("disk-copy")
		case migrate.FrameState:
			c.phase("stop-and-copy")
		}
	}
	return n, err
}

// Write notes RESUMED (the receiver writes whole frames) before sending it.
func (c *faultConn) Write(p []byte) (int, error) {
	if len(p) >= migrate.FrameHeaderSize && binary.LittleEndian.Uint16(p) == migrate.FrameResumed {
		c.phase("before-ack")
	}
	return c.Conn.Write(p)
}

// phase logs the first entry into phase p and dies there when asked to.
func (c *faultConn) phase(p string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Contains(c.seen, p) {
		return
	}
	c.seen = append(c.seen, p)
	c.log.Warn("test fault: phase " + p)
	if p == c.f.dieIn {
		c.log.Warn("test fault: SIGKILL in phase " + p)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal cannot be caught; wait for it
	}
}
