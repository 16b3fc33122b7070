package vmm

import (
	"encoding/json"
	"errors"
	"fmt"

	"godwit/devices/virtio/blk"
	"godwit/migrate"
	"godwit/migrate/storage"
)

// A storage migration's unit is the written-block bitmap's block.
var _ = [1]int{}[migrate.DiskBlockSize-blk.WrittenBlockSize]

var _ migrate.StorageTarget = (*VM)(nil)

// storageSource is the VM as a migrate.StorageSource: migrating it moves
// its disks too (`godwit migrate --include-storage`). Each image is opened
// read-only for the migration, so the migration never modifies it, and
// the blocks the guest writes come from the disk's written-block bitmap.
type storageSource struct {
	*VM
	disks []*sourceDisk
}

var _ migrate.StorageSource = (*storageSource)(nil)

// sourceDisk is one disk of a storage migration's source.
type sourceDisk struct {
	*storage.Source
	written *blk.WrittenBlocks
}

// The engine reads a run of blocks with one preadv and writes one with
// one pwritev when the disks have these methods (storage.Source and
// storage.Image do); a wrapper that hid them would cost a call per block.
var (
	_ interface {
		ReadvAt([][]byte, int64) (int, error)
	} = (*sourceDisk)(nil)
	_ interface {
		WritevAt([][]byte, int64) (int, error)
	} = incomingImage{}
)

// Allocated implements migrate.SourceDisk: the blocks with data
// (SEEK_DATA, SEEK_HOLE).
func (d *sourceDisk) Allocated(dst []uint64) error { return d.MarkData(migrate.DiskBlockSize, dst) }

// TakeWritten implements migrate.SourceDisk.
func (d *sourceDisk) TakeWritten(dst []uint64) error {
	_, err := d.written.Take(dst)
	return err
}

// openStorageSource opens every disk's image for a storage migration.
func (v *VM) openStorageSource() (*storageSource, error) {
	s := &storageSource{VM: v}
	for i, d := range v.Disks() {
		src, err := storage.OpenSource(v.cfg.Disks[i].Path, d.Capacity()*blk.SectorSize)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("disk %d: %w", i, err)
		}
		s.disks = append(s.disks, &sourceDisk{Source: src, written: d.Written()})
	}
	return s, nil
}

// Close closes the images opened for the migration.
func (s *storageSource) Close() error {
	var errs []error
	for _, d := range s.disks {
		errs = append(errs, d.Close())
	}
	return errors.Join(errs...)
}

// Config implements migrate.Source: the VM's configuration with Storage
// set and each image's allocated bytes, for the destination's space
// check.
func (s *storageSource) Config() ([]byte, error) {
	mc := s.migrationConfig()
	mc.Storage = true
	for i, d := range s.disks {
		n, err := d.AllocatedBytes()
		if err != nil {
			return nil, fmt.Errorf("disk %d: %w", i, err)
		}
		mc.Disks[i].Allocated = n
	}
	return json.Marshal(mc)
}

// SourceDisks implements migrate.StorageSource.
func (s *storageSource) SourceDisks() []migrate.SourceDisk {
	out := make([]migrate.SourceDisk, len(s.disks))
	for i, d := range s.disks {
		out[i] = d
	}
	return out
}

// createIncomingImages places and creates the images of an incoming
// storage migration (storage.Place, storage.CreateAll) and returns them
// with the disks to open: each image under its temporary name until the
// migration commits it.
func createIncomingImages(src []MigrationDisk, local Config) ([]*storage.Image, []DiskConfig, error) {
	wants := make([]storage.Want, len(src))
	sizes := make([]uint64, len(src))
	for i, d := range src {
		wants[i] = storage.Want{Source: d.Path, Size: d.Sectors * blk.SectorSize, Allocated: d.Allocated}
		sizes[i] = wants[i].Size
	}
	paths, err := storage.Place(wants, storage.PlaceOptions{Dir: local.StorageDir, Map: local.DiskMap, Overwrite: local.Overwrite})
	if err != nil {
		return nil, nil, err
	}
	images, err := storage.CreateAll(paths, sizes, local.Overwrite)
	if err != nil {
		return nil, nil, err
	}
	disks := make([]DiskConfig, len(src))
	for i, m := range images {
		disks[i] = DiskConfig{Path: m.Path(), ReadOnly: src[i].ReadOnly}
	}
	return images, disks, nil
}

// incomingImage is an image of an incoming storage migration as the
// engine writes it.
type incomingImage struct {
	*storage.Image
	vm    *VM
	index int
}

// Commit implements migrate.TargetDisk: the image gets its final name,
// which the VM then reports as the disk's path (a later migration of this
// VM names its images after it), and the engine's descriptor is closed
// (the device has its own).
func (m incomingImage) Commit() error {
	if err := m.Image.Commit(); err != nil {
		return err
	}
	m.vm.cfg.Disks[m.index].Path = m.FinalPath()
	return m.Close()
}

// TargetDisks implements migrate.StorageTarget: the images of an
// incoming storage migration, none otherwise.
func (v *VM) TargetDisks() []migrate.TargetDisk {
	var out []migrate.TargetDisk
	for i, m := range v.images {
		out = append(out, incomingImage{Image: m, vm: v, index: i})
	}
	return out
}
