package integration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// vethLink is a network between the test and destinations of their own:
// a network namespace for the destinations and a veth pair, one end here
// and its peer in the namespace, with addresses on a private /30. A
// receiver started with startReceiver listens on the peer's address; a
// source here reaches it through the pair; cut and restore take the peer
// down and up, which drops every packet both ways (the end here loses its
// carrier and keeps its route, so nothing leaks to another interface).
// Each end knows the other's MAC address for good (a permanent neighbour
// entry, set again by restore): without it, the address resolution that a
// packet sent during the cut starts could still be failing after restore,
// and a new connection queued behind it failed with "no route to host".
type vethLink struct {
	ns                   *os.File // the namespace (this handle keeps it alive)
	host, peer           string   // interface names here and in ns
	hostIP, peerIP       netip.Addr
	hostMAC, peerMAC     net.HardwareAddr
	here, there          *rtnl // route netlink in this namespace and in ns
	hostIndex, peerIndex int
}

// vethCount numbers the links of this process, for unique names.
var vethCount atomic.Uint32

// vethSubnet returns the n-th /30 of this process in 198.18.0.0/15, the
// range set aside for benchmarking networks (RFC 2544), so that test runs
// on one machine rarely share one and none collides with a real network.
func vethSubnet(pid int, n uint32) netip.Addr {
	i := (uint32(pid)*16 + n) % (1 << 15) // 2^15 subnets of 4 addresses
	return netip.AddrFrom4([4]byte{198, 18 + byte(i>>14), byte(i >> 6), byte(i<<2) & 0xfc})
}

// newVethLink makes a link for t and removes it when t ends. Without
// permission or support for network namespaces and veth, the test is
// skipped, except in the nested host, which has them.
func newVethLink(t *testing.T) *vethLink {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		why := fmt.Sprintf(format, args...)
		if os.Getenv("GODWIT_NESTED") == "1" {
			t.Fatalf("network namespaces and veth must work in the nested host: %s", why)
		}
		t.Skipf("needs network namespaces and veth pairs: %s", why)
	}
	n := vethCount.Add(1)
	l := &vethLink{
		host: fmt.Sprintf("gw%dh%d", os.Getpid(), n),
		peer: fmt.Sprintf("gw%dp%d", os.Getpid(), n),
	}
	subnet := vethSubnet(os.Getpid(), n)
	l.hostIP, l.peerIP = subnet.Next(), subnet.Next().Next()

	ns, err := newNetns()
	if err != nil {
		unavailable("creating a network namespace: %v", err)
	}
	l.ns = ns
	t.Cleanup(func() { ns.Close() })
	if l.here, err = openRtnl(); err != nil {
		unavailable("route netlink: %v", err)
	}
	t.Cleanup(l.here.close)
	if err := l.here.addVeth(l.host, l.peer, int(ns.Fd())); err != nil {
		unavailable("creating a veth pair: %v", err)
	}
	t.Cleanup(func() {
		// Deleting one end deletes the pair.
		if idx, _, err := ifindex(l.host); err == nil {
			l.here.deleteLink(idx)
		}
	})
	if l.hostIndex, l.hostMAC, err = ifindex(l.host); err != nil {
		t.Fatal(err)
	}
	if err := l.here.addAddr(l.hostIndex, l.hostIP, 30); err != nil {
		t.Fatalf("address of %s: %v", l.host, err)
	}
	if err := l.here.setUp(l.hostIndex, true); err != nil {
		t.Fatalf("bringing %s up: %v", l.host, err)
	}
	l.in(t, func() {
		if l.there, err = openRtnl(); err != nil {
			t.Fatalf("route netlink in the namespace: %v", err)
		}
		if l.peerIndex, l.peerMAC, err = ifindex(l.peer); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(l.there.close)
	if err := l.there.addAddr(l.peerIndex, l.peerIP, 30); err != nil {
		t.Fatalf("address of %s: %v", l.peer, err)
	}
	l.restore(t)
	t.Logf("veth link: %s %s here, %s %s in a network namespace", l.host, l.hostIP, l.peer, l.peerIP)
	return l
}

// ifindex returns the index and MAC address of the interface name in the
// calling thread's network namespace.
func ifindex(name string) (int, net.HardwareAddr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, nil, err
	}
	return ifi.Index, ifi.HardwareAddr, nil
}

// listen is the --listen address of a receiver in the namespace.
func (l *vethLink) listen() string { return "tcp:" + l.peerIP.String() + ":0" }

// cut takes the peer down: from now on the link drops everything.
func (l *vethLink) cut(t *testing.T) {
	t.Helper()
	if err := l.there.setUp(l.peerIndex, false); err != nil {
		t.Fatalf("taking %s down: %v", l.peer, err)
	}
}

// restore brings the peer up again, sets both ends' permanent neighbour
// entries (taking the peer down dropped its own), and waits until this end
// has its carrier back (operstate "up"): the kernel reports a veth's carrier
// change through linkwatch, up to a second later, and until then a
// connection over the link fails with "no route to host". The kernel
// announces the change on no file this test can wait on, so the state is
// polled, with a deadline.
func (l *vethLink) restore(t *testing.T) {
	t.Helper()
	if err := l.there.setUp(l.peerIndex, true); err != nil {
		t.Fatalf("bringing %s up: %v", l.peer, err)
	}
	if err := l.here.setNeighbor(l.hostIndex, l.peerIP, l.peerMAC); err != nil {
		t.Fatalf("neighbour %s on %s: %v", l.peerIP, l.host, err)
	}
	if err := l.there.setNeighbor(l.peerIndex, l.hostIP, l.hostMAC); err != nil {
		t.Fatalf("neighbour %s on %s: %v", l.hostIP, l.peer, err)
	}
	path := "/sys/class/net/" + l.host + "/operstate"
	deadline := time.Now().Add(lineTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		b, err := os.ReadFile(path)
		if err == nil && strings.TrimSpace(string(b)) == "up" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: operstate %q (%v) %v after bringing %s up", l.host, strings.TrimSpace(string(b)), err, lineTimeout, l.peer)
		}
		<-tick.C
	}
}

// in runs fn with the calling goroutine's thread in the link's network
// namespace: the processes fn starts and the sockets it opens are there.
// The thread goes back afterwards (when it cannot, it stays locked and
// the runtime discards it with the goroutine, and the test fails).
func (l *vethLink) in(t *testing.T, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	if err := unix.Setns(int(l.ns.Fd()), unix.CLONE_NEWNET); err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("entering the network namespace: %v", err)
	}
	defer func() {
		err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET)
		orig.Close()
		if err != nil {
			// The thread stays locked: the runtime discards it
			// when the goroutine ends.
			t.Fatalf("leaving the network namespace: %v", err)
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

// startReceiver starts `godwit receive` in the namespace, listening on the
// peer's address, like startReceiverEnv.
func (l *vethLink) startReceiver(t *testing.T, name string, env []string, extra ...string) (p *vmProcess, addr, sock string) {
	t.Helper()
	l.in(t, func() { p, addr, sock = startReceiverAt(t, name, l.listen(), env, extra...) })
	return p, addr, sock
}

// vethProbe says whether newVethLink can work here: it makes a network
// namespace and a veth pair into it, and deletes them (once per run).
var vethProbe = sync.OnceValue(func() error {
	ns, err := newNetns()
	if err != nil {
		return err
	}
	defer ns.Close()
	r, err := openRtnl()
	if err != nil {
		return err
	}
	defer r.close()
	name := fmt.Sprintf("gw%dprobe", os.Getpid())
	if err := r.addVeth(name, name+"p", int(ns.Fd())); err != nil {
		return err
	}
	idx, _, err := ifindex(name)
	if err != nil {
		return err
	}
	return r.deleteLink(idx)
})

// newNetns returns a new network namespace. It is made on a thread of its
// own, which the runtime discards afterwards.
func newNetns() (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			res <- result{nil, err}
			return
		}
		f, err := os.Open("/proc/thread-self/ns/net")
		res <- result{f, err}
	}()
	r := <-res
	return r.f, r.err
}

// rtnl is a route netlink socket, bound to the network namespace it was
// opened in, for the few requests the tests make.
type rtnl struct {
	fd  int
	seq uint32
}

// rtnlTimeout bounds the wait for the kernel's answer to a request.
const rtnlTimeout = 10 * time.Second

func openRtnl() (*rtnl, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	tv := unix.NsecToTimeval(rtnlTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &rtnl{fd: fd}, nil
}

func (r *rtnl) close() { unix.Close(r.fd) }

// request sends one message with body and waits for its acknowledgement;
// a refusal comes back as the kernel's errno.
func (r *rtnl) request(typ, flags uint16, body []byte) error {
	r.seq++
	msg := binary.LittleEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(body)))
	msg = binary.LittleEndian.AppendUint16(msg, typ)
	msg = binary.LittleEndian.AppendUint16(msg, flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	msg = binary.LittleEndian.AppendUint32(msg, r.seq)
	msg = binary.LittleEndian.AppendUint32(msg, 0)
	msg = append(msg, body...)
	if err := unix.Sendto(r.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(r.fd, buf, 0)
		if err != nil {
			return fmt.Errorf("waiting for the kernel's answer: %w", err)
		}
		if err := netlinkAck(buf[:n], r.seq); !errors.Is(err, errNoAck) {
			return err
		}
	}
}

// errNoAck says a netlink datagram holds no answer to the request.
var errNoAck = errors.New("no acknowledgement in this datagram")

// netlinkAck looks for the NLMSG_ERROR answer to request seq in a
// datagram: nil for success, the errno for a refusal, errNoAck when the
// answer is not there.
func netlinkAck(b []byte, seq uint32) error {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := binary.LittleEndian.Uint32(b)
		if l < unix.NLMSG_HDRLEN || uint64(l) > uint64(len(b)) {
			return fmt.Errorf("malformed netlink message of %d bytes in %d", l, len(b))
		}
		typ, mseq := binary.LittleEndian.Uint16(b[4:]), binary.LittleEndian.Uint32(b[8:])
		if typ == unix.NLMSG_ERROR && mseq == seq {
			if l < unix.NLMSG_HDRLEN+4 {
				return fmt.Errorf("short NLMSG_ERROR of %d bytes", l)
			}
			if errno := int32(binary.LittleEndian.Uint32(b[unix.NLMSG_HDRLEN:])); errno != 0 {
				return unix.Errno(-errno)
			}
			return nil
		}
		adv := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if uint64(adv) > uint64(len(b)) {
			break
		}
		b = b[adv:]
	}
	return errNoAck
}

// attr appends a route attribute of type typ with data, padded.
func attr(b []byte, typ uint16, data ...[]byte) []byte {
	n := unix.SizeofRtAttr
	for _, d := range data {
		n += len(d)
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(n))
	b = binary.LittleEndian.AppendUint16(b, typ)
	for _, d := range data {
		b = append(b, d...)
	}
	for len(b)%unix.RTA_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

// ifinfo is a struct ifinfomsg for interface index with flags under
// change.
func ifinfo(index int, flags, change uint32) []byte {
	b := []byte{unix.AF_UNSPEC, 0, 0, 0}
	b = binary.LittleEndian.AppendUint32(b, uint32(index))
	b = binary.LittleEndian.AppendUint32(b, flags)
	return binary.LittleEndian.AppendUint32(b, change)
}

// cstring is s with its NUL.
func cstring(s string) []byte { return append([]byte(s), 0) }

// vethInfoPeer is VETH_INFO_PEER of linux/veth.h.
const vethInfoPeer = 1

// addVeth creates the veth pair name (here) and peer, the peer in the
// network namespace nsFD.
func (r *rtnl) addVeth(name, peer string, nsFD int) error {
	peerMsg := attr(attr(ifinfo(0, 0, 0), unix.IFLA_IFNAME, cstring(peer)), unix.IFLA_NET_NS_FD, binary.LittleEndian.AppendUint32(nil, uint32(nsFD)))
	info := attr(attr(nil, unix.IFLA_INFO_KIND, cstring("veth")), unix.IFLA_INFO_DATA, attr(nil, vethInfoPeer, peerMsg))
	body := attr(attr(ifinfo(0, 0, 0), unix.IFLA_IFNAME, cstring(name)), unix.IFLA_LINKINFO, info)
	return r.request(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL, body)
}

// setUp sets or clears the interface's IFF_UP.
func (r *rtnl) setUp(index int, up bool) error {
	var flags uint32
	if up {
		flags = unix.IFF_UP
	}
	return r.request(unix.RTM_NEWLINK, 0, ifinfo(index, flags, unix.IFF_UP))
}

// addAddr gives the interface the IPv4 address a/prefix.
func (r *rtnl) addAddr(index int, a netip.Addr, prefix uint8) error {
	b := []byte{unix.AF_INET, prefix, 0, unix.RT_SCOPE_UNIVERSE}
	b = binary.LittleEndian.AppendUint32(b, uint32(index))
	ip := a.AsSlice()
	b = attr(attr(b, unix.IFA_LOCAL, ip), unix.IFA_ADDRESS, ip)
	return r.request(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, b)
}

// setNeighbor makes ip's link-layer address on the interface mac, for
// good (NUD_PERMANENT), replacing any entry being resolved or failed
// (which sends the packets queued on it).
func (r *rtnl) setNeighbor(index int, ip netip.Addr, mac net.HardwareAddr) error {
	// struct ndmsg: family, two pad bytes, ifindex, state, flags, type.
	b := []byte{unix.AF_INET, 0, 0, 0}
	b = binary.LittleEndian.AppendUint32(b, uint32(index))
	b = binary.LittleEndian.AppendUint16(b, unix.NUD_PERMANENT)
	b = append(b, 0, 0)
	b = attr(attr(b, unix.NDA_DST, ip.AsSlice()), unix.NDA_LLADDR, mac)
	return r.request(unix.RTM_NEWNEIGH, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, b)
}

// deleteLink deletes the interface.
func (r *rtnl) deleteLink(index int) error {
	return r.request(unix.RTM_DELLINK, 0, ifinfo(index, 0, 0))
}

// TestVethHelpers checks the pure parts of the veth link: the subnets it
// picks and how it reads the kernel's answers.
func TestVethHelpers(t *testing.T) {
	t.Run("subnets", func(t *testing.T) {
		bench := netip.MustParsePrefix("198.18.0.0/15")
		for _, pid := range []int{1, 2, 4096, 32767, 4194303} {
			seen := map[netip.Addr]bool{} // one process's links
			for n := uint32(1); n <= 16; n++ {
				a := vethSubnet(pid, n)
				if !bench.Contains(a) || !bench.Contains(a.Next().Next().Next()) || a.As4()[3]%4 != 0 {
					t.Fatalf("vethSubnet(%d, %d) = %v: not a /30 in %v", pid, n, a, bench)
				}
				if seen[a] {
					t.Fatalf("vethSubnet(%d, %d) = %v twice", pid, n, a)
				}
				seen[a] = true
			}
		}
	})
	msg := func(typ uint16, seq uint32, payload ...byte) []byte {
		b := binary.LittleEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(payload)))
		b = binary.LittleEndian.AppendUint16(b, typ)
		b = binary.LittleEndian.AppendUint16(b, 0)
		b = binary.LittleEndian.AppendUint32(b, seq)
		b = binary.LittleEndian.AppendUint32(b, 0)
		return append(b, payload...)
	}
	errno := func(e int32) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(-e)) }
	tests := []struct {
		name    string
		b       []byte
		want    error  // nil, errNoAck or an errno
		wantMsg string // or else an error saying this
	}{
		{"ack", msg(unix.NLMSG_ERROR, 7, errno(0)...), nil, ""},
		{"refused", msg(unix.NLMSG_ERROR, 7, errno(int32(unix.EEXIST))...), unix.EEXIST, ""},
		{"another request", msg(unix.NLMSG_ERROR, 6, errno(0)...), errNoAck, ""},
		{"after a notification", append(msg(unix.RTM_NEWLINK, 0, 1, 2, 3, 4), msg(unix.NLMSG_ERROR, 7, errno(0)...)...), nil, ""},
		{"empty", nil, errNoAck, ""},
		{"short error", msg(unix.NLMSG_ERROR, 7), nil, "short NLMSG_ERROR"},
		{"length past the datagram", msg(unix.NLMSG_ERROR, 7, errno(0)...)[:unix.NLMSG_HDRLEN+2], nil, "malformed netlink message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := netlinkAck(tt.b, 7)
			if tt.wantMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("netlinkAck = %v, want an error saying %q", err, tt.wantMsg)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("netlinkAck = %v, want %v", err, tt.want)
			}
		})
	}
}
