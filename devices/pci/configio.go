package pci

import (
	"encoding/binary"

	"godwit/devices"
)

// CONFIG_ADDRESS fields (§3.2.2.3.2, figure 3-1).
const (
	cfgEnable   = 1 << 31
	cfgAddrMask = cfgEnable | 0x00ff_fffc // bus, device, function, register; reserved bits read 0
)

// configIO is the port-I/O device for CONFIG_ADDRESS and CONFIG_DATA.
type configIO struct{ b *Bus }

// ConfigIO returns the device to register on the port-I/O bus at
// ConfigAddressPort with size ConfigIOSize. Only dword accesses reach
// CONFIG_ADDRESS (byte accesses to 0xCF8-0xCFB are other chipset
// registers on a PC; here they read as ones and are dropped), and
// CONFIG_DATA accepts any width at 0xCFC-0xCFF.
func (b *Bus) ConfigIO() devices.Device { return configIO{b} }

// Read implements devices.Device.
func (c configIO) Read(off uint64, data []byte) {
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if off == 0 && len(data) == 4 {
		binary.LittleEndian.PutUint32(data, b.addr)
		return
	}
	devices.FillOnes(data)
	cs, reg, n := b.target(off, len(data))
	if cs != nil {
		cs.Read(reg, data[:n])
	}
}

// Write implements devices.Device.
func (c configIO) Write(off uint64, data []byte) {
	b := c.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if off == 0 && len(data) == 4 {
		b.addr = binary.LittleEndian.Uint32(data) & cfgAddrMask
		return
	}
	cs, reg, n := b.target(off, len(data))
	if cs != nil {
		cs.Write(reg, data[:n])
	}
}

// target decodes CONFIG_ADDRESS for a CONFIG_DATA access at port offset
// off: the function's configuration space, the register offset and how
// many bytes of the access fall inside the addressed dword. It returns a
// nil ConfigSpace when nothing answers (disabled, bus ≠ 0, function ≠ 0,
// empty slot); b.mu is held.
func (b *Bus) target(off uint64, n int) (*ConfigSpace, uint64, int) {
	if off < 4 || off >= 8 || b.addr&cfgEnable == 0 {
		return nil, 0, 0
	}
	bus := b.addr >> 16 & 0xff
	dev := b.addr >> 11 & 0x1f
	fn := b.addr >> 8 & 0x7
	if bus != 0 || fn != 0 || b.slots[dev] == nil {
		return nil, 0, 0
	}
	within := off - 4
	return b.slots[dev].Config(), uint64(b.addr&0xfc) + within, min(n, int(4-within))
}
