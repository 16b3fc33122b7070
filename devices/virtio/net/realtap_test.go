package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"godwit/devices/tap"
	"godwit/devices/virtio/virtiotest"
)

// realTapRig is a rig over a real Linux tap, up, with IPv6 off (no
// router solicitations in the way), and a packet socket on its interface
// for the host side. It skips where taps cannot be created.
func realTapRig(t *testing.T) (*rig, int, int) {
	t.Helper()
	name := fmt.Sprintf("gwn%d", os.Getpid()%1000000)
	tp, err := tap.Open(name)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) {
			t.Skipf("cannot create a tap here: %v", err)
		}
		t.Fatal(err)
	}
	dev, err := New(tp, Options{MAC: testMAC})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ifr, _ := unix.NewIfreq(name)
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	unix.Close(s)
	b, err := os.ReadFile("/sys/class/net/" + name + "/ifindex")
	if err != nil {
		t.Fatal(err)
	}
	var ifindex int
	fmt.Sscan(string(b), &ifindex)
	ps, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Skipf("no packet socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(ps) })
	if err := unix.Bind(ps, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		t.Fatal(err)
	}
	tv := unix.Timeval{Sec: int64(virtiotest.WaitTimeout.Seconds())}
	unix.SetsockoptTimeval(ps, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	r := newRigFor(t, dev, nil, ^uint64(0))
	return r, ps, ifindex
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// hostReceive returns the next frame the interface received (from the
// device) of the given EtherType.
func hostReceive(t *testing.T, ps int, etherType uint16) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	for {
		n, from, err := unix.Recvfrom(ps, buf, 0)
		if err != nil {
			t.Fatalf("packet socket: %v", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if n >= ethHeaderSize && binary.BigEndian.Uint16(buf[12:]) == etherType {
			return append([]byte(nil), buf[:n]...)
		}
	}
}

// TestRealTap runs the device over a real tap: a packet the guest sends
// arrives on the host interface, a frame the host sends on the interface
// lands in a guest buffer, and Announce's RARP frames show on the
// interface with the guest's MAC as source.
func TestRealTap(t *testing.T) {
	r, ps, ifindex := realTapRig(t)
	out := ethFrame(300, 1)
	r.send([]seg{ro(packet(0, 0, 0, 0, out))})
	if got := hostReceive(t, ps, 0x88b5); !bytes.Equal(got, out) {
		t.Fatalf("interface received %x, guest sent %x", got, out)
	}
	if s := r.dev.Stats(); s.TxFrames != 1 || s.TxErrors != 0 {
		t.Fatalf("stats %+v", s)
	}

	// Host → guest. A few buffers, in case the kernel sends something of
	// its own first.
	var posted []virtiotest.Posted
	for i := 0; i < 4; i++ {
		posted = append(posted, r.post(r.rx, wrs(2048)))
	}
	r.rx.Kick()
	in := ethFrame(400, 2)
	copy(in, testMAC[:])
	if err := unix.Sendto(ps, in, 0, &unix.SockaddrLinklayer{Protocol: htons(0x88b5), Ifindex: ifindex, Halen: 6}); err != nil {
		t.Fatal(err)
	}
	found := false
	for !found {
		for _, u := range r.waitUsed(r.rx, 1) {
			p := posted[int(u.ID)%len(posted)]
			got := r.written(p, u.Len)
			if len(got) == hdrSize+len(in) && bytes.Equal(got[hdrSize:], in) {
				if n := binary.LittleEndian.Uint16(got[hdrNumBuffers:]); n != 1 || got[hdrGSOType] != hdrGSONone {
					t.Errorf("header %x", got[:hdrSize])
				}
				found = true
			}
		}
	}

	r.dev.Announce()
	rarp := hostReceive(t, ps, EtherTypeRARP)
	if !bytes.Equal(rarp, RARP(testMAC)) {
		t.Fatalf("RARP on the interface: %x", rarp)
	}
}
