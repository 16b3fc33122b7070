package pci

import "fmt"

// Capability is an entry of a function's capability list (PCI Local Bus
// Specification 3.0 §6.7). The ConfigSpace places it, dword aligned, and
// serves its first two bytes (ID and next pointer) itself.
type Capability interface {
	// CapID is the capability ID.
	CapID() uint8
	// CapLen is the length in bytes including the two header bytes; at
	// most ConfigSize-HeaderSize.
	CapLen() int
	// ReadCap fills data from offset off (≥ 2) of the capability.
	// off+len(data) ≤ CapLen. It is called with the ConfigSpace lock held.
	ReadCap(off int, data []byte)
	// WriteCap stores data at offset off (≥ 2) of the capability.
	WriteCap(off int, data []byte)
}

// StaticCapability is a read-only capability such as the virtio vendor
// capabilities (virtio 1.2 §4.1.4).
type StaticCapability struct {
	// ID is the capability ID.
	ID uint8
	// Body is the capability after the two header bytes; its length
	// gives the capability length (so a vendor capability's cap_len byte
	// should be len(Body)+2).
	Body []byte
}

// CapID implements Capability.
func (c *StaticCapability) CapID() uint8 { return c.ID }

// CapLen implements Capability.
func (c *StaticCapability) CapLen() int { return len(c.Body) + 2 }

// ReadCap implements Capability.
func (c *StaticCapability) ReadCap(off int, data []byte) {
	for i := range data {
		p := off - 2 + i
		if p >= 0 && p < len(c.Body) {
			data[i] = c.Body[p]
		} else {
			data[i] = 0
		}
	}
}

// WriteCap implements Capability: the capability is read-only.
func (c *StaticCapability) WriteCap(int, []byte) {}

// capEntry is a placed capability.
type capEntry struct {
	off int // offset in configuration space
	cap Capability
}

// layoutCaps places caps one after another from HeaderSize, dword aligned.
func layoutCaps(caps []Capability) ([]capEntry, error) {
	var out []capEntry
	off := HeaderSize
	for i, c := range caps {
		if c == nil {
			return nil, fmt.Errorf("pci: capability %d is nil", i)
		}
		n := c.CapLen()
		if n < 2 || off+n > ConfigSize {
			return nil, fmt.Errorf("pci: capability %d (ID %#x, %d bytes) does not fit in configuration space", i, c.CapID(), n)
		}
		out = append(out, capEntry{off: off, cap: c})
		off = (off + n + 3) &^ 3
	}
	return out, nil
}
