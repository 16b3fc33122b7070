package vmm

import (
	"fmt"

	"godwit/devices"
	"godwit/devices/pci"
	"godwit/vmm/boot"
)

// ACPI: a Linux guest finds the tables boot.WriteACPI writes and powers
// the VM off by writing SLP_TYP = \_S5_ with SLP_EN to PM1a_CNT, which the
// devices.ACPIPM block turns into a clean stop. The PM block is on the
// port-I/O bus of every VM (a migration destination does not know its
// guest's kind); the tables are written for Linux guests only.

// acpiConfig describes the VM for boot.WriteACPI: the vCPUs as in the MP
// table and, with a PCI bus, its BAR window and INTx routes.
func (v *VM) acpiConfig() boot.ACPIConfig {
	c := boot.ACPIConfig{CPUs: v.cfg.CPUs}
	if v.pci != nil {
		host := &boot.ACPIPCIHost{MemBase: pci.WindowBase, MemEnd: pci.WindowEnd}
		for _, r := range v.pci.Routes() {
			host.Routes = append(host.Routes, boot.ACPIPCIRoute{Slot: r.Slot, Pin: r.Pin, GSI: r.GSI})
		}
		c.PCI = host
	}
	return c
}

// setupACPIPM registers the PM1a event and control blocks where the FADT
// says they are; the guest's S5 request stops the VM cleanly.
func (v *VM) setupACPIPM() error {
	if boot.ACPIPM1aControlBlock != boot.ACPIPM1aEventBlock+devices.ACPIPMControlOffset ||
		boot.ACPIPM1EventLen+boot.ACPIPM1ControlLen != devices.ACPIPMSize {
		return fmt.Errorf("ACPI PM block: the FADT's layout does not match the device's")
	}
	pm := devices.NewACPIPM(boot.ACPISleepTypeS5, func() {
		v.requestStop(StopReason{Clean: true, What: "guest powered off"})
	})
	pm.SetSCI(irqLine{vm: v, irq: boot.ACPISCI})
	return v.pio.Register(uint64(boot.ACPIPM1aEventBlock), devices.ACPIPMSize, "acpi-pm", pm)
}
