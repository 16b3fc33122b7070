package migrate

import (
	"fmt"
	"io"

	"godwit/vmm/memory"
)

// This file exposes the raw wire format to code that speaks it without
// the engine: the test-only fault injection of `godwit receive`, which
// watches the frames go by, and the integration tests' fake sources, which
// send broken streams to a real receiver. Send and Receive do not use it.

// Frame type numbers as they travel on the wire (see the package
// documentation for each frame's payload).
const (
	FrameHello       = uint16(frameHello)
	FrameAccept      = uint16(frameAccept)
	FrameRefuse      = uint16(frameRefuse)
	FrameMemoryBegin = uint16(frameMemoryBegin)
	FramePageBatch   = uint16(framePageBatch)
	FrameRoundEnd    = uint16(frameRoundEnd)
	FrameState       = uint16(frameState)
	FrameComplete    = uint16(frameComplete)
	FrameResumed     = uint16(frameResumed)
	FrameError       = uint16(frameError)
	FrameRoundAck    = uint16(frameRoundAck)
	FrameStorage     = uint16(frameStorage)
	FrameDiskBatch   = uint16(frameDiskBatch)
)

// FrameHeaderSize is the size of a frame header (type u16, flags u16,
// length u32) and FrameTrailerSize that of the CRC-32C after the payload.
const (
	FrameHeaderSize  = headerSize
	FrameTrailerSize = trailerSize
)

// FrameName returns the name of frame type typ ("HELLO", ...), or a
// description of an unknown type.
func FrameName(typ uint16) string { return frameType(typ).String() }

// AppendFrame appends a complete frame (header, payload, checksum) to dst.
// It checks nothing against the bounds a reader enforces, so it builds
// invalid frames as readily as valid ones.
func AppendFrame(dst []byte, typ, flags uint16, payload []byte) []byte {
	return appendFrame(dst, frameType(typ), flags, payload)
}

// HelloPayload returns a HELLO payload: Magic, version (which need not be
// ProtocolVersion), the page size memory.PageSize, the GPA and size of
// each region, and config. It fails when regions or config exceed the
// protocol's bounds.
func HelloPayload(version uint32, regions []memory.Region, config []byte) ([]byte, error) {
	if len(regions) > MaxRegions {
		return nil, fmt.Errorf("%d memory regions exceed the protocol limit of %d", len(regions), MaxRegions)
	}
	if len(config) > MaxConfigSize {
		return nil, fmt.Errorf("configuration of %d bytes exceeds the protocol limit of %d", len(config), MaxConfigSize)
	}
	h := hello{version: version, pageSize: memory.PageSize, config: config}
	for _, r := range regions {
		h.regions = append(h.regions, regionDesc{GPA: r.GPA, Size: r.Size})
	}
	return h.append(nil), nil
}

// ReadFrame reads one frame from r and checks it as the engine does: known
// type, allowed flags, length within the type's bounds, checksum. The
// payload is the caller's. It returns io.EOF only at a frame boundary.
func ReadFrame(r io.Reader) (typ, flags uint16, payload []byte, err error) {
	f, err := newFrameReader(r).next()
	if err != nil {
		return 0, 0, nil, err
	}
	return uint16(f.typ), f.flags, f.payload, nil
}
