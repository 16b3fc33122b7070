package vmm

import (
	"encoding/binary"

	"godwit/devices"
	virtionet "godwit/devices/virtio/net"
	"godwit/migrate"
	"godwit/vmm/kvm"
)

var _ migrate.StateBounder = (*VM)(nil)

// Bounds of the state a VM saves, for MaxStateBytes.
const (
	// sectionHeader is what a section costs besides its data in the
	// encoded state: ID length, ID, version, data length.
	sectionHeader = 2 + migrate.MaxSectionID + 4 + 4
	// deviceStateSlack bounds a virtio transport's state without the
	// device's own (PCI configuration, MSI-X table of at most 65
	// vectors, 64 queues: under 4 KiB) plus the device state of an
	// entropy device or a disk (a few dozen bytes), generously.
	deviceStateSlack = 16 << 10
	// stateSlack covers sections this bound does not itemise, such as a
	// later version's additions, so that the bound never refuses a
	// state this godwit's source can produce.
	stateSlack = 64 << 10
)

// MaxStateBytes implements migrate.StateBounder: an upper bound on the
// encoded state of a VM with this configuration (vCPUs, PCI devices), as
// its SaveState produces it and RestoreState accepts it. A destination
// refuses a longer state before reading it.
func (v *VM) MaxStateBytes() int {
	return stateBound(len(v.vcpus), v.cfg.pciDevices())
}

// stateBound is MaxStateBytes for cpus vCPUs and the PCI devices kinds.
func stateBound(cpus int, kinds []string) int {
	size := func(v any) int { return binary.Size(v) }
	// A vCPU as decodeVCPUState reads it, with the most CPUID entries and
	// MSRs it accepts.
	vcpu := 4 + maxCPUIDEntries*size(kvm.CPUIDEntry2{}) + size(kvm.MPState{}) + size(kvm.Regs{}) +
		size(kvm.Sregs{}) + size(kvm.XSave{}) + size(kvm.XCRS{}) + size(kvm.DebugRegs{}) +
		size(kvm.LAPICState{}) + 4 + maxMSRs*size(kvm.MSREntry{}) + size(kvm.VCPUEvents{})
	vmWide := 3*sectionHeader + 3*size(kvm.IRQChip{}) + size(kvm.PITState2{}) + size(kvm.ClockData{})
	serial := sectionHeader + 16 + devices.SerialFIFOSize
	n := 4 + cpus*(sectionHeader+vcpu) + vmWide + serial + stateSlack
	if len(kinds) > 0 {
		n += sectionHeader + deviceStateSlack // the PCI bus
	}
	for _, k := range kinds {
		n += sectionHeader + deviceStateSlack
		if k == pciDeviceNet {
			// The receive backlog travels with the device.
			n += 12 + virtionet.MaxBacklogFrames*4 + virtionet.MaxBacklogBytes
		}
	}
	return n
}
