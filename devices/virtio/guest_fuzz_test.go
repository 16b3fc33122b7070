package virtio_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"godwit/devices/pci"
	"godwit/devices/virtio/virtiotest"
)

// FuzzGuestAccess plays a hostile guest driver against a live transport
// (the sink device, its worker running) through the only ways a guest
// has: configuration cycles on ports 0xCF8/0xCFC, MMIO in the PCI window
// at whatever BAR 0 now decodes (common configuration, ISR, device
// configuration, notify registers, the MSI-X table and PBA), and resets
// by writing device_status 0, all interleaved with queue notifications
// while the worker pops chains from rings whose contents the guest also
// wrote. Each op is 8 bytes: kind, le16 offset, a byte whose bits 0-1
// choose the width (1, 2, 4, 8), le32 value. Nothing may panic or
// deadlock; the function's identity stays; and whatever state the guest
// left, the transport saves it and takes it back.
func FuzzGuestAccess(f *testing.F) {
	op := func(kind byte, off uint16, size byte, v uint32) []byte {
		b := []byte{kind, byte(off), byte(off >> 8), size}
		return binary.LittleEndian.AppendUint32(b, v)
	}
	var seed []byte
	seed = append(seed, op(0, pci.RegBAR0, 2, 0xffffffff)...) // size BAR 0
	seed = append(seed, op(2, 0, 2, 0)...)
	seed = append(seed, op(0, pci.RegBAR0, 2, 0xc0100000)...) // move it
	seed = append(seed, op(3, 0x14, 0, 0)...)                 // reset
	seed = append(seed, op(5, 0, 0, 1)...)                    // kick
	f.Add(seed)
	f.Add(append(op(0, pci.RegCommand, 1, 0), op(4, 0x16, 1, 1)...)) // memory decoding off, then MMIO
	f.Add(op(0, pci.RegBAR0, 2, 0x1000))                             // BAR 0 over RAM
	f.Add(op(3, 0x14, 0, 0xff))                                      // device_status with reserved bits
	f.Add(op(3, 0x4000, 2, 0xffffffff))                              // the MSI-X table
	f.Fuzz(func(t *testing.T, ops []byte) {
		m := virtiotest.NewMachine(t, &sink{})
		d := virtiotest.NewDriver(t, m)
		qs := virtiotest.Activate(t, virtiotest.Suite{QueueSize: 8}, d)
		bar0 := d.BAR0
		io := m.Bus.ConfigIO()
		mmio := m.Bus.MMIO()
		for len(ops) >= 8 {
			kind, off := ops[0]%7, uint64(binary.LittleEndian.Uint16(ops[1:]))
			data := binary.LittleEndian.AppendUint64(nil, uint64(binary.LittleEndian.Uint32(ops[4:]))|uint64(ops[5])<<32)
			data = data[:1<<(ops[3]&3)]
			ops = ops[8:]
			if bs := m.Transport.Config().BARs(); len(bs) > 0 {
				bar0 = bs[0].Base
			}
			switch kind {
			case 0: // configuration write, this function or another slot
				slot := uint32(m.Slot)
				if off&0x8000 != 0 {
					slot = uint32(off>>8) & 0x1f
				}
				io.Write(0, binary.LittleEndian.AppendUint32(nil, 0x8000_0000|slot<<11|uint32(off&0xfc)))
				io.Write(4+off&3, data)
			case 1: // configuration read
				io.Read(4+off&3, data)
			case 2: // raw CONFIG_ADDRESS write
				io.Write(off&7, data)
			case 3: // MMIO write into BAR 0
				mmio.Write(bar0-pci.WindowBase+off%0x8000, data)
			case 4: // MMIO read from BAR 0
				mmio.Read(bar0-pci.WindowBase+off%0x8000, data)
			case 5: // a notification, the usual MMIO way
				mmio.Write(bar0-pci.WindowBase+d.Notify-d.BAR0+uint64(off%2)*uint64(d.NotifyMult), data[:min(len(data), 2)])
				m.Transport.Notify(int(off % 4))
			case 6: // the guest scribbles over its rings
				q := qs[off%2]
				copy(d.Mem(q.Desc, 16*uint64(q.Size)), bytes.Repeat(data, 16))
				q.SetAvailIdx(uint16(data[0]))
			}
		}
		if id := d.Cfg32(0); id != (0x1040+0x7f)<<16|0x1af4 {
			t.Fatalf("identity %#x", id)
		}
		checkOwnState(t, m)
	})
}
