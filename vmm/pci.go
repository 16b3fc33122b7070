package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"godwit/devices/pci"
	"godwit/devices/tap"
	"godwit/devices/virtio"
	"godwit/devices/virtio/blk"
	virtionet "godwit/devices/virtio/net"
	"godwit/devices/virtio/rng"
	"godwit/migrate"
	"godwit/vmm/boot"
	"godwit/vmm/kvm"
)

// PCI devices. The VM has a PCI bus (devices/pci) only when a PCI device
// is configured, so a VM without one looks exactly as before to the guest:
// no answer at 0xCF8, no host bridge.
//
// Wiring: the root complex's CONFIG_ADDRESS/CONFIG_DATA ports sit on the
// port-I/O bus at 0xCF8, its BAR window [pci.WindowBase, pci.WindowEnd) on
// the MMIO bus (inside the 32-bit MMIO hole, below the IOAPIC). MSI-X
// messages go to KVM_SIGNAL_MSI; INTx is level triggered through
// KVM_IRQ_LINE on the IOAPIC inputs the bus routes (GSIs 16-23), which the
// MP table describes with one PCI I/O interrupt entry per routed pin and
// the ACPI DSDT with the host bridge's _PRT (Linux uses the latter when
// ACPI is present).
//
// Devices are added in the order of Config.pciDevices; that order decides
// slots and BAR addresses, so a migration destination builds the same bus
// from the device list in MigrationConfig.

// Names of the PCI devices godwit can add, as they appear in
// MigrationConfig.Devices.
const (
	pciDeviceRNG = "virtio-rng"
	pciDeviceBlk = "virtio-blk"
	pciDeviceNet = "virtio-net"
)

// Section IDs and versions of the PCI state.
const (
	sectionPCI         = "pci"
	sectionDevPrefix   = "dev/"
	pciStateVersion    = 1
	virtioStateVersion = 1
)

// pciDevice is one virtio device on the VM's PCI bus.
type pciDevice struct {
	// name is the device's section name: its kind and an index
	// ("virtio-rng0").
	name string
	t    *virtio.Transport
	slot uint8
	disk *blk.Disk         // the backend of a virtio-blk device, else nil
	nic  *virtionet.Device // the backend of a virtio-net device, else nil
	tap  string            // the tap of a virtio-net device
}

// pciDevices returns the kinds of PCI devices cfg asks for, in the order
// they are added to the bus: the entropy device, then one virtio-blk
// device per disk in Config.Disks order, then one virtio-net device per
// tap in Config.Nets order.
func (c *Config) pciDevices() []string {
	var out []string
	if c.RNG {
		out = append(out, pciDeviceRNG)
	}
	for range c.Disks {
		out = append(out, pciDeviceBlk)
	}
	for range c.Nets {
		out = append(out, pciDeviceNet)
	}
	return out
}

// diskSerial is the GET_ID serial of disk i ("godwit-disk0"): stable
// across migrations, unlike host paths, and at most blk.IDBytes long.
func diskSerial(i int) string { return fmt.Sprintf("godwit-disk%d", i) }

// newVirtioDevice returns the backend of the index-th PCI device of a
// kind.
func (c *Config) newVirtioDevice(kind string, index int) (virtio.Device, error) {
	switch kind {
	case pciDeviceRNG:
		return rng.New(), nil
	case pciDeviceBlk:
		d := c.Disks[index]
		return blk.Open(d.Path, blk.Options{ReadOnly: d.ReadOnly, Serial: diskSerial(index)})
	case pciDeviceNet:
		n := c.Nets[index]
		t, err := tap.Open(n.Tap)
		if err != nil {
			return nil, err
		}
		dev, err := virtionet.New(t, virtionet.Options{MAC: n.MAC})
		if err != nil {
			t.Close()
			return nil, err
		}
		return dev, nil
	}
	return nil, fmt.Errorf("unknown PCI device %q", kind)
}

// setupPCI creates the PCI bus and the configured virtio devices. It needs
// guest RAM but not KVM: interrupts reach KVM only once the VM runs.
func (v *VM) setupPCI() error {
	kinds := v.cfg.pciDevices()
	if len(kinds) == 0 {
		return nil
	}
	notify := newNotifiers(v.log)
	bus, err := pci.NewBus(pci.BusConfig{
		INTx:     func(gsi uint8) pci.INTxLine { return irqLine{vm: v, irq: uint32(gsi)} },
		OnDecode: notify.sync,
	})
	if err != nil {
		return err
	}
	v.pci = bus
	v.notify = notify
	count := map[string]int{}
	for _, kind := range kinds {
		name := fmt.Sprintf("%s%d", kind, count[kind])
		dev, err := v.cfg.newVirtioDevice(kind, count[kind])
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		disk, _ := dev.(*blk.Disk)
		nic, _ := dev.(*virtionet.Device)
		t, err := virtio.NewTransport(dev, v.mem, msiSender{v})
		if err != nil {
			if c, ok := dev.(io.Closer); ok {
				c.Close()
			}
			return fmt.Errorf("%s: %w", name, err)
		}
		d := &pciDevice{name: name, t: t, disk: disk, nic: nic}
		if nic != nil {
			d.tap = v.cfg.Nets[count[kind]].Tap
			v.log.Info("network device", "name", name, "tap", d.tap, "mac", virtionet.FormatMAC(nic.MAC()))
		}
		count[kind]++
		// Appended before Add so that Close releases it on any error.
		v.pciDevs = append(v.pciDevs, d)
		if d.slot, err = bus.Add(t); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		if err := notify.addTransport(d.name, t, bus); err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		v.log.Debug("PCI device", "name", d.name, "slot", d.slot)
	}
	if v.cfg.Incoming {
		// A migration destination's devices stay paused until Start
		// (see startIncomingDevices): RestoreState re-activates them
		// before the irqchips and vCPUs are restored, and a device
		// running then would deliver into guest RAM and signal MSIs
		// into LAPICs that KVM_SET_LAPIC then overwrites. A lost
		// used-buffer interrupt is never sent again with
		// VIRTIO_F_EVENT_IDX (the driver's used_event does not move
		// until it runs its handler): a Linux guest's receive queue
		// then stops for good.
		if err := v.pauseDevices(context.Background()); err != nil {
			return err
		}
	}
	return nil
}

// startIncomingDevices lets a migration destination's devices run, once
// the whole VM state (irqchips, LAPICs) is restored: interrupts they send
// from now on stay pending in the restored LAPICs until the vCPUs run.
// Devices that were never paused (a VM that is not incoming) are
// unaffected.
func (v *VM) startIncomingDevices() error {
	if !v.cfg.Incoming {
		return nil
	}
	return v.resumeDevices()
}

// registerPCI puts the root complex on the port-I/O and MMIO buses.
func (v *VM) registerPCI() error {
	if v.pci == nil {
		return nil
	}
	if err := v.pio.Register(pci.ConfigAddressPort, pci.ConfigIOSize, "pci-config", v.pci.ConfigIO()); err != nil {
		return err
	}
	return v.mmio.Register(pci.WindowBase, pci.WindowSize, "pci-window", v.pci.MMIO())
}

// mpConfig returns the MP table description: the vCPUs and a PCI
// interrupt entry for every routed INTx pin.
func (v *VM) mpConfig() boot.MPConfig {
	mc := boot.MPConfig{CPUs: v.cfg.CPUs}
	if v.pci != nil {
		for _, r := range v.pci.Routes() {
			mc.Interrupts = append(mc.Interrupts, boot.PCIInterrupt(r.Slot, r.Pin, r.GSI))
		}
	}
	return mc
}

// msiSender delivers MSI-X messages through the VM's MSI routes (irqfds),
// which exist once the KVM VM does (see attachMSIRoutes).
type msiSender struct{ vm *VM }

// SignalMSI implements pci.MSIDelivery.
func (m msiSender) SignalMSI(addr uint64, data uint32) error {
	if m.vm.msi == nil {
		return fmt.Errorf("MSI %#x/%#x before the VM exists", addr, data)
	}
	return m.vm.msi.SignalMSI(addr, data)
}

// attachMSIRoutes sets up MSI delivery for the KVM VM: GSI routes and
// irqfds when KVM has both capabilities, else KVM_SIGNAL_MSI.
func (v *VM) attachMSIRoutes() {
	if v.pci == nil {
		return
	}
	routing := true
	for _, c := range []kvm.Cap{kvm.CapIRQRouting, kvm.CapIRQFD} {
		if n, err := v.sys.CheckExtension(c); err != nil || n == 0 {
			v.log.Debug("MSIs go through KVM_SIGNAL_MSI: capability missing", "cap", c, "err", err)
			routing = false
		}
	}
	v.msi = newMSIRoutes(v.vm, routing, v.log)
}

// pauseDevices quiesces every device worker; on error the devices paused
// so far run again.
func (v *VM) pauseDevices(ctx context.Context) error {
	for i, d := range v.pciDevs {
		if err := d.t.Pause(ctx); err != nil {
			for _, r := range v.pciDevs[:i+1] {
				_ = r.t.Resume()
			}
			return fmt.Errorf("pausing %s: %w", d.name, err)
		}
	}
	return nil
}

// resumeDevices lets every device worker run again.
func (v *VM) resumeDevices() error {
	var errs []error
	for _, d := range v.pciDevs {
		if err := d.t.Resume(); err != nil {
			errs = append(errs, fmt.Errorf("resuming %s: %w", d.name, err))
		}
	}
	return errors.Join(errs...)
}

// closeDevices deregisters the queue notification ioeventfds (so it must
// run before the KVM VM is closed), stops every device worker for good,
// then closes the disk images and the taps. It is idempotent.
func (v *VM) closeDevices() error {
	if v.notify != nil {
		v.notify.close()
	}
	var errs []error
	for _, d := range v.pciDevs {
		errs = append(errs, d.t.Close())
	}
	// The workers have stopped: no MSI is being signalled.
	if v.msi != nil {
		v.msi.close()
	}
	for _, d := range v.pciDevs {
		var c io.Closer
		switch {
		case d.disk != nil:
			c = d.disk
		case d.nic != nil:
			c = d.nic
		default:
			continue
		}
		if err := c.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, fmt.Errorf("closing %s: %w", d.name, err))
		}
	}
	return errors.Join(errs...)
}

// NICs returns the VM's virtio-net devices in Config.Nets order.
func (v *VM) NICs() []*virtionet.Device {
	var out []*virtionet.Device
	for _, d := range v.pciDevs {
		if d.nic != nil {
			out = append(out, d.nic)
		}
	}
	return out
}

// announceNICs makes every network device announce the guest (RARP from
// the tap, and the guest's own announcement where its driver supports
// it): a migrated VM calls it once it runs on the destination, so that
// the network delivers the guest's traffic to this host's taps.
func (v *VM) announceNICs() {
	for _, d := range v.pciDevs {
		if d.nic != nil {
			guest := d.nic.Announce()
			v.log.Info("announcing the guest on the network", "name", d.name, "tap", d.tap,
				"mac", virtionet.FormatMAC(d.nic.MAC()), "guest_announce", guest)
		}
	}
}

// Disks returns the VM's virtio-blk disks in Config.Disks order, for a
// storage migration (each has its written-block bitmap).
func (v *VM) Disks() []*blk.Disk {
	var out []*blk.Disk
	for _, d := range v.pciDevs {
		if d.disk != nil {
			out = append(out, d.disk)
		}
	}
	return out
}

// savePCIState returns the PCI bus section and one section per device.
// The VM is paused.
func (v *VM) savePCIState() ([]migrate.Section, error) {
	if v.pci == nil {
		return nil, nil
	}
	b, err := v.pci.SaveState()
	if err != nil {
		return nil, fmt.Errorf("saving the PCI bus: %w", err)
	}
	out := []migrate.Section{{ID: sectionPCI, Version: pciStateVersion, Data: b}}
	for _, d := range v.pciDevs {
		b, err := d.t.SaveState()
		if err != nil {
			return nil, fmt.Errorf("saving %s: %w", d.name, err)
		}
		out = append(out, migrate.Section{ID: sectionDevPrefix + d.name, Version: virtioStateVersion, Data: b})
	}
	return out, nil
}

// isPCISection reports whether id names PCI state this VM has.
func (v *VM) isPCISection(id string) bool {
	if v.pci == nil {
		return false
	}
	if id == sectionPCI {
		return true
	}
	for _, d := range v.pciDevs {
		if id == sectionDevPrefix+d.name {
			return true
		}
	}
	return false
}

// checkPCISections checks that every PCI section this VM needs is present
// with a known version, before anything is restored.
func (v *VM) checkPCISections(byID map[string]migrate.Section) error {
	if v.pci == nil {
		return nil
	}
	want := []struct {
		id      string
		version uint32
	}{{sectionPCI, pciStateVersion}}
	for _, d := range v.pciDevs {
		want = append(want, struct {
			id      string
			version uint32
		}{sectionDevPrefix + d.name, virtioStateVersion})
	}
	for _, w := range want {
		s, ok := byID[w.id]
		if !ok {
			return fmt.Errorf("%w: section %s missing", errState, w.id)
		}
		if s.Version != w.version {
			return fmt.Errorf("%w: %s: version %d, want %d", errState, s.ID, s.Version, w.version)
		}
	}
	return nil
}

// restorePCIState restores the bus and every device. Each validates its
// bytes before changing anything; the first failure stops the restore
// (the destination VM is then discarded).
func (v *VM) restorePCIState(byID map[string]migrate.Section) error {
	if v.pci == nil {
		return nil
	}
	if err := v.pci.RestoreState(byID[sectionPCI].Data); err != nil {
		return fmt.Errorf("%w: restoring the PCI bus: %w", errState, err)
	}
	for _, d := range v.pciDevs {
		if err := d.t.RestoreState(byID[sectionDevPrefix+d.name].Data); err != nil {
			return fmt.Errorf("%w: restoring %s: %w", errState, d.name, err)
		}
	}
	return nil
}

// configDevices sets the device options of cfg from a migration device
// list, the disks to open for its virtio-blk devices and the taps of its
// virtio-net devices.
func configDevices(cfg *Config, kinds []string, disks []DiskConfig, nets []NetConfig) {
	cfg.RNG = slices.Contains(kinds, pciDeviceRNG)
	cfg.Disks = disks
	cfg.Nets = nets
}

// checkDeviceList checks a migration device list: known kinds, one
// virtio-blk device per disk and one virtio-net device per network device
// of the configuration, in the order a VM configured with them would add
// them.
func checkDeviceList(kinds []string, disks, nets int) error {
	for _, k := range kinds {
		if k != pciDeviceRNG && k != pciDeviceBlk && k != pciDeviceNet {
			return fmt.Errorf("unknown PCI device %q", k)
		}
	}
	if n := countKind(kinds, pciDeviceBlk); n != disks {
		return fmt.Errorf("%d virtio-blk devices for %d disks", n, disks)
	}
	if n := countKind(kinds, pciDeviceNet); n != nets {
		return fmt.Errorf("%d virtio-net devices for %d network devices", n, nets)
	}
	var cfg Config
	configDevices(&cfg, kinds, make([]DiskConfig, disks), make([]NetConfig, nets))
	if want := cfg.pciDevices(); !slices.Equal(want, kinds) {
		return fmt.Errorf("PCI devices %q: this godwit would add %q", kinds, want)
	}
	return nil
}

// countKind returns how often kind occurs in kinds.
func countKind(kinds []string, kind string) int {
	n := 0
	for _, k := range kinds {
		if k == kind {
			n++
		}
	}
	return n
}
