package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Disk layout of the virtio-blk tests: the guest writes 1 MiB of random
// bytes at offset 1 MiB of vda (blkPatternOff, blkPatternLen) and reads
// it back; vdb is read-only and holds a pattern the host wrote.
const (
	blkVdaSize     = 8 << 20
	blkVdbSize     = 4 << 20
	blkPatternOff  = 1 << 20
	blkPatternLen  = 1 << 20
	blkTickSector0 = 4096 // the migration test writes tick i at sector 4096+i
)

// blkGuestCmd runs in the guest (godwit.cmd: no double quotes). It prints
// each disk's size in sectors, read-only flag and serial (GET_ID), writes
// 1 MiB of random bytes to vda at 1 MiB with dd, syncs and drops the page
// cache so that the read-back goes to the device, and prints the
// checksums of what it wrote and what it read; then the checksum of all
// of vdb, and the exit status of a write to the read-only vdb.
const blkGuestCmd = "for d in vda vdb; do echo BLK-DEV $d $(cat /sys/block/$d/size) $(cat /sys/block/$d/ro) $(cat /sys/block/$d/serial); done;" +
	" dd if=/dev/urandom of=/tmp/p bs=65536 count=16 2>/dev/null;" +
	" echo BLK-WROTE $(sha256sum /tmp/p | cut -c1-64);" +
	" dd if=/tmp/p of=/dev/vda bs=65536 seek=16 2>/dev/null; sync; echo 3 > /proc/sys/vm/drop_caches;" +
	" echo BLK-READ $(dd if=/dev/vda bs=65536 skip=16 count=16 2>/dev/null | sha256sum | cut -c1-64);" +
	" echo BLK-VDB $(dd if=/dev/vdb bs=65536 2>/dev/null | sha256sum | cut -c1-64);" +
	" dd if=/dev/zero of=/dev/vdb bs=512 count=1 2>/dev/null; echo BLK-RO-WRITE $?"

// blkImages creates vda (zeros) and vdb (a pattern) in dir.
func blkImages(t *testing.T, dir string) (vda, vdb string, vdbData []byte) {
	t.Helper()
	vda = filepath.Join(dir, "vda.img")
	vdb = filepath.Join(dir, "vdb.img")
	if err := os.WriteFile(vda, make([]byte, blkVdaSize), 0o644); err != nil {
		t.Fatal(err)
	}
	vdbData = make([]byte, blkVdbSize)
	for i := range vdbData {
		vdbData[i] = byte(i/512) ^ byte(i*31)
	}
	if err := os.WriteFile(vdb, vdbData, 0o644); err != nil {
		t.Fatal(err)
	}
	return vda, vdb, vdbData
}

func blkSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// blkField returns the text after prefix in line, if line starts with it.
func blkField(line, prefix string) (string, bool) {
	if !strings.HasPrefix(line, prefix) {
		return "", false
	}
	return strings.TrimSpace(strings.TrimPrefix(line, prefix)), true
}

// TestVirtioBlk boots Debian's stock kernel with two disks (vdb
// read-only) and checks that the guest's virtio_blk driver sees both with
// the right size, read-only flag and serial, that a pattern written to vda
// with dd reads back identical after the page cache is dropped and lands
// at the right place of the image file on the host (and nowhere else),
// that the guest reads vdb's content as the host wrote it, and that a
// write to the read-only disk fails in the guest.
func TestVirtioBlk(t *testing.T) {
	kernel := asset(t, "GODWIT_KERNEL")
	initrd := asset(t, "GODWIT_INITRD")
	needKVM(t)
	vda, vdb, vdbData := blkImages(t, t.TempDir())
	p := startGodwit(t, "run", "--disk", "path="+vda, "--disk", "path="+vdb+",readonly=on",
		"--kernel", kernel, "--initrd", initrd,
		"--cmdline", `console=ttyS0 reboot=k panic=-1 godwit.cmd="`+blkGuestCmd+`"`,
		"--mem", "256M", "--cpus", "1")
	p.waitLine(func(l string) bool { return strings.Contains(l, "GODWIT-GUEST-CMD-BEGIN") }, "guest command start")

	devs := map[string]string{}
	var wrote, read, vdbSum, roWrite string
	exit := p.waitLine(func(l string) bool {
		if v, ok := blkField(l, "BLK-DEV "); ok {
			name, rest, _ := strings.Cut(v, " ")
			devs[name] = rest
		}
		if v, ok := blkField(l, "BLK-WROTE "); ok {
			wrote = v
		}
		if v, ok := blkField(l, "BLK-READ "); ok {
			read = v
		}
		if v, ok := blkField(l, "BLK-VDB "); ok {
			vdbSum = v
		}
		if v, ok := blkField(l, "BLK-RO-WRITE "); ok {
			roWrite = v
		}
		return strings.Contains(l, "GODWIT-GUEST-CMD-EXIT=")
	}, "guest command exit")
	if !strings.HasSuffix(exit, "GODWIT-GUEST-CMD-EXIT=0") {
		t.Errorf("guest command: %s", exit)
	}
	if err := p.wait(); err != nil {
		t.Fatalf("godwit exit after the guest's reboot: %v", err)
	}

	// Size in sectors, read-only flag, serial.
	for name, want := range map[string]string{
		"vda": fmt.Sprintf("%d 0 godwit-disk0", blkVdaSize/512),
		"vdb": fmt.Sprintf("%d 1 godwit-disk1", blkVdbSize/512),
	} {
		if devs[name] != want {
			t.Errorf("/sys/block/%s: %q, want %q (size, ro, serial)", name, devs[name], want)
		}
	}
	if len(wrote) != 64 || read != wrote {
		t.Errorf("guest wrote %q, read back %q", wrote, read)
	}
	img, err := os.ReadFile(vda)
	if err != nil {
		t.Fatal(err)
	}
	if got := blkSHA(img[blkPatternOff : blkPatternOff+blkPatternLen]); got != wrote {
		t.Errorf("vda image at 1 MiB has checksum %s, the guest wrote %s", got, wrote)
	}
	zero := make([]byte, blkVdaSize)
	if !bytes.Equal(img[:blkPatternOff], zero[:blkPatternOff]) || !bytes.Equal(img[blkPatternOff+blkPatternLen:], zero[blkPatternOff+blkPatternLen:]) {
		t.Error("vda image changed outside the pattern")
	}
	if want := blkSHA(vdbData); vdbSum != want {
		t.Errorf("guest read vdb as %s, the image is %s", vdbSum, want)
	}
	if roWrite == "" || roWrite == "0" {
		t.Errorf("a write to the read-only vdb exited %q, want a failure", roWrite)
	}
	if after, err := os.ReadFile(vdb); err != nil || !bytes.Equal(after, vdbData) {
		t.Errorf("read-only vdb image changed (%v)", err)
	}
}

// startReceiverDiskMap starts `godwit receive` on a free loopback port
// with extra flags, like startReceiver.
func startReceiverDiskMap(t *testing.T, name string, extra ...string) (p *vmProcess, addr, sock string) {
	t.Helper()
	sock = tempPath(t, name+".sock")
	args := append([]string{"receive", "--listen", "tcp:127.0.0.1:0", "--api-sock", sock}, extra...)
	p = startGodwit(t, args...)
	line := waitStderr(t, p, "waiting for a migrating VM")
	_, rest, _ := strings.Cut(line, "listen=")
	if f := strings.Fields(rest); len(f) > 0 {
		addr = f[0]
	}
	if !strings.HasPrefix(addr, "tcp:") {
		t.Fatalf("no listen address in %q", line)
	}
	return p, addr, sock
}

// blkTick parses the migration guest command's "blktick N SUM" lines.
func blkTick(line string) (n int, sum string, ok bool) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "blktick" || len(f[2]) != 64 {
		return 0, "", false
	}
	n, err := strconv.Atoi(f[1])
	return n, f[2], err == nil
}

// TestVirtioBlkMigration boots Debian's kernel with a disk, has the guest
// write a pattern to it, then every second write a tick record to its own
// sector and read the pattern back (page cache dropped, so from the
// device). The VM migrates to a receiver that opens the image under a new
// name through --disk-map (the old name no longer exists, so an unwired
// map would fail the migration); the guest's reads go on, in sequence and
// with the same checksum, on the destination, and its writes there land in
// the image.
func TestVirtioBlkMigration(t *testing.T) {
	kernel := asset(t, "GODWIT_KERNEL")
	initrd := asset(t, "GODWIT_INITRD")
	needKVM(t)
	dir := t.TempDir()
	vda, _, _ := blkImages(t, dir)
	cmd := "dd if=/dev/urandom of=/tmp/p bs=65536 count=16 2>/dev/null; dd if=/tmp/p of=/dev/vda bs=65536 seek=16 2>/dev/null; sync;" +
		" echo blkwrote $(sha256sum /tmp/p | cut -c1-64);" +
		" i=0; while [ $i -lt 1200 ]; do i=$((i+1));" +
		" (echo tick$i; head -c 600 /dev/zero) | head -c 512 > /tmp/t;" +
		" dd if=/tmp/t of=/dev/vda bs=512 seek=$((" + strconv.Itoa(blkTickSector0) + "+i)) count=1 2>/dev/null; sync;" +
		" echo 3 > /proc/sys/vm/drop_caches;" +
		" echo blktick $i $(dd if=/dev/vda bs=65536 skip=16 count=16 2>/dev/null | sha256sum | cut -c1-64); sleep 1; done"
	sock := tempPath(t, "src.sock")
	src := startGodwit(t, "run", "--disk", "path="+vda, "--kernel", kernel, "--initrd", initrd, "--mem", "256M", "--cpus", "1",
		"--api-sock", sock, "--cmdline", `console=ttyS0 reboot=k panic=-1 quiet godwit.cmd="`+cmd+`"`)
	l := src.waitLine(func(l string) bool { return strings.HasPrefix(l, "blkwrote ") }, "blkwrote on the source")
	wrote := strings.TrimSpace(strings.TrimPrefix(l, "blkwrote "))
	var before int
	for i := 0; i < 3; i++ {
		l := src.waitLine(func(l string) bool { _, _, ok := blkTick(l); return ok }, "blktick on the source")
		n, sum, _ := blkTick(l)
		if sum != wrote {
			t.Fatalf("blktick %d on the source read %s, the guest wrote %s", n, sum, wrote)
		}
		before = n
	}

	// The source keeps its open file; the destination must find it under
	// the new name.
	moved := filepath.Join(dir, "moved.img")
	if err := os.Rename(vda, moved); err != nil {
		t.Fatal(err)
	}
	dst, listen, dstSock := startReceiverDiskMap(t, "dst", "--disk-map", vda+"="+moved)
	if _, err := migrateVM(t, sock, listen, "--json"); err != nil {
		t.Fatalf("migrating the guest with virtio-blk: %v", err)
	}
	if err := src.wait(); err != nil {
		t.Fatalf("source after migrating: %v", err)
	}
	prev := 0
	var ticks []int
	for i := 0; i < 4; i++ {
		l := dst.waitLine(func(l string) bool { _, _, ok := blkTick(l); return ok }, "blktick on the destination")
		n, sum, _ := blkTick(l)
		if n <= before || (prev != 0 && n != prev+1) {
			t.Fatalf("blktick %d on the destination after %d (source's last %d): the guest's I/O broke across the migration", n, prev, before)
		}
		if sum != wrote {
			t.Fatalf("blktick %d on the destination read %s, the guest wrote %s", n, sum, wrote)
		}
		prev = n
		ticks = append(ticks, n)
	}
	ctl(t, dstSock, "shutdown")
	if err := dst.wait(); err != nil {
		t.Fatalf("destination exit: %v", err)
	}

	img, err := os.ReadFile(moved)
	if err != nil {
		t.Fatal(err)
	}
	if got := blkSHA(img[blkPatternOff : blkPatternOff+blkPatternLen]); got != wrote {
		t.Errorf("image at 1 MiB has checksum %s, the guest wrote %s", got, wrote)
	}
	// Ticks written on the destination are in the image.
	for _, n := range append([]int{before}, ticks...) {
		off := (blkTickSector0 + n) * 512
		want := make([]byte, 512)
		copy(want, fmt.Sprintf("tick%d\n", n))
		if got := img[off : off+512]; !bytes.Equal(got, want) {
			t.Errorf("sector %d: %q..., want tick%d", blkTickSector0+n, got[:16], n)
		}
	}
}
