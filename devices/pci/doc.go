// Package pci emulates a conventional PCI bus 0 for godwit: the root
// complex reached through configuration mechanism 1 (ports 0xCF8/0xCFC,
// PCI Local Bus Specification 3.0 §3.2.2.3.2), a host bridge at 00:00.0,
// type 0 configuration headers with the BAR sizing protocol (§6.2.5.1), the
// command register, INTx, a capability list (§6.7) and MSI-X (§6.8.2).
//
// The root complex is two devices.Device values: ConfigIO, registered on
// the port-I/O bus at 0xCF8 (8 ports), and MMIO, registered once on the
// MMIO bus over the whole BAR window [0xC0000000, 0xFE000000). The MMIO
// device decodes each access against the BARs as they are currently
// programmed, so the guest may move BARs freely without touching the VMM's
// MMIO bus.
//
// Every value the guest writes is hostile: accesses of any width at any
// offset are accepted, nothing panics, and saved state is validated before
// it is restored.
//
// Lock order: Bus.mu → ConfigSpace.mu → (capability locks, e.g. MSIX.mu) →
// INTxLine / MSIDelivery. The BAR decode table is rebuilt under Bus.decodeMu,
// which is taken before any ConfigSpace.mu and never while one is held.
package pci
