package migratetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"

	"godwit/migrate"
	"godwit/migrate/storage"
)

// DiskConfig is one disk in the fake VM's configuration.
type DiskConfig struct {
	// Path is the image path on the source.
	Path string `json:"path"`
	// Size is the disk size in bytes.
	Size uint64 `json:"size"`
	// Allocated is what the image has allocated, in bytes (storage
	// migrations only: the destination's space check).
	Allocated uint64 `json:"allocated,omitempty"`
}

// Disk is a fake virtio-blk disk over a sparse image file. Its "guest"
// writes through Write, which pwrites the image and then marks the
// disk's written-block bitmap (as the real device does), so tests control
// exactly what it writes and when; RunGuest writes concurrently. Every
// guest write is also applied to an in-memory shadow, so a test can check
// that the image holds exactly what the guest wrote (and nothing the
// migration did).
//
// Guest writes hold the VM's lock and are refused while the VM is
// paused: once Pause returns, no write is in flight, as with the device.
type Disk struct {
	vm     *VM
	path   string
	f      *os.File
	size   uint64
	shadow []byte

	// guarded by vm.mu
	written []uint64
	rng     uint64
	writes  uint64
}

var _ migrate.SourceDisk = (*Disk)(nil)

// AddDisk creates a sparse image of size bytes (a multiple of 512) at
// path, which must not exist, and attaches it to the VM as its next disk.
func (v *VM) AddDisk(path string, size uint64) (*Disk, error) {
	if size == 0 || size%512 != 0 {
		return nil, fmt.Errorf("fake disk size %d: want a positive multiple of 512", size)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		return nil, err
	}
	blocks := (size + migrate.DiskBlockSize - 1) / migrate.DiskBlockSize
	d := &Disk{vm: v, path: path, f: f, size: size, shadow: make([]byte, size),
		written: make([]uint64, (blocks+63)/64), rng: 0x2545f4914f6cdd1d ^ uint64(len(v.disks))}
	v.mu.Lock()
	v.disks = append(v.disks, d)
	v.mu.Unlock()
	return d, nil
}

// Disks returns the VM's disks.
func (v *VM) Disks() []*Disk {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]*Disk(nil), v.disks...)
}

// Path returns the image path.
func (d *Disk) Path() string { return d.path }

// Close closes the image (the file stays).
func (d *Disk) Close() error { return d.f.Close() }

// Fill writes p at off as the image's initial content, before the VM
// runs: not a guest write, so no block is marked written.
func (d *Disk) Fill(off uint64, p []byte) error {
	if off > d.size || uint64(len(p)) > d.size-off {
		return fmt.Errorf("fill of %d bytes at %d outside the disk", len(p), off)
	}
	if _, err := d.f.WriteAt(p, int64(off)); err != nil {
		return err
	}
	copy(d.shadow[off:], p)
	return nil
}

// Write is a guest write of p at off: the image, then the written-block
// bitmap. A paused guest writes nothing (it returns false).
func (d *Disk) Write(off uint64, p []byte) (bool, error) {
	v := d.vm
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.paused {
		return false, nil
	}
	return true, d.writeLocked(off, p)
}

func (d *Disk) writeLocked(off uint64, p []byte) error {
	if off > d.size || uint64(len(p)) > d.size-off || len(p) == 0 {
		return fmt.Errorf("guest write of %d bytes at %d outside the disk", len(p), off)
	}
	if _, err := d.f.WriteAt(p, int64(off)); err != nil {
		return err
	}
	copy(d.shadow[off:], p)
	first, last := off/migrate.DiskBlockSize, (off+uint64(len(p))-1)/migrate.DiskBlockSize
	for b := first; b <= last; b++ {
		d.written[b/64] |= 1 << (b % 64)
	}
	d.writes++
	return nil
}

// TickDisk lets the guest write n 4 KiB chunks at pseudo-random
// 4 KiB-aligned offsets, each filled with a pattern naming the write
// (fewer when throttled, none when paused). It returns the chunks
// written.
func (d *Disk) TickDisk(n int) (int, error) {
	v := d.vm
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.paused {
		return 0, nil
	}
	n = n * (100 - v.throttle) / 100
	chunks := d.size / 4096
	var buf [4096]byte
	for k := 0; k < n; k++ {
		d.rng = d.rng*6364136223846793005 + 1442695040888963407
		off := ((d.rng >> 17) % chunks) * 4096
		for i := 0; i < len(buf); i += 8 {
			binary.LittleEndian.PutUint64(buf[i:], d.writes<<32|uint64(i)|1)
		}
		if err := d.writeLocked(off, buf[:]); err != nil {
			return k, err
		}
	}
	return n, nil
}

// RunGuest calls TickDisk(n) in a loop until ctx is done or it has
// written total chunks (total ≤ 0: no limit), waiting while the VM is
// paused: a guest writing its disk concurrently with the migration. A
// limit keeps a guest that writes faster than the migration sends from
// forcing every round to its end.
func (d *Disk) RunGuest(ctx context.Context, n, total int) error {
	for done := 0; ctx.Err() == nil && (total <= 0 || done < total); {
		d.vm.mu.Lock()
		resumed := d.vm.resumed
		d.vm.mu.Unlock()
		select {
		case <-resumed:
		case <-ctx.Done():
			return nil
		}
		if total > 0 {
			n = min(n, total-done)
		}
		k, err := d.TickDisk(n)
		if err != nil {
			return err
		}
		done += k
	}
	return nil
}

// Writes returns the number of guest writes so far.
func (d *Disk) Writes() uint64 {
	d.vm.mu.Lock()
	defer d.vm.mu.Unlock()
	return d.writes
}

// Expected returns a copy of what the guest and Fill wrote: the content
// the image must have.
func (d *Disk) Expected() []byte {
	d.vm.mu.Lock()
	defer d.vm.mu.Unlock()
	return bytes.Clone(d.shadow)
}

// CheckImage returns nil when the file at path holds exactly what the
// guest and Fill wrote (Expected).
func (d *Disk) CheckImage(path string) error {
	got, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	want := d.Expected()
	if uint64(len(got)) != d.size {
		return fmt.Errorf("%s has %d bytes, the disk %d", path, len(got), d.size)
	}
	if !bytes.Equal(got, want) {
		for off := 0; off < len(got); off += 4096 {
			end := min(off+4096, len(got))
			if !bytes.Equal(got[off:end], want[off:end]) {
				return fmt.Errorf("%s differs from what the guest wrote at offset %d", path, off)
			}
		}
	}
	return nil
}

// Size implements migrate.SourceDisk.
func (d *Disk) Size() uint64 { return d.size }

// ReadAt implements migrate.SourceDisk.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if err := d.vm.enter(OpDiskRead); err != nil {
		return 0, err
	}
	return d.f.ReadAt(p, off)
}

// Allocated implements migrate.SourceDisk with SEEK_DATA/SEEK_HOLE.
func (d *Disk) Allocated(dst []uint64) error {
	return storage.MarkData(d.f, d.size, migrate.DiskBlockSize, dst)
}

// TakeWritten implements migrate.SourceDisk.
func (d *Disk) TakeWritten(dst []uint64) error {
	if err := d.vm.enter(OpTakeWritten); err != nil {
		return err
	}
	d.vm.mu.Lock()
	defer d.vm.mu.Unlock()
	if len(dst) < len(d.written) {
		return errors.New("fake TakeWritten: bitmap too small")
	}
	for i, w := range d.written {
		dst[i] |= w
	}
	clear(d.written)
	return nil
}

// WrittenBlocks returns how many blocks are marked written and not yet
// taken.
func (d *Disk) WrittenBlocks() int {
	d.vm.mu.Lock()
	defer d.vm.mu.Unlock()
	n := 0
	for _, w := range d.written {
		n += bits.OnesCount64(w)
	}
	return n
}

// StorageVM is the fake VM as a migrate.StorageSource: migrating it moves
// its disks too (the fake's `migrate --include-storage`).
type StorageVM struct{ *VM }

var _ migrate.StorageSource = StorageVM{}

// WithStorage returns the VM as a source that sends its disks.
func (v *VM) WithStorage() StorageVM { return StorageVM{v} }

// Config implements migrate.Source: the VM's configuration with Storage
// set and each disk's allocated bytes.
func (s StorageVM) Config() ([]byte, error) {
	return s.config(true)
}

// SourceDisks implements migrate.StorageSource.
func (s StorageVM) SourceDisks() []migrate.SourceDisk {
	var out []migrate.SourceDisk
	for _, d := range s.Disks() {
		out = append(out, d)
	}
	return out
}

var _ migrate.StorageTarget = (*Target)(nil)
