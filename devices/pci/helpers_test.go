package pci

import (
	"encoding/binary"
	"sync"
	"testing"
)

// fakeMSI records delivered messages.
type fakeMSI struct {
	mu   sync.Mutex
	msgs []msiMsg
}

type msiMsg struct {
	addr uint64
	data uint32
}

func (f *fakeMSI) SignalMSI(addr uint64, data uint32) error {
	f.mu.Lock()
	f.msgs = append(f.msgs, msiMsg{addr, data})
	f.mu.Unlock()
	return nil
}

func (f *fakeMSI) take() []msiMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.msgs
	f.msgs = nil
	return m
}

// fakeLine records INTx levels.
type fakeLine struct {
	mu     sync.Mutex
	levels []bool
}

func (l *fakeLine) SetLevel(high bool) {
	l.mu.Lock()
	l.levels = append(l.levels, high)
	l.mu.Unlock()
}

func (l *fakeLine) last() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.levels) == 0 {
		return false, 0
	}
	return l.levels[len(l.levels)-1], len(l.levels)
}

// testFn is a function with a 4 KiB 32-bit BAR 0 holding an MSI-X table
// (4 vectors at 0x800, PBA at 0xc00) and a 64 KiB 64-bit BAR 2 backed by
// plain memory.
type testFn struct {
	cs   *ConfigSpace
	msix *MSIX
	mu   sync.Mutex
	mem  [2][]byte
}

func newTestFn(t testing.TB, msi MSIDelivery) *testFn {
	t.Helper()
	if msi == nil {
		msi = &fakeMSI{}
	}
	m, err := NewMSIX(4, 0, 0x800, 0xc00, msi)
	if err != nil {
		t.Fatal(err)
	}
	var bars [NumBARs]BAR
	bars[0] = BAR{Kind: BARMem32, Size: 0x1000}
	bars[2] = BAR{Kind: BARMem64, Size: 0x10000, Prefetchable: true}
	vendor := &StaticCapability{ID: CapIDVendor, Body: []byte{5, 1, 2}}
	cs, err := NewConfigSpace(Header{VendorID: 0x1af4, DeviceID: 0x1044, Revision: 1, Class: 0xff0000, InterruptPin: PinA, BARs: bars}, vendor, m)
	if err != nil {
		t.Fatal(err)
	}
	return &testFn{cs: cs, msix: m, mem: [2][]byte{make([]byte, 0x1000), make([]byte, 0x10000)}}
}

func (f *testFn) Config() *ConfigSpace { return f.cs }

func (f *testFn) ReadBAR(bar int, off uint64, data []byte) {
	if f.msix.Contains(bar, off, uint64(len(data))) {
		f.msix.ReadBAR(off, data)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	copy(data, f.mem[bar/2][off:])
}

func (f *testFn) WriteBAR(bar int, off uint64, data []byte) {
	if f.msix.Contains(bar, off, uint64(len(data))) {
		f.msix.WriteBAR(off, data)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	copy(f.mem[bar/2][off:], data)
}

// cfgRead32 reads a config dword of slot through ports 0xCF8/0xCFC.
func cfgRead32(b *Bus, slot, reg int) uint32 {
	io := b.ConfigIO()
	io.Write(0, le32(uint32(cfgEnable|slot<<11|reg&0xfc)))
	var d [4]byte
	io.Read(4, d[:])
	return binary.LittleEndian.Uint32(d[:])
}

// cfgWrite writes data at config offset reg of slot through ports
// 0xCF8/0xCFC+reg%4.
func cfgWrite(b *Bus, slot, reg int, data []byte) {
	io := b.ConfigIO()
	io.Write(0, le32(uint32(cfgEnable|slot<<11|reg&0xfc)))
	io.Write(4+uint64(reg&3), data)
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }

func mmioRead32(b *Bus, addr uint64) uint32 {
	var d [4]byte
	b.MMIO().Read(addr-WindowBase, d[:])
	return binary.LittleEndian.Uint32(d[:])
}

func mmioWrite32(b *Bus, addr uint64, v uint32) {
	b.MMIO().Write(addr-WindowBase, le32(v))
}
