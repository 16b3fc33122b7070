package vmm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"godwit/migrate"
	"godwit/vmm/kvm"
)

// Section IDs and versions of the VM state godwit migrates.
const (
	sectionVCPUPrefix  = "vcpu/"
	sectionIRQChip     = "irqchip"
	sectionPIT         = "pit"
	sectionClock       = "clock"
	sectionSerial      = "dev/serial0"
	vcpuStateVersion   = 1
	irqchipVersion     = 1
	pitVersion         = 1
	clockVersion       = 1
	serialStateVersion = 1
)

// maxCPUIDEntries bounds a restored CPUID table.
const maxCPUIDEntries = kvm.MaxCPUIDEntries

// maxMSRs bounds a restored MSR list.
const maxMSRs = 1024

// migratableMSRs returns the MSRs of KVM's index list that this vCPU can
// read; those are the ones saved and restored. Some listed MSRs are not
// readable on every host, so each is probed once.
func (c *vcpu) migratableMSRs() ([]uint32, error) {
	list, err := c.vm.sys.MSRIndexList()
	if err != nil {
		return nil, fmt.Errorf("reading the MSR index list: %w", err)
	}
	// KVM_GET_MSRS reads entries in order and stops at the first it
	// cannot read, returning how many it read: read in batches and skip
	// each unreadable MSR, so the probe costs one ioctl per batch plus
	// one per unreadable MSR.
	var ok []uint32
	for len(list) > 0 {
		batch := list[:min(len(list), kvm.MaxMSREntries)]
		entries := make([]kvm.MSREntry, len(batch))
		for i, idx := range batch {
			entries[i].Index = idx
		}
		n, err := c.kvm.GetMSRs(entries)
		if err != nil {
			return nil, fmt.Errorf("probing MSRs: %w", err)
		}
		n = max(0, min(n, len(batch)))
		ok = append(ok, batch[:n]...)
		if n < len(batch) {
			n++ // batch[n] is not readable here: leave it out
		}
		list = list[n:]
	}
	return ok, nil
}

// probeMSRs finds the MSRs that migrate, once per VM: the list does not
// change while the VM lives. createVCPUs calls it before any vCPU runs
// (a vCPU ioctl on a running vCPU waits for it to leave KVM_RUN); an
// incoming VM gets the list from RestoreState; StartDirtyLog calls it
// again, outside the downtime, in case neither happened.
func (v *VM) probeMSRs() error {
	if v.msrs != nil {
		return nil
	}
	msrs, err := v.vcpus[0].migratableMSRs()
	if err != nil {
		return err
	}
	v.msrs = msrs
	return nil
}

// saveState returns the vCPU's complete state.
func (c *vcpu) saveState(msrs []uint32) (migrate.Section, error) {
	st := &vcpuState{cpuid: *c.cpuid}
	var err error
	if st.mp, err = c.kvm.GetMPState(); err != nil {
		return migrate.Section{}, fmt.Errorf("vCPU %d MP state: %w", c.id, err)
	}
	if st.regs, err = c.kvm.GetRegs(); err != nil {
		return migrate.Section{}, fmt.Errorf("vCPU %d regs: %w", c.id, err)
	}
	if st.sregs, err = c.kvm.GetSregs(); err != nil {
		return migrate.Section{}, fmt.Errorf("vCPU %d sregs: %w", c.id, err)
	}
	xsave, err := c.kvm.GetXSave()
	if err != nil {
		return migrate.Section{}, fmt.Errorf("vCPU %d xsave: %w", c.id, err)
	}
	st.xsave = *xsave
	if st.xcrs, err = c.kvm.GetXCRS(); err != nil {
		return migrate.Section{}, fmt.Errorf("vCPU %d xcrs: %w", c.id, err)
	}
	if st.dregs, err = c.kvm.GetDebugRegs(); err != nil {
		return migrate.Section{}, fmt.Errorf("vCPU %d debug regs: %w", c.id, err)
	}
	lapic, err := c.kvm.GetLAPIC()
	if err != nil {
		return migrate.Section{}, fmt.Errorf("vCPU %d lapic: %w", c.id, err)
	}
	st.lapic = *lapic
	st.msrs = make([]kvm.MSREntry, len(msrs))
	for i, idx := range msrs {
		st.msrs[i].Index = idx
	}
	for off := 0; off < len(st.msrs); off += kvm.MaxMSREntries {
		chunk := st.msrs[off:min(off+kvm.MaxMSREntries, len(st.msrs))]
		if n, err := c.kvm.GetMSRs(chunk); err != nil || n != len(chunk) {
			return migrate.Section{}, fmt.Errorf("vCPU %d MSRs: read %d of %d: %v", c.id, n, len(chunk), err)
		}
	}
	if st.events, err = c.kvm.GetVCPUEvents(); err != nil {
		return migrate.Section{}, fmt.Errorf("vCPU %d events: %w", c.id, err)
	}
	return migrate.Section{ID: sectionVCPUPrefix + strconv.Itoa(c.id), Version: vcpuStateVersion, Data: st.encode()}, nil
}

// encode returns the section data of st. Field order is the restore order
// (design notes): CPUID, MP state, REGS, SREGS, XSAVE, XCRS, DEBUGREGS,
// LAPIC, MSRS, VCPU_EVENTS; the CPUID entries and the MSRs are each
// preceded by a u32 count.
func (st *vcpuState) encode() []byte {
	var e stateEncoder
	e.put(uint32(len(st.cpuid.Entries)))
	e.put(st.cpuid.Entries)
	e.put(st.mp)
	e.put(st.regs)
	e.put(st.sregs)
	e.put(&st.xsave)
	e.put(st.xcrs)
	e.put(st.dregs)
	e.put(&st.lapic)
	e.put(uint32(len(st.msrs)))
	e.put(st.msrs)
	e.put(st.events)
	return e.bytes()
}

// vcpuState is a decoded, validated vCPU section.
type vcpuState struct {
	cpuid  kvm.CPUID
	mp     kvm.MPState
	regs   kvm.Regs
	sregs  kvm.Sregs
	xsave  kvm.XSave
	xcrs   kvm.XCRS
	dregs  kvm.DebugRegs
	lapic  kvm.LAPICState
	msrs   []kvm.MSREntry
	events kvm.VCPUEvents
}

// decodeVCPUState decodes and validates a vCPU section.
func decodeVCPUState(s migrate.Section) (*vcpuState, error) {
	if s.Version != vcpuStateVersion {
		return nil, fmt.Errorf("%w: %s: version %d, want %d", errState, s.ID, s.Version, vcpuStateVersion)
	}
	d := newStateDecoder(s.ID, s.Data)
	st := &vcpuState{}
	st.cpuid.Entries = make([]kvm.CPUIDEntry2, d.count(maxCPUIDEntries, "CPUID entries"))
	d.get(st.cpuid.Entries)
	d.get(&st.mp)
	d.get(&st.regs)
	d.get(&st.sregs)
	d.get(&st.xsave)
	d.get(&st.xcrs)
	d.get(&st.dregs)
	d.get(&st.lapic)
	st.msrs = make([]kvm.MSREntry, d.count(maxMSRs, "MSRs"))
	d.get(st.msrs)
	d.get(&st.events)
	if err := d.finish(); err != nil {
		return nil, err
	}
	if st.xcrs.NrXCRs > kvm.MaxXCRs {
		return nil, fmt.Errorf("%w: %s: %d XCRs, at most %d", errState, s.ID, st.xcrs.NrXCRs, kvm.MaxXCRs)
	}
	if st.mp.State > kvm.MPStateSIPIReceived {
		return nil, fmt.Errorf("%w: %s: MP state %d is not an x86 state", errState, s.ID, st.mp.State)
	}
	return st, nil
}

// restoreState loads a decoded vCPU state in the order the design notes
// give: CPUID, MP state, REGS, SREGS, XSAVE, XCRS, DEBUGREGS, LAPIC (after
// SREGS, which restores the APIC base), MSRS, VCPU_EVENTS.
func (c *vcpu) restoreState(st *vcpuState) error {
	steps := []struct {
		what string
		do   func() error
	}{
		{"CPUID", func() error {
			// The vCPU was created with the table the source
			// announced in its configuration: most often this is the
			// same one, and setting it again costs an ioctl in the
			// downtime.
			if c.cpuid != nil && slices.Equal(c.cpuid.Entries, st.cpuid.Entries) {
				return nil
			}
			if err := c.kvm.SetCPUID2(&st.cpuid); err != nil {
				return err
			}
			c.cpuid = &st.cpuid
			return nil
		}},
		{"MP state", func() error { return c.kvm.SetMPState(st.mp) }},
		{"regs", func() error { return c.kvm.SetRegs(st.regs) }},
		{"sregs", func() error { return c.kvm.SetSregs(st.sregs) }},
		{"xsave", func() error { return c.kvm.SetXSave(&st.xsave) }},
		{"xcrs", func() error { return c.kvm.SetXCRS(st.xcrs) }},
		{"debug regs", func() error { return c.kvm.SetDebugRegs(st.dregs) }},
		{"lapic", func() error { return c.kvm.SetLAPIC(&st.lapic) }},
		{"MSRs", func() error {
			for off := 0; off < len(st.msrs); off += kvm.MaxMSREntries {
				chunk := st.msrs[off:min(off+kvm.MaxMSREntries, len(st.msrs))]
				n, err := c.kvm.SetMSRs(chunk)
				if err != nil {
					return err
				}
				if n != len(chunk) {
					return fmt.Errorf("MSR %#x refused (%d of %d set)", chunk[n].Index, n, len(chunk))
				}
			}
			return nil
		}},
		{"events", func() error { return c.kvm.SetVCPUEvents(st.events) }},
	}
	var timings []any
	for _, s := range steps {
		start := time.Now()
		if err := s.do(); err != nil {
			return fmt.Errorf("restoring vCPU %d %s: %w", c.id, s.what, err)
		}
		timings = append(timings, s.what, msSince(start))
	}
	if log := c.vm.log; log.Enabled(context.Background(), slog.LevelDebug) {
		log.Debug("vCPU state restored (ms per step)", append([]any{"vcpu", c.id}, timings...)...)
	}
	return nil
}

// msSince returns the milliseconds since start, for debug timings.
func msSince(start time.Time) float64 {
	return float64(time.Since(start).Microseconds()) / 1000
}

// saveVMState returns the VM-wide KVM state: irqchip (PIC master, PIC
// slave, IOAPIC), PIT and kvmclock.
func (v *VM) saveVMState() ([]migrate.Section, error) {
	var st vmState
	for i, id := range []uint32{kvm.IRQChipPICMaster, kvm.IRQChipPICSlave, kvm.IRQChipIOAPIC} {
		c, err := v.vm.GetIRQChip(id)
		if err != nil {
			return nil, fmt.Errorf("saving irqchip %d: %w", id, err)
		}
		st.chips[i] = *c
	}
	pit, err := v.vm.GetPIT2()
	if err != nil {
		return nil, fmt.Errorf("saving PIT: %w", err)
	}
	st.pit = *pit
	if st.clock, err = v.vm.GetClock(); err != nil {
		return nil, fmt.Errorf("saving kvmclock: %w", err)
	}
	return st.encode(), nil
}

// encode returns the sections of st: irqchip (the three chips in order),
// PIT and clock, each the little-endian image of its kernel structures.
func (st *vmState) encode() []migrate.Section {
	var chips, pe, ce stateEncoder
	chips.put(&st.chips)
	pe.put(&st.pit)
	ce.put(st.clock)
	return []migrate.Section{
		{ID: sectionIRQChip, Version: irqchipVersion, Data: chips.bytes()},
		{ID: sectionPIT, Version: pitVersion, Data: pe.bytes()},
		{ID: sectionClock, Version: clockVersion, Data: ce.bytes()},
	}
}

// vmState is decoded, validated VM-wide state.
type vmState struct {
	chips [3]kvm.IRQChip
	pit   kvm.PITState2
	clock kvm.ClockData
}

// decodeVMState decodes the VM-wide sections.
func decodeVMState(byID map[string]migrate.Section) (*vmState, error) {
	st := &vmState{}
	for _, want := range []struct {
		id      string
		version uint32
		into    any
	}{
		{sectionIRQChip, irqchipVersion, &st.chips},
		{sectionPIT, pitVersion, &st.pit},
		{sectionClock, clockVersion, &st.clock},
	} {
		s, ok := byID[want.id]
		if !ok {
			return nil, fmt.Errorf("%w: section %s missing", errState, want.id)
		}
		if s.Version != want.version {
			return nil, fmt.Errorf("%w: %s: version %d, want %d", errState, s.ID, s.Version, want.version)
		}
		d := newStateDecoder(s.ID, s.Data)
		d.get(want.into)
		if err := d.finish(); err != nil {
			return nil, err
		}
	}
	for i, c := range st.chips {
		if c.ChipID != uint32(i) {
			return nil, fmt.Errorf("%w: irqchip entry %d has chip id %d", errState, i, c.ChipID)
		}
	}
	return st, nil
}

// restoreVMState loads the irqchips and the PIT.
func (v *VM) restoreVMState(st *vmState) error {
	for i := range st.chips {
		if err := v.vm.SetIRQChip(&st.chips[i]); err != nil {
			return fmt.Errorf("restoring irqchip %d: %w", i, err)
		}
	}
	if err := v.vm.SetPIT2(&st.pit); err != nil {
		return fmt.Errorf("restoring PIT: %w", err)
	}
	return nil
}

// restoreClock sets kvmclock, after the vCPUs' TSC MSRs are in place. Only
// the clock value moves; the flags describe the source host.
func (v *VM) restoreClock(st *vmState) error {
	if err := v.vm.SetClock(kvm.ClockData{Clock: st.clock.Clock}); err != nil {
		return fmt.Errorf("restoring kvmclock: %w", err)
	}
	return nil
}

// SaveState implements migrate.Source: every vCPU, the VM-wide KVM state
// and the devices. The VM must be paused.
func (v *VM) SaveState() ([]migrate.Section, error) {
	v.runMu.Lock()
	paused := v.state == "paused"
	v.runMu.Unlock()
	if !paused {
		return nil, fmt.Errorf("saving state: the VM is not paused")
	}
	if err := v.probeMSRs(); err != nil {
		return nil, err
	}
	// Every vCPU's state and the VM-wide state are read at once.
	vcpuSections := make([]migrate.Section, len(v.vcpus))
	var vmSections []migrate.Section
	var vmErr error
	err := v.eachVCPUConcurrently(func(i int, c *vcpu) (err error) {
		vcpuSections[i], err = c.saveState(v.msrs)
		return err
	}, func() { vmSections, vmErr = v.saveVMState() })
	if err != nil {
		return nil, err
	}
	if vmErr != nil {
		return nil, vmErr
	}
	out := append(vcpuSections, vmSections...)
	serial, err := v.serial.SaveState()
	if err != nil {
		return nil, fmt.Errorf("saving serial: %w", err)
	}
	out = append(out, migrate.Section{ID: sectionSerial, Version: serialStateVersion, Data: serial})
	pciSections, err := v.savePCIState()
	if err != nil {
		return nil, err
	}
	return append(out, pciSections...), nil
}

// eachVCPUConcurrently runs f for every vCPU at once — vCPU 0 on the
// calling goroutine, the others on goroutines of their own — and also,
// if not nil, alongside on the calling goroutine after vCPU 0; it
// returns when all are done, with every vCPU's error joined. The ioctls
// of different vCPUs do not contend (each takes only its own vCPU's
// lock), so saving or restoring N vCPUs costs about one vCPU's ioctls.
func (v *VM) eachVCPUConcurrently(f func(i int, c *vcpu) error, alongside func()) error {
	errs := make([]error, len(v.vcpus))
	var wg sync.WaitGroup
	for i, c := range v.vcpus[1:] {
		wg.Go(func() { errs[i+1] = f(i+1, c) })
	}
	errs[0] = f(0, v.vcpus[0])
	if alongside != nil {
		alongside()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// RestoreState implements migrate.Target: it decodes and validates every
// section first, then loads them; a bad section changes nothing.
func (v *VM) RestoreState(sections []migrate.Section) error {
	byID := make(map[string]migrate.Section, len(sections))
	for _, s := range sections {
		if _, dup := byID[s.ID]; dup {
			return fmt.Errorf("%w: duplicate section %s", errState, s.ID)
		}
		known := s.ID == sectionIRQChip || s.ID == sectionPIT || s.ID == sectionClock || s.ID == sectionSerial || v.isPCISection(s.ID)
		if n, ok := strings.CutPrefix(s.ID, sectionVCPUPrefix); ok {
			id, err := strconv.Atoi(n)
			known = err == nil && id >= 0 && id < len(v.vcpus) && strconv.Itoa(id) == n
		}
		if !known {
			return fmt.Errorf("%w: unknown section %q", errState, s.ID)
		}
		byID[s.ID] = s
	}
	vcpus := make([]*vcpuState, len(v.vcpus))
	for i := range v.vcpus {
		s, ok := byID[sectionVCPUPrefix+strconv.Itoa(i)]
		if !ok {
			return fmt.Errorf("%w: no state for vCPU %d", errState, i)
		}
		st, err := decodeVCPUState(s)
		if err != nil {
			return err
		}
		vcpus[i] = st
	}
	vmst, err := decodeVMState(byID)
	if err != nil {
		return err
	}
	serial, ok := byID[sectionSerial]
	if !ok || serial.Version != serialStateVersion {
		return fmt.Errorf("%w: serial section missing or of another version", errState)
	}
	if err := v.checkPCISections(byID); err != nil {
		return err
	}
	// Order: the PCI bus and devices first (each validates its bytes
	// before changing anything, so a bad device section leaves KVM
	// untouched), then the irqchips and PIT (the IOAPIC's routing is in
	// place before any vCPU state refers to it), then each vCPU, then
	// kvmclock, whose offset KVM computes from the TSC the vCPUs now have.
	// The devices of an incoming VM stay paused through all of it (see
	// setupPCI): one that ran now would interrupt LAPICs that are about
	// to be overwritten. Start lets them run.
	start := time.Now()
	if err := v.restorePCIState(byID); err != nil {
		return err
	}
	pciMs, start := msSince(start), time.Now()
	if err := v.restoreVMState(vmst); err != nil {
		return err
	}
	vmMs, start := msSince(start), time.Now()
	// The vCPUs restore concurrently, each in the order of
	// restoreState: nothing orders one vCPU's state against another's.
	if err := v.eachVCPUConcurrently(func(i int, c *vcpu) error { return c.restoreState(vcpus[i]) }, nil); err != nil {
		return err
	}
	vcpusMs, start := msSince(start), time.Now()
	if err := v.restoreClock(vmst); err != nil {
		return err
	}
	if err := v.serial.RestoreState(serial.Data); err != nil {
		return fmt.Errorf("restoring serial: %w", err)
	}
	v.log.Debug("state restored (ms per part)", "pci_devices", pciMs, "irqchip_pit", vmMs, "vcpus", vcpusMs, "clock_serial", msSince(start))
	if v.msrs == nil {
		// The MSRs the source migrated are the ones this VM now
		// has set, and will read when it migrates on.
		v.msrs = make([]uint32, len(vcpus[0].msrs))
		for i, m := range vcpus[0].msrs {
			v.msrs[i] = m.Index
		}
	}
	return nil
}
