package kvm

import (
	"encoding/binary"
	"fmt"
)

// IRQRoutingEntry mirrors struct kvm_irq_routing_entry: one GSI route.
// U is the union (struct kvm_irq_routing_irqchip, struct
// kvm_irq_routing_msi, ...) as eight words; build entries with
// IRQChipRoute and MSIRoute.
type IRQRoutingEntry struct {
	GSI   uint32
	Type  uint32 // IRQRoutingIRQChip or IRQRoutingMSI
	Flags uint32
	Pad   uint32
	U     [8]uint32
}

// IRQRoutingEntry.Type values (KVM_IRQ_ROUTING_*).
const (
	IRQRoutingIRQChip = 1 // KVM_IRQ_ROUTING_IRQCHIP: U = {irqchip, pin}
	IRQRoutingMSI     = 2 // KVM_IRQ_ROUTING_MSI: U = {address_lo, address_hi, data, devid}
)

// MaxIRQRoutes is the most entries one routing table may have (the
// kernel's KVM_MAX_IRQ_ROUTES on x86).
const MaxIRQRoutes = 4096

// irqRoutingEntrySize is sizeof(struct kvm_irq_routing_entry).
const irqRoutingEntrySize = 48

// IRQChipRoute routes gsi to pin of an in-kernel irqchip (IRQChipPICMaster,
// IRQChipPICSlave or IRQChipIOAPIC).
func IRQChipRoute(gsi, chip, pin uint32) IRQRoutingEntry {
	return IRQRoutingEntry{GSI: gsi, Type: IRQRoutingIRQChip, U: [8]uint32{chip, pin}}
}

// MSIRoute routes gsi to an MSI message.
func MSIRoute(gsi, addressLo, addressHi, data uint32) IRQRoutingEntry {
	return IRQRoutingEntry{GSI: gsi, Type: IRQRoutingMSI, U: [8]uint32{addressLo, addressHi, data}}
}

// marshalIRQRouting lays out struct kvm_irq_routing (nr, flags, entries[]).
func marshalIRQRouting(entries []IRQRoutingEntry) []uint64 {
	w := make([]uint64, 1+irqRoutingEntrySize/8*len(entries))
	b := wordBytes(w)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(entries)))
	for i, e := range entries {
		o := b[8+irqRoutingEntrySize*i:]
		binary.NativeEndian.PutUint32(o[0:], e.GSI)
		binary.NativeEndian.PutUint32(o[4:], e.Type)
		binary.NativeEndian.PutUint32(o[8:], e.Flags)
		binary.NativeEndian.PutUint32(o[12:], e.Pad)
		for j, u := range e.U {
			binary.NativeEndian.PutUint32(o[16+4*j:], u)
		}
	}
	return w
}

// unmarshalIRQRouting decodes a struct kvm_irq_routing buffer (for tests
// and diagnostics).
func unmarshalIRQRouting(w []uint64) ([]IRQRoutingEntry, error) {
	b := wordBytes(w)
	if len(b) < 8 {
		return nil, fmt.Errorf("kvm_irq_routing buffer of %d bytes has no header", len(b))
	}
	n := binary.NativeEndian.Uint32(b)
	if capacity := (len(b) - 8) / irqRoutingEntrySize; uint64(n) > uint64(capacity) {
		return nil, fmt.Errorf("kvm_irq_routing reports %d entries, buffer holds %d", n, capacity)
	}
	out := make([]IRQRoutingEntry, n)
	for i := range out {
		o := b[8+irqRoutingEntrySize*i:]
		u := func(off int) uint32 { return binary.NativeEndian.Uint32(o[off:]) }
		out[i] = IRQRoutingEntry{GSI: u(0), Type: u(4), Flags: u(8), Pad: u(12)}
		for j := range out[i].U {
			out[i].U[j] = u(16 + 4*j)
		}
	}
	return out, nil
}

// SetGSIRouting issues KVM_SET_GSI_ROUTING, replacing the whole GSI routing
// table (the default table routes GSIs 0-15 to the PICs and 0-23 to the
// IOAPIC; include those routes to keep them).
func (v *VM) SetGSIRouting(entries []IRQRoutingEntry) error {
	const op = "KVM_SET_GSI_ROUTING"
	if len(entries) > MaxIRQRoutes {
		return opError(op, fmt.Errorf("%d routes, at most %d allowed", len(entries), MaxIRQRoutes))
	}
	for i, e := range entries {
		if e.Type != IRQRoutingIRQChip && e.Type != IRQRoutingMSI {
			return opError(op, fmt.Errorf("entry %d (GSI %d): unsupported route type %d", i, e.GSI, e.Type))
		}
	}
	_, err := ioctlWords(v.fd, kvmSetGSIRouting, op, marshalIRQRouting(entries))
	return err
}
