package pci

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
)

// MSI-X capability layout and bits (PCI Local Bus Specification 3.0
// §6.8.2, figure 6-10).
const (
	msixCapLen      = 12
	msixCapControl  = 2 // u16 message control
	msixCapTable    = 4 // u32 table offset | BIR
	msixCapPBA      = 8 // u32 PBA offset | BIR
	msixEnable      = 1 << 15
	msixFunctionMsk = 1 << 14
	msixControlRW   = msixEnable | msixFunctionMsk

	// MSIXEntrySize is the size of one MSI-X table entry (§6.8.2.6).
	MSIXEntrySize = 16
	// MSIXMaxVectors is the largest table the capability can describe.
	MSIXMaxVectors = 2048

	msixVectorMasked = 1 // vector control bit 0 (§6.8.2.9)
)

// msixEntry is one MSI-X table entry (§6.8.2.6-9).
type msixEntry struct {
	addrLo, addrHi, data, control uint32
}

// MSIX is an MSI-X capability with its table and pending bit array, both
// in one memory BAR of the function. The function passes the MSIX to
// NewConfigSpace as a capability and forwards BAR accesses to ReadBAR and
// WriteBAR. Vectors are delivered through an MSIDelivery; a vector that is
// masked (per entry or by the function mask) when it fires sets its pending
// bit and is delivered when unmasked (§6.8.2.10). It is safe for
// concurrent use.
type MSIX struct {
	bar      int
	tableOff uint64
	pbaOff   uint64
	out      MSIDelivery
	n        int // number of vectors; immutable

	mu      sync.Mutex
	control uint16 // msixEnable | msixFunctionMsk
	entries []msixEntry
	pending []uint64

	enabled  atomic.Bool   // mirrors control&msixEnable for lock-free checks
	failures atomic.Uint64 // SignalMSI errors
}

// NewMSIX returns an MSI-X capability with vectors table entries, the
// table at tableOff and the PBA at pbaOff in BAR bar (both 8-byte aligned,
// not overlapping). Entries start masked, as after reset.
func NewMSIX(vectors, bar int, tableOff, pbaOff uint64, out MSIDelivery) (*MSIX, error) {
	switch {
	case vectors < 1 || vectors > MSIXMaxVectors:
		return nil, fmt.Errorf("pci: MSI-X: %d vectors out of range [1, %d]", vectors, MSIXMaxVectors)
	case bar < 0 || bar >= NumBARs:
		return nil, fmt.Errorf("pci: MSI-X: BAR %d out of range", bar)
	case tableOff%8 != 0 || pbaOff%8 != 0 || tableOff > 1<<32-8 || pbaOff > 1<<32-8:
		return nil, fmt.Errorf("pci: MSI-X: table %#x / PBA %#x offsets not 8-byte aligned 32-bit values", tableOff, pbaOff)
	case out == nil:
		return nil, fmt.Errorf("pci: MSI-X: nil delivery")
	}
	m := &MSIX{
		bar:      bar,
		tableOff: tableOff,
		pbaOff:   pbaOff,
		out:      out,
		n:        vectors,
		entries:  make([]msixEntry, vectors),
		pending:  make([]uint64, (vectors+63)/64),
	}
	if m.overlaps(tableOff, m.tableLen(), pbaOff, m.pbaLen()) {
		return nil, fmt.Errorf("pci: MSI-X: table [%#x,+%#x) overlaps PBA [%#x,+%#x)", tableOff, m.tableLen(), pbaOff, m.pbaLen())
	}
	for i := range m.entries {
		m.entries[i].control = msixVectorMasked
	}
	return m, nil
}

func (m *MSIX) tableLen() uint64 { return uint64(m.n) * MSIXEntrySize }
func (m *MSIX) pbaLen() uint64   { return uint64(m.n+63) / 64 * 8 }

func (m *MSIX) overlaps(a, alen, b, blen uint64) bool { return a < b+blen && b < a+alen }

// Vectors returns the number of table entries.
func (m *MSIX) Vectors() int { return m.n }

// BAR returns the BAR holding the table and the PBA.
func (m *MSIX) BAR() int { return m.bar }

// Enabled reports whether the guest enabled MSI-X. While it is disabled
// the function uses INTx.
func (m *MSIX) Enabled() bool { return m.enabled.Load() }

// Failures returns how many deliveries failed.
func (m *MSIX) Failures() uint64 { return m.failures.Load() }

// CapID implements Capability.
func (m *MSIX) CapID() uint8 { return CapIDMSIX }

// CapLen implements Capability.
func (m *MSIX) CapLen() int { return msixCapLen }

// capImage returns the capability bytes; mu is held.
func (m *MSIX) capImage() [msixCapLen]byte {
	var b [msixCapLen]byte
	le := binary.LittleEndian
	le.PutUint16(b[msixCapControl:], m.control|uint16(len(m.entries)-1))
	le.PutUint32(b[msixCapTable:], uint32(m.tableOff)|uint32(m.bar))
	le.PutUint32(b[msixCapPBA:], uint32(m.pbaOff)|uint32(m.bar))
	return b
}

// ReadCap implements Capability.
func (m *MSIX) ReadCap(off int, data []byte) {
	m.mu.Lock()
	img := m.capImage()
	m.mu.Unlock()
	for i := range data {
		if p := off + i; p >= 0 && p < msixCapLen {
			data[i] = img[p]
		} else {
			data[i] = 0
		}
	}
}

// WriteCap implements Capability: only Enable and Function Mask in the
// message control register are writable.
func (m *MSIX) WriteCap(off int, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	img := m.capImage()
	for i, v := range data {
		if p := off + i; p >= 0 && p < msixCapLen {
			img[p] = v
		}
	}
	m.control = binary.LittleEndian.Uint16(img[msixCapControl:]) & msixControlRW
	m.enabled.Store(m.control&msixEnable != 0)
	m.deliverPending()
}

// Notify fires vector. It returns false when MSI-X is disabled, so that the
// caller falls back to INTx; otherwise the vector is delivered or, when
// masked, left pending. A vector beyond the table is dropped.
func (m *MSIX) Notify(vector uint16) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.control&msixEnable == 0 {
		return false
	}
	if int(vector) >= len(m.entries) {
		return true
	}
	if m.masked(int(vector)) {
		m.pending[vector/64] |= 1 << (vector % 64)
		return true
	}
	m.deliver(int(vector))
	return true
}

// masked reports whether vector v may not be delivered now; mu is held.
func (m *MSIX) masked(v int) bool {
	return m.control&msixFunctionMsk != 0 || m.entries[v].control&msixVectorMasked != 0
}

// deliver sends vector v; mu is held.
func (m *MSIX) deliver(v int) {
	e := m.entries[v]
	if err := m.out.SignalMSI(uint64(e.addrHi)<<32|uint64(e.addrLo), e.data); err != nil {
		m.failures.Add(1)
	}
}

// deliverPending sends every pending vector that is no longer masked; mu
// is held.
func (m *MSIX) deliverPending() {
	if m.control&msixEnable == 0 {
		return
	}
	for v := range m.entries {
		bit := uint64(1) << (v % 64)
		if m.pending[v/64]&bit != 0 && !m.masked(v) {
			m.pending[v/64] &^= bit
			m.deliver(v)
		}
	}
}

// Contains reports whether [off, off+n) of BAR bar touches the table or
// the PBA, so the function routes the access to ReadBAR/WriteBAR.
func (m *MSIX) Contains(bar int, off, n uint64) bool {
	if bar != m.bar || n == 0 || off+n < off {
		return false
	}
	return m.overlaps(off, n, m.tableOff, m.tableLen()) || m.overlaps(off, n, m.pbaOff, m.pbaLen())
}

// ReadBAR serves a read at offset off of the MSI-X BAR. The table and PBA
// are read byte by byte, so any width and alignment works; other bytes
// read as zero.
func (m *MSIX) ReadBAR(off uint64, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range data {
		data[i] = m.readByte(off + uint64(i))
	}
}

// readByte returns the table or PBA byte at BAR offset p; mu is held.
func (m *MSIX) readByte(p uint64) byte {
	switch {
	case p >= m.tableOff && p-m.tableOff < m.tableLen():
		r := p - m.tableOff
		e := &m.entries[r/MSIXEntrySize]
		w := [4]uint32{e.addrLo, e.addrHi, e.data, e.control}[(r%MSIXEntrySize)/4]
		return byte(w >> (8 * (r % 4)))
	case p >= m.pbaOff && p-m.pbaOff < m.pbaLen():
		r := p - m.pbaOff
		return byte(m.pending[r/8] >> (8 * (r % 8)))
	}
	return 0
}

// WriteBAR serves a write at offset off of the MSI-X BAR. The PBA is
// read-only (§6.8.2.11); unmasking an entry delivers its pending message.
func (m *MSIX) WriteBAR(off uint64, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, v := range data {
		p := off + uint64(i)
		if p < m.tableOff || p-m.tableOff >= m.tableLen() {
			continue
		}
		r := p - m.tableOff
		e := &m.entries[r/MSIXEntrySize]
		f := [4]*uint32{&e.addrLo, &e.addrHi, &e.data, &e.control}[(r%MSIXEntrySize)/4]
		shift := 8 * (r % 4)
		*f = *f&^(0xff<<shift) | uint32(v)<<shift
		e.control &= msixVectorMasked // other vector control bits are reserved
	}
	m.deliverPending()
}
