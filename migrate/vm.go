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

// DirtyClearer is a Source with manual dirty-log protection (KVM's
// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, with KVM_DIRTY_LOG_INITIALLY_SET):
// starting the log write-protects nothing (every page counts as dirty),
// and FetchDirty reports a page until ClearDirty re-arms it, instead of
// re-arming every page it reports at once. Send clears each stretch of
// RAM just before it reads its pages, so no single call write-protects all
// of RAM, and a page the guest writes between the fetch and its read is
// not sent twice. Clearing is an optimisation only: a page never cleared
// is merely reported, and sent, again.
type DirtyClearer interface {
	// ManualDirtyLog reports whether the log the last StartDirtyLog
	// started is manual; when false, Send never calls ClearDirty.
	ManualDirtyLog() bool
	// ClearDirty re-arms the pages of region i whose bits are set in
	// mask (bit b of word w is page first+64w+b; first is a multiple of
	// 64, mask ends at the region's end at the latest): a later
	// FetchDirty reports such a page only if it is written after this
	// call. Call it before reading the pages.
	ClearDirty(i int, first uint64, mask []uint64) error
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

// SourceDisk is one disk a storage migration sends along with the VM's
// memory (see "Storage" in the package documentation). The engine only
// reads it: a source disk is never written by a migration.
type SourceDisk interface {
	// Size returns the disk size in bytes, fixed while the VM exists.
	Size() uint64
	// ReadAt reads the disk's content, as the guest would see it now.
	// The guest may write the disk concurrently.
	ReadAt(p []byte, off int64) (int, error)
	// Allocated sets in dst (bit i%64 of word i/64 is block i of
	// DiskBlockSize bytes) every block that may hold data; blocks it
	// leaves clear read as zeros (holes of a sparse image). Marking every
	// block is always correct, only slower.
	Allocated(dst []uint64) error
	// TakeWritten ORs into dst the blocks the guest wrote since the last
	// call and forgets them. A block is marked only after the guest's
	// write to it completed, so a block read after TakeWritten holds
	// that write; a write completing later marks its block again.
	TakeWritten(dst []uint64) error
}

// StorageSource is a Source whose disks move with it: Send includes
// storage exactly when the Source it is given implements StorageSource
// (vmm wraps its VM in one for `godwit migrate --include-storage`).
// Config must then tell the destination's factory to create new images.
type StorageSource interface {
	Source
	// SourceDisks returns the disks in the order the destination's
	// StorageTarget lists them.
	SourceDisks() []SourceDisk
}

// TargetDisk is a disk image being received. A new TargetDisk reads as
// zeros everywhere (a freshly created sparse image): the source does not
// send the holes of its images, nor zero blocks in round 0.
type TargetDisk interface {
	// Size returns the disk size in bytes; it must equal the size of the
	// source's disk.
	Size() uint64
	// WriteAt writes received data.
	WriteAt(p []byte, off int64) (int, error)
	// Zero makes [off, off+n) read as zeros, deallocating it where the
	// file system can (a hole).
	Zero(off, n uint64) error
	// Sync makes what was written durable (fdatasync). Receive calls it
	// at the end of every round that wrote the disk, before ROUND_ACK.
	Sync() error
	// Commit is called once, after COMPLETE and before the VM state is
	// restored, when the image holds the guest's last write: make it
	// durable and give it its final name. A Target that is discarded
	// afterwards still removes it.
	Commit() error
}

// StorageTarget is a Target that receives its disks in the stream. The
// engine checks that its disks match what the source announced; with no
// storage announced, TargetDisks must return none.
type StorageTarget interface {
	Target
	// TargetDisks returns the images being received, in the order of the
	// source's SourceDisks.
	TargetDisks() []TargetDisk
}
