package tap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestValidName(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"tap0", true},
		{"godwit-tap.1_x", true},
		{"abcdefghijklmno", true}, // 15 bytes
		{"abcdefghijklmnop", false},
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"a:b", false},
		{"tap%d", false},
		{"a b", false},
		{"a\tb", false},
		{"a\x00", false},
	} {
		if err := ValidName(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidName(%q) = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
	if _, err := Open("bad/name"); err == nil {
		t.Error("Open of an invalid name succeeded")
	}
}

// The tests below create real taps: they need /dev/net/tun and
// CAP_NET_ADMIN, and skip without them.

var tapSeq atomic.Uint32

// testName returns a tap name unique to this process and call.
func testName() string {
	return fmt.Sprintf("gwt%d.%d", os.Getpid()%100000, tapSeq.Add(1))
}

// openTest opens a fresh non-persistent tap or skips the test.
func openTest(t *testing.T) *Tap {
	t.Helper()
	tp, err := Open(testName())
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) {
			t.Skipf("cannot create a tap here: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

// linkUp sets the interface up.
func linkUp(t *testing.T, name string) {
	t.Helper()
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
}

// testEtherType is the IEEE local experimental EtherType: nothing else on
// the tap uses it.
const testEtherType = 0x88b5

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket returns an AF_PACKET socket bound to the interface, for
// frames of testEtherType, with a receive timeout (a bound on a hung
// test, not a synchronisation delay).
func packetSocket(t *testing.T, name string) (int, int) {
	t.Helper()
	ifi, err := netIndex(name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(testEtherType)))
	if err != nil {
		t.Skipf("no packet socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(s) })
	if err := unix.Bind(s, &unix.SockaddrLinklayer{Protocol: htons(testEtherType), Ifindex: ifi}); err != nil {
		t.Fatal(err)
	}
	tv := unix.Timeval{Sec: 10}
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return s, ifi
}

func netIndex(name string) (int, error) {
	b, err := os.ReadFile("/sys/class/net/" + name + "/ifindex")
	if err != nil {
		return 0, err
	}
	var i int
	_, err = fmt.Sscan(string(b), &i)
	return i, err
}

// frame returns an Ethernet frame of testEtherType from src to broadcast.
func frame(src byte, payload string) []byte {
	f := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, src}
	f = binary.BigEndian.AppendUint16(f, testEtherType)
	f = append(f, payload...)
	for len(f) < 60 {
		f = append(f, 0)
	}
	return f
}

func TestOpenConfiguresTap(t *testing.T) {
	tp := openTest(t)
	if tp.Persistent() {
		t.Error("a tap created by Open reports persistent")
	}
	b, err := os.ReadFile("/sys/class/net/" + tp.Name() + "/tun_flags")
	if err != nil {
		t.Fatal(err)
	}
	var flags uint32
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "0x%x", &flags); err != nil {
		t.Fatalf("tun_flags %q: %v", b, err)
	}
	if want := uint32(0x0002 | 0x1000 | 0x4000); flags&want != want {
		t.Errorf("tun_flags %#x, want IFF_TAP|IFF_NO_PI|IFF_VNET_HDR", flags)
	}
	// One holder at a time.
	if _, err := Open(tp.Name()); !errors.Is(err, ErrBusy) {
		t.Errorf("second Open: %v, want ErrBusy", err)
	}
	if err := tp.SetOffload(OffloadCsum); err != nil {
		t.Errorf("SetOffload(CSUM): %v", err)
	}
	if err := tp.SetOffload(OffloadTSO4); err == nil {
		t.Error("SetOffload(TSO4) without CSUM accepted")
	}
	if err := tp.SetOffload(0x100); err == nil {
		t.Error("SetOffload of an unknown flag accepted")
	}
	if err := tp.SetOffload(0); err != nil {
		t.Errorf("SetOffload(0): %v", err)
	}
	name := tp.Name()
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	// Closed, the name is free again.
	again, err := Open(name)
	if err != nil {
		t.Fatalf("reopening after Close: %v", err)
	}
	again.Close()
}

// TestFrames moves frames both ways between a tap and a packet socket on
// its interface, with the 12-byte virtio-net header on the tap side.
func TestFrames(t *testing.T) {
	tp := openTest(t)
	linkUp(t, tp.Name())
	s, ifi := packetSocket(t, tp.Name())

	// Tap → kernel: the frame arrives on the interface.
	out := frame(1, "from the tap")
	if _, err := tp.Write(append(make([]byte, VnetHdrSize), out...)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for {
		n, from, err := unix.Recvfrom(s, buf, 0)
		if err != nil {
			t.Fatalf("packet socket: %v", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if !bytes.Equal(buf[:n], out) {
			t.Fatalf("interface received %x, tap wrote %x", buf[:n], out)
		}
		break
	}

	// Kernel → tap: a frame sent on the interface is read with a zero
	// header in front.
	in := frame(2, "to the tap")
	if err := unix.Sendto(s, in, 0, &unix.SockaddrLinklayer{Protocol: htons(testEtherType), Ifindex: ifi, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}); err != nil {
		t.Fatal(err)
	}
	if err := tp.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	rbuf := make([]byte, VnetHdrSize+65535+18)
	for {
		n, err := tp.Read(rbuf)
		if err != nil {
			t.Fatalf("tap read: %v", err)
		}
		got := rbuf[:n]
		if len(got) < VnetHdrSize+14 || binary.BigEndian.Uint16(got[VnetHdrSize+12:]) != testEtherType {
			continue // the kernel's own traffic (IPv6 router solicitations...)
		}
		if !bytes.Equal(got[:10], make([]byte, 10)) {
			t.Errorf("header %x, want flags 0 and no GSO", got[:VnetHdrSize])
		}
		if !bytes.Equal(got[VnetHdrSize:], in) {
			t.Fatalf("tap read %x, sent %x", got[VnetHdrSize:], in)
		}
		break
	}
}

// TestReadDeadline interrupts a blocked Read, as a device's Pause does.
func TestReadDeadline(t *testing.T) {
	tp := openTest(t)
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 70000)
		for {
			if _, err := tp.Read(buf); err != nil {
				errc <- err
				return
			}
		}
	}()
	if err := tp.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read: %v, want a deadline error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read not interrupted by the deadline")
	}
	// Close interrupts too.
	if err := tp.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := tp.Read(make([]byte, 70000))
		errc <- err
	}()
	tp.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Read after Close succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read not interrupted by Close")
	}
}
