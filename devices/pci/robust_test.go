package pci

import (
	"bytes"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// TestOverlappingBARs: a guest puts one function's BAR over another's.
// Accesses go to the function in the lower slot, and only to it; when it
// stops decoding, to the other; when the BAR moves away, each function
// gets its own accesses again.
func TestOverlappingBARs(t *testing.T) {
	b, fn1, _, _ := newTestBus(t)
	fn2 := newTestFn(t, nil)
	slot2, err := b.Add(fn2)
	if err != nil {
		t.Fatal(err)
	}
	bar2 := func(slot int) uint64 { return uint64(cfgRead32(b, slot, RegBAR0+8) &^ 0xf) }
	a, own := bar2(1), bar2(int(slot2))
	cfgWrite(b, int(slot2), RegBAR0+8, le32(uint32(a))) // fn2's 64 KiB BAR over fn1's
	for off := uint64(0); off < 0x10000; off += 4 {
		mmioWrite32(b, a+off, 0xa5a5a5a5)
	}
	if !bytes.Equal(fn2.mem[1], make([]byte, 0x10000)) {
		t.Fatal("writes into the overlap reached the function that lost it")
	}
	if !bytes.Equal(fn1.mem[1], bytes.Repeat([]byte{0xa5}, 0x10000)) {
		t.Fatal("writes into the overlap did not all reach the function in the lower slot")
	}
	if f, ok := b.FunctionAt(a+0x100, 4); !ok || f != Function(fn1) {
		t.Fatalf("FunctionAt the overlap = %v, %v; want slot 1's", f, ok)
	}

	cfgWrite(b, 1, RegCommand, le16(0)) // slot 1 stops decoding
	mmioWrite32(b, a, 0x11111111)
	if f, ok := b.FunctionAt(a, 4); !ok || f != Function(fn2) || le32val(fn2.mem[1]) != 0x11111111 {
		t.Fatal("with slot 1 off, the address does not reach slot 2's function")
	}
	cfgWrite(b, 1, RegCommand, le16(CommandMemory))

	cfgWrite(b, int(slot2), RegBAR0+8, le32(uint32(own)))
	mmioWrite32(b, own+4, 0x22222222)
	mmioWrite32(b, a+4, 0x33333333)
	if le32val(fn2.mem[1][4:]) != 0x22222222 || le32val(fn1.mem[1][4:]) != 0x33333333 {
		t.Fatal("after the move, the functions do not get their own accesses")
	}
	if _, ok := b.FunctionAt(WindowBase-4, 4); ok {
		t.Fatal("FunctionAt below the window found a function")
	}
}

// TestBARMovesDuringAccesses: vCPUs read and write a function's BARs (and
// the MSI-X table) while another vCPU keeps moving them, sizing them with
// all ones and toggling Memory Space. Nothing may panic or race (run with
// -race), and the function works where its BARs end up.
func TestBARMovesDuringAccesses(t *testing.T) {
	b, fn, _, _ := newTestBus(t)
	bar0 := uint64(cfgRead32(b, 1, RegBAR0) &^ 0xf)
	bar2 := uint64(cfgRead32(b, 1, RegBAR0+8) &^ 0xf)
	var done atomic.Bool
	var wg sync.WaitGroup
	for cpu := 0; cpu < 2; cpu++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !done.Load(); i++ {
				off := uint64(i*4) % 0x1000
				mmioWrite32(b, bar0+off, uint32(i))
				mmioRead32(b, bar0+0x800+off%0x40)
				mmioWrite32(b, bar2+off, uint32(i))
				mmioRead32(b, bar2+off)
				runtime.Gosched()
			}
		}()
	}
	for i := 0; i < 2000; i++ {
		switch i % 4 {
		case 0:
			cfgWrite(b, 1, RegBAR0, le32(0xffffffff))
			cfgWrite(b, 1, RegBAR0+8, le32(0xffffffff))
		case 1:
			cfgWrite(b, 1, RegBAR0, le32(uint32(bar0)+0x100000))
			cfgWrite(b, 1, RegBAR0+8, le32(uint32(bar0))) // over BAR 0's old place
		case 2:
			cfgWrite(b, 1, RegCommand, le16(0))
		case 3:
			cfgWrite(b, 1, RegBAR0, le32(uint32(bar0)))
			cfgWrite(b, 1, RegBAR0+8, le32(uint32(bar2)))
			cfgWrite(b, 1, RegCommand, le16(CommandMemory))
		}
		runtime.Gosched()
	}
	done.Store(true)
	wg.Wait()
	mmioWrite32(b, bar2+0x40, 0xfeedface)
	if got := le32val(fn.mem[1][0x40:]); got != 0xfeedface {
		t.Fatalf("BAR 2 at home: write landed as %#x", got)
	}
	if got := cfgRead32(b, 1, RegVendorID); got != 0x1044<<16|0x1af4 {
		t.Fatalf("identity %#x", got)
	}
}
