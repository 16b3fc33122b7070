// Package migratetest provides a fake VM for testing the migration engine
// and its users without KVM: VM implements migrate.Source over guest RAM
// from memory.New, with a deterministic guest that dirties pages when told
// to, and fake disks over sparse image files whose guest writes the tests
// control (VM.WithStorage sends them along, a storage migration); Factory
// builds Targets that record what they receive and create the images of
// a storage migration as godwit receive does (package migrate/storage).
package migratetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"

	"godwit/migrate"
	"godwit/migrate/storage"
	"godwit/vmm/memory"
)

// Config is the fake VM's configuration, sent as JSON in HELLO.
type Config struct {
	// MemoryBytes is the guest RAM size.
	MemoryBytes uint64 `json:"memory_bytes"`
	// VCPUs is the vCPU count (only validated).
	VCPUs int `json:"vcpus"`
	// Disks are the VM's disks, in order.
	Disks []DiskConfig `json:"disks,omitempty"`
	// Storage says the disks' contents travel in the migration: the
	// destination creates new images.
	Storage bool `json:"storage,omitempty"`
}

// Op names a VM operation, for fault injection and counters.
type Op string

// Operations of VM and Target.
const (
	OpConfig        Op = "Config"
	OpStartDirtyLog Op = "StartDirtyLog"
	OpFetchDirty    Op = "FetchDirty"
	OpStopDirtyLog  Op = "StopDirtyLog"
	OpPause         Op = "Pause"
	OpResume        Op = "Resume"
	OpSaveState     Op = "SaveState"
	OpRestoreState  Op = "RestoreState"
	OpStart         Op = "Start"
	OpDiskRead      Op = "DiskRead"
	OpTakeWritten   Op = "TakeWritten"
	OpClearDirty    Op = "ClearDirty"
)

// VM is a fake source VM. Its "guest" writes RAM only when Tick is called
// (by the test, by a FetchDirty hook, or by RunGuest), so tests control
// exactly how much it dirties. Guest writes go through the VM's own bitmap
// (standing in for KVM's dirty log) and, for one write in four, through
// memory.Write (the VMM's bitmap), so FetchDirty must OR both.
//
// Set the exported hook fields before migrating; they are read without
// locking.
type VM struct {
	// DirtyPerRound, when positive, makes every FetchDirty of region 0
	// first Tick that many pages: a guest whose dirtying is tied to
	// migration rounds, for deterministic convergence tests.
	DirtyPerRound int
	// DiskWritesPerRound, when positive, makes every FetchDirty of region
	// 0 also let the guest write that many 4 KiB chunks of every disk
	// (Disk.TickDisk).
	DiskWritesPerRound int
	// DirtySchedule, if set, replaces DirtyPerRound: the n-th FetchDirty
	// of region 0 (n from 0) first Ticks DirtySchedule(n) pages, so a
	// test can script how the dirty set evolves round by round.
	DirtySchedule func(n int) int
	// Fail, if set, is consulted at the start of every operation; a
	// non-nil result fails it.
	Fail func(op Op) error
	// OnPause, if set, runs inside Pause once the guest is stopped.
	OnPause func()
	// ManualDirty makes the fake dirty log manual, like KVM's with
	// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 and the log initially set
	// (migrate.DirtyClearer): StartDirtyLog marks every page dirty, and
	// FetchDirty reports a page until ClearDirty clears it.
	ManualDirty bool
	// Sections is what SaveState returns (plus a "guest" section
	// recording the tick count). Defaults to two small sections.
	Sections []migrate.Section

	cfg   Config
	mem   *memory.Memory
	pages uint64

	mu       sync.Mutex
	paused   bool
	resumed  chan struct{} // closed while running
	logging  bool
	throttle int
	kvmDirty [][]uint64
	rng      uint64
	ticks    uint64
	fetches  int // FetchDirty calls of region 0
	calls    map[Op]int
	disks    []*Disk
}

// New creates a fake VM with size bytes of RAM filled with a deterministic
// mix of zero, text-like and random pages.
func New(size uint64, vcpus int) (*VM, error) {
	v, err := NewEmpty(size, vcpus)
	if err != nil {
		return nil, err
	}
	Fill(v.mem, 1)
	return v, nil
}

// NewEmpty creates a fake VM whose RAM nothing has written yet: every page
// is a hole of the memfd until the guest (Tick) writes it, like the RAM of
// a freshly booted idle guest.
func NewEmpty(size uint64, vcpus int) (*VM, error) {
	mem, err := memory.New(size)
	if err != nil {
		return nil, err
	}
	v := &VM{
		cfg:     Config{MemoryBytes: size, VCPUs: vcpus},
		mem:     mem,
		pages:   size / memory.PageSize,
		resumed: make(chan struct{}),
		calls:   make(map[Op]int),
		rng:     0x9e3779b97f4a7c15,
		Sections: []migrate.Section{
			{ID: "vcpu/0", Version: 1, Data: []byte("registers of vCPU 0")},
			{ID: "dev/serial0", Version: 2, Data: bytes.Repeat([]byte{0xa5}, 300)},
		},
	}
	close(v.resumed)
	for _, r := range mem.Regions() {
		v.kvmDirty = append(v.kvmDirty, make([]uint64, (r.Pages()+63)/64))
	}
	return v, nil
}

// Fill writes a deterministic mix of page contents into mem from seed:
// half zero pages, a quarter text-like (compressible), a quarter random.
func Fill(mem *memory.Memory, seed uint64) {
	rnd := rand.New(rand.NewPCG(seed, seed^0x5eed))
	words := []string{"godwit ", "migrate ", "page ", "kvm ", "dirty ", "round ", "lz4 ", "\n"}
	for i := range mem.Regions() {
		host := mem.RegionHost(i)
		for off := 0; off < len(host); off += memory.PageSize {
			page := host[off : off+memory.PageSize]
			switch rnd.IntN(4) {
			case 0, 1:
				clear(page)
			case 2:
				var b []byte
				for len(b) < len(page) {
					b = append(b, words[rnd.IntN(len(words))]...)
				}
				copy(page, b)
			case 3:
				for j := 0; j < len(page); j += 8 {
					binary.LittleEndian.PutUint64(page[j:], rnd.Uint64())
				}
			}
		}
	}
}

// Memory implements migrate.Source.
func (v *VM) Memory() *memory.Memory { return v.mem }

// Close releases guest RAM and closes the disks' images.
func (v *VM) Close() error {
	errs := []error{v.mem.Close()}
	for _, d := range v.Disks() {
		errs = append(errs, d.Close())
	}
	return errors.Join(errs...)
}

func (v *VM) enter(op Op) error {
	v.mu.Lock()
	v.calls[op]++
	v.mu.Unlock()
	if v.Fail != nil {
		if err := v.Fail(op); err != nil {
			return fmt.Errorf("fake %s: %w", op, err)
		}
	}
	return nil
}

// Calls returns how many times op was called.
func (v *VM) Calls(op Op) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.calls[op]
}

// Config implements migrate.Source.
func (v *VM) Config() ([]byte, error) { return v.config(false) }

// config returns the configuration, for a storage migration when storage
// is set.
func (v *VM) config(storageIncluded bool) ([]byte, error) {
	if err := v.enter(OpConfig); err != nil {
		return nil, err
	}
	c := v.cfg
	c.Storage = storageIncluded
	for _, d := range v.Disks() {
		dc := DiskConfig{Path: d.path, Size: d.size}
		if storageIncluded {
			src, err := storage.OpenSource(d.path, d.size)
			if err != nil {
				return nil, err
			}
			dc.Allocated, err = src.AllocatedBytes()
			src.Close()
			if err != nil {
				return nil, err
			}
		}
		c.Disks = append(c.Disks, dc)
	}
	return json.Marshal(c)
}

// Tick lets the guest write n pages (fewer when throttled: n×(100-pct)/100),
// incrementing a counter in each. Pages are chosen by a deterministic
// generator. A paused guest writes nothing. It returns the pages written.
func (v *VM) Tick(n int) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.paused {
		return 0
	}
	n = n * (100 - v.throttle) / 100
	regions := v.mem.Regions()
	for k := 0; k < n; k++ {
		v.rng = v.rng*6364136223846793005 + 1442695040888963407
		p := (v.rng >> 17) % v.pages
		ri := 0
		for ri < len(regions)-1 && p >= regions[ri].Pages() {
			p -= regions[ri].Pages()
			ri++
		}
		v.ticks++
		off := p*memory.PageSize + (v.ticks%512)*8
		gpa := regions[ri].GPA + off
		if v.ticks%4 == 0 {
			// A VMM write: tracked by the memory package's bitmap.
			old, _ := v.mem.ReadUint64(gpa)
			v.mem.WriteUint64(gpa, old+1)
			continue
		}
		// A guest write: tracked by the (fake) KVM log.
		host := v.mem.RegionHost(ri)
		binary.LittleEndian.PutUint64(host[off:], binary.LittleEndian.Uint64(host[off:])+1)
		if v.logging {
			v.kvmDirty[ri][p/64] |= 1 << (p % 64)
		}
	}
	return n
}

// Ticks returns the number of page writes the guest made.
func (v *VM) Ticks() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ticks
}

// RunGuest calls Tick(n) in a loop until ctx is done, waiting while the VM
// is paused: a guest dirtying memory concurrently with the migration.
func (v *VM) RunGuest(ctx context.Context, n int) {
	for ctx.Err() == nil {
		v.mu.Lock()
		resumed := v.resumed
		v.mu.Unlock()
		select {
		case <-resumed:
		case <-ctx.Done():
			return
		}
		v.Tick(n)
	}
}

// StartDirtyLog implements migrate.Source.
func (v *VM) StartDirtyLog() error {
	if err := v.enter(OpStartDirtyLog); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.logging = true
	for i, bm := range v.kvmDirty {
		clear(bm)
		if v.ManualDirty {
			pages := v.mem.Regions()[i].Pages()
			for p := uint64(0); p < pages; p++ {
				bm[p/64] |= 1 << (p % 64)
			}
		}
		scratch := make([]uint64, len(bm))
		v.mem.TakeDirty(i, scratch)
	}
	return nil
}

// ManualDirtyLog implements migrate.DirtyClearer.
func (v *VM) ManualDirtyLog() bool { return v.ManualDirty }

// ClearDirty implements migrate.DirtyClearer.
func (v *VM) ClearDirty(i int, first uint64, mask []uint64) error {
	if err := v.enter(OpClearDirty); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.ManualDirty || !v.logging {
		return errors.New("fake ClearDirty: no manual dirty log")
	}
	if i < 0 || i >= len(v.kvmDirty) || first%64 != 0 || first/64+uint64(len(mask)) > uint64(len(v.kvmDirty[i])) {
		return fmt.Errorf("fake ClearDirty: bad region %d, first page %d or mask of %d words", i, first, len(mask))
	}
	for w, m := range mask {
		v.kvmDirty[i][first/64+uint64(w)] &^= m
	}
	return nil
}

// FetchDirty implements migrate.Source.
func (v *VM) FetchDirty(i int, dst []uint64) error {
	if err := v.enter(OpFetchDirty); err != nil {
		return err
	}
	if i == 0 {
		v.mu.Lock()
		n := v.fetches
		v.fetches++
		v.mu.Unlock()
		switch {
		case v.DirtySchedule != nil:
			v.Tick(v.DirtySchedule(n))
		case v.DirtyPerRound > 0:
			v.Tick(v.DirtyPerRound)
		}
		if v.DiskWritesPerRound > 0 {
			for _, d := range v.Disks() {
				if _, err := d.TickDisk(v.DiskWritesPerRound); err != nil {
					return err
				}
			}
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.logging {
		return errors.New("fake FetchDirty: dirty log not started")
	}
	if i < 0 || i >= len(v.kvmDirty) || len(dst) < len(v.kvmDirty[i]) {
		return fmt.Errorf("fake FetchDirty: bad region %d or bitmap of %d words", i, len(dst))
	}
	for w, x := range v.kvmDirty[i] {
		dst[w] |= x
	}
	if !v.ManualDirty {
		clear(v.kvmDirty[i])
	}
	_, err := v.mem.TakeDirty(i, dst)
	return err
}

// StopDirtyLog implements migrate.Source.
func (v *VM) StopDirtyLog() error {
	if err := v.enter(OpStopDirtyLog); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.logging = false
	return nil
}

// Logging reports whether the dirty log is on.
func (v *VM) Logging() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.logging
}

// Pause implements migrate.Source.
func (v *VM) Pause(ctx context.Context) error {
	if err := v.enter(OpPause); err != nil {
		return err
	}
	v.mu.Lock()
	if !v.paused {
		v.paused = true
		v.resumed = make(chan struct{})
	}
	v.mu.Unlock()
	if v.OnPause != nil {
		v.OnPause()
	}
	return nil
}

// Resume implements migrate.Source.
func (v *VM) Resume(ctx context.Context) error {
	if err := v.enter(OpResume); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.paused {
		v.paused = false
		close(v.resumed)
	}
	return nil
}

// Paused reports whether the VM is paused.
func (v *VM) Paused() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.paused
}

// SaveState implements migrate.Source: Sections plus a "guest" section
// holding the tick count.
func (v *VM) SaveState() ([]migrate.Section, error) {
	if err := v.enter(OpSaveState); err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.paused {
		return nil, errors.New("fake SaveState: VM is running")
	}
	out := append([]migrate.Section(nil), v.Sections...)
	return append(out, migrate.Section{ID: "guest", Version: 1, Data: binary.LittleEndian.AppendUint64(nil, v.ticks)}), nil
}

// SetThrottle implements migrate.Source.
func (v *VM) SetThrottle(pct int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.throttle = max(0, min(pct, 99))
}

// Throttle returns the current throttle.
func (v *VM) Throttle() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.throttle
}

// Factory builds fake Targets from a Config, refusing configurations
// beyond its limits with a clear message. Its methods are safe for
// concurrent use.
type Factory struct {
	// MaxMemory is the largest guest RAM it accepts (0 = no limit).
	MaxMemory uint64
	// MaxVCPUs is the most vCPUs it accepts (0 = no limit).
	MaxVCPUs int
	// Fail, if set, is consulted by the Targets' RestoreState and Start.
	Fail func(op Op) error
	// OnStart, if set, runs inside Target.Start.
	OnStart func(ctx context.Context)
	// CleanTargets skips filling new targets' RAM with junk (which
	// checks that the engine clears pages sent as zero), for benchmarks.
	// Only clean targets are zero-filled, so only they may be received
	// with migrate.ReceiveOptions.AssumeZeroed.
	CleanTargets bool
	// StorageDir is where a storage migration's images are created,
	// as godwit receive --storage-dir (storage.PlaceOptions.Dir). A
	// factory with a StorageDir refuses a migration without storage.
	StorageDir string
	// DiskMap places images by source path, as --disk-map.
	DiskMap map[string]string
	// Overwrite lets images replace existing files, as --overwrite.
	Overwrite bool
	// FreeSpace, if set, replaces statfs in the space check.
	FreeSpace func(dir string) (uint64, error)

	mu      sync.Mutex
	targets []*Target
}

// New implements migrate.TargetFactory.
func (f *Factory) New(config []byte) (migrate.Target, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(config))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("bad VM configuration: %w", err)
	}
	if f.MaxMemory > 0 && c.MemoryBytes > f.MaxMemory {
		return nil, fmt.Errorf("VM needs %d MiB of RAM, this host allows %d MiB", c.MemoryBytes>>20, f.MaxMemory>>20)
	}
	if c.VCPUs < 1 || (f.MaxVCPUs > 0 && c.VCPUs > f.MaxVCPUs) {
		return nil, fmt.Errorf("VM has %d vCPUs, this host supports 1 to %d", c.VCPUs, f.MaxVCPUs)
	}
	var images []*storage.Image
	switch {
	case c.Storage:
		var wants []storage.Want
		var sizes []uint64
		for _, d := range c.Disks {
			wants = append(wants, storage.Want{Source: d.Path, Size: d.Size, Allocated: d.Allocated})
			sizes = append(sizes, d.Size)
		}
		paths, err := storage.Place(wants, storage.PlaceOptions{Dir: f.StorageDir, Map: f.DiskMap, Overwrite: f.Overwrite, FreeSpace: f.FreeSpace})
		if err != nil {
			return nil, err
		}
		if images, err = storage.CreateAll(paths, sizes, f.Overwrite); err != nil {
			return nil, err
		}
	case f.StorageDir != "":
		return nil, errors.New("a storage directory is set, but the source does not send its disks")
	}
	mem, err := memory.New(c.MemoryBytes)
	if err != nil {
		storage.RemoveAll(images)
		return nil, err
	}
	if !f.CleanTargets {
		// Reused memory: the engine must clear pages sent as zero.
		Fill(mem, 99)
	}
	t := &Target{f: f, mem: mem, Config: c, images: images}
	f.mu.Lock()
	f.targets = append(f.targets, t)
	f.mu.Unlock()
	return t, nil
}

// Targets returns every Target built so far.
func (f *Factory) Targets() []*Target {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Target(nil), f.targets...)
}

// Target is a fake migration target.
type Target struct {
	// Config is the configuration it was built from.
	Config Config

	f         *Factory
	mem       *memory.Memory
	images    []*storage.Image
	mu        sync.Mutex
	sections  []migrate.Section
	started   bool
	discarded bool
}

// Memory implements migrate.Target.
func (t *Target) Memory() *memory.Memory { return t.mem }

// RestoreState implements migrate.Target; it keeps a deep copy.
func (t *Target) RestoreState(sections []migrate.Section) error {
	if t.f.Fail != nil {
		if err := t.f.Fail(OpRestoreState); err != nil {
			return err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range sections {
		s.Data = append([]byte(nil), s.Data...)
		t.sections = append(t.sections, s)
	}
	return nil
}

// Start implements migrate.Target.
func (t *Target) Start(ctx context.Context) error {
	if t.f.Fail != nil {
		if err := t.f.Fail(OpStart); err != nil {
			return err
		}
	}
	if t.f.OnStart != nil {
		t.f.OnStart(ctx)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.started = true
	return nil
}

// Discard implements migrate.Target: it removes the images it was
// receiving (as godwit receive does) and keeps the RAM for inspection;
// Close releases it.
func (t *Target) Discard() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.discarded = true
	storage.RemoveAll(t.images)
}

// Close releases the target's RAM and closes its images (which stay).
func (t *Target) Close() error {
	errs := []error{t.mem.Close()}
	for _, m := range t.images {
		errs = append(errs, m.Close())
	}
	return errors.Join(errs...)
}

// TargetDisks implements migrate.StorageTarget: the images of a storage
// migration, none otherwise.
func (t *Target) TargetDisks() []migrate.TargetDisk {
	var out []migrate.TargetDisk
	for _, m := range t.images {
		out = append(out, m)
	}
	return out
}

// DiskPaths returns where the target's images are now (temporary names
// until the engine commits them).
func (t *Target) DiskPaths() []string {
	var out []string
	for _, m := range t.images {
		out = append(out, m.Path())
	}
	return out
}

// Sections returns the restored state.
func (t *Target) Sections() []migrate.Section {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]migrate.Section(nil), t.sections...)
}

// Started reports whether Start succeeded.
func (t *Target) Started() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.started
}

// Discarded reports whether Discard was called.
func (t *Target) Discarded() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.discarded
}

// CompareMemory returns nil when a and b have the same layout and bytes,
// or an error naming the first differing page.
func CompareMemory(a, b *memory.Memory) error {
	ra, rb := a.Regions(), b.Regions()
	if len(ra) != len(rb) {
		return fmt.Errorf("%d regions vs %d", len(ra), len(rb))
	}
	for i := range ra {
		if ra[i].GPA != rb[i].GPA || ra[i].Size != rb[i].Size {
			return fmt.Errorf("region %d differs: %+v vs %+v", i, ra[i], rb[i])
		}
		ha, hb := a.RegionHost(i), b.RegionHost(i)
		if bytes.Equal(ha, hb) {
			continue
		}
		for off := 0; off < len(ha); off += memory.PageSize {
			if !bytes.Equal(ha[off:off+memory.PageSize], hb[off:off+memory.PageSize]) {
				return fmt.Errorf("page at GPA %#x differs", ra[i].GPA+uint64(off))
			}
		}
	}
	return nil
}
