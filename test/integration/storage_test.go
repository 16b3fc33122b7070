package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
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

// storageImage creates the sparse image at path and returns the SHA-256
// of its whole content.
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

// fileSHA returns the SHA-256 of the file at path.
func fileSHA(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
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
	sum string // its SHA-256 before any migration
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
		t.Fatalf("the source image changed: SHA-256 %s, was %s", got, s.sum)
	}
}

// migrateStorage migrates the source with its disk to a fresh receiver
// that keeps images in dir, checks the received image (same content,
// sparse, few bytes on the wire) and the source's (unchanged), that the
// guest goes on there, and shuts it down.
func (s *storageSource) migrateStorage(t *testing.T, dir string) {
	t.Helper()
	last := s.nextHeartbeat("heartbeat before the migration")
	dst, addr, dsock := startReceiver(t, "dst", "--storage-dir", dir)
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
	got := filepath.Join(dir, "vda.img")
	if sum := fileSHA(t, got); sum != s.sum {
		t.Fatalf("the received image has SHA-256 %s, the source's %s", sum, s.sum)
	}
	if alloc := allocatedBytes(t, got); alloc > 2*storageDataBytes {
		t.Fatalf("the received image has %d bytes allocated for %d of data: not sparse", alloc, storageDataBytes)
	}
	if names := dirEntries(t, dir); len(names) != 1 {
		t.Fatalf("the storage directory holds %q, want the image alone", names)
	}
	s.checkUnchanged(t)
	t.Logf("disk moved: %d bytes on the wire (%d for the disk), %d allocated at the destination",
		st.TransferredBytes, st.DiskTransferredBytes, allocatedBytes(t, got))
	ctl(t, dsock, "shutdown")
	if err := dst.wait(); err != nil {
		t.Fatalf("destination exit: %v", err)
	}
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
			t.Fatalf("the image after three hops has SHA-256 %s, want %s", got, sum)
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
