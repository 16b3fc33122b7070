// Package memory owns guest RAM: a memfd-backed mapping laid out around the
// 32-bit MMIO hole, bounds-checked access for everything the VMM reads or
// writes, and the VMM-side dirty bitmap that every VMM write marks. KVM does
// not see writes made by the VMM, so the dirty set a migration sends is KVM's
// dirty log OR this bitmap.
package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// PageSize is the guest page size tracked by the dirty bitmaps.
const PageSize = 4096

// Guest-physical layout constants.
const (
	// MMIOHoleStart is where RAM below 4 GiB ends and the 32-bit MMIO hole
	// (PCI BARs, IOAPIC, LAPIC, KVM's TSS) begins.
	MMIOHoleStart uint64 = 0xC000_0000
	// HighRAMStart is where RAM that does not fit below the hole continues.
	HighRAMStart uint64 = 1 << 32
	// MinSize is the smallest guest RAM godwit accepts.
	MinSize uint64 = 2 << 20
	// MaxSize is the largest guest RAM godwit accepts (1 TiB).
	MaxSize uint64 = 1 << 40
)

// ErrOutOfRange reports a guest-physical access outside guest RAM, or one that
// crosses from one RAM region into the hole.
var ErrOutOfRange = errors.New("guest address out of range")

// Region is one contiguous range of guest RAM, registered with KVM as one
// memory slot.
type Region struct {
	// Slot is the KVM memory slot number of this region.
	Slot uint32
	// GPA is the guest-physical start address.
	GPA uint64
	// Size is the length in bytes (a multiple of PageSize).
	Size uint64
	// Offset is the region's offset in the memfd backing all of RAM.
	Offset uint64
}

// End returns the first guest-physical address after the region.
func (r Region) End() uint64 { return r.GPA + r.Size }

// Pages returns the number of pages in the region.
func (r Region) Pages() uint64 { return r.Size / PageSize }

// Layout returns the RAM regions for a guest of size bytes: RAM from 0 up to
// the MMIO hole, and whatever does not fit below the hole from 4 GiB up.
func Layout(size uint64) ([]Region, error) {
	if size < MinSize || size > MaxSize {
		return nil, fmt.Errorf("guest memory size %d out of range [%d, %d]", size, MinSize, MaxSize)
	}
	if size%PageSize != 0 {
		return nil, fmt.Errorf("guest memory size %d is not a multiple of %d", size, PageSize)
	}
	low := min(size, MMIOHoleStart)
	regions := []Region{{Slot: 0, GPA: 0, Size: low, Offset: 0}}
	if size > low {
		regions = append(regions, Region{Slot: 1, GPA: HighRAMStart, Size: size - low, Offset: low})
	}
	return regions, nil
}

// Memory is guest RAM. It is safe for concurrent use: accesses are
// bounds-checked against an immutable layout, and the dirty bitmap is updated
// atomically.
type Memory struct {
	fd      int
	mapping []byte
	regions []Region
	dirty   [][]uint64 // per region, one bit per page, set by VMM writes

	// populating is the background population started by
	// PopulateInBackground: closing stop ends it, done is closed when
	// it has returned. Nil when none was started.
	populating *population
}

// population is one background population of guest RAM.
type population struct {
	stop chan struct{}
	done chan struct{}
}

// New creates guest RAM of size bytes backed by an anonymous memfd.
func New(size uint64) (*Memory, error) {
	regions, err := Layout(size)
	if err != nil {
		return nil, err
	}
	fd, err := unix.MemfdCreate("godwit-guest-ram", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sizing guest RAM to %d bytes: %w", size, err)
	}
	mapping, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_NORESERVE)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mapping %d bytes of guest RAM: %w", size, err)
	}
	// Transparent huge pages where the host allows them for shared memory
	// (/sys/kernel/mm/transparent_hugepage/shmem_enabled "advise" or
	// "within_size"): KVM then maps guest RAM with 2 MiB pages, which cuts
	// the first-touch faults of a fresh guest by 512 and TLB misses after.
	// Hosts that keep "never" ignore the advice; an error is not fatal.
	_ = unix.Madvise(mapping, unix.MADV_HUGEPAGE)
	m := &Memory{fd: fd, mapping: mapping, regions: regions}
	for _, r := range regions {
		m.dirty = append(m.dirty, make([]uint64, (r.Pages()+63)/64))
	}
	return m, nil
}

// Prealloc allocates every page of guest RAM up front (QEMU's
// -mem-prealloc), so the guest's first touch of a page no longer waits for
// the host to allocate and zero it, and a host short of memory fails now
// rather than killing a running guest later. Contents are unchanged.
func (m *Memory) Prealloc() error {
	err := unix.Madvise(m.mapping, unix.MADV_POPULATE_WRITE)
	if errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("preallocating guest RAM needs MADV_POPULATE_WRITE (Linux 5.14 or later): %w", err)
	}
	if err != nil {
		return fmt.Errorf("preallocating %d bytes of guest RAM: %w", len(m.mapping), err)
	}
	return nil
}

// Populate allocates the host pages behind pages [first, first+n) of
// region i, as writing them would, with one madvise(MADV_POPULATE_WRITE)
// rather than a page fault per page; contents never change. The
// migration receiver calls it for each run of pages about to receive data
// for the first time: with 4 KiB pages (hosts whose shmem_enabled is
// "never", Debian's default) a fault costs more than its share of the
// call (128 MiB of fresh memfd written page by page: 0.40 s faulting,
// 0.21 s populated 64 KiB at a time, on this project's machine). An
// error other than a range outside the region comes from the kernel:
// EINVAL before Linux 5.14, ENOMEM or EFAULT where a write would fail too.
func (m *Memory) Populate(i int, first, n uint64) error {
	r, err := m.pageRange(i, first, n)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	off := r.Offset + first*PageSize
	return unix.Madvise(m.mapping[off:off+n*PageSize], unix.MADV_POPULATE_WRITE)
}

// pageRange returns region i after checking that it exists and holds
// pages [first, first+n).
func (m *Memory) pageRange(i int, first, n uint64) (Region, error) {
	if i < 0 || i >= len(m.regions) {
		return Region{}, fmt.Errorf("no memory region %d", i)
	}
	r := m.regions[i]
	if first > r.Pages() || n > r.Pages()-first {
		return Region{}, fmt.Errorf("pages [%d, +%d) outside region %d (%d pages)", first, n, i, r.Pages())
	}
	return r, nil
}

// HugePages reports whether the host's policy for shared memory gives
// guest RAM transparent huge pages (shmem_enabled "always", "within_size",
// "advise" or "force"), where a first touch allocates 2 MiB at once and
// Populate of a few pages saves little. It reads the policy now (the
// kernel applies it at each fault): false when it cannot be read.
func (m *Memory) HugePages() bool {
	b, err := os.ReadFile(shmemEnabledPath)
	return err == nil && shmemPolicyHuge(string(b))
}

// shmemEnabledPath is the host's transparent huge page policy for shared
// memory (Documentation/admin-guide/mm/transhuge.rst).
const shmemEnabledPath = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"

// shmemPolicyHuge reports whether the shmem_enabled contents s (the
// choices, the one in force in brackets) give a memfd mapped with
// MADV_HUGEPAGE huge pages.
func shmemPolicyHuge(s string) bool {
	for _, f := range strings.Fields(s) {
		if strings.HasPrefix(f, "[") && strings.HasSuffix(f, "]") {
			switch f[1 : len(f)-1] {
			case "always", "within_size", "advise", "force":
				return true
			}
			return false
		}
	}
	return false
}

// populateChunk is how much RAM PopulateInBackground populates per
// madvise call: one huge page, so that Close waits for at most one.
const populateChunk = 2 << 20

// PopulateInBackground allocates every page of guest RAM that is not yet
// allocated, as Prealloc does, on a goroutine of its own and a 2 MiB
// chunk at a time, and returns at once. An incoming VM uses it while the
// migration stream fills its RAM: the host's cost of allocating and
// zeroing a page (2 MiB with transparent huge pages) is then paid during
// the live rounds rather than when the last pages arrive with the guest
// paused. Contents never change (MADV_POPULATE_WRITE only faults in
// missing pages), so it is safe alongside writes to the RAM. Errors end
// the population quietly: the pages are then allocated on first touch,
// as without it. Close stops it. Call it at most once.
func (m *Memory) PopulateInBackground() {
	if m.populating != nil {
		return
	}
	p := &population{stop: make(chan struct{}), done: make(chan struct{})}
	m.populating = p
	mapping := m.mapping
	go func() {
		defer close(p.done)
		for off := 0; off < len(mapping); off += populateChunk {
			select {
			case <-p.stop:
				return
			default:
			}
			if unix.Madvise(mapping[off:min(off+populateChunk, len(mapping))], unix.MADV_POPULATE_WRITE) != nil {
				return
			}
		}
	}()
}

// PopulateDone returns a channel closed once a population started by
// PopulateInBackground has ended (finished, failed or stopped by Close);
// nil when none was started.
func (m *Memory) PopulateDone() <-chan struct{} {
	if m.populating == nil {
		return nil
	}
	return m.populating.done
}

// Close unmaps guest RAM and closes its memfd. The Memory must not be used
// afterwards.
func (m *Memory) Close() error {
	if p := m.populating; p != nil {
		// The population must not touch the range once it is unmapped
		// (a later mapping could reuse the addresses).
		close(p.stop)
		<-p.done
		m.populating = nil
	}
	err := unix.Munmap(m.mapping)
	if cerr := unix.Close(m.fd); err == nil {
		err = cerr
	}
	m.mapping = nil
	return err
}

// Size returns the total RAM size in bytes.
func (m *Memory) Size() uint64 { return uint64(len(m.mapping)) }

// Regions returns a copy of the RAM layout.
func (m *Memory) Regions() []Region { return append([]Region(nil), m.regions...) }

// RegionHost returns the host mapping of region i, for registering it with KVM
// and for bulk transfers by the migration engine. Writes through it are not
// tracked: callers that write must call MarkDirty.
func (m *Memory) RegionHost(i int) []byte {
	r := m.regions[i]
	return m.mapping[r.Offset : r.Offset+r.Size : r.Offset+r.Size]
}

// locate returns the region index and the offset into the mapping of
// [gpa, gpa+n), which must lie inside one region.
func (m *Memory) locate(gpa, n uint64) (int, uint64, error) {
	for i, r := range m.regions {
		if gpa >= r.GPA && gpa < r.End() {
			if n > r.End()-gpa {
				break
			}
			return i, r.Offset + (gpa - r.GPA), nil
		}
	}
	return 0, 0, fmt.Errorf("%w: [%#x, +%#x)", ErrOutOfRange, gpa, n)
}

// Contains reports whether [gpa, gpa+n) lies inside one RAM region.
func (m *Memory) Contains(gpa, n uint64) bool {
	_, _, err := m.locate(gpa, n)
	return err == nil
}

// Slice returns guest RAM [gpa, gpa+n) for reading. Writing through it is not
// tracked; use WritableSlice for that.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	_, off, err := m.locate(gpa, n)
	if err != nil {
		return nil, err
	}
	return m.mapping[off : off+n : off+n], nil
}

// WritableSlice returns guest RAM [gpa, gpa+n) for writing and marks it
// dirty. A migration round may take the dirty bit between this call and
// the caller's write, so callers must call MarkDirty(gpa, n) again once
// they have written; Write does both in the right order.
func (m *Memory) WritableSlice(gpa, n uint64) ([]byte, error) {
	i, off, err := m.locate(gpa, n)
	if err != nil {
		return nil, err
	}
	m.markDirty(i, gpa, n)
	return m.mapping[off : off+n : off+n], nil
}

// Read copies guest RAM at gpa into p.
func (m *Memory) Read(gpa uint64, p []byte) error {
	s, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, s)
	return nil
}

// Write copies p into guest RAM at gpa and marks the pages dirty. The mark
// comes after the copy: a migration round that takes the dirty bit before
// it then sees the new bytes, and one that takes it after resends them.
func (m *Memory) Write(gpa uint64, p []byte) error {
	i, off, err := m.locate(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(m.mapping[off:off+uint64(len(p))], p)
	m.markDirty(i, gpa, uint64(len(p)))
	return nil
}

// ReadUint16 reads a little-endian uint16 at gpa.
func (m *Memory) ReadUint16(gpa uint64) (uint16, error) {
	s, err := m.Slice(gpa, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(s), nil
}

// ReadUint32 reads a little-endian uint32 at gpa.
func (m *Memory) ReadUint32(gpa uint64) (uint32, error) {
	s, err := m.Slice(gpa, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(s), nil
}

// ReadUint64 reads a little-endian uint64 at gpa.
func (m *Memory) ReadUint64(gpa uint64) (uint64, error) {
	s, err := m.Slice(gpa, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(s), nil
}

// WriteUint16 writes a little-endian uint16 at gpa and marks it dirty.
func (m *Memory) WriteUint16(gpa uint64, v uint16) error {
	return m.Write(gpa, binary.LittleEndian.AppendUint16(nil, v))
}

// WriteUint32 writes a little-endian uint32 at gpa and marks it dirty.
func (m *Memory) WriteUint32(gpa uint64, v uint32) error {
	return m.Write(gpa, binary.LittleEndian.AppendUint32(nil, v))
}

// WriteUint64 writes a little-endian uint64 at gpa and marks it dirty.
func (m *Memory) WriteUint64(gpa uint64, v uint64) error {
	return m.Write(gpa, binary.LittleEndian.AppendUint64(nil, v))
}

// MarkDirty marks the pages of [gpa, gpa+n) dirty in the VMM bitmap, for
// callers that wrote through RegionHost. Addresses outside RAM are ignored.
func (m *Memory) MarkDirty(gpa, n uint64) {
	if i, _, err := m.locate(gpa, n); err == nil {
		m.markDirty(i, gpa, n)
	}
}

func (m *Memory) markDirty(region int, gpa, n uint64) {
	if n == 0 {
		return
	}
	r := m.regions[region]
	first := (gpa - r.GPA) / PageSize
	last := (gpa - r.GPA + n - 1) / PageSize
	bm := m.dirty[region]
	for p := first; p <= last; {
		word := p / 64
		bit := p % 64
		span := min(64-bit, last-p+1)
		mask := ^uint64(0) >> (64 - span) << bit
		if atomic.LoadUint64(&bm[word])&mask != mask {
			atomic.OrUint64(&bm[word], mask)
		}
		p += span
	}
}

// TakeDirty ORs region i's VMM dirty bitmap into dst (one bit per page, as
// KVM_GET_DIRTY_LOG returns it) and clears it. dst must hold at least
// (pages+63)/64 words. It returns the number of pages that were dirty.
func (m *Memory) TakeDirty(i int, dst []uint64) (int, error) {
	bm := m.dirty[i]
	if len(dst) < len(bm) {
		return 0, fmt.Errorf("dirty bitmap of %d words too small for region %d (%d words)", len(dst), i, len(bm))
	}
	count := 0
	for w := range bm {
		if atomic.LoadUint64(&bm[w]) == 0 {
			continue
		}
		v := atomic.SwapUint64(&bm[w], 0)
		dst[w] |= v
		count += bits.OnesCount64(v)
	}
	return count, nil
}
