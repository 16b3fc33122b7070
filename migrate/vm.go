package migrate

import (
	"context"

	"godwit/vmm/memory"
)

// Section is one piece of saved VM state (a vCPU, the irqchip, a device...).
// Restore treats Data as untrusted.
type Section struct {
	// ID names the section, e.g. "vcpu/0", "irqchip", "pit", "clock", "dev/serial0".
	ID string
	// Version is the section's format version, chosen by its owner.
	Version uint32
	// Data is the section's encoding.
	Data []byte
}

// Source is what the migration engine needs of the VM it sends. vmm.VM
// implements it; tests use a fake VM whose goroutine dirties pages.
type Source interface {
	// Config returns the VM's configuration as sent in the handshake
	// (JSON); the destination builds an identical VM from it.
	Config() ([]byte, error)
	// Memory returns guest RAM. The engine reads pages through
	// Memory().RegionHost while the VM runs.
	Memory() *memory.Memory
	// StartDirtyLog starts tracking guest writes (KVM's log) and clears
	// the VMM's own dirty bitmap.
	StartDirtyLog() error
	// FetchDirty ORs into dst the pages of memory region i written since
	// the last call (or since StartDirtyLog): KVM's log OR the VMM's
	// bitmap. dst has one bit per page of the region.
	FetchDirty(i int, dst []uint64) error
	// StopDirtyLog stops tracking. It is called on every path that
	// leaves the source running, so a failed migration leaves no
	// tracking behind.
	StopDirtyLog() error
	// Pause stops the vCPUs and quiesces the devices. Idempotent.
	Pause(ctx context.Context) error
	// Resume undoes Pause. Idempotent.
	Resume(ctx context.Context) error
	// SaveState returns the complete VM state (vCPUs, interrupt
	// controllers, clocks, devices). Only called while paused.
	SaveState() ([]Section, error)
	// SetThrottle slows the vCPUs for auto-converge: pct of each period
	// the vCPUs are kept out of the guest (0 = full speed).
	SetThrottle(pct int)
}

// Target is a VM being received: built from the handshake's Config by a
// TargetFactory, filled with pages and state, then resumed.
type Target interface {
	// Memory returns the guest RAM the engine writes received pages into.
	Memory() *memory.Memory
	// RestoreState loads every section; it validates each one and
	// rejects the whole set on any error.
	RestoreState(sections []Section) error
	// Start runs the restored VM.
	Start(ctx context.Context) error
	// Discard releases a VM that will never run (failed migration).
	Discard()
}

// TargetFactory creates a Target from the configuration the source sent,
// or refuses it with a clear error (incompatible host, bad config).
type TargetFactory func(config []byte) (Target, error)
