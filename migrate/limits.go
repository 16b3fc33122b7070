package migrate

import "time"

// Receiver resource bounds.
//
// What the destination allocates follows from the VM configuration it
// accepted, never from a length the stream merely claims: every frame is
// checked against these bounds from its header alone, before its payload
// is read or room for it allocated (frameReader.limit):
//
//   - before the VM is accepted, no frame may be longer than the largest
//     HELLO (its configuration is bounded by MaxConfigSize);
//   - a PAGE_BATCH can carry at most min(MaxBatchPages, pages of the
//     largest region) raw pages, so a small VM gets small frames;
//   - a DISK_BATCH needs a migration with storage;
//   - STATE chunks together may not exceed the Target's MaxStateBytes
//     (when it implements StateBounder), nor MaxStateSize.
//
// The rest is bounded by the configuration too: the page bitmaps by the
// RAM size, the frame buffers in flight by the workers (at most
// workers+2), the state sections by the state's length. A source that
// stops sending, or stops reading what the receiver writes, fails the
// migration after ReceiveOptions.IdleTimeout.

// StateBounder may be implemented by a Target: MaxStateBytes bounds the
// encoded VM state (the STATE chunks together: a section count, then per
// section its ID, version, length and data) that a VM of the Target's
// configuration can have. Receive refuses a longer state as soon as a
// STATE frame's header announces it.
type StateBounder interface {
	MaxStateBytes() int
}

// preAcceptMax bounds every frame before the VM is accepted: the largest
// HELLO. (REFUSE and ERROR frames are shorter.)
var preAcceptMax = frameSpecs[frameHello].maxLen

// frameLimit refuses a frame whose announced length exceeds what the VM
// accepted so far allows (see above).
func (r *receiver) frameLimit(typ frameType, n uint32) error {
	if r.target == nil {
		if n > preAcceptMax {
			return protoErr("unexpected %s frame of %d bytes in state %s: before the VM is accepted no frame exceeds %d bytes", typ, n, r.state, preAcceptMax)
		}
		return nil
	}
	switch typ {
	case framePageBatch:
		if max := r.maxBatchPayload(); uint64(n) > max {
			return protoErr("PAGE_BATCH frame of %d bytes: a batch of this VM's pages is at most %d", n, max)
		}
	case frameDiskBatch:
		if r.disks == nil {
			return protoErr("DISK_BATCH frame in a migration without storage (%d bytes announced)", n)
		}
	case frameState:
		if max := r.maxState(); uint64(len(r.stateBuf))+uint64(n) > max {
			return protoErr("VM state exceeds %d bytes, the bound for this VM's configuration", max)
		}
	}
	return nil
}

// maxBatchPayload is the largest PAGE_BATCH payload the accepted VM's RAM
// can receive: a batch of raw pages as long as its largest region allows.
func (r *receiver) maxBatchPayload() uint64 {
	var pages uint64
	for _, reg := range r.target.Memory().Regions() {
		pages = max(pages, reg.Pages())
	}
	count := min(pages, MaxBatchPages)
	return batchHeader + 2*((count+7)/8) + count*(pageHeader+pageSize)
}

// maxState is the longest encoded state the accepted VM may receive.
func (r *receiver) maxState() uint64 {
	limit := uint64(MaxStateSize)
	if b, ok := r.target.(StateBounder); ok {
		limit = min(limit, uint64(max(b.MaxStateBytes(), 0)))
	}
	return limit
}

// armWrite bounds the next write to d, as armIdle bounds a read.
func (l *link) armWrite(d time.Duration) { l.arm(d, deadliner.SetWriteDeadline) }

// disarmWrite lifts the bound armWrite set.
func (l *link) disarmWrite() { l.disarm(deadliner.SetWriteDeadline) }
