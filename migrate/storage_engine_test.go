package migrate_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"godwit/migrate"
	"godwit/migrate/migratetest"
	"godwit/migrate/storage"
)

// randomBytes returns n pseudo-random bytes from seed.
func randomBytes(seed uint64, n int) []byte {
	rnd := rand.New(rand.NewPCG(seed, seed^0xd15c))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	return b
}

// textBytes returns n compressible bytes.
func textBytes(n int) []byte {
	b := make([]byte, 0, n+16)
	for len(b) < n {
		b = append(b, "godwit disk block "...)
	}
	return b[:n]
}

// addDisk attaches a disk of size bytes in dir to vm, named name.
func addDisk(t *testing.T, vm *migratetest.VM, dir, name string, size uint64) *migratetest.Disk {
	t.Helper()
	d, err := vm.AddDisk(filepath.Join(dir, name), size)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// fill writes the disk's initial content, failing the test on error.
func fill(t *testing.T, d *migratetest.Disk, off uint64, p []byte) {
	t.Helper()
	if err := d.Fill(off, p); err != nil {
		t.Fatal(err)
	}
}

// storageVM returns a fake VM with two disks in a directory of their
// own: vda (16 MiB: random data, text, an allocated run of zeros, and
// holes) and vdb (4 MiB + 1536 bytes, so its last block is short, with
// data in that block).
func storageVM(t *testing.T) (*migratetest.VM, []*migratetest.Disk) {
	t.Helper()
	vm := newVM(t)
	dir := t.TempDir()
	vda := addDisk(t, vm, dir, "vda.img", 16<<20)
	fill(t, vda, 0, randomBytes(1, 512<<10))
	fill(t, vda, 3<<20+4096, textBytes(700<<10))
	fill(t, vda, 8<<20, make([]byte, 256<<10)) // allocated zeros
	fill(t, vda, 16<<20-4096, randomBytes(2, 4096))
	vdb := addDisk(t, vm, dir, "vdb.img", 4<<20+1536)
	fill(t, vdb, 4<<20-1000, randomBytes(3, 2536))
	return vm, []*migratetest.Disk{vda, vdb}
}

// checkStorageSuccess checks a completed storage migration on top of
// checkSuccess: each received image is at its final path in dir and holds
// exactly what the guest wrote (the source is paused: that is its final
// content), each source image still holds exactly what the guest wrote
// (the migration wrote nothing there), nothing else is left in dir, and
// the statistics of both sides agree.
func checkStorageSuccess(t *testing.T, vm *migratetest.VM, disks []*migratetest.Disk, dir string, r result) *migratetest.Target {
	t.Helper()
	tgt := checkSuccess(t, vm, r)
	var want []string
	for i, d := range disks {
		final := filepath.Join(dir, filepath.Base(d.Path()))
		want = append(want, filepath.Base(final))
		if got := tgt.DiskPaths()[i]; got != final {
			t.Fatalf("disk %d received at %s, want %s", i, got, final)
		}
		if err := d.CheckImage(final); err != nil {
			t.Fatalf("destination disk %d: %v", i, err)
		}
		if err := d.CheckImage(d.Path()); err != nil {
			t.Fatalf("source disk %d changed by the migration: %v", i, err)
		}
	}
	if got := dirNames(t, dir); !slices.Equal(got, want) {
		t.Fatalf("storage directory holds %q, want %q", got, want)
	}
	st := r.stats
	if !st.Storage || !r.destStats.Storage {
		t.Fatalf("storage flags: source %v, destination %v", st.Storage, r.destStats.Storage)
	}
	var total uint64
	for _, d := range disks {
		total += d.Size()
	}
	if st.DiskTotalBytes != total || st.DiskTransferredBytes == 0 || st.DiskRounds < 1 {
		t.Fatalf("disk stats: total %d (want %d), transferred %d, rounds %d", st.DiskTotalBytes, total, st.DiskTransferredBytes, st.DiskRounds)
	}
	if st.DiskBlocks != r.destStats.DiskBlocks {
		t.Fatalf("disk blocks: source %+v, destination %+v", st.DiskBlocks, r.destStats.DiskBlocks)
	}
	return tgt
}

// fileHasData reports whether the file at path has data (not a hole) at
// off, as SEEK_DATA sees it: file systems may store written zeros as
// holes.
func fileHasData(t *testing.T, path string, off int64) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	at, err := f.Seek(off, 3) // SEEK_DATA
	return err == nil && at == off
}

// dirNames lists dir, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestStorageMigrate moves a VM with two disks while its guest writes
// memory and both disks concurrently: the received images equal what the
// guest last wrote, the source images only ever hold the guest's writes,
// and the disk statistics and round records are filled in.
func TestStorageMigrate(t *testing.T) {
	for _, tr := range transports {
		for _, comp := range []migrate.Compression{migrate.CompressionNone, migrate.CompressionLZ4} {
			// The fake disks are read a block at a time (ReadAt),
			// storage.Source a run of blocks at a time (preadv).
			for _, images := range []bool{false, true} {
				name := tr.name + "/" + comp.String() + "/readat"
				if images {
					name = tr.name + "/" + comp.String() + "/preadv"
				}
				t.Run(name, func(t *testing.T) {
					vm, disks := storageVM(t)
					var source migrate.Source = vm.WithStorage()
					if images {
						source = imageSource(t, vm)
					}
					ctx, cancel := context.WithCancel(context.Background())
					var wg sync.WaitGroup
					guestErrs := make(chan error, len(disks))
					wg.Add(1)
					go func() { defer wg.Done(); vm.RunGuest(ctx, 8) }()
					for _, d := range disks {
						wg.Add(1)
						go func() { defer wg.Done(); guestErrs <- d.RunGuest(ctx, 2, 2000) }()
					}
					vm.DiskWritesPerRound = 20
					var recs []migrate.RoundRecord
					dir := t.TempDir()
					src, dst := tr.pair(t)
					r := migrateOnce(context.Background(), context.Background(), src, dst, source, &migratetest.Factory{StorageDir: dir},
						migrate.Options{Compression: comp, Trace: func(rec migrate.RoundRecord) { recs = append(recs, rec) }})
					cancel()
					wg.Wait()
					close(guestErrs)
					for err := range guestErrs {
						if err != nil {
							t.Fatal(err)
						}
					}
					checkStorageSuccess(t, vm, disks, dir, r)
					if recs[0].DiskBlocksSent == 0 || recs[0].DiskBytes == 0 {
						t.Fatalf("round 0 record without disk blocks: %+v", recs[0])
					}
					var sent uint64
					for _, rec := range recs {
						sent += rec.DiskBlocksSent
					}
					if b := r.stats.DiskBlocks; sent != b.Normal+b.Zero+b.Compressed {
						t.Fatalf("round records count %d disk blocks, the summary %+v", sent, b)
					}
					if comp == migrate.CompressionLZ4 && r.stats.DiskBlocks.Compressed == 0 {
						t.Fatal("LZ4 compressed no block of text")
					}
					if comp == migrate.CompressionNone && r.stats.DiskBlocks.Compressed != 0 {
						t.Fatal("compressed disk blocks without compression")
					}
				})
			}
		}
	}
}

// TestStorageIterates shows the iterative rounds carry the disk blocks
// written since the previous round: a guest that writes its disk in every
// round keeps the policy iterating until the round limit, each later
// round sends disk blocks, and the received image is the final content.
func TestStorageIterates(t *testing.T) {
	vm, disks := storageVM(t)
	vm.DiskWritesPerRound = 40
	dir := t.TempDir()
	var recs []migrate.RoundRecord
	src, dst := pipePair(t)
	r := migrateOnce(context.Background(), context.Background(), src, dst, vm.WithStorage(), &migratetest.Factory{StorageDir: dir},
		migrate.Options{DowntimeTarget: 1, MaxRounds: 4, Trace: func(rec migrate.RoundRecord) { recs = append(recs, rec) }})
	checkStorageSuccess(t, vm, disks, dir, r)
	if len(recs) != 5 {
		t.Fatalf("%d rounds, want 4 and the paused one", len(recs))
	}
	for _, rec := range recs[1:] {
		if rec.DiskBlocksSent == 0 {
			t.Fatalf("round %d sent no disk block although the guest wrote some", rec.Round)
		}
	}
	for _, rec := range recs[:4] {
		if rec.DiskDirtyBlocksFound == 0 || rec.DiskDirtyBlocksPerSec <= 0 {
			t.Fatalf("round %d found no written disk block: %+v", rec.Round, rec)
		}
	}
	if r.stats.DiskRounds != 5 || r.stats.DiskDirtyBlocksRate <= 0 {
		t.Fatalf("disk rounds %d, dirty rate %v", r.stats.DiskRounds, r.stats.DiskDirtyBlocksRate)
	}
}

// TestStorageSparse moves a 64 MiB disk holding 1 MiB of data: the holes
// are not sent, so the wire carries a small fraction of the disk's size,
// and the received image is sparse too.
func TestStorageSparse(t *testing.T) {
	vm := newVM(t)
	const size = 64 << 20
	d := addDisk(t, vm, t.TempDir(), "sparse.img", size)
	for i, off := range []uint64{0, 20 << 20, 50<<20 + 512, size - 256<<10} {
		fill(t, d, off, randomBytes(uint64(i), 256<<10))
	}
	fill(t, d, 30<<20, make([]byte, 3*migrate.DiskBlockSize)) // allocated zeros
	zerosAllocated := fileHasData(t, d.Path(), 30<<20)
	dir := t.TempDir()
	src, dst := pipePair(t)
	r := migrateOnce(context.Background(), context.Background(), src, dst, vm.WithStorage(), &migratetest.Factory{StorageDir: dir},
		migrate.Options{Compression: migrate.CompressionLZ4})
	checkStorageSuccess(t, vm, []*migratetest.Disk{d}, dir, r)
	// 1 MiB of random data in at most 17 blocks of 64 KiB (one run
	// straddles a block boundary).
	if got := r.stats.DiskTransferredBytes; got > 17*migrate.DiskBlockSize+64<<10 {
		t.Fatalf("the disk put %d bytes on the wire for 1 MiB of data", got)
	}
	if got := r.stats.TransferredBytes; got > size/8 {
		t.Fatalf("the migration sent %d bytes for a 64 MiB disk with 1 MiB of data and 8 MiB of RAM", got)
	}
	if zerosAllocated && r.stats.DiskBlocks.Zero < 3 {
		t.Fatalf("the allocated zeros did not travel as zero blocks: %+v", r.stats.DiskBlocks)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "sparse.img"), &st); err != nil {
		t.Fatal(err)
	}
	if alloc := st.Blocks * 512; alloc > 4<<20 {
		t.Fatalf("the received image has %d bytes allocated: not sparse", alloc)
	}
}

// TestStorageDestinationDies cuts the migration in the middle of the disk
// copy, and when the source pauses: the source runs on with its disks
// unchanged, the destination removes its partial images, and a retry into
// the same directory succeeds.
func TestStorageDestinationDies(t *testing.T) {
	phases := []struct {
		name  string
		limit int  // bytes the destination reads before dying
		pause bool // die when the source pauses instead
	}{
		// RAM is 8 MiB, the disks hold about 1.5 MiB of data plus
		// 24 MiB of random bytes added below: at 12 MiB the stream is
		// past RAM and inside the disk copy.
		{name: "mid disk copy", limit: 12 << 20},
		{name: "after pause", pause: true},
	}
	for _, ph := range phases {
		t.Run(ph.name, func(t *testing.T) {
			vm, disks := storageVM(t)
			vda := disks[0]
			fill(t, vda, 9<<20, randomBytes(9, 6<<20))
			vdc := addDisk(t, vm, filepath.Dir(vda.Path()), "vdc.img", 24<<20)
			fill(t, vdc, 0, randomBytes(10, 18<<20))
			disks = append(disks, vdc)
			vm.DiskWritesPerRound = 8
			dir := t.TempDir()
			src, dst := tcpPair(t)
			limit := ph.limit
			if ph.pause {
				limit = 1 << 40
				vm.OnPause = func() { dst.Close() }
			}
			cc := &cutConn{Conn: dst, limit: limit, cut: func() { dst.Close() }}
			f := &migratetest.Factory{StorageDir: dir}
			var wg sync.WaitGroup
			var destErr error
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, destErr = migrate.Receive(context.Background(), cc, f.New, migrate.ReceiveOptions{})
				dst.Close()
			}()
			st, err := migrate.Send(context.Background(), src, vm.WithStorage(), migrate.Options{Compression: migrate.CompressionNone})
			src.Close()
			wg.Wait()
			if err == nil || destErr == nil {
				t.Fatalf("Send: %v; Receive: %v", err, destErr)
			}
			checkSourceIntact(t, vm, st)
			if tg := f.Targets(); len(tg) != 1 || !tg[0].Discarded() || len(tg[0].DiskPaths()) != 3 {
				t.Fatal("destination target not built with three disks and discarded")
			}
			if ph.pause == false && st.DiskTransferredBytes == 0 {
				t.Fatal("the cut came before the disk copy")
			}
			if names := dirNames(t, dir); len(names) != 0 {
				t.Fatalf("the failed destination left %q behind", names)
			}
			// The source's guest keeps writing its disks, and its
			// images hold its writes alone.
			before := vda.Writes()
			if _, err := vda.TickDisk(5); err != nil {
				t.Fatal(err)
			}
			if vda.Writes() != before+5 {
				t.Fatal("the source's guest cannot write its disk after the failure")
			}
			for i, d := range disks {
				if err := d.CheckImage(d.Path()); err != nil {
					t.Fatalf("source disk %d: %v", i, err)
				}
			}
			vm.OnPause = nil
			src, dst = tcpPair(t)
			r := migrateOnce(context.Background(), context.Background(), src, dst, vm.WithStorage(), &migratetest.Factory{StorageDir: dir}, migrate.Options{})
			checkStorageSuccess(t, vm, disks, dir, r)
		})
	}
}

// TestStorageRefused checks that the destination refuses a storage
// migration before anything moves when an image's file exists, when the
// file system is short of space, when it has nowhere to put an image, and
// when it expects disks a source does not send; the source runs on, and
// nothing is left behind.
func TestStorageRefused(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string, f *migratetest.Factory)
		storage bool // migrate with the disks
		wantErr string
	}{
		{name: "destination file exists", storage: true, wantErr: "exists: refusing to replace it (receive --overwrite does)",
			setup: func(t *testing.T, dir string, f *migratetest.Factory) {
				if err := os.WriteFile(filepath.Join(dir, "vdb.img"), []byte("precious"), 0o644); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "space short", storage: true, wantErr: "not enough space for the disks in",
			setup: func(t *testing.T, dir string, f *migratetest.Factory) {
				f.FreeSpace = func(string) (uint64, error) { return 1 << 20, nil }
			}},
		{name: "nowhere to put it", storage: true, wantErr: "give receive --storage-dir DIR or --disk-map",
			setup: func(t *testing.T, dir string, f *migratetest.Factory) { f.StorageDir = "" }},
		{name: "disks not sent", wantErr: "the source does not send its disks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm, disks := storageVM(t)
			dir := t.TempDir()
			f := &migratetest.Factory{StorageDir: dir}
			if tt.setup != nil {
				tt.setup(t, dir, f)
			}
			before := dirNames(t, dir)
			var source migrate.Source = vm
			if tt.storage {
				source = vm.WithStorage()
			}
			src, dst := pipePair(t)
			r := migrateOnce(context.Background(), context.Background(), src, dst, source, f, migrate.Options{})
			if !errors.Is(r.err, migrate.ErrRefused) || !strings.Contains(r.err.Error(), tt.wantErr) {
				t.Fatalf("Send error %v, want a refusal saying %q", r.err, tt.wantErr)
			}
			checkSourceIntact(t, vm, r.stats)
			if vm.Calls(migratetest.OpStartDirtyLog) != 0 || r.stats.TransferredBytes > 64<<10 {
				t.Fatalf("something moved before the refusal: dirty log started %d times, %d bytes sent", vm.Calls(migratetest.OpStartDirtyLog), r.stats.TransferredBytes)
			}
			if after := dirNames(t, dir); !slices.Equal(after, before) {
				t.Fatalf("the storage directory went from %q to %q", before, after)
			}
			if tt.name == "destination file exists" {
				if b, _ := os.ReadFile(filepath.Join(dir, "vdb.img")); string(b) != "precious" {
					t.Fatal("the existing file was changed")
				}
			}
			for i, d := range disks {
				if err := d.CheckImage(d.Path()); err != nil {
					t.Fatalf("source disk %d: %v", i, err)
				}
			}
		})
	}
	t.Run("overwrite replaces an existing file", func(t *testing.T) {
		vm, disks := storageVM(t)
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "vdb.img"), randomBytes(5, 8<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		src, dst := pipePair(t)
		r := migrateOnce(context.Background(), context.Background(), src, dst, vm.WithStorage(), &migratetest.Factory{StorageDir: dir, Overwrite: true}, migrate.Options{})
		checkStorageSuccess(t, vm, disks, dir, r)
	})
}

// TestStorageSourceReadFails fails the source's disk reads: the migration
// fails with the reason, and the source runs on and migrates later.
func TestStorageSourceReadFails(t *testing.T) {
	vm, disks := storageVM(t)
	vm.Fail = func(op migratetest.Op) error {
		if op == migratetest.OpDiskRead {
			return errors.New("EIO")
		}
		return nil
	}
	dir := t.TempDir()
	src, dst := pipePair(t)
	r := migrateOnce(context.Background(), context.Background(), src, dst, vm.WithStorage(), &migratetest.Factory{StorageDir: dir}, migrate.Options{})
	if r.err == nil || !strings.Contains(r.err.Error(), "reading the source's disk") || !strings.Contains(r.err.Error(), "EIO") {
		t.Fatalf("Send error %v", r.err)
	}
	checkSourceIntact(t, vm, r.stats)
	if names := dirNames(t, dir); len(names) != 0 {
		t.Fatalf("the failed destination left %q behind", names)
	}
	vm.Fail = nil
	src, dst = pipePair(t)
	r = migrateOnce(context.Background(), context.Background(), src, dst, vm.WithStorage(), &migratetest.Factory{StorageDir: dir}, migrate.Options{})
	checkStorageSuccess(t, vm, disks, dir, r)
}

// imageVM is a fake VM whose disks the migration reads as vmm's does:
// through storage.Source (one preadv per run of blocks, SEEK_DATA), with
// the written blocks from the fake disks.
type imageVM struct {
	migratetest.StorageVM
	disks []migrate.SourceDisk
}

// SourceDisks implements migrate.StorageSource.
func (v *imageVM) SourceDisks() []migrate.SourceDisk { return v.disks }

// imageDisk is a fake disk read through storage.Source.
type imageDisk struct {
	*storage.Source
	fake *migratetest.Disk
}

// Allocated implements migrate.SourceDisk.
func (d imageDisk) Allocated(dst []uint64) error { return d.MarkData(migrate.DiskBlockSize, dst) }

// TakeWritten implements migrate.SourceDisk.
func (d imageDisk) TakeWritten(dst []uint64) error { return d.fake.TakeWritten(dst) }

// imageSource returns vm as a storage source whose disks are read
// through storage.Source, closed when the test ends.
func imageSource(tb testing.TB, vm *migratetest.VM) *imageVM {
	tb.Helper()
	v := &imageVM{StorageVM: vm.WithStorage()}
	for _, d := range vm.Disks() {
		src, err := storage.OpenSource(d.Path(), d.Size())
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { src.Close() })
		v.disks = append(v.disks, imageDisk{Source: src, fake: d})
	}
	return v
}
