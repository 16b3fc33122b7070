package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// linuxSetupCmd is the first part of the device guest's command
// (godwit.cmd: no double quotes). It checks the disks (size, read-only
// flag and serial of vda and vdb; 1 MiB of random bytes written to vda at
// 1 MiB with dd and read back after the page cache is dropped, so from
// the device; vdb's content; a write to the read-only vdb, which must
// fail) and the entropy device (the hw_random core's current source) and
// lists the guest's virtio interrupts.
const linuxSetupCmd = "for d in vda vdb; do echo BLK-DEV $d $(cat /sys/block/$d/size) $(cat /sys/block/$d/ro) $(cat /sys/block/$d/serial); done;" +
	" dd if=/dev/urandom of=/tmp/p bs=65536 count=16 2>/dev/null;" +
	" echo BLK-WROTE $(sha256sum /tmp/p | cut -c1-64);" +
	" dd if=/tmp/p of=/dev/vda bs=65536 seek=16 2>/dev/null; sync; echo 3 > /proc/sys/vm/drop_caches;" +
	" echo BLK-READ $(dd if=/dev/vda bs=65536 skip=16 count=16 2>/dev/null | sha256sum | cut -c1-64);" +
	" echo BLK-VDB $(dd if=/dev/vdb bs=65536 2>/dev/null | sha256sum | cut -c1-64);" +
	" dd if=/dev/zero of=/dev/vdb bs=512 count=1 2>/dev/null; echo BLK-RO-WRITE $?;" +
	" echo RNG-CURRENT=$(cat /sys/class/misc/hw_random/rng_current);" +
	" grep virtio /proc/interrupts | sed s/^/VIRTIO-IRQ:/;"

// linuxTickCmd is the second part: every second, write a tick record to
// the tick's own sector of vda, drop the page cache, and print
// "tick N up=UPTIME cpu1ok|cpu1fail RNGHEX BLKSUM": the guest's uptime,
// whether CPU 1 ran a task, 8 bytes from /dev/hwrng and the checksum of
// the 1 MiB pattern read back from vda.
var linuxTickCmd = "i=0; while [ $i -lt 1200 ]; do i=$((i+1));" +
	" (echo tick$i; head -c 600 /dev/zero) | head -c 512 > /tmp/t;" +
	" dd if=/tmp/t of=/dev/vda bs=512 seek=$((" + strconv.Itoa(blkTickSector0) + "+i)) count=1 2>/dev/null; sync;" +
	" echo 3 > /proc/sys/vm/drop_caches;" +
	" echo tick $i up=$(cut -d. -f1 /proc/uptime) $(taskset -c 1 echo cpu1ok || echo cpu1fail)" +
	" $(head -c 8 /dev/hwrng | od -An -v -tx8 | tr -d ' ')" +
	" $(dd if=/dev/vda bs=65536 skip=16 count=16 2>/dev/null | sha256sum | cut -c1-64);" +
	" sleep 1; done"

// linuxTick is one parsed tick line of linuxTickCmd.
type linuxTick struct {
	n, up int
	cpu1  bool
	rng   string // 16 hex digits
	blk   string // sha256 of the pattern as read back
}

// parseLinuxTick parses "tick N up=U cpu1ok RNG BLK".
func parseLinuxTick(line string) (linuxTick, bool) {
	f := strings.Fields(line)
	if len(f) != 6 || f[0] != "tick" || !strings.HasPrefix(f[2], "up=") {
		return linuxTick{}, false
	}
	n, err1 := strconv.Atoi(f[1])
	up, err2 := strconv.Atoi(strings.TrimPrefix(f[2], "up="))
	if err1 != nil || err2 != nil {
		return linuxTick{}, false
	}
	return linuxTick{n: n, up: up, cpu1: f[3] == "cpu1ok", rng: f[4], blk: f[5]}, true
}

// TestLinuxDevicesMigration boots Debian's stock kernel on two vCPUs with
// every device godwit has (virtio-rng, a disk and a read-only disk) in
// one VM, checks each device from inside the guest, then migrates the
// running VM and checks that everything goes on on the destination: the
// guest's loop continues in sequence, its clock neither jumps nor hangs,
// CPU 1 runs, /dev/hwrng keeps answering (the device's queues and MSI-X
// vectors moved), the disk pattern still reads back, and the guest's
// writes made on the destination land in the image, which the receiver
// opened under a new name through --disk-map. One VM for all of this:
// in the nested host every Linux boot costs about a minute.
func TestLinuxDevicesMigration(t *testing.T) {
	kernel := asset(t, "GODWIT_KERNEL")
	initrd := asset(t, "GODWIT_INITRD")
	needKVM(t)
	dir := t.TempDir()
	vda, vdb, vdbData := blkImages(t, dir)
	sock := tempPath(t, "src.sock")
	src := startGodwit(t, "run", "--rng", "--disk", "path="+vda, "--disk", "path="+vdb+",readonly=on",
		"--kernel", kernel, "--initrd", initrd, "--mem", "256M", "--cpus", "2", "--api-sock", sock,
		"--cmdline", `console=ttyS0 reboot=k panic=-1 quiet godwit.cmd="`+linuxSetupCmd+linuxTickCmd+`"`)

	// Devices, checked from inside the guest.
	devs := map[string]string{}
	var wrote, read, vdbSum, roWrite, rngCurrent string
	var irqs []string
	src.waitLine(func(l string) bool {
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
		if v, ok := blkField(l, "RNG-CURRENT="); ok {
			rngCurrent = v
		}
		if strings.HasPrefix(l, "VIRTIO-IRQ:") {
			irqs = append(irqs, l)
		}
		_, ok := parseLinuxTick(l)
		return ok
	}, "the guest's first tick")
	t.Logf("first tick after %v", time.Since(src.start))
	for name, want := range map[string]string{
		"vda": fmt.Sprintf("%d 0 godwit-disk0", blkVdaSize/512),
		"vdb": fmt.Sprintf("%d 1 godwit-disk1", blkVdbSize/512),
	} {
		if devs[name] != want {
			t.Errorf("/sys/block/%s: %q, want %q (size, ro, serial)", name, devs[name], want)
		}
	}
	if len(wrote) != 64 || read != wrote {
		t.Fatalf("guest wrote %q to vda, read back %q", wrote, read)
	}
	if want := blkSHA(vdbData); vdbSum != want {
		t.Errorf("guest read vdb as %s, the image is %s", vdbSum, want)
	}
	if roWrite == "" || roWrite == "0" {
		t.Errorf("a write to the read-only vdb exited %q, want a failure", roWrite)
	}
	if !strings.HasPrefix(rngCurrent, "virtio_rng") {
		t.Errorf("rng_current = %q, want virtio_rng.N", rngCurrent)
	}
	// The driver uses MSI-X when it works; INTx would show as IO-APIC.
	msi := 0
	for _, l := range irqs {
		if strings.Contains(l, "MSI") {
			msi++
		}
	}
	if msi == 0 {
		t.Errorf("no virtio MSI interrupt in /proc/interrupts: %q", irqs)
	}

	// The guest clock must go on with the host's: it never goes back, and
	// from the last tick on the source to the last on the destination it
	// advances no more than the host's clock did (plus one second of
	// rounding and one of slack). Console lines can wait in a buffer before
	// the test reads them, so only that span, whose end is read last, is
	// compared with the host's clock, not the gaps between single ticks.
	prevUp := -1
	var lastSrcUp, lastDstUp int
	var lastSrcAt time.Time
	seenRNG := map[string]bool{}
	checkTick := func(where string, tk linuxTick) {
		t.Helper()
		if tk.up < prevUp {
			t.Errorf("%s tick %d: guest uptime went back from %d to %d s", where, tk.n, prevUp, tk.up)
		}
		prevUp = tk.up
		if !tk.cpu1 {
			t.Errorf("%s tick %d: CPU 1 did not run", where, tk.n)
		}
		if len(tk.rng) != 16 || seenRNG[tk.rng] || tk.rng == strings.Repeat("0", 16) {
			t.Errorf("%s tick %d: /dev/hwrng gave %q (repeated, zero or short)", where, tk.n, tk.rng)
		}
		seenRNG[tk.rng] = true
		if tk.blk != wrote {
			t.Errorf("%s tick %d: vda pattern reads back as %s, the guest wrote %s", where, tk.n, tk.blk, wrote)
		}
	}
	// Ticks printed while the devices were checked are stale by now.
	src.drainLines()
	var before int
	for i := 0; i < 2; i++ {
		l := src.waitLine(func(l string) bool { _, ok := parseLinuxTick(l); return ok }, "tick on the source")
		tk, _ := parseLinuxTick(l)
		checkTick("source", tk)
		before = tk.n
		lastSrcUp, lastSrcAt = tk.up, time.Now()
	}

	// The source keeps its open file; the destination must find it under
	// the new name.
	moved := filepath.Join(dir, "moved.img")
	if err := os.Rename(vda, moved); err != nil {
		t.Fatal(err)
	}
	dst, listen, dstSock := startReceiver(t, "dst", "--disk-map", vda+"="+moved)
	if _, err := migrateVM(t, sock, listen, "--json"); err != nil {
		t.Fatalf("migrating the Linux guest with its devices: %v", err)
	}
	if err := src.wait(); err != nil {
		t.Fatalf("source after migrating: %v", err)
	}
	prev := 0
	ticks := []int{before}
	for i := 0; i < 3; i++ {
		l := dst.waitLine(func(l string) bool { _, ok := parseLinuxTick(l); return ok }, "tick on the destination")
		tk, _ := parseLinuxTick(l)
		if tk.n <= before || (prev != 0 && tk.n != prev+1) {
			t.Fatalf("tick %d on the destination after %d (source's last %d): the guest's loop broke across the migration", tk.n, prev, before)
		}
		checkTick("destination", tk)
		prev = tk.n
		lastDstUp = tk.up
		ticks = append(ticks, tk.n)
	}
	if host := time.Since(lastSrcAt).Seconds(); float64(lastDstUp-lastSrcUp) > host+2 {
		t.Errorf("guest uptime %d s on the source's last tick, %d s on the destination's: %.1f s passed on the host, the guest clock jumped", lastSrcUp, lastDstUp, host)
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
		t.Errorf("vda image at 1 MiB has checksum %s, the guest wrote %s", got, wrote)
	}
	for _, n := range ticks {
		off := (blkTickSector0 + n) * 512
		want := make([]byte, 512)
		copy(want, fmt.Sprintf("tick%d\n", n))
		if got := img[off : off+512]; !bytes.Equal(got, want) {
			t.Errorf("vda sector %d: %q..., want tick%d", blkTickSector0+n, got[:16], n)
		}
	}
	if after, err := os.ReadFile(vdb); err != nil || !bytes.Equal(after, vdbData) {
		t.Errorf("read-only vdb image changed (%v)", err)
	}
}
