package pci

import (
	"bytes"
	"errors"
	"testing"

	"godwit/devices"
)

// FuzzPCIConfig drives random sequences of CONFIG_ADDRESS/CONFIG_DATA and
// MMIO window accesses. Each operation is 7 bytes: kind, offset (u16),
// size selector, value (u24 spread over the access). The bus must never
// panic, and the read-only identity must survive.
func FuzzPCIConfig(f *testing.F) {
	f.Add([]byte{0, 0x80, 0x08, 3, 0x10, 0, 0, 1, 0, 0, 3, 0xff, 0xff, 0xff})
	f.Add([]byte{2, 0x00, 0x00, 3, 0, 0, 0, 3, 0x10, 0x08, 2, 1, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		b, fn, _, _ := newTestBus(t)
		io, mmio := b.ConfigIO(), b.MMIO()
		sizes := []int{1, 2, 4, 8}
		for len(ops) >= 7 {
			op := ops[:7]
			ops = ops[7:]
			off := uint64(op[1]) | uint64(op[2])<<8
			n := sizes[op[3]&3]
			data := make([]byte, n)
			for i := range data {
				data[i] = op[4+i%3]
			}
			switch op[0] % 6 {
			case 0: // CONFIG_ADDRESS, any slot/register
				io.Write(0, []byte{op[4] &^ 3, op[5], 0, 0x80})
			case 1:
				io.Write(off%8, data)
			case 2:
				io.Read(off%8, data)
			case 3:
				mmio.Write(off<<8|uint64(op[4]), data)
			case 4:
				mmio.Read(off<<8|uint64(op[4]), data)
			case 5:
				fn.cs.SetINTx(op[4]&1 != 0)
				fn.msix.Notify(uint16(op[5]))
			}
		}
		if got := cfgRead32(b, 1, RegVendorID); got != 0x1044<<16|0x1af4 {
			t.Fatalf("identity changed: %#x", got)
		}
		st, err := fn.cs.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		if err := fn.cs.RestoreState(st); err != nil {
			t.Fatalf("own state rejected: %v", err)
		}
		ms, _ := fn.msix.SaveState()
		if err := fn.msix.RestoreState(ms); err != nil {
			t.Fatalf("own MSI-X state rejected: %v", err)
		}
	})
}

// busyTestBus returns a test bus whose function has a moved BAR 0, an
// asserted INTx line, programmed and enabled MSI-X vectors and a pending
// vector, and whose CONFIG_ADDRESS points somewhere.
func busyTestBus(tb testing.TB) (*Bus, *testFn) {
	b, fn, _, _ := newTestBus(tb)
	cfgWrite(b, 1, RegBAR0, le32(uint32(WindowBase+0x40000)))
	cfgWrite(b, 1, RegLatencyTimer, []byte{0x20})
	bar0 := uint64(cfgRead32(b, 1, RegBAR0) &^ 0xf)
	for v := range uint64(4) {
		mmioWrite32(b, bar0+0x800+16*v, 0xfee00000)
		mmioWrite32(b, bar0+0x800+16*v+8, uint32(0x40+v))
	}
	mmioWrite32(b, bar0+0x800+16*2+12, 1) // vector 2 masked
	fn.cs.SetINTx(true)
	fn.msix.Notify(2) // pending: masked
	b.ConfigIO().Write(0, le32(cfgEnable|1<<11|0x10))
	return b, fn
}

// pciStates saves the bus, the function's configuration space and its
// MSI-X state.
func pciStates(tb testing.TB, b *Bus, fn *testFn) [3][]byte {
	tb.Helper()
	var out [3][]byte
	var err error
	if out[0], err = b.SaveState(); err != nil {
		tb.Fatal(err)
	}
	if out[1], err = fn.cs.SaveState(); err != nil {
		tb.Fatal(err)
	}
	if out[2], err = fn.msix.SaveState(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// FuzzPCIRestore restores arbitrary bytes as the bus state (which: 0),
// a function's configuration space (1) or its MSI-X state (2), into a bus
// that holds a prior state: a refusal wraps ErrInvalidState and changes
// none of the three, an accepted state saves back byte for byte, and the
// function's identity registers survive either way.
func FuzzPCIRestore(f *testing.F) {
	b, fn := busyTestBus(f)
	states := pciStates(f, b, fn)
	for which, st := range states {
		f.Add(uint8(which), st)
		f.Add(uint8(which), st[:len(st)-1])
		f.Add(uint8(which), append(append([]byte(nil), st...), 0))
	}
	bad := append([]byte(nil), states[1]...)
	bad[8] ^= 0x01 // a read-only BAR type bit
	f.Add(uint8(1), bad)
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		b, fn := busyTestBus(t)
		before := pciStates(t, b, fn)
		restores := []func([]byte) error{b.RestoreState, fn.cs.RestoreState, fn.msix.RestoreState}
		which %= uint8(len(restores))
		err := restores[which](data)
		after := pciStates(t, b, fn)
		if err != nil {
			if !errors.Is(err, devices.ErrInvalidState) {
				t.Fatalf("refusal %v does not wrap ErrInvalidState", err)
			}
			for i := range after {
				if !bytes.Equal(after[i], before[i]) {
					t.Fatalf("a refused restore (%d) changed state %d", which, i)
				}
			}
		} else if !bytes.Equal(after[which], data) {
			t.Fatalf("restored (%d) % x, saves % x", which, data, after[which])
		}
		if got := cfgRead32(b, 1, RegVendorID); got != 0x1044<<16|0x1af4 {
			t.Fatalf("identity changed: %#x", got)
		}
	})
}
