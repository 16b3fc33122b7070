package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"godwit/migrate"
	"godwit/migrate/pingpong"
)

// linuxSoakHops is the default length of TestLinuxSoak
// (GODWIT_LINUX_SOAK_HOPS).
const linuxSoakHops = 50

// The disk workload of TestLinuxSoak: once a second the guest writes
// record N (from 1) to sector N-1 of a sparse soakDiskSize disk, at most
// soakDiskRecords of them (over 18 hours' worth). Record N is the line
// "gwsoak-N" repeated over 512 bytes.
const (
	soakDiskSize    = 64 << 20
	soakDiskRecords = 65536
	soakRecordSize  = 512
)

// soakDiskCmd is the guest's disk loop (godwit.cmd: no double quotes).
// Each second it writes the next record with O_DIRECT and fsync, appends
// it to a copy in /tmp/w, reads back with O_DIRECT the 64 KiB block that
// holds it and the block before (the last 129 to 256 records, all of
// them in the first two blocks), compares their SHA-256 with the copy's,
// and prints "DISK N ok" (or "DISK N bad"); a failed write prints
// "DISK-WRITE-FAILED N". The window reaches back further than one hop
// lasts, so every hop's first records on the destination re-read records
// written on the source.
var soakDiskCmd = fmt.Sprintf("j=0; : > /tmp/w; while [ $j -lt %d ]; do j=$((j+1));"+
	" yes gwsoak-$j | head -c %d > /tmp/r; cat /tmp/r >> /tmp/w;"+
	" dd if=/tmp/r of=/dev/vda bs=%d seek=$((j-1)) count=1 oflag=direct conv=fsync,notrunc 2>/dev/null || echo DISK-WRITE-FAILED $j;"+
	" b=$(( (j-1)/128 )); if [ $b -gt 0 ]; then b=$((b-1)); fi; n=$((j*%d-b*65536));"+
	" a=$(tail -c $n /tmp/w | sha256sum | cut -c1-64);"+
	" c=$(dd if=/dev/vda bs=65536 skip=$b count=2 iflag=direct 2>/dev/null | head -c $n | sha256sum | cut -c1-64);"+
	" if [ $a = $c ]; then echo DISK $j ok; else echo DISK $j bad; fi; sleep 1; done",
	soakDiskRecords, soakRecordSize, soakRecordSize, soakRecordSize)

// soakGuestCmd is the soak guest's command (godwit.cmd: no double
// quotes): eth0 up, a ping of the host ("NET-PING <exit>"), then the disk
// loop in the background and the counter stream to the host's port.
func soakGuestCmd(port string) string {
	return netGuestSetup + " ping -c 3 -W 10 " + netHostIP + " >/dev/null; echo NET-PING $?;" +
		" (" + soakDiskCmd + ") & " + counterCmd(port) + "; echo NET-STREAM-END $?"
}

// soakRecord returns record n as the guest writes it.
func soakRecord(n int) []byte {
	line := fmt.Sprintf("gwsoak-%d\n", n)
	return bytes.Repeat([]byte(line), soakRecordSize/len(line)+1)[:soakRecordSize]
}

// parseSoakDisk parses "DISK N ok" and "DISK N bad".
func parseSoakDisk(line string) (n int, good, ok bool) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "DISK" || (f[2] != "ok" && f[2] != "bad") {
		return 0, false, false
	}
	n, err := strconv.Atoi(f[1])
	if err != nil || n < 1 {
		return 0, false, false
	}
	return n, f[2] == "ok", true
}

// soakDiskLog follows the disk loop's console lines across the hops:
// the records it reports must count up by one from 1, no gap and no
// repeat, each verified ok. The console is one byte stream across the
// processes the VM runs in, so a migration can cut a line in two: the
// first line of a process completes the previous process's last line
// when that did not parse on its own.
type soakDiskLog struct {
	last    int    // the last record reported
	pending string // the last line, if it did not parse: possibly cut
	fresh   bool   // the next line is the first of a process
}

// handOver says that the next line is the first of the next process.
func (d *soakDiskLog) handOver() { d.fresh = true }

// line takes one console line.
func (d *soakDiskLog) line(l string) error {
	if rest, ok := strings.CutPrefix(l, "DISK-WRITE-FAILED"); ok {
		return fmt.Errorf("the guest's write of record%s failed", rest)
	}
	n, good, ok := parseSoakDisk(l)
	if !ok && d.fresh && d.pending != "" {
		n, good, ok = parseSoakDisk(d.pending + l)
	}
	d.fresh = false
	if !ok {
		d.pending = l
		return nil
	}
	d.pending = ""
	if n != d.last+1 {
		return fmt.Errorf("disk record %d reported after record %d", n, d.last)
	}
	d.last = n
	if !good {
		return fmt.Errorf("disk record %d: the guest read back records up to it with a wrong checksum", n)
	}
	return nil
}

// soakStream follows the guest's counter stream: every counter must be
// the one after the last (one connection, nothing lost or repeated). It
// keeps the longest time between two consecutive counters as the host
// read them.
type soakStream struct {
	*counterStream
	last   int
	lastAt time.Time
	maxGap time.Duration
	gapEnd int // the counter that ended the longest gap
	// onFail, when set, logs diagnostics before waitCounter fails.
	onFail func()
}

// take checks the next counter read.
func (s *soakStream) take(r counterRead) error {
	if r.n != s.last+1 {
		return fmt.Errorf("counter %d after %d", r.n, s.last)
	}
	if s.last > 0 {
		if g := r.at.Sub(s.lastAt); g > s.maxGap {
			s.maxGap, s.gapEnd = g, r.n
		}
	}
	s.last, s.lastAt = r.n, r.at
	return nil
}

// waitCounter reads the stream until counter n has arrived; a stream
// that ends (the server's read waits lineTimeout at most) fails the
// test.
func (s *soakStream) waitCounter(t *testing.T, n int, what string) {
	t.Helper()
	timer := time.NewTimer(lineTimeout)
	defer timer.Stop()
	for s.last < n {
		select {
		case r, ok := <-s.reads:
			if !ok {
				s.diagnose()
				t.Fatalf("%s: the TCP stream ended after counter %d: %v", what, s.last, <-s.err)
			}
			if err := s.take(r); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-timer.C:
			s.diagnose()
			t.Fatalf("%s: no counter %d within %v (the last was %d)", what, n, lineTimeout, s.last)
		}
	}
}

// diagnose runs onFail, if set.
func (s *soakStream) diagnose() {
	if s.onFail != nil {
		s.onFail()
	}
}

// drain takes the counters read so far, without waiting.
func (s *soakStream) drain(t *testing.T, what string) {
	t.Helper()
	for {
		select {
		case r, ok := <-s.reads:
			if !ok {
				t.Fatalf("%s: the TCP stream ended after counter %d: %v", what, s.last, <-s.err)
			}
			if err := s.take(r); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		default:
			return
		}
	}
}

// checkSoakImage checks an image of the disk loop as the guest left it
// when it stopped, last being the last record it reported: sector k
// holds record k+1 for every k below last, sector last holds record
// last+1 (written, not reported yet) or zeros, and everything after it
// is zero. size must be a whole number of sectors.
func checkSoakImage(r io.ReaderAt, size int64, last int) error {
	if size%soakRecordSize != 0 || size < int64(last+1)*soakRecordSize {
		return fmt.Errorf("size %d: not %d-byte sectors enough for %d records", size, soakRecordSize, last+1)
	}
	zero := make([]byte, soakRecordSize)
	for off := int64(0); off < size; off += 1 << 20 {
		buf := make([]byte, min(1<<20, size-off))
		if _, err := r.ReadAt(buf, off); err != nil {
			return err
		}
		for b := 0; b < len(buf); b += soakRecordSize {
			k := int((off + int64(b)) / soakRecordSize)
			got := buf[b : b+soakRecordSize]
			switch {
			case k < last:
				if !bytes.Equal(got, soakRecord(k+1)) {
					return fmt.Errorf("sector %d: %q..., want record %d", k, got[:24], k+1)
				}
			case k == last:
				if !bytes.Equal(got, zero) && !bytes.Equal(got, soakRecord(k+1)) {
					return fmt.Errorf("sector %d: %q..., want zeros or record %d", k, got[:24], k+1)
				}
			default:
				if !bytes.Equal(got, zero) {
					return fmt.Errorf("sector %d: %q..., after the last record", k, got[:24])
				}
			}
		}
	}
	return nil
}

// TestLinuxSoak is the Linux soak of issue #5: a stock Debian guest (256
// MiB, 2 vCPUs, virtio-net on a tap bridged as in TestVirtioNet, one disk
// on a path both instances open) bounces GODWIT_LINUX_SOAK_HOPS times
// (default 50) between two local instances, each hop to a fresh receiver
// that moves it to the other tap (--tap-map gwtap1=gwtap2, then back)
// and opens the same image, while the guest streams a counter over TCP
// to a server in the test and writes, and reads back with checksums, a
// record a second on its disk (soakDiskCmd). After every hop the guest's
// disk records go on in sequence on the destination, each verified, and
// the TCP stream, the one connection, goes on with no counter lost or
// repeated. At the end the image holds every record the guest reported;
// the test logs the per-hop downtime (min, median, p99, max) and the
// longest time between two counters as the host read them (reported,
// not asserted: only a stream dead for lineTimeout fails). With
// GODWIT_TEST_LONG=1 only.
func TestLinuxSoak(t *testing.T) {
	needLong(t)
	hops := envHops(t, "GODWIT_LINUX_SOAK_HOPS", linuxSoakHops)
	kernel := asset(t, "GODWIT_KERNEL")
	initrd := asset(t, "GODWIT_INITRD")
	needKVM(t)
	bridgedTaps(t)
	stream := &soakStream{counterStream: listenCounterStream(t)}

	img := filepath.Join(t.TempDir(), "vda.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, soakDiskSize); err != nil {
		t.Fatal(err)
	}
	cmd := soakGuestCmd(stream.port)
	sock := tempPath(t, "src.sock")
	vm := startGodwit(t, "run", "--net", "tap="+netTapA, "--disk", "path="+img,
		"--kernel", kernel, "--initrd", initrd, "--mem", "256M", "--cpus", "2", "--api-sock", sock,
		"--cmdline", `console=ttyS0 reboot=k panic=-1 quiet godwit.cmd="`+cmd+`"`)

	var disk soakDiskLog
	// console waits for a console line of p for which stop is true; every
	// line on the way goes through the disk log.
	console := func(p *vmProcess, what string, stop func(l string) bool) string {
		t.Helper()
		return p.waitLine(func(l string) bool {
			if err := disk.line(l); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			return stop(l)
		}, what)
	}
	// rest takes the console lines of p, which has exited, not read yet.
	rest := func(p *vmProcess, what string) {
		t.Helper()
		for l := range p.lines {
			if err := disk.line(l); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
	}

	l := console(vm, "the guest's ping of the host", func(l string) bool { return strings.HasPrefix(l, "NET-PING ") })
	if v, _ := netField(l, "NET-PING "); v != "0" {
		t.Fatalf("the guest's ping of the host exited %s", v)
	}
	console(vm, "the first disk record", func(string) bool { return disk.last >= 1 })
	stream.waitCounter(t, 3, "on the source")
	t.Logf("booted and streaming after %v: disk record %d, counter %d", time.Since(vm.start), disk.last, stream.last)

	taps := [2]string{netTapA, netTapB}
	var done []pingpong.Hop
	for n := 1; n <= hops; n++ {
		from, to := taps[(n-1)%2], taps[n%2]
		where := fmt.Sprintf("hop %d/%d", n, hops)
		// The guest runs and writes before every hop.
		before := disk.last
		console(vm, where+": a disk record on the source", func(string) bool { return disk.last > before })
		stream.drain(t, where)

		dst, listen, dstSock := startReceiver(t, fmt.Sprintf("hop%d", n), "--tap-map", from+"="+to)
		info, err := migrateJSON(t, sock, listen)
		if err != nil {
			t.Fatalf("%s: migrating the guest from %s to %s: %v", where, from, to, err)
		}
		if err := vm.wait(); err != nil {
			t.Fatalf("%s: source after migrating: %v", where, err)
		}
		rest(vm, where+": the source's last console lines")
		srcLast := disk.last
		stream.drain(t, where)
		atExit := stream.last

		// On the destination: the next record in sequence (soakDiskLog
		// fails on any other), then two counters past those read when
		// the source had gone, on the same connection.
		disk.handOver()
		stream.onFail = func() { logNetState(t, where+": the stream stopped on the destination", dstSock) }
		console(dst, where+": the next disk record on the destination", func(string) bool { return disk.last > srcLast })
		stream.waitCounter(t, atExit+2, where+": on the destination")
		stream.onFail = nil

		var st migrate.Stats
		if err := json.Unmarshal(info.Stats, &st); err != nil {
			t.Fatalf("%s: migration statistics: %v", where, err)
		}
		done = append(done, pingpong.Hop{Hop: n, From: from, To: to, Stats: st})
		t.Logf("%s %s->%s: downtime %.1f ms, total %.1f ms; disk record %d on the source, %d on the destination; counter %d; longest stream gap so far %v",
			where, from, to, st.DowntimeMs, st.TotalMs, srcLast, disk.last, stream.last, stream.maxGap.Round(time.Millisecond))
		vm, sock = dst, dstSock
	}

	ctl(t, sock, "shutdown")
	if err := vm.wait(); err != nil {
		t.Fatalf("exit after the last hop: %v", err)
	}
	rest(vm, "the last console lines")
	stream.drain(t, "after the last hop")
	stream.close() // the guest is gone without closing its end

	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != soakDiskSize {
		t.Fatalf("the image has %d bytes, want %d", fi.Size(), soakDiskSize)
	}
	if err := checkSoakImage(f, fi.Size(), disk.last); err != nil {
		t.Fatalf("the image after %d records: %v", disk.last, err)
	}

	s := pingpong.Summarize(done)
	t.Logf("Linux soak: %d hops of the Debian guest (256 MiB, 2 vCPUs, virtio-net, a shared disk); "+
		"stream connected: counters 1-%d on one connection, none lost or repeated, longest gap %v (before counter %d); "+
		"disk checksums intact: records 1-%d each verified by the guest with those before it in its window, and all in the image; "+
		"per-hop downtime: min %.1f ms, median %.1f ms, p99 %.1f ms, max %.1f ms; %d bytes sent in all",
		s.Hops, stream.last, stream.maxGap.Round(time.Millisecond), stream.gapEnd, disk.last,
		s.MinMs, s.MedianMs, s.P99Ms, s.MaxMs, s.TotalBytes)
}

func TestParseSoakDisk(t *testing.T) {
	tests := []struct {
		line     string
		n        int
		good, ok bool
	}{
		{"DISK 1 ok", 1, true, true},
		{"DISK 1234 bad", 1234, false, true},
		{"  DISK 7 ok  ", 7, true, true},
		{"DISK 0 ok", 0, false, false},
		{"DISK -3 ok", 0, false, false},
		{"DISK 12", 0, false, false},
		{"DISK 12 o", 0, false, false},
		{"DISK x ok", 0, false, false},
		{"DISK 1 ok extra", 0, false, false},
		{"cnt 5", 0, false, false},
		{"", 0, false, false},
	}
	for _, tt := range tests {
		n, good, ok := parseSoakDisk(tt.line)
		if n != tt.n || good != tt.good || ok != tt.ok {
			t.Errorf("parseSoakDisk(%q) = %d, %v, %v; want %d, %v, %v", tt.line, n, good, ok, tt.n, tt.good, tt.ok)
		}
	}
}

func TestSoakDiskLog(t *testing.T) {
	// Each case is a console, processes separated by "|"; want is the
	// last record it ends on, or the error.
	tests := []struct {
		name    string
		console []string
		want    int
		wantErr string
	}{
		{"in sequence", []string{"noise", "DISK 1 ok", "DISK 2 ok", "other", "DISK 3 ok"}, 3, ""},
		{"across a hop", []string{"DISK 1 ok", "DISK 2 ok", "|", "DISK 3 ok"}, 3, ""},
		{"line cut by the hop", []string{"DISK 1 ok", "DISK ", "|", "2 ok", "DISK 3 ok"}, 3, ""},
		{"line cut in the status", []string{"DISK 1 ok", "DISK 2 o", "|", "k", "DISK 3 ok"}, 3, ""},
		{"newline cut off", []string{"DISK 1 ok", "|", "", "DISK 2 ok"}, 2, ""},
		{"no join within a process", []string{"DISK 1 ok", "DISK ", "2 ok"}, 1, ""},
		{"gap", []string{"DISK 1 ok", "|", "DISK 3 ok"}, 0, "disk record 3 reported after record 1"},
		{"repeat", []string{"DISK 1 ok", "DISK 2 ok", "|", "DISK 2 ok"}, 0, "disk record 2 reported after record 2"},
		{"not from 1", []string{"DISK 2 ok"}, 0, "disk record 2 reported after record 0"},
		{"bad checksum", []string{"DISK 1 ok", "DISK 2 bad"}, 0, "disk record 2: the guest read back"},
		{"write failed", []string{"DISK 1 ok", "DISK-WRITE-FAILED 2"}, 0, "write of record 2 failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d soakDiskLog
			var err error
			for _, l := range tt.console {
				if l == "|" {
					d.handOver()
					continue
				}
				if err = d.line(l); err != nil {
					break
				}
			}
			if checkWantErr(t, err, tt.wantErr) {
				return
			}
			if d.last != tt.want {
				t.Errorf("last record %d, want %d", d.last, tt.want)
			}
		})
	}
}

func TestSoakStream(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tests := []struct {
		name    string
		reads   []counterRead
		maxGap  time.Duration
		gapEnd  int
		wantErr string
	}{
		{"steady", []counterRead{{1, at(0)}, {2, at(1000)}, {3, at(2000)}}, time.Second, 2, ""},
		{"a hop's gap", []counterRead{{1, at(0)}, {2, at(1000)}, {3, at(4500)}, {4, at(4501)}, {5, at(5500)}}, 3500 * time.Millisecond, 3, ""},
		{"one counter", []counterRead{{1, at(0)}}, 0, 0, ""},
		{"lost", []counterRead{{1, at(0)}, {3, at(1000)}}, 0, 0, "counter 3 after 1"},
		{"repeated", []counterRead{{1, at(0)}, {2, at(1000)}, {2, at(1001)}}, 0, 0, "counter 2 after 2"},
		{"not from 1", []counterRead{{4, at(0)}}, 0, 0, "counter 4 after 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s soakStream
			var err error
			for _, r := range tt.reads {
				if err = s.take(r); err != nil {
					break
				}
			}
			if checkWantErr(t, err, tt.wantErr) {
				return
			}
			if s.maxGap != tt.maxGap || s.gapEnd != tt.gapEnd {
				t.Errorf("longest gap %v before counter %d, want %v before %d", s.maxGap, s.gapEnd, tt.maxGap, tt.gapEnd)
			}
		})
	}
}

func TestCheckSoakImage(t *testing.T) {
	// 1.5 MiB: the last chunk read is a short one.
	image := func(records int, extra func(b []byte)) []byte {
		b := make([]byte, 3<<19)
		for n := 1; n <= records; n++ {
			copy(b[(n-1)*soakRecordSize:], soakRecord(n))
		}
		if extra != nil {
			extra(b)
		}
		return b
	}
	tests := []struct {
		name    string
		img     []byte
		last    int
		wantErr string
	}{
		{"as reported", image(300, nil), 300, ""},
		{"one written, not reported", image(301, nil), 300, ""},
		{"none", image(0, nil), 0, ""},
		{"two unreported", image(302, nil), 300, "sector 301"},
		{"a record missing", image(300, nil), 301, "sector 300"},
		{"a record corrupted", image(300, func(b []byte) { b[100*soakRecordSize+7] ^= 1 }), 300, "sector 100"},
		{"a record in the wrong sector", image(300, func(b []byte) { copy(b[5*soakRecordSize:], soakRecord(7)) }), 300, "want record 6"},
		{"data at the end", image(3, func(b []byte) { b[len(b)-1] = 1 }), 3, "after the last record"},
		{"too short", image(3, nil)[:2*soakRecordSize], 2, "enough for 3 records"},
		{"not whole sectors", image(3, nil)[:5000], 2, "size 5000"},
		{"data in the last sector", image(3, func(b []byte) { b[len(b)-soakRecordSize] = 1 }), 3, "sector 3071"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkSoakImage(bytes.NewReader(tt.img), int64(len(tt.img)), tt.last)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
}

func TestSoakDiskCmdFits(t *testing.T) {
	// The guest's command goes on the kernel command line, which x86
	// Linux cuts at 2048 bytes, with the rest of it and the network
	// test's parts; and it must not hold a double quote.
	cmd := soakGuestCmd("65535")
	if strings.Contains(cmd, `"`) || len(cmd) > 1700 {
		t.Errorf("the soak guest's command has %d bytes or a double quote: %s", len(cmd), cmd)
	}
}

// checkWantErr checks err against a table case's wanted error: with want
// set, err must say it (the case is then done: it returns true); without,
// err must be nil.
func checkWantErr(t *testing.T, err error, want string) bool {
	t.Helper()
	if want != "" {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("error %v, want one saying %q", err, want)
		}
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return false
}
