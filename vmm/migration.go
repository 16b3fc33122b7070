package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	virtionet "godwit/devices/virtio/net"
	"godwit/internal/remap"
	"godwit/migrate"
	"godwit/migrate/storage"
	"godwit/test/guest"
	"godwit/vmm/kvm"
	"godwit/vmm/memory"
)

var (
	_ migrate.Source       = (*VM)(nil)
	_ migrate.DirtyClearer = (*VM)(nil)
	_ migrate.Target       = (*VM)(nil)
)

// MigrationConfig is the VM description a source sends in the migration
// handshake. The destination builds an identical VM from it; host
// resources (files, sockets) come from the destination's own flags.
type MigrationConfig struct {
	// MemoryBytes is the guest RAM size.
	MemoryBytes uint64 `json:"memory_bytes"`
	// CPUs is the number of vCPUs.
	CPUs int `json:"cpus"`
	// Guest is the guest kind ("linux", "boot-sector", "test-guest").
	Guest string `json:"guest"`
	// TestGuest holds the embedded test guest's parameters, when it runs.
	TestGuest *guest.Params `json:"test_guest,omitempty"`
	// CPUID is the feature part of the source vCPUs' CPUID, which the
	// destination host must support.
	CPUID []CPUIDFeatures `json:"cpuid"`
	// Kernel, Initrd and Cmdline describe how the guest was booted, for
	// information only.
	Kernel  string `json:"kernel,omitempty"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
	// Devices are the PCI devices in bus order ("virtio-rng",
	// "virtio-blk", "virtio-net"); the destination adds the same devices
	// in the same order, so slots, BARs and saved state line up.
	Devices []string `json:"devices,omitempty"`
	// Disks are the disks of the virtio-blk devices, in order. Without
	// Storage, the destination opens each image at its source path, or
	// where Config.DiskMap says (shared storage: both sides see the same
	// image), and refuses the migration before any page moves if one
	// cannot be opened or has another size.
	Disks []MigrationDisk `json:"disks,omitempty"`
	// Storage says the disks' contents travel in the migration stream
	// (`godwit migrate --include-storage`): the destination creates new
	// images where Config.DiskMap or Config.StorageDir say, and refuses
	// before any page moves if one exists or space is short.
	Storage bool `json:"storage,omitempty"`
	// Nets are the virtio-net devices, in order: the tap each uses on
	// the source and the guest's MAC. The destination opens the tap of
	// the same name, or the one Config.TapMap maps it to, and gives the
	// device the same MAC.
	Nets []MigrationNet `json:"nets,omitempty"`
}

// MigrationNet is one network device in the migration handshake.
type MigrationNet struct {
	// Tap is the tap's name on the source.
	Tap string `json:"tap"`
	// MAC is the guest's address, six colon-separated hex bytes.
	MAC string `json:"mac"`
}

// MigrationDisk is one disk in the migration handshake.
type MigrationDisk struct {
	// Path is the image path on the source.
	Path string `json:"path"`
	// ReadOnly says whether the guest sees a read-only disk.
	ReadOnly bool `json:"readonly,omitempty"`
	// Sectors is the disk size in 512-byte sectors.
	Sectors uint64 `json:"sectors"`
	// Allocated is, in a storage migration, what the source image has
	// allocated in bytes: the space the destination needs at least.
	Allocated uint64 `json:"allocated,omitempty"`
}

// CPUIDFeatures is one CPUID leaf's feature registers.
type CPUIDFeatures struct {
	Function uint32 `json:"function"`
	Index    uint32 `json:"index"`
	EBX      uint32 `json:"ebx"`
	ECX      uint32 `json:"ecx"`
	EDX      uint32 `json:"edx"`
}

// featureLeaves are the CPUID leaves whose bits name CPU features a guest
// may use; every bit the source exposes must exist on the destination.
var featureLeaves = []struct{ function, index uint32 }{{1, 0}, {7, 0}, {0x80000001, 0}}

// featureMask clears bits that are not CPU features (APIC IDs, counts).
func featureMask(function uint32) (ebx, ecx, edx uint32) {
	switch function {
	case 1:
		// EBX: brand, CLFLUSH size, count, APIC ID; ECX bit 27 OSXSAVE
		// and bit 31 (hypervisor) are set by the OS or by godwit.
		return 0, ^uint32(1<<27 | 1<<31), ^uint32(0)
	}
	return ^uint32(0), ^uint32(0), ^uint32(0)
}

// Config implements migrate.Source.
func (v *VM) Config() ([]byte, error) { return json.Marshal(v.migrationConfig()) }

// migrationConfig describes the VM for the handshake.
func (v *VM) migrationConfig() MigrationConfig {
	mc := MigrationConfig{
		MemoryBytes: v.cfg.MemoryBytes,
		CPUs:        v.cfg.CPUs,
		Guest:       v.cfg.GuestKind(),
		TestGuest:   v.guestParam,
		Kernel:      v.cfg.Kernel,
		Initrd:      v.cfg.Initrd,
		Cmdline:     v.cfg.Cmdline,
		Devices:     v.cfg.pciDevices(),
		Disks:       v.migrationDisks(),
		Nets:        v.migrationNets(),
	}
	cpuid := v.vcpus[0].cpuid
	for _, l := range featureLeaves {
		if e := cpuid.Find(l.function, l.index); e != nil {
			mb, mc2, md := featureMask(l.function)
			mc.CPUID = append(mc.CPUID, CPUIDFeatures{Function: l.function, Index: l.index, EBX: e.EBX & mb, ECX: e.ECX & mc2, EDX: e.EDX & md})
		}
	}
	return mc
}

// ParseMigrationConfig decodes and validates a handshake configuration.
func ParseMigrationConfig(b []byte) (MigrationConfig, error) {
	var mc MigrationConfig
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&mc); err != nil {
		return mc, fmt.Errorf("VM configuration: %w", err)
	}
	if _, err := memory.Layout(mc.MemoryBytes); err != nil {
		return mc, fmt.Errorf("VM configuration: %w", err)
	}
	if mc.CPUs < 1 || mc.CPUs > MaxCPUs {
		return mc, fmt.Errorf("VM configuration: %d vCPUs, this godwit supports 1..%d", mc.CPUs, MaxCPUs)
	}
	if len(mc.CPUID) > len(featureLeaves) {
		return mc, fmt.Errorf("VM configuration: %d CPUID leaves", len(mc.CPUID))
	}
	if len(mc.Disks) > MaxDisks {
		return mc, fmt.Errorf("VM configuration: %d disks, this godwit supports up to %d", len(mc.Disks), MaxDisks)
	}
	for i, d := range mc.Disks {
		if d.Path == "" {
			return mc, fmt.Errorf("VM configuration: disk %d has no path", i)
		}
		if mc.Storage && (d.Sectors == 0 || d.Sectors > migrate.MaxDiskSize/512 || d.Allocated > d.Sectors*512) {
			return mc, fmt.Errorf("VM configuration: disk %d: %d sectors with %d bytes allocated", i, d.Sectors, d.Allocated)
		}
	}
	if len(mc.Nets) > MaxNets {
		return mc, fmt.Errorf("VM configuration: %d network devices, this godwit supports up to %d", len(mc.Nets), MaxNets)
	}
	if _, err := sourceNets(mc.Nets); err != nil {
		return mc, fmt.Errorf("VM configuration: %w", err)
	}
	if err := checkDeviceList(mc.Devices, len(mc.Disks), len(mc.Nets)); err != nil {
		return mc, fmt.Errorf("VM configuration: %w", err)
	}
	if mc.TestGuest != nil {
		if err := mc.TestGuest.Validate(mc.MemoryBytes); err != nil {
			return mc, fmt.Errorf("VM configuration: test guest: %w", err)
		}
	}
	return mc, nil
}

// checkCPUID refuses a source whose CPU features this host's KVM lacks.
func checkCPUID(src []CPUIDFeatures, host *kvm.CPUID) error {
	var missing []string
	for _, f := range src {
		h := host.Find(f.Function, f.Index)
		var hb, hc, hd uint32
		if h != nil {
			hb, hc, hd = h.EBX, h.ECX, h.EDX
		}
		for _, r := range []struct {
			name     string
			src, dst uint32
		}{{"ebx", f.EBX, hb}, {"ecx", f.ECX, hc}, {"edx", f.EDX, hd}} {
			if m := r.src &^ r.dst; m != 0 {
				missing = append(missing, fmt.Sprintf("leaf %#x.%d %s bits %#x", f.Function, f.Index, r.name, m))
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("this host's CPU lacks features the VM uses: %s", strings.Join(missing, ", "))
	}
	return nil
}

// NewIncoming creates a VM that will receive a migrated guest: RAM,
// irqchip, devices and vCPUs as the source described, and no guest loaded.
// local supplies the host side: serial backend, API socket, logger.
func NewIncoming(config []byte, local Config) (*VM, error) {
	mc, err := ParseMigrationConfig(config)
	if err != nil {
		return nil, err
	}
	local.MemoryBytes, local.CPUs, local.Incoming = mc.MemoryBytes, mc.CPUs, true
	local.Kernel, local.Initrd, local.Cmdline, local.BootSector, local.GuestArgs = mc.Kernel, mc.Initrd, mc.Cmdline, "", nil
	nets, err := incomingNets(mc.Nets, local.TapMap)
	if err != nil {
		return nil, err
	}
	var disks []DiskConfig
	var images []*storage.Image
	switch {
	case mc.Storage:
		// Created last: a refusal of anything else leaves no file.
		if images, disks, err = createIncomingImages(mc.Disks, local); err != nil {
			return nil, err
		}
	case local.StorageDir != "" || local.Overwrite:
		return nil, errors.New("receive --storage-dir and --overwrite are for a VM whose disks come with it, and the source does not send its disks (godwit migrate --include-storage does)")
	default:
		if disks, err = incomingDisks(mc.Disks, local.DiskMap); err != nil {
			return nil, err
		}
	}
	local.StorageDir, local.Overwrite = "", false
	configDevices(&local, mc.Devices, disks, nets)
	v, err := newVM(local, mc.TestGuest)
	if err != nil {
		storage.RemoveAll(images)
		return nil, err
	}
	v.images = images
	err = v.checkIncomingDisks(mc.Disks)
	if err == nil {
		var cpuid *kvm.CPUID
		if cpuid, err = v.sys.SupportedCPUID(); err == nil {
			err = checkCPUID(mc.CPUID, cpuid)
		}
	}
	if err == nil {
		err = v.checkRAMUntouched()
	}
	if err != nil {
		v.Discard()
		return nil, err
	}
	return v, nil
}

// migrationDisks describes the VM's disks for the handshake.
func (v *VM) migrationDisks() []MigrationDisk {
	var out []MigrationDisk
	for i, d := range v.Disks() {
		out = append(out, MigrationDisk{Path: v.cfg.Disks[i].Path, ReadOnly: d.ReadOnly(), Sectors: d.Capacity()})
	}
	return out
}

// incomingDisks returns the disks an incoming VM opens: each source disk
// at its path mapped through diskMap (source path → local path), or at
// the source path. A map entry that names no source disk is an error (a
// typo would otherwise open the wrong image silently).
func incomingDisks(src []MigrationDisk, diskMap map[string]string) ([]DiskConfig, error) {
	used := map[string]bool{}
	var out []DiskConfig
	for _, d := range src {
		path := d.Path
		if p, ok := diskMap[d.Path]; ok {
			path = p
			used[d.Path] = true
		}
		out = append(out, DiskConfig{Path: path, ReadOnly: d.ReadOnly})
	}
	var have []string
	for _, d := range src {
		have = append(have, d.Path)
	}
	if err := remap.Unused("--disk-map", "disk", diskMap, used, have); err != nil {
		return nil, err
	}
	return out, nil
}

// migrationNets describes the VM's network devices for the handshake.
func (v *VM) migrationNets() []MigrationNet {
	var out []MigrationNet
	for _, n := range v.cfg.Nets {
		out = append(out, MigrationNet{Tap: n.Tap, MAC: virtionet.FormatMAC(n.MAC)})
	}
	return out
}

// sourceNets decodes the handshake's network devices: valid tap names and
// MACs, each tap and MAC once.
func sourceNets(src []MigrationNet) ([]NetConfig, error) {
	var out []NetConfig
	for i, n := range src {
		mac, err := parseMAC(n.MAC)
		if err != nil {
			return nil, fmt.Errorf("network device %d: %v", i, err)
		}
		out = append(out, NetConfig{Tap: n.Tap, MAC: mac})
	}
	if err := checkNets(out); err != nil {
		return nil, err
	}
	return out, nil
}

// incomingNets returns the network devices of an incoming VM: the source's
// MACs, on the taps tapMap maps the source's to (source tap → local tap),
// or on taps of the source's names. A map entry that names no source tap
// is an error, like one that maps two devices onto one tap.
func incomingNets(src []MigrationNet, tapMap map[string]string) ([]NetConfig, error) {
	nets, err := sourceNets(src)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for i := range nets {
		if t, ok := tapMap[nets[i].Tap]; ok {
			used[nets[i].Tap] = true
			nets[i].Tap = t
		}
	}
	var have []string
	for _, n := range src {
		have = append(have, n.Tap)
	}
	if err := remap.Unused("--tap-map", "tap", tapMap, used, have); err != nil {
		return nil, err
	}
	if err := checkNets(nets); err != nil {
		return nil, fmt.Errorf("--tap-map: %w", err)
	}
	return nets, nil
}

// checkIncomingDisks checks that the images this side opened have the
// sizes of the source's: the guest's view of a disk cannot change.
func (v *VM) checkIncomingDisks(src []MigrationDisk) error {
	disks := v.Disks()
	if len(disks) != len(src) {
		return fmt.Errorf("internal error: %d disks opened for %d", len(disks), len(src))
	}
	for i, d := range disks {
		if d.Capacity() != src[i].Sectors {
			return fmt.Errorf("disk %d: %s has %d sectors here, the source's %s has %d", i, d.Path(), d.Capacity(), src[i].Path, src[i].Sectors)
		}
	}
	return nil
}

// checkRAMUntouched verifies that nothing has written the incoming VM's
// RAM: the receiver skips zero pages on the promise that RAM is still the
// zero-filled memfd (migrate.ReceiveOptions.AssumeZeroed).
func (v *VM) checkRAMUntouched() error {
	for i, r := range v.mem.Regions() {
		scratch := make([]uint64, (r.Pages()+63)/64)
		n, err := v.mem.TakeDirty(i, scratch)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("internal error: %d pages of the incoming VM's RAM were written before the migration", n)
		}
	}
	return nil
}

// Discard implements migrate.Target: it releases a VM that never ran, and
// deletes the images a storage migration was receiving for it.
func (v *VM) Discard() {
	v.Close()
	if err := storage.RemoveAll(v.images); err != nil {
		v.log.Error("removing the partial disk images", "err", err)
	}
}

// StartDirtyLog implements migrate.Source. The first call enables KVM's
// manual dirty-log protection with the log initially set where the kernel
// offers it (see migrate.DirtyClearer): turning logging on then
// write-protects nothing, and the engine re-arms RAM stretch by stretch as
// it sends it. Otherwise turning logging on write-protects all of RAM.
func (v *VM) StartDirtyLog() error {
	if err := v.probeMSRs(); err != nil {
		return err
	}
	if !v.out.dirtyModesSet {
		// Logging is off on every slot here: the modes may change.
		modes, err := v.vm.EnableManualDirtyLog(kvm.DirtyLogManualProtectEnable | kvm.DirtyLogInitiallySet)
		if err != nil {
			return fmt.Errorf("enabling manual dirty-log protection: %w", err)
		}
		v.out.dirtyModes, v.out.dirtyModesSet = modes, true
	}
	if err := v.setDirtyLogging(true); err != nil {
		v.setDirtyLogging(false)
		return err
	}
	// Start from a clean VMM bitmap: round 0 sends everything anyway.
	for i, r := range v.mem.Regions() {
		scratch := make([]uint64, (r.Pages()+63)/64)
		if _, err := v.mem.TakeDirty(i, scratch); err != nil {
			return err
		}
	}
	return nil
}

// StopDirtyLog implements migrate.Source.
func (v *VM) StopDirtyLog() error { return v.setDirtyLogging(false) }

// setDirtyLogging re-registers every RAM slot with or without
// KVM_MEM_LOG_DIRTY_PAGES.
func (v *VM) setDirtyLogging(on bool) error {
	var flags uint32
	if on {
		flags = kvm.MemLogDirtyPages
		v.out.dirtyLog.Store(true) // before any slot has it
	}
	for i, r := range v.mem.Regions() {
		if err := v.vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{
			Slot:          r.Slot,
			Flags:         flags,
			GuestPhysAddr: r.GPA,
			MemorySize:    r.Size,
			UserspaceAddr: uint64(v.mem.RegionHostAddr(i)),
		}); err != nil {
			return fmt.Errorf("turning dirty logging %v on slot %d: %w", map[bool]string{true: "on", false: "off"}[on], r.Slot, err)
		}
	}
	if !on {
		v.out.dirtyLog.Store(false) // once every slot has it off
	}
	return nil
}

// ManualDirtyLog implements migrate.DirtyClearer: whether KVM's dirty log
// is manual (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled).
func (v *VM) ManualDirtyLog() bool {
	return v.out.dirtyModes&kvm.DirtyLogManualProtectEnable != 0
}

// ClearDirty implements migrate.DirtyClearer: KVM_CLEAR_DIRTY_LOG for the
// pages of region i set in mask, from page first.
func (v *VM) ClearDirty(i int, first uint64, mask []uint64) error {
	regions := v.mem.Regions()
	if i < 0 || i >= len(regions) {
		return fmt.Errorf("no memory region %d", i)
	}
	r := regions[i]
	if first >= r.Pages() || len(mask) == 0 {
		return fmt.Errorf("clearing pages [%d, +%d words) of region %d (%d pages)", first, len(mask), i, r.Pages())
	}
	n := min(uint64(len(mask))*64, r.Pages()-first)
	if err := v.vm.ClearDirtyLog(r.Slot, first, uint32(n), mask); err != nil {
		return fmt.Errorf("re-arming the dirty log of slot %d: %w", r.Slot, err)
	}
	return nil
}

// FetchDirty implements migrate.Source: KVM's dirty log OR the VMM's own
// bitmap for region i. The VMM's bitmap is cleared; KVM's too, unless the
// log is manual (ManualDirtyLog), where ClearDirty clears it.
func (v *VM) FetchDirty(i int, dst []uint64) error {
	regions := v.mem.Regions()
	if i < 0 || i >= len(regions) {
		return fmt.Errorf("no memory region %d", i)
	}
	r := regions[i]
	words := int((r.Pages() + 63) / 64)
	if len(dst) < words {
		return fmt.Errorf("dirty bitmap of %d words too small for region %d (%d words)", len(dst), i, words)
	}
	log := make([]uint64, words)
	if err := v.vm.GetDirtyLog(r.Slot, log); err != nil {
		return fmt.Errorf("reading the dirty log of slot %d: %w", r.Slot, err)
	}
	for w := range log {
		dst[w] |= log[w]
	}
	_, err := v.mem.TakeDirty(i, dst)
	return err
}

// SetThrottle implements migrate.Source: the vCPUs are kept parked for
// pct percent of every throttle period.
func (v *VM) SetThrottle(pct int) {
	pct = max(0, min(pct, 99))
	v.runMu.Lock()
	defer v.runMu.Unlock()
	v.throttlePct = pct
	if pct > 0 && !v.throttling {
		v.throttling = true
		go v.throttleLoop()
	}
}

// throttlePeriod is the auto-converge duty cycle.
const throttlePeriod = 100 * time.Millisecond

// throttleLoop parks the vCPUs for throttlePct percent of each period
// until the throttle is set back to zero or the VM stops.
func (v *VM) throttleLoop() {
	for {
		v.runMu.Lock()
		pct := v.throttlePct
		if pct == 0 || v.isStopping() {
			v.throttled = false
			v.throttling = false
			v.runCond.Broadcast()
			v.runMu.Unlock()
			return
		}
		v.throttled = true
		v.kickLocked()
		v.runMu.Unlock()
		time.Sleep(throttlePeriod * time.Duration(pct) / 100)
		v.runMu.Lock()
		v.throttled = false
		v.runCond.Broadcast()
		v.runMu.Unlock()
		time.Sleep(throttlePeriod * time.Duration(100-pct) / 100)
	}
}

// Start implements migrate.Target: it lets the restored VM's devices run
// (held paused since creation, see setupPCI: RestoreState re-activates
// them before the LAPICs they interrupt are restored), starts its vCPUs
// (and its control API), then has every network device announce the guest from
// here (VMM-sent RARP frames and, where the guest's driver supports it, the
// guest's own gratuitous ARP). Wait blocks until the VM stops.
func (v *VM) Start(ctx context.Context) error {
	// The devices first: the vCPUs may notify them at once.
	start := time.Now()
	if err := v.startIncomingDevices(); err != nil {
		return err
	}
	devicesMs, start := msSince(start), time.Now()
	if err := v.start(); err != nil {
		return err
	}
	vmMs, start := msSince(start), time.Now()
	v.announceNICs()
	v.log.Debug("started (ms per part)", "devices", devicesMs, "api_vcpus", vmMs, "announce", msSince(start))
	return nil
}
