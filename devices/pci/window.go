package pci

import (
	"sort"

	"godwit/devices"
)

// refresh rebuilds the BAR decode table from the functions' current BAR
// registers and command registers, then calls BusConfig.OnDecode.
// ConfigSpace calls it after the guest changes either; it never runs with
// a ConfigSpace lock held.
func (b *Bus) refresh() {
	b.rebuild()
	if b.onDecode != nil {
		b.onDecode()
	}
}

// rebuild is refresh without the OnDecode call.
func (b *Bus) rebuild() {
	b.decodeMu.Lock()
	defer b.decodeMu.Unlock()
	var d []barDecode
	for _, fn := range *b.fns.Load() {
		if fn == nil {
			continue
		}
		for _, m := range fn.Config().BARs() {
			if m.Base < WindowBase || m.Base+m.Size > WindowEnd || m.Base+m.Size < m.Base {
				continue // outside the window: the MMIO bus never routes it here
			}
			d = append(d, barDecode{base: m.Base, size: m.Size, fn: fn, bar: m.Index})
		}
	}
	// Sorted by base; where the guest made BARs overlap, the first in
	// slot order wins (a stable sort keeps slot order for equal bases).
	sort.SliceStable(d, func(i, j int) bool { return d[i].base < d[j].base })
	b.decode.Store(&d)
}

// lookup returns the BAR holding [addr, addr+n) entirely.
func (b *Bus) lookup(addr, n uint64) (barDecode, bool) {
	for _, e := range *b.decode.Load() {
		if e.base > addr {
			break
		}
		if addr-e.base < e.size && n <= e.size-(addr-e.base) {
			return e, true
		}
	}
	return barDecode{}, false
}

// FunctionAt returns the function the MMIO window routes an access of n
// bytes at addr to now (where BARs overlap, the one in the lowest slot),
// or false when no BAR holds it entirely.
func (b *Bus) FunctionAt(addr, n uint64) (Function, bool) {
	e, ok := b.lookup(addr, n)
	return e.fn, ok
}

// mmioWindow is the MMIO bus device covering the BAR window.
type mmioWindow struct{ b *Bus }

// MMIO returns the device to register on the MMIO bus at WindowBase with
// size WindowSize. It routes each access to the BAR that holds it at the
// moment of the access; accesses that hit no BAR, or straddle a BAR's end,
// read as all ones and are dropped.
func (b *Bus) MMIO() devices.Device { return mmioWindow{b} }

// Read implements devices.Device.
func (w mmioWindow) Read(off uint64, data []byte) {
	addr := WindowBase + off
	e, ok := w.b.lookup(addr, uint64(len(data)))
	if !ok || addr < WindowBase {
		devices.FillOnes(data)
		return
	}
	e.fn.ReadBAR(e.bar, addr-e.base, data)
}

// Write implements devices.Device.
func (w mmioWindow) Write(off uint64, data []byte) {
	addr := WindowBase + off
	e, ok := w.b.lookup(addr, uint64(len(data)))
	if !ok || addr < WindowBase {
		return
	}
	e.fn.WriteBAR(e.bar, addr-e.base, data)
}
