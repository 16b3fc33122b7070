package migrate

import (
	"bytes"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// Deduplication (protocol version 4): a page whose content equals a page
// the current round already sent with data travels as an encCopy record
// of 15 bytes naming that page, and the destination copies it once the
// round's batches are all in RAM (batchSink.copyPages). A freshly booted
// Linux guest holds a few thousand such pages (page cache and kernel
// copies of the same data: 2099 of its 20075 non-zero pages in one dump
// of the 256 MiB benchmark guest), each of which would otherwise cost an
// LZ4 compression on the source and a decompression on the destination,
// and about 2 KiB on the wire.

// maxDedupEntries bounds the pages one round's table remembers (16 MiB of
// map or so); past it, pages are still matched against those remembered.
const maxDedupEntries = 1 << 18

// pageRef names a guest page: region index and page number in it.
type pageRef struct {
	region uint32
	page   uint64
}

// pageCopy is an encCopy record the destination performs at ROUND_END.
type pageCopy struct{ dst, src pageRef }

// dedupTable remembers, by XXH64 of their content, the pages the encoders
// of one round have sent with data. The encoders share it.
type dedupTable struct {
	hosts [][]byte // every region's mapping, by region index
	mu    sync.Mutex
	m     map[uint64]pageRef
}

func newDedupTable(hosts [][]byte) *dedupTable {
	return &dedupTable{hosts: hosts, m: make(map[uint64]pageRef)}
}

// reset forgets every page: a round may only refer to pages it sent. A
// nil table stays nil.
func (t *dedupTable) reset() {
	if t == nil {
		return
	}
	t.mu.Lock()
	clear(t.m)
	t.mu.Unlock()
}

// match returns a page this round sent with data whose content equals
// page, the snapshot of ref about to be sent. Otherwise it remembers ref
// as sent with this content, and the caller must send it with data.
//
// A remembered page counts only while the guest's memory still holds, in
// that page, exactly the bytes of the snapshot: its hash then says that
// the copy sent had those bytes too, short of an XXH64 collision between
// the sent content and what the guest later wrote there (and a write
// there is logged, so the next round sends the page again anyway).
func (t *dedupTable) match(page []byte, ref pageRef) (pageRef, bool) {
	h := xxhash.Sum64(page)
	t.mu.Lock()
	src, ok := t.m[h]
	if !ok && len(t.m) < maxDedupEntries {
		t.m[h] = ref
	}
	t.mu.Unlock()
	if !ok {
		return pageRef{}, false
	}
	off := src.page * pageSize
	if bytes.Equal(t.hosts[src.region][off:off+pageSize], page) {
		return src, true
	}
	// The remembered page changed since it was sent: remember this one.
	t.mu.Lock()
	t.m[h] = ref
	t.mu.Unlock()
	return pageRef{}, false
}
