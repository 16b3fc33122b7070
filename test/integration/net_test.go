package integration

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Addresses of the network tests: link-local, so they cannot clash with a
// real network of the host running the tests.
const (
	netHostIP   = "169.254.10.1"
	netGuestIP  = "169.254.10.2"
	netHostCIDR = netHostIP + "/24"
)

// The host bridge of the network tests, holding netHostIP, and its two
// taps, which stand for the switch ports of a source and a destination
// host.
const (
	netBridge = "gwbr0"
	netTapA   = "gwtap1"
	netTapB   = "gwtap2"
)

// hostNet configures the network of the host running the tests: taps and
// bridges, created with iproute2 where it is installed and with busybox's
// tunctl and brctl otherwise (the nested host has busybox only). Every
// interface it creates is deleted when the test ends.
type hostNet struct{ t *testing.T }

// needHostNet skips the test unless it can create taps here: root,
// /dev/net/tun and an `ip` command.
func needHostNet(t *testing.T) hostNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create taps and bridges")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun (the tun module): %v", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command")
	}
	return hostNet{t}
}

// run runs the first of the alternative commands that succeeds, and fails
// the test when none does.
func (h hostNet) run(alternatives ...[]string) {
	h.t.Helper()
	var errs []string
	for _, a := range alternatives {
		if _, err := exec.LookPath(a[0]); err != nil {
			errs = append(errs, a[0]+": not installed")
			continue
		}
		out, err := exec.Command(a[0], a[1:]...).CombinedOutput()
		if err == nil {
			return
		}
		errs = append(errs, fmt.Sprintf("%s: %v: %s", strings.Join(a, " "), err, bytes.TrimSpace(out)))
	}
	h.t.Fatalf("host network setup failed:\n%s", strings.Join(errs, "\n"))
}

// try runs a cleanup command, logging a failure.
func (h hostNet) try(args ...string) {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		h.t.Logf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}

// tap creates a persistent tap, up, with IPv6 off (its router
// solicitations are noise here).
func (h hostNet) tap(name string) {
	h.t.Helper()
	h.run([]string{"ip", "tuntap", "add", "dev", name, "mode", "tap"}, []string{"tunctl", "-t", name})
	h.t.Cleanup(func() {
		if _, err := exec.LookPath("tunctl"); err == nil {
			h.try("tunctl", "-d", name)
			return
		}
		h.try("ip", "link", "del", name)
	})
	os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	h.run([]string{"ip", "link", "set", name, "up"})
}

// bridge creates a bridge (no STP: ports forward as soon as they are up).
func (h hostNet) bridge(name string) {
	h.t.Helper()
	h.run([]string{"ip", "link", "add", "name", name, "type", "bridge"}, []string{"brctl", "addbr", name})
	h.t.Cleanup(func() {
		h.try("ip", "link", "set", name, "down")
		if _, err := exec.LookPath("brctl"); err == nil {
			h.try("brctl", "delbr", name)
			return
		}
		h.try("ip", "link", "del", name)
	})
	os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	h.run([]string{"ip", "link", "set", name, "up"})
}

// enslave adds port to bridge br.
func (h hostNet) enslave(port, br string) {
	h.t.Helper()
	h.run([]string{"ip", "link", "set", port, "master", br}, []string{"brctl", "addif", br, port})
}

// addr gives an interface an IPv4 address.
func (h hostNet) addr(name, cidr string) {
	h.t.Helper()
	h.run([]string{"ip", "addr", "add", cidr, "dev", name})
}

// bridgedTaps creates the bridge netBridge with the host's link-local
// address and the taps netTapA and netTapB as its ports (all deleted when
// the test ends); it skips the test where it cannot (needHostNet).
func bridgedTaps(t *testing.T) {
	t.Helper()
	h := needHostNet(t)
	h.bridge(netBridge)
	h.addr(netBridge, netHostCIDR)
	for _, tp := range []string{netTapA, netTapB} {
		h.tap(tp)
		h.enslave(tp, netBridge)
	}
}

// netGuestSetup brings the guest's eth0 up with its address and prints its
// MAC and carrier (godwit.cmd: no double quotes).
const netGuestSetup = "ip link set eth0 up; ip addr add " + netGuestIP + "/24 dev eth0;" +
	" echo NET-MAC $(cat /sys/class/net/eth0/address); echo NET-CARRIER $(cat /sys/class/net/eth0/carrier);"

// netField returns the text after prefix in line, if line starts with it.
func netField(line, prefix string) (string, bool) {
	if !strings.HasPrefix(line, prefix) {
		return "", false
	}
	return strings.TrimSpace(strings.TrimPrefix(line, prefix)), true
}

// hostPattern is what the host sends the guest in the TCP exchange.
func hostPattern() []byte {
	b := make([]byte, 192<<10)
	for i := range b {
		b[i] = byte(i*13) ^ byte(i>>9)
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// serveExchange accepts one connection on ln, reads everything the guest
// sends until it shuts its side down, then answers "HOST-SHA <sha256 of
// what it got>\n" and hostPattern(), and closes. The result is the
// checksum of what it received, or an error.
func serveExchange(ln net.Listener) <-chan string {
	res := make(chan string, 1)
	go func() {
		// The guest boots first: in the nested host that takes a minute.
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * lineTimeout))
		c, err := ln.Accept()
		if err != nil {
			res <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(lineTimeout))
		got, err := io.ReadAll(c)
		if err != nil {
			res <- "read: " + err.Error()
			return
		}
		sum := sha(got)
		if _, err := c.Write(append([]byte("HOST-SHA "+sum+"\n"), hostPattern()...)); err != nil {
			res <- "write: " + err.Error()
			return
		}
		res <- sum
	}()
	return res
}

// packetSocket opens an AF_PACKET socket for every frame on interface
// name, with a receive timeout of lineTimeout (a bound on a hung test).
// It takes ETH_P_ALL: on a bridge port, a socket for one EtherType sees
// nothing, because the bridge consumes the frames before such sockets get
// them.
func packetSocket(t *testing.T, name string) int {
	t.Helper()
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatal(err)
	}
	const all = unix.ETH_P_ALL<<8&0xff00 | unix.ETH_P_ALL>>8 // network byte order
	s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, all)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s) })
	if err := unix.Bind(s, &unix.SockaddrLinklayer{Protocol: all, Ifindex: ifi.Index}); err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	tv := unix.NsecToTimeval(lineTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return s
}

// receivedFrames reads frames that came in on the packet socket's
// interface (not those the host sent out of it) until every predicate has
// matched one; it returns the matching frames in predicate order.
func receivedFrames(s int, preds ...func([]byte) bool) ([][]byte, error) {
	found := make([][]byte, len(preds))
	left := len(preds)
	buf := make([]byte, 65536)
	for left > 0 {
		n, from, err := unix.Recvfrom(s, buf, 0)
		if err != nil {
			return found, err
		}
		if ll, isLL := from.(*unix.SockaddrLinklayer); isLL && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		for i, ok := range preds {
			if found[i] == nil && ok(buf[:n]) {
				found[i] = append([]byte(nil), buf[:n]...)
				left--
			}
		}
	}
	return found, nil
}

// counterLine parses "cnt N".
func counterLine(line string) (int, bool) {
	v, ok := strings.CutPrefix(strings.TrimSpace(line), "cnt ")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil
}

// counterRead is one "cnt N" line of a guest's counter stream, and when
// the host read it.
type counterRead struct {
	n  int
	at time.Time
}

// counterStream is a TCP server on the host's bridge address that takes
// one connection, the guest's counter stream, and reads its "cnt N"
// lines. A read waits at most lineTimeout: a stream silent that long has
// died.
type counterStream struct {
	ln    net.Listener
	port  string           // the server's TCP port, for the guest's nc
	reads chan counterRead // closed when the connection ends
	err   chan error       // why it ended
	conns chan net.Conn    // the connection, once accepted
}

// listenCounterStream starts a counterStream; it waits 2*lineTimeout for
// the guest to connect (the guest boots first: in the nested host that
// takes a minute).
func listenCounterStream(t *testing.T) *counterStream {
	t.Helper()
	ln, err := net.Listen("tcp", netHostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &counterStream{ln: ln, port: strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), reads: make(chan counterRead, 4096), err: make(chan error, 1), conns: make(chan net.Conn, 1)}
	go s.serve()
	return s
}

// serve accepts the guest's connection and reads its counters.
func (s *counterStream) serve() {
	defer close(s.reads)
	s.ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * lineTimeout))
	c, err := s.ln.Accept()
	s.ln.Close() // one connection: a guest that reconnected would find nobody
	if err != nil {
		s.err <- err
		return
	}
	s.conns <- c
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(lineTimeout))
		line, err := r.ReadString('\n')
		if err != nil {
			s.err <- err
			return
		}
		if n, ok := counterLine(line); ok {
			s.reads <- counterRead{n: n, at: time.Now()}
		}
	}
}

// guestCmd is the guest's side of the stream (counterCmd).
func (s *counterStream) guestCmd() string { return counterCmd(s.port) }

// counterCmd is the guest's side of a counter stream to the host's port
// (godwit.cmd: no double quotes): a counter, one "cnt N" line a second,
// into nc connected to the server. It ends when the connection does.
func counterCmd(port string) string {
	return "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo cnt $i; sleep 1; done | nc " + netHostIP + " " + port
}

// close closes the host's end of the connection, if there is one, and
// waits for the reader to end: a guest that is gone did not close its
// end.
func (s *counterStream) close() {
	select {
	case c := <-s.conns:
		c.Close()
		for range s.reads {
		}
	default:
	}
}

// TestVirtioNet boots Debian's stock kernel with a virtio-net device and
// checks the network end to end, then across a migration; one guest for
// all of it, because in the nested host every Linux boot costs about a
// minute. Two persistent taps on a host bridge that holds the host's
// link-local address stand for the switch ports of a source and a
// destination host: the VM starts on gwtap1 with a random MAC.
//
// Before the migration: the guest's virtio_net driver sees a locally
// administered MAC with the link up, pings the host, and a TCP exchange
// with busybox nc moves 256 KiB from the guest to a server in this test
// and 192 KiB back, intact. Then the guest streams a counter, one line a
// second, to a second server. The VM migrates to a receiver that maps
// gwtap1 to gwtap2 (--tap-map): the count goes on without a gap on the
// same TCP connection, and on gwtap2 appear the VMM's RARP announcement
// with the guest's MAC (kept across the migration) and the guest's own
// gratuitous ARP, which it sends when the device raises
// VIRTIO_NET_S_ANNOUNCE.
func TestVirtioNet(t *testing.T) {
	kernel := asset(t, "GODWIT_KERNEL")
	initrd := asset(t, "GODWIT_INITRD")
	needKVM(t)
	bridgedTaps(t)
	const srcTap, dstTap = netTapA, netTapB
	capture := packetSocket(t, dstTap)

	exLn, err := net.Listen("tcp", netHostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer exLn.Close()
	served := serveExchange(exLn)
	stream := listenCounterStream(t)

	const replyHeader = len("HOST-SHA ") + 64 + 1
	port := func(l net.Listener) string { return strconv.Itoa(l.Addr().(*net.TCPAddr).Port) }
	cmd := netGuestSetup +
		" ping -c 3 -W 10 " + netHostIP + " >/dev/null; echo NET-PING $?;" +
		" dd if=/dev/urandom of=/tmp/out bs=1024 count=256 2>/dev/null; echo NET-SENT $(sha256sum /tmp/out | cut -c1-64);" +
		" nc " + netHostIP + " " + port(exLn) + " < /tmp/out > /tmp/in; echo NET-NC $?;" +
		" echo NET-REPLY $(head -n 1 /tmp/in);" +
		" echo NET-RECV $(tail -c +" + strconv.Itoa(replyHeader+1) + " /tmp/in | sha256sum | cut -c1-64);" +
		" " + stream.guestCmd()
	sock := tempPath(t, "src.sock")
	src := startGodwit(t, "run", "--net", "tap="+srcTap, "--kernel", kernel, "--initrd", initrd, "--mem", "256M", "--cpus", "1",
		"--api-sock", sock, "--cmdline", `console=ttyS0 reboot=k panic=-1 quiet godwit.cmd="`+cmd+`"`)

	f := map[string]string{}
	src.waitLine(func(l string) bool {
		for _, k := range []string{"NET-MAC ", "NET-CARRIER ", "NET-PING ", "NET-SENT ", "NET-NC ", "NET-REPLY ", "NET-RECV "} {
			if v, ok := netField(l, k); ok {
				f[strings.TrimSpace(k)] = v
			}
		}
		_, ok := netField(l, "NET-RECV ")
		return ok
	}, "the guest's TCP exchange")
	mac, err := net.ParseMAC(f["NET-MAC"])
	if err != nil || mac[0]&3 != 2 {
		t.Errorf("guest MAC %q (%v): want a random locally administered unicast address", f["NET-MAC"], err)
	}
	if f["NET-CARRIER"] != "1" {
		t.Errorf("guest eth0 carrier %q, want 1", f["NET-CARRIER"])
	}
	if f["NET-PING"] != "0" {
		t.Errorf("guest ping of the host exited %q", f["NET-PING"])
	}
	var hostGot string
	select {
	case hostGot = <-served:
	case <-time.After(lineTimeout):
		t.Fatal("the host's TCP server did not finish")
	}
	if f["NET-NC"] != "0" || len(f["NET-SENT"]) != 64 || hostGot != f["NET-SENT"] {
		t.Errorf("guest sent %q (nc exit %q), the host received %q", f["NET-SENT"], f["NET-NC"], hostGot)
	}
	if f["NET-REPLY"] != "HOST-SHA "+hostGot {
		t.Errorf("guest got the reply header %q", f["NET-REPLY"])
	}
	if want := sha(hostPattern()); f["NET-RECV"] != want {
		t.Errorf("guest received data with checksum %q, the host sent %s", f["NET-RECV"], want)
	}
	if mac == nil {
		t.FailNow()
	}

	next := 1
	// diagSock is the API socket of the VM whose network state a stalled
	// stream logs (the destination once it runs).
	diagSock := ""
	diagnose := func(what string) {
		if diagSock != "" {
			logNetState(t, what, diagSock)
		}
	}
	// expect reads the next counter from the stream: it must be the one
	// after the last (the connection neither broke nor lost data).
	expect := func(what string) {
		t.Helper()
		select {
		case r, ok := <-stream.reads:
			if !ok {
				diagnose(what)
				t.Fatalf("%s: the TCP stream ended: %v", what, <-stream.err)
			}
			if r.n != next {
				t.Fatalf("%s: counter %d, want %d", what, r.n, next)
			}
			next++
		case <-time.After(lineTimeout):
			diagnose(what)
			t.Fatalf("%s: no counter within %v", what, lineTimeout)
		}
	}
	for i := 0; i < 3; i++ {
		expect("on the source")
	}

	dst, listen, dstSock := startReceiver(t, "dst", "--tap-map", srcTap+"="+dstTap)
	if _, err := migrateVM(t, sock, listen, "--json"); err != nil {
		t.Fatalf("migrating the guest with virtio-net: %v", err)
	}
	if err := src.wait(); err != nil {
		t.Fatalf("source after migrating: %v", err)
	}
	if l := waitStderr(t, dst, "announcing the guest"); !strings.Contains(l, "guest_announce=true") {
		t.Errorf("destination: %s", l)
	}
	diagSock = dstSock
	for i := 0; i < 5; i++ {
		expect("on the destination")
	}

	guestIP := net.ParseIP(netGuestIP).To4()
	isRARP := func(f []byte) bool {
		return len(f) >= 42 && binary.BigEndian.Uint16(f[12:]) == 0x8035 && bytes.Equal(f[6:12], mac)
	}
	isGratuitousARP := func(f []byte) bool {
		// Sender and target protocol address both the guest's.
		return len(f) >= 42 && binary.BigEndian.Uint16(f[12:]) == unix.ETH_P_ARP && bytes.Equal(f[22:28], mac) &&
			bytes.Equal(f[28:32], guestIP) && bytes.Equal(f[38:42], guestIP)
	}
	frames, err := receivedFrames(capture, isRARP, isGratuitousARP)
	if err != nil {
		t.Fatalf("on %s: RARP from the VMM %x, gratuitous ARP from the guest %x; then %v", dstTap, frames[0], frames[1], err)
	}
	if rarp := frames[0]; !bytes.Equal(rarp[:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) || binary.BigEndian.Uint16(rarp[20:]) != 3 || !bytes.Equal(rarp[22:28], mac) {
		t.Errorf("RARP frame %x: want a broadcast reverse request about %s", rarp, mac)
	}
	t.Logf("on %s: RARP %x, gratuitous ARP %x", dstTap, frames[0], frames[1])

	ctl(t, dstSock, "shutdown")
	if err := dst.wait(); err != nil {
		t.Fatalf("destination exit: %v", err)
	}
	// The guest is gone without closing its end: close ours.
	stream.close()
}
