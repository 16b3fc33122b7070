package kvm

import (
	"testing"
)

// FuzzRunPage decodes arbitrary kvm_run mappings (the page the kernel
// fills on every exit, with a guest-chosen port, access size, repeat
// count and data window) as an I/O and as an MMIO exit. Decoding must
// never panic, and an accepted exit's data must be the window the page
// names: inside the mapping, past the kvm_run structure, exactly
// size × count (I/O) or 1 to 8 bytes (MMIO) long, and aliasing the
// mapping (the VMM answers an IN or a read through it).
func FuzzRunPage(f *testing.F) {
	f.Add([]byte(ioPage(exitIOOut, 1, 0x3f8, 1, 4096)))
	f.Add([]byte(ioPage(exitIOIn, 4, 0xcfc, 1024, 4096)))
	f.Add([]byte(ioPage(exitIOOut, 2, 0x10, 0xffffffff, 4090)))
	f.Add([]byte(ioPage(exitIOOut, 1, 0x10, 1, 4096)[:runSize]))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := runPage(b)
		if e, err := p.decodeIO(); err == nil {
			off := p.u64(runIODataOffset)
			n := uint64(len(e.Data))
			if off < runSize || off > uint64(len(b)) || n > uint64(len(b))-off || n != uint64(e.Size)*uint64(e.Count) || n == 0 || cap(e.Data) != len(e.Data) {
				t.Fatalf("I/O exit %+v: %d data bytes at %#x of a %d-byte mapping", e, n, off, len(b))
			}
			e.Data[0] ^= 0xff
			if b[off] != e.Data[0] {
				t.Fatal("I/O data does not alias the mapping at its offset")
			}
		}
		if e, err := p.decodeMMIO(); err == nil {
			n := len(e.Data)
			if n == 0 || n > maxMMIOLen || runMMIOData+n > len(b) || cap(e.Data) != n {
				t.Fatalf("MMIO exit: %d data bytes", n)
			}
			e.Data[0] ^= 0xff
			if b[runMMIOData] != e.Data[0] {
				t.Fatal("MMIO data does not alias the mapping")
			}
		}
	})
}
