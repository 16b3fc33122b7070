package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"godwit/migrate"
)

// The disk workload of TestLinuxStorageMigration: a 256 MiB disk with
// linuxStorageRecords records of 64 KiB, one every 8 MiB (the rest stays
// holes). Record i of pass p holds the line "godwit-pP-iI" repeated: its
// checksum names it.
const (
	linuxStorageDisk    = 256 << 20
	linuxStorageRecords = 32
	linuxStorageRecord  = 64 << 10
	linuxStorageStride  = 8 << 20
)

// linuxStorageCmd is the guest's command (godwit.cmd: no double quotes):
// pass after pass, write every record with O_DIRECT and fsync, print
// "WROTE P", read every record back with O_DIRECT and compare its
// SHA-256 with the pattern's, and print "VERIFY P bad=N". It runs until
// the test shuts the VM down.
var linuxStorageCmd = fmt.Sprintf("n=%d; p=0; while [ $p -lt 100000 ]; do p=$((p+1)); i=0;"+
	" while [ $i -lt $n ]; do yes godwit-p$p-i$i | head -c %d > /tmp/r;"+
	" dd if=/tmp/r of=/dev/vda bs=%d seek=$((i*%d)) count=1 oflag=direct conv=fsync,notrunc 2>/dev/null || echo WRITE-FAILED $p $i; i=$((i+1)); done;"+
	" echo WROTE $p; bad=0; i=0;"+
	" while [ $i -lt $n ]; do a=$(yes godwit-p$p-i$i | head -c %d | sha256sum | cut -c1-64);"+
	" b=$(dd if=/dev/vda bs=%d skip=$((i*%d)) count=1 iflag=direct 2>/dev/null | sha256sum | cut -c1-64);"+
	" [ $a = $b ] || bad=$((bad+1)); i=$((i+1)); done; echo VERIFY $p bad=$bad; done",
	linuxStorageRecords, linuxStorageRecord, linuxStorageRecord, linuxStorageStride/linuxStorageRecord,
	linuxStorageRecord, linuxStorageRecord, linuxStorageStride/linuxStorageRecord)

// linuxStorageRecordData returns record i of pass p as the guest writes it.
func linuxStorageRecordData(p, i int) []byte {
	line := fmt.Sprintf("godwit-p%d-i%d\n", p, i)
	return bytes.Repeat([]byte(line), linuxStorageRecord/len(line)+1)[:linuxStorageRecord]
}

// parseVerify parses "VERIFY P bad=N".
func parseVerify(line string) (pass, bad int, ok bool) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "VERIFY" || !strings.HasPrefix(f[2], "bad=") {
		return 0, 0, false
	}
	p, err1 := strconv.Atoi(f[1])
	b, err2 := strconv.Atoi(strings.TrimPrefix(f[2], "bad="))
	return p, b, err1 == nil && err2 == nil
}

// checkStorageRecords checks an image of the workload as the guest left
// it when it stopped: the records are a prefix of pass q+1 followed by
// the rest of pass q (the guest writes them in order), with q at least
// minPass, and everything between records is zero. It returns q.
func checkStorageRecords(path string, minPass int) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != linuxStorageDisk {
		return 0, fmt.Errorf("%s: size %v (%v), want %d", path, fi.Size(), err, linuxStorageDisk)
	}
	passes := make([]int, linuxStorageRecords)
	buf := make([]byte, 1<<20)
	for off := int64(0); off < linuxStorageDisk; off += int64(len(buf)) {
		if _, err := f.ReadAt(buf, off); err != nil {
			return 0, err
		}
		for b := 0; b < len(buf); b += linuxStorageRecord {
			at := off + int64(b)
			chunk := buf[b : b+linuxStorageRecord]
			if at%linuxStorageStride != 0 {
				if !bytes.Equal(chunk, make([]byte, linuxStorageRecord)) {
					return 0, fmt.Errorf("%s: data at %d, between records", path, at)
				}
				continue
			}
			i := int(at / linuxStorageStride)
			var p, j int
			if n, _ := fmt.Sscanf(string(chunk[:32]), "godwit-p%d-i%d\n", &p, &j); n != 2 || j != i || !bytes.Equal(chunk, linuxStorageRecordData(p, i)) {
				return 0, fmt.Errorf("%s: record %d is not one the guest wrote: %q...", path, i, chunk[:24])
			}
			passes[i] = p
		}
	}
	q := passes[len(passes)-1]
	for i, p := range passes {
		if p != q && p != q+1 || (i > 0 && p > passes[i-1]) {
			return 0, fmt.Errorf("%s: the records' passes %v are not a prefix of one pass over the one before", path, passes)
		}
	}
	if q < minPass {
		return 0, fmt.Errorf("%s: the records' passes %v: older than pass %d", path, passes, minPass)
	}
	return q, nil
}

// linuxStorageVM is a Debian guest running the disk workload
// (linuxStorageCmd) on its image.
type linuxStorageVM struct {
	*vmProcess
	sock string // its API socket
	img  string // its disk image
}

// startLinuxStorageVM boots the stock Debian guest on a fresh sparse
// image of linuxStorageDisk bytes, running the disk workload, and
// returns it with the first pass it verified.
func startLinuxStorageVM(t *testing.T) (*linuxStorageVM, int) {
	t.Helper()
	kernel := asset(t, "GODWIT_KERNEL")
	initrd := asset(t, "GODWIT_INITRD")
	needKVM(t)
	img := filepath.Join(t.TempDir(), "vda.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, linuxStorageDisk); err != nil {
		t.Fatal(err)
	}
	sock := tempPath(t, "src.sock")
	p := startGodwit(t, "run", "--disk", "path="+img, "--kernel", kernel, "--initrd", initrd,
		"--mem", "256M", "--cpus", "2", "--api-sock", sock,
		"--cmdline", `console=ttyS0 reboot=k panic=-1 quiet godwit.cmd="`+linuxStorageCmd+`"`)
	v := &linuxStorageVM{vmProcess: p, sock: sock, img: img}
	first := v.verified(t, "source", 0)
	t.Logf("pass %d verified on the source after %v", first, time.Since(p.start))
	return v, first
}

// verified waits for the guest to verify a pass after pass after, and
// returns it; a failed write or a record read back wrong fails the test.
func (v *linuxStorageVM) verified(t *testing.T, where string, after int) int {
	t.Helper()
	l := v.waitLine(func(l string) bool {
		if strings.HasPrefix(l, "WRITE-FAILED") {
			t.Fatalf("%s: the guest's write failed: %s", where, l)
		}
		n, _, ok := parseVerify(l)
		return ok && n > after
	}, fmt.Sprintf("a verified pass after %d on the %s", after, where))
	n, bad, _ := parseVerify(l)
	if bad != 0 {
		t.Fatalf("%s: pass %d: %d records read back wrong", where, n, bad)
	}
	return n
}

// linuxStorageHop migrates v with its disk (`migrate --include-storage`)
// while the guest writes, to a fresh receiver creating the image in dir
// (extra: more receive flags); verifiedBefore is the last pass v
// verified. It checks the source image as the guest left it at the
// pause (at least that pass), the disk statistics, that on the
// destination the guest reads back and verifies the pass in progress at
// the migration (partly written on the source) and then a pass written
// there entirely, that the received image then holds what the guest last
// wrote, is sparse and alone in dir, and that the source image did not
// change after the pause. It returns the destination, running, the last pass it
// verified, and the migration's statistics.
func linuxStorageHop(t *testing.T, v *linuxStorageVM, verifiedBefore int, dir string, extra ...string) (*linuxStorageVM, int, migrate.Stats) {
	t.Helper()
	dst, listen, dstSock := startReceiver(t, "dst", append([]string{"--storage-dir", dir}, extra...)...)
	info, err := migrateJSON(t, v.sock, listen, "--include-storage")
	if err != nil {
		t.Fatalf("migrating the Linux guest with its disk: %v", err)
	}
	if err := v.wait(); err != nil {
		t.Fatalf("source after migrating: %v", err)
	}
	// The source is gone: its image is as the guest left it at the pause.
	srcPass, err := checkStorageRecords(v.img, verifiedBefore)
	if err != nil {
		t.Fatalf("source image: %v", err)
	}
	srcSum := fileSHA(t, v.img)
	var st migrate.Stats
	if err := json.Unmarshal(info.Stats, &st); err != nil {
		t.Fatal(err)
	}
	if !st.Storage || st.DiskTotalBytes != linuxStorageDisk || st.DiskRounds < 1 {
		t.Fatalf("disk statistics: storage %v, total %d, rounds %d", st.Storage, st.DiskTotalBytes, st.DiskRounds)
	}
	if st.DiskTransferredBytes >= linuxStorageDisk/4 {
		t.Errorf("%d disk bytes on the wire for %d KiB of records on a 256 MiB disk", st.DiskTransferredBytes, linuxStorageRecords*linuxStorageRecord>>10)
	}

	// On the destination the pass in progress at the migration verifies
	// (what the guest wrote of it on the source is read back here), then
	// a pass written there entirely.
	next := &linuxStorageVM{vmProcess: dst, sock: dstSock, img: filepath.Join(dir, filepath.Base(v.img))}
	spanning := next.verified(t, "destination", srcPass-1)
	last := next.verified(t, "destination", spanning)
	t.Logf("passes %d (in progress at the migration) and %d verified on the destination", spanning, last)

	ctl(t, dstSock, "pause") // the disk is flushed: the image is what the guest wrote
	if _, err := checkStorageRecords(next.img, last); err != nil {
		t.Errorf("destination image: %v", err)
	}
	if alloc := allocatedBytes(t, next.img); alloc > linuxStorageDisk/8 {
		t.Errorf("the destination image has %d bytes allocated: not sparse", alloc)
	}
	if names := dirEntries(t, dir); len(names) != 1 {
		t.Errorf("the storage directory holds %q, want the image alone", names)
	}
	if sum := fileSHA(t, v.img); sum != srcSum {
		t.Errorf("the source image changed after the migration")
	}
	ctl(t, dstSock, "resume")
	return next, last, st
}

// TestLinuxStorageMigration is storage migration's main case: a stock
// Debian guest writes a checksummed pattern to its 256 MiB disk
// continuously, with O_DIRECT, and godwit migrates it with the disk
// (`migrate --include-storage`) while it writes. On the destination the
// guest reads every record back and verifies it — the pass that spans
// the migration included, whose first records were written on the
// source — and goes on; the received image holds what the guest last
// wrote and stays sparse; the source image does not change after the
// pause (linuxStorageHop).
func TestLinuxStorageMigration(t *testing.T) {
	needLong(t)
	src, first := startLinuxStorageVM(t)
	dst, _, _ := linuxStorageHop(t, src, first, t.TempDir())
	ctl(t, dst.sock, "shutdown")
	if err := dst.wait(); err != nil {
		t.Fatalf("destination exit: %v", err)
	}
}

// TestLinuxStoragePingpong bounces the Debian guest of
// TestLinuxStorageMigration, writing and verifying its disk all along,
// between two directories GODWIT_STORAGE_HOPS times (default 10), each
// hop to a fresh receiver (from the third hop with --overwrite, replacing
// the image that left the directory two hops before), with every check
// of linuxStorageHop after every hop.
func TestLinuxStoragePingpong(t *testing.T) {
	needLong(t)
	hops := storageHops(t)
	vm, last := startLinuxStorageVM(t)
	a, b := t.TempDir(), t.TempDir()
	for n := 1; n <= hops; n++ {
		dir, extra := pingpongDir(n, a, b)
		next, verified, st := linuxStorageHop(t, vm, last, dir, extra...)
		t.Logf("hop %d/%d into %s: downtime %.1f ms, total %.1f ms, %d bytes on the wire (%d for the disk, %d disk blocks, %d disk rounds), pass %d verified after it",
			n, hops, dir, st.DowntimeMs, st.TotalMs, st.TransferredBytes, st.DiskTransferredBytes,
			st.DiskBlocks.Normal+st.DiskBlocks.Zero+st.DiskBlocks.Compressed, st.DiskRounds, verified)
		vm, last = next, verified
	}
	ctl(t, vm.sock, "shutdown")
	if err := vm.wait(); err != nil {
		t.Fatalf("destination exit: %v", err)
	}
}
