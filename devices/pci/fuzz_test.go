package pci

import (
	"testing"
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
