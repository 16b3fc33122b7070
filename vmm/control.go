package vmm

import (
	"context"
	"fmt"
	"os"
	"time"

	"godwit/vmm/api"
)

var _ api.Controller = (*VM)(nil)

// Info reports the VM's state, configuration, uptime and exit counters.
func (v *VM) Info() api.VMInfo {
	v.runMu.Lock()
	state, started := v.state, v.started
	v.runMu.Unlock()
	var uptime int64
	if !started.IsZero() {
		uptime = time.Since(started).Milliseconds()
	}
	reads, writes := v.pio.Unhandled()
	mreads, mwrites := v.mmio.Unhandled()
	return api.VMInfo{
		State:    state,
		Config:   v.apiConfig(),
		UptimeMS: uptime,
		DirtyLog: v.out.dirtyLog.Load(),
		Exits: map[string]uint64{
			"io":                    v.exits.io.Load(),
			"mmio":                  v.exits.mmio.Load(),
			"hlt":                   v.exits.hlt.Load(),
			"intr":                  v.exits.intr.Load(),
			"other":                 v.exits.other.Load(),
			"unhandled_pio_reads":   reads,
			"unhandled_pio_writes":  writes,
			"unhandled_mmio_reads":  mreads,
			"unhandled_mmio_writes": mwrites,
		},
		Devices:   v.deviceInfo(),
		MSIRoutes: v.msiRouteCount(),
	}
}

// deviceInfo returns the diagnostic snapshot of every PCI device.
func (v *VM) deviceInfo() []api.DeviceInfo {
	var out []api.DeviceInfo
	for _, d := range v.pciDevs {
		out = append(out, api.DeviceInfo{Name: d.name, Slot: int(d.slot), Virtio: d.t.Inspect()})
	}
	return out
}

// msiRouteCount returns how many MSI messages have irqfd routes.
func (v *VM) msiRouteCount() int {
	if v.msi == nil {
		return 0
	}
	return v.msi.routeCount()
}

// apiConfig describes the configuration for the API.
func (v *VM) apiConfig() api.VMConfig {
	c := api.VMConfig{
		MemoryBytes: v.cfg.MemoryBytes,
		CPUs:        v.cfg.CPUs,
		Kernel:      v.cfg.Kernel,
		Initrd:      v.cfg.Initrd,
		Cmdline:     v.cfg.Cmdline,
		BootSector:  v.cfg.BootSector,
		Guest:       v.cfg.GuestKind(),
		Serial:      v.cfg.Serial.String(),
	}
	if len(v.cfg.GuestArgs) > 0 {
		c.GuestArgs = map[string]string{}
		for _, a := range v.cfg.GuestArgs {
			k, val, _ := cutEq(a)
			c.GuestArgs[k] = val
		}
	}
	return c
}

// Shutdown stops the VM as if the guest had powered off.
func (v *VM) Shutdown(ctx context.Context) error {
	v.requestStop(StopReason{Clean: true, What: "shut down through the control API"})
	return nil
}

// DumpMemory writes guest-physical RAM [gpa, gpa+length) to a new file at
// path, at file offset (address - gpa); the MMIO hole stays a hole in the
// file. length 0 means up to the end of RAM. Pause the VM first for a
// consistent image.
func (v *VM) DumpMemory(ctx context.Context, path string, gpa, length uint64) error {
	regions := v.mem.Regions()
	ramEnd := regions[len(regions)-1].End()
	if gpa >= ramEnd {
		return fmt.Errorf("%w: gpa %#x is beyond the end of RAM (%#x)", api.ErrBadRequest, gpa, ramEnd)
	}
	if length == 0 {
		length = ramEnd - gpa
	}
	if length > ramEnd-gpa {
		return fmt.Errorf("%w: [%#x, +%#x) extends beyond the end of RAM (%#x)", api.ErrBadRequest, gpa, length, ramEnd)
	}
	end := gpa + length
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	defer f.Close()
	if err := f.Truncate(int64(length)); err != nil {
		return err
	}
	for i, r := range regions {
		lo, hi := max(r.GPA, gpa), min(r.End(), end)
		if lo >= hi {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		host := v.mem.RegionHost(i)
		if _, err := f.WriteAt(host[lo-r.GPA:hi-r.GPA], int64(lo-gpa)); err != nil {
			return fmt.Errorf("writing memory dump: %w", err)
		}
	}
	return f.Close()
}
