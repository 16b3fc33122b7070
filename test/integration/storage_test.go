package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"godwit/migrate"
	"godwit/vmm/api"
)

// The sparse image of the storage migration tests: 64 MiB apparent, with
// 4 MiB of random data in four runs (one unaligned, one at the very end),
// 256 KiB of written zeros, and holes everywhere else.
const (
	storageImageSize = 64 << 20
	storageDataBytes = 4 << 20
)

// TestStoragePingpong's host-side write before every hop: 64 KiB inside
// the image's first run of random data (so the data size stays the same).
const (
	storageHopRecord = 64 << 10
	storageHopOffset = 512 << 10
)

// storageImage creates the sparse image at path and returns its content
// digest (fileSHA).
func storageImage(t *testing.T, path string) string {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(storageImageSize); err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(6, 6))
	for _, off := range []int64{0, 9<<20 + 4096, 40 << 20, storageImageSize - 1<<20} {
		data := make([]byte, storageDataBytes/4)
		for i := range data {
			data[i] = byte(rnd.Uint32())
		}
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.WriteAt(make([]byte, 256<<10), 20<<20); err != nil {
		t.Fatal(err)
	}
	return fileSHA(t, path)
}

// allocatedBytes returns what the file at path has allocated (st_blocks).
func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// migrateJSON runs `godwit migrate ... --json` and returns the final
// status it prints, and its exit error.
func migrateJSON(t *testing.T, sock, to string, args ...string) (api.MigrationInfo, error) {
	t.Helper()
	full := append([]string{"migrate", "--api-sock", sock, "--to", to, "--json"}, args...)
	var stderr bytes.Buffer
	out, err := runGodwit(t, migrateTimeout, &stderr, full...)
	t.Logf("godwit %s:\n%s%s", strings.Join(full, " "), out, stderr.String())
	var info api.MigrationInfo
	if jerr := json.Unmarshal(out, &info); jerr != nil {
		return info, fmt.Errorf("%v (and its output is not JSON: %v)", err, jerr)
	}
	return info, err
}

// storageSource is a running test guest with a disk.
type storageSource struct {
	*faultSource
	img string // the source image
	sum string // its content digest (fileSHA) before any migration
}

// startStorageSource creates the sparse image and starts the test guest
// with it as its disk.
func startStorageSource(t *testing.T) *storageSource {
	t.Helper()
	img := filepath.Join(t.TempDir(), "vda.img")
	sum := storageImage(t, img)
	sock := tempPath(t, "src.sock")
	p := startGodwit(t, "run", "--mem", fmt.Sprint(faultMem>>20)+"M", "--api-sock", sock, "--guest-arg", "heartbeat=1", "--disk", "path="+img)
	p.waitLine(func(l string) bool { _, ok := heartbeatPass(l); return ok }, "heartbeat")
	return &storageSource{faultSource: &faultSource{vmProcess: p, sock: sock}, img: img, sum: sum}
}

// checkUnchanged checks that the source image still has its content.
func (s *storageSource) checkUnchanged(t *testing.T) {
	t.Helper()
	if got := fileSHA(t, s.img); got != s.sum {
		t.Fatalf("the source image changed: digest %s, was %s", got, s.sum)
	}
}

// migrateStorage migrates the source with its disk to a fresh receiver
// that keeps images in dir (see hop), and shuts the destination down.
func (s *storageSource) migrateStorage(t *testing.T, dir string) {
	t.Helper()
	dst, st := s.hop(t, dir)
	t.Logf("disk moved: %d bytes on the wire (%d for the disk), %d allocated at the destination",
		st.TransferredBytes, st.DiskTransferredBytes, allocatedBytes(t, dst.img))
	dst.shutdown(t)
}

// hop migrates the source with its disk to a fresh receiver that keeps
// images in dir (extra: more receive flags), checks the received image
// (the source's content, sparse, few bytes on the wire, alone in dir)
// and the source's (unchanged since the pause), and that the guest goes
// on there. It returns the destination, running, as the next source
// (with the same content), and the migration's statistics.
func (s *storageSource) hop(t *testing.T, dir string, extra ...string) (*storageSource, migrate.Stats) {
	t.Helper()
	last := s.nextHeartbeat("heartbeat before the migration")
	dst, addr, dsock := startReceiver(t, "dst", append([]string{"--storage-dir", dir}, extra...)...)
	info, err := migrateJSON(t, s.sock, addr, "--include-storage")
	if err != nil {
		t.Fatalf("storage migration: %v", err)
	}
	if err := s.wait(); err != nil {
		t.Fatalf("source after migrating: %v", err)
	}
	dst.waitLine(func(l string) bool { n, ok := heartbeatPass(l); return ok && n > last }, fmt.Sprintf("heartbeat on the destination after pass %d", last))

	var st migrate.Stats
	if err := json.Unmarshal(info.Stats, &st); err != nil {
		t.Fatal(err)
	}
	if !st.Storage || st.DiskTotalBytes != storageImageSize || st.DiskRounds < 1 {
		t.Fatalf("disk statistics: storage %v, total %d, rounds %d", st.Storage, st.DiskTotalBytes, st.DiskRounds)
	}
	// The random data cannot shrink; nothing else may cost much.
	if st.DiskTransferredBytes > storageDataBytes*5/4 || st.TransferredBytes > storageImageSize/4 {
		t.Fatalf("%d bytes on the wire (%d for the disk) for a %d MiB image with %d MiB of data",
			st.TransferredBytes, st.DiskTransferredBytes, storageImageSize>>20, storageDataBytes>>20)
	}
	got := filepath.Join(dir, filepath.Base(s.img))
	if sum := fileSHA(t, got); sum != s.sum {
		t.Fatalf("the received image has digest %s, the source's %s", sum, s.sum)
	}
	if alloc := allocatedBytes(t, got); alloc > 2*storageDataBytes {
		t.Fatalf("the received image has %d bytes allocated for %d of data: not sparse", alloc, storageDataBytes)
	}
	if names := dirEntries(t, dir); len(names) != 1 {
		t.Fatalf("the storage directory holds %q, want the image alone", names)
	}
	s.checkUnchanged(t)
	next := &storageSource{faultSource: &faultSource{vmProcess: dst, sock: dsock}, img: got, sum: s.sum}
	return next, st
}

// shutdown stops the VM through its API and checks that it exits cleanly.
func (s *storageSource) shutdown(t *testing.T) {
	t.Helper()
	ctl(t, s.sock, "shutdown")
	if err := s.wait(); err != nil {
		t.Fatalf("exit after shutdown: %v", err)
	}
}

// rewrite overwrites storageHopRecord bytes of the image's first data
// run with data seeded by seed, behind the running VM's back: the test
// guest never touches its disk, and no migration is in flight, so the
// next one must send the new content (round 0 reads every allocated
// block). It updates the content digest.
func (s *storageSource) rewrite(t *testing.T, seed uint64) {
	t.Helper()
	f, err := os.OpenFile(s.img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(seed, 66))
	data := make([]byte, storageHopRecord)
	for i := range data {
		data[i] = byte(rnd.Uint32())
	}
	if _, err := f.WriteAt(data, storageHopOffset); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	s.sum = fileSHA(t, s.img)
}

// dirEntries lists dir.
func dirEntries(t *testing.T, dir string) []string {
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

// TestStorageMigration moves the test guest with a sparse 64 MiB disk to
// a receiver that creates its image (`migrate --include-storage`,
// `receive --storage-dir`): the received image has the source's content,
// is sparse, and cost about its data on the wire; the source image is
// unchanged. A receiver killed in the middle of the disk copy leaves the
// source running with its disk and no image at the final path, and a
// retry into the same directory succeeds (removing the killed receiver's
// partial image). A directory that already has the image is refused
// before anything moves.
func TestStorageMigration(t *testing.T) {
	t.Run("copy", func(t *testing.T) {
		src := startStorageSource(t)
		src.migrateStorage(t, t.TempDir())
	})
	t.Run("kill-destination-in-disk-copy", func(t *testing.T) {
		src := startStorageSource(t)
		dir := t.TempDir()
		dst, addr, _ := startReceiverEnv(t, "dst-killed", []string{faultFlag + "die-in=disk-copy"}, "--storage-dir", dir)
		out, err := migrateVM(t, src.sock, addr, "--include-storage")
		if err == nil {
			t.Fatal("migrating to a receiver that dies in the disk copy succeeded")
		}
		if werr := dst.wait(); werr == nil || !strings.Contains(werr.Error(), "signal: killed") {
			t.Fatalf("receiver exit %v, want killed by its fault injection", werr)
		}
		if want := "test fault: SIGKILL in phase disk-copy"; !strings.Contains(dst.stderrText(), want) {
			t.Fatalf("the receiver did not log %q: it died elsewhere", want)
		}
		src.checkKept(t, out)
		src.checkUnchanged(t)
		names := dirEntries(t, dir)
		for _, n := range names {
			if !strings.HasPrefix(n, ".vda.img.godwit-partial-") {
				t.Fatalf("the killed receiver left %q in the storage directory: only a hidden partial image may stay", names)
			}
		}
		t.Logf("the killed receiver left %q", names)
		src.migrateStorage(t, dir)
	})
	t.Run("pingpong", func(t *testing.T) {
		// Hops 1 and 3 receive into a, hop 2 into b; pingpong deletes
		// hop 2's source copy in a, and hop 3's in b.
		img := filepath.Join(t.TempDir(), "vda.img")
		sum := storageImage(t, img)
		a, b := t.TempDir(), t.TempDir()
		var stderr bytes.Buffer
		out, err := runGodwit(t, commandTimeout, &stderr, "pingpong", "--rounds", "3", "--mem", fmt.Sprint(faultMem>>20)+"M",
			"--guest-arg", "heartbeat=1", "--expect", "^heartbeat", "--timeout", "2m",
			"--disk", "path="+img, "--include-storage", "--storage-dir", a, "--storage-dir", b)
		t.Logf("godwit pingpong:\n%s\nstderr:\n%s", out, stderr.String())
		if err != nil {
			t.Fatalf("godwit pingpong: %v", err)
		}
		var rep struct {
			Status string `json:"status"`
			Hops   []struct {
				Stats migrate.Stats `json:"stats"`
			} `json:"hops"`
		}
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("report: %v", err)
		}
		if rep.Status != "passed" || len(rep.Hops) != 3 {
			t.Fatalf("report: %+v", rep)
		}
		for i, h := range rep.Hops {
			if !h.Stats.Storage || h.Stats.DiskTransferredBytes == 0 {
				t.Fatalf("hop %d did not move the disk: %+v", i+1, h.Stats)
			}
		}
		if got := fileSHA(t, filepath.Join(a, "vda.img")); got != sum {
			t.Fatalf("the image after three hops has digest %s, want %s", got, sum)
		}
		if names := dirEntries(t, b); len(names) != 0 {
			t.Fatalf("the stale copies were not removed: %q", names)
		}
		if got := fileSHA(t, img); got != sum {
			t.Fatal("the first instance's image changed")
		}
	})
	t.Run("refused-existing-image", func(t *testing.T) {
		src := startStorageSource(t)
		dir := t.TempDir()
		existing := filepath.Join(dir, "vda.img")
		if err := os.WriteFile(existing, []byte("keep me"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, addr, _ := startReceiver(t, "dst-refusing", "--storage-dir", dir)
		out, err := migrateVM(t, src.sock, addr, "--include-storage")
		if err == nil || !strings.Contains(string(out), "exists: refusing to replace it") {
			t.Fatalf("migrating onto an existing image: %v", err)
		}
		src.checkKept(t, out)
		if b, _ := os.ReadFile(existing); string(b) != "keep me" {
			t.Fatal("the existing file changed")
		}
		if names := dirEntries(t, dir); len(names) != 1 {
			t.Fatalf("the refusing receiver left %q", names)
		}
		src.checkUnchanged(t)
	})
}

// storageHops returns the hops of the storage ping-pong tests:
// GODWIT_STORAGE_HOPS, default 10.
func storageHops(t *testing.T) int {
	t.Helper()
	v := os.Getenv("GODWIT_STORAGE_HOPS")
	if v == "" {
		return 10
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		t.Fatalf("GODWIT_STORAGE_HOPS=%q: want a count from 1 to 1000", v)
	}
	return n
}

// pingpongDir returns where hop n (from 1) of a storage ping-pong
// between dirs a and b receives the image: b on even hops, a on odd
// ones. With it the receive flags: from hop 3 on the directory still
// holds the image that left it two hops before (its VM has exited), and
// the receiver replaces it (--overwrite).
func pingpongDir(n int, a, b string) (string, []string) {
	dir := a
	if n%2 == 0 {
		dir = b
	}
	if n >= 3 {
		return dir, []string{"--overwrite"}
	}
	return dir, nil
}

// TestStoragePingpong bounces the test guest with its sparse 64 MiB
// disk between two directories GODWIT_STORAGE_HOPS times (default 10),
// each hop to a fresh receiver (`migrate --include-storage`, `receive
// --storage-dir`, from the third hop `--overwrite`, replacing the copy
// that left the directory two hops before). Before each hop the host
// rewrites 64 KiB of the running VM's image with data of its own (the
// test guest never touches its disk), so every hop moves different
// content; after it, the received image holds exactly that content, is
// sparse and alone in its directory, cost about its data on the wire,
// the source's image is unchanged since the pause, and the guest goes on
// at the destination.
func TestStoragePingpong(t *testing.T) {
	hops := storageHops(t)
	src := startStorageSource(t)
	a, b := t.TempDir(), t.TempDir()
	for n := 1; n <= hops; n++ {
		src.rewrite(t, uint64(n))
		dir, extra := pingpongDir(n, a, b)
		dst, st := src.hop(t, dir, extra...)
		t.Logf("hop %d/%d into %s: downtime %.1f ms, total %.1f ms, %d bytes on the wire (%d for the disk, %d disk rounds), image digest %.16s",
			n, hops, dir, st.DowntimeMs, st.TotalMs, st.TransferredBytes, st.DiskTransferredBytes, st.DiskRounds, dst.sum)
		src = dst
	}
	src.shutdown(t)
	if got := fileSHA(t, src.img); got != src.sum {
		t.Fatalf("the last image changed at shutdown: digest %s, want %s", got, src.sum)
	}
}
