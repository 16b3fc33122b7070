// Package tap opens Linux tap devices (drivers/net/tun.c) as the host side
// of a virtio network device: an Ethernet interface on the host whose
// frames a process reads and writes through a file descriptor of
// /dev/net/tun.
//
// A Tap is opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR and a 12-byte
// virtio-net header (TUNSETVNETHDRSZ): every read returns, and every write
// takes, one frame preceded by a struct virtio_net_hdr_v1 (virtio 1.2
// §5.1.6), so a virtio-net device passes the guest's header through
// unchanged. The header's multi-byte fields are in the host's byte order
// unless TUNSETVNETLE is set; godwit runs on little-endian x86, where that
// is the virtio 1.x order. Offloads are off until SetOffload enables them:
// with none, the kernel hands over only complete, checksummed frames.
//
// The descriptor is nonblocking and registered with the Go runtime's
// poller, so Read blocks only the calling goroutine and SetReadDeadline
// interrupts it (how a device quiesces its receive goroutine). The reads
// and writes themselves, which never block, go through internal/rawsys
// without the scheduler's system-call bookkeeping.
package tap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/abi/linux"

	"godwit/internal/rawsys"
)

// VnetHdrSize is the size of the header before every frame: struct
// virtio_net_hdr_v1 (flags, gso_type, hdr_len, gso_size, csum_start,
// csum_offset, num_buffers), the header of every virtio 1.x net device.
const VnetHdrSize = 12

// Offload flags for SetOffload (TUN_F_* of linux/if_tun.h): what the
// kernel may hand to the reader. Writers may always send partial
// checksums; GSO frames they write are accepted whatever is set here.
const (
	// OffloadCsum lets the kernel pass frames whose checksum is still
	// to be computed (VIRTIO_NET_HDR_F_NEEDS_CSUM in the header).
	OffloadCsum = 0x01 // TUN_F_CSUM
	// OffloadTSO4 lets it pass TCPv4 segmentation offload frames.
	OffloadTSO4 = 0x02 // TUN_F_TSO4
	// OffloadTSO6 lets it pass TCPv6 segmentation offload frames.
	OffloadTSO6 = 0x04 // TUN_F_TSO6
	// OffloadTSOECN lets it pass TSO frames with ECN.
	OffloadTSOECN = 0x08 // TUN_F_TSO_ECN
	// OffloadUFO lets it pass UDP fragmentation offload frames.
	OffloadUFO = 0x10 // TUN_F_UFO

	offloadAll = OffloadCsum | OffloadTSO4 | OffloadTSO6 | OffloadTSOECN | OffloadUFO
)

// Interface flags of linux/if_tun.h that gVisor's abi/linux does not have.
const (
	iffVnetHdr = 0x4000 // IFF_VNET_HDR
	iffPersist = 0x0800 // IFF_PERSIST
)

// tunPath is the tun/tap clone device.
const tunPath = "/dev/net/tun"

// ErrBusy is wrapped by Open's error when another process holds the tap.
var ErrBusy = errors.New("tap in use by another process")

// ErrFrameTooLarge is returned by Read when a frame did not fit the buffer.
var ErrFrameTooLarge = errors.New("tap: frame larger than the read buffer")

// ErrWouldBlock is returned by TryRead when no frame is queued.
var ErrWouldBlock = errors.New("tap: no frame queued")

// ValidName checks an interface name the way the kernel does
// (dev_valid_name: 1 to 15 bytes, not "." or "..", no '/', ':' or white
// space), and also refuses '%', which would make the kernel pick a new
// name from a template instead of opening the one named.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) >= linux.IFNAMSIZ:
		return fmt.Errorf("interface name %q longer than %d bytes", name, linux.IFNAMSIZ-1)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q", name)
	case strings.ContainsAny(name, "/:% \t\n\v\f\r\x00"):
		return fmt.Errorf("interface name %q contains '/', ':', '%%', a NUL or white space", name)
	}
	return nil
}

// Tap is an open tap device. Read, TryRead, Write and WriteBuffers may be
// called from different goroutines, but TryRead calls must not overlap
// each other, nor WriteBuffers calls (each has one preallocated request);
// each call moves one frame.
type Tap struct {
	f          *os.File
	rc         syscall.RawConn
	name       string
	persistent bool

	// The requests of TryRead and WriteBuffers, and their functions for
	// rc, built once so that a call allocates nothing.
	rd   rawRead
	rdFn func(fd uintptr)
	wr   rawWrite
	wrFn func(fd uintptr) bool
}

// rawRead is a TryRead request.
type rawRead struct {
	buf []byte
	n   int
	err error
}

// rawWrite is a WriteBuffers request: the iovecs are built in place.
type rawWrite struct {
	bufs [][]byte
	iov  []unix.Iovec
	n    int
	err  error
}

// Open attaches to the tap named name, creating it when there is none (a
// tap created here disappears when it is closed; one made persistent
// beforehand, e.g. with `ip tuntap add NAME mode tap`, stays). Only one
// process can hold a tap: a second Open fails with ErrBusy. Opening
// needs CAP_NET_ADMIN unless the tap is persistent and owned by the
// caller.
func Open(name string) (*Tap, error) {
	if err := ValidName(name); err != nil {
		return nil, fmt.Errorf("tap: %w", err)
	}
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("tap %s: %s: %w (is the tun module loaded?)", name, tunPath, err)
		}
		return nil, fmt.Errorf("tap %s: %s: %w", name, tunPath, err)
	}
	t, err := setup(fd, name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return t, nil
}

// setup configures the fresh descriptor fd as tap name.
func setup(fd int, name string) (*Tap, error) {
	var ifr linux.IFReq
	ifr.SetName(name)
	binary.LittleEndian.PutUint16(ifr.Data[:], linux.IFF_TAP|linux.IFF_NO_PI|iffVnetHdr)
	if err := ioctlIFReq(fd, linux.TUNSETIFF, &ifr); err != nil {
		switch {
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("tap %s: %w (another VM on this host? a migrated VM must use another tap here: receive --tap-map)", name, ErrBusy)
		case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
			return nil, fmt.Errorf("tap %s: %w (needs CAP_NET_ADMIN, or a persistent tap owned by this user)", name, err)
		case errors.Is(err, unix.EINVAL):
			return nil, fmt.Errorf("tap %s: %w (the interface exists and is not a single-queue tap: a tun device, a multi_queue tap or another kind of interface)", name, err)
		}
		return nil, fmt.Errorf("tap %s: TUNSETIFF: %w", name, err)
	}
	if got := ifr.Name(); got != name {
		return nil, fmt.Errorf("tap %s: the kernel attached %q", name, got)
	}
	// The flags as the kernel keeps them: IFF_VNET_HDR must have stuck.
	if err := ioctlIFReq(fd, linux.TUNGETIFF, &ifr); err != nil {
		return nil, fmt.Errorf("tap %s: TUNGETIFF: %w", name, err)
	}
	flags := binary.LittleEndian.Uint16(ifr.Data[:])
	if flags&(linux.IFF_TAP|iffVnetHdr|linux.IFF_NO_PI) != linux.IFF_TAP|iffVnetHdr|linux.IFF_NO_PI {
		return nil, fmt.Errorf("tap %s: flags %#x after TUNSETIFF, want IFF_TAP|IFF_NO_PI|IFF_VNET_HDR", name, flags)
	}
	if err := unix.IoctlSetPointerInt(fd, uint(tunSetVnetHdrSz), VnetHdrSize); err != nil {
		return nil, fmt.Errorf("tap %s: TUNSETVNETHDRSZ %d: %w", name, VnetHdrSize, err)
	}
	if n, err := unix.IoctlGetInt(fd, uint(tunGetVnetHdrSz)); err != nil || n != VnetHdrSize {
		return nil, fmt.Errorf("tap %s: virtio-net header of %d bytes (%v), want %d", name, n, err, VnetHdrSize)
	}
	if err := unix.IoctlSetInt(fd, uint(tunSetOffload), 0); err != nil {
		return nil, fmt.Errorf("tap %s: TUNSETOFFLOAD 0: %w", name, err)
	}
	// The descriptor is nonblocking: os.NewFile registers it with the
	// poller, which SetReadDeadline needs.
	f := os.NewFile(uintptr(fd), tunPath+":"+name)
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("tap %s: not pollable: %w", name, err)
	}
	t, err := FromFile(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	t.name, t.persistent = name, flags&iffPersist != 0
	return t, nil
}

// FromFile returns a Tap over f, a nonblocking descriptor on the Go
// poller that moves one frame per read and write: a tap configured as
// Open does, or in tests one end of a SOCK_SEQPACKET socket pair (whose
// SetOffload then fails). The Tap owns f from now on.
func FromFile(f *os.File) (*Tap, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	t := &Tap{f: f, rc: rc, name: f.Name()}
	t.rdFn = func(fd uintptr) {
		t.rd.n, t.rd.err = rawsys.Read(int(fd), t.rd.buf)
	}
	t.wrFn = func(fd uintptr) bool {
		t.wr.n, t.wr.err = rawsys.Writev(int(fd), t.wr.iov)
		// A tap never blocks a writer (a full queue drops), but a
		// socket pair can: wait for room as Write would.
		return t.wr.err != unix.EAGAIN
	}
	return t, nil
}

// Name returns the interface name.
func (t *Tap) Name() string { return t.name }

// Persistent reports whether the tap outlives this Tap (IFF_PERSIST);
// one that is not was created by Open and goes away on Close.
func (t *Tap) Persistent() bool { return t.persistent }

// Read reads one frame, with its VnetHdrSize-byte header, into p. It
// blocks until a frame arrives, the read deadline passes
// (os.ErrDeadlineExceeded) or the tap is closed. p should hold
// VnetHdrSize + 65535 + 18 bytes, the largest frame the kernel can hand
// over without GSO; a larger one gives ErrFrameTooLarge.
func (t *Tap) Read(p []byte) (int, error) {
	n, err := t.f.Read(p)
	if n > len(p) {
		return 0, ErrFrameTooLarge
	}
	return n, err
}

// ReadWhen reads one frame, with its header, into p once ready reports
// true and a frame is queued. ready is called before every read attempt:
// at once, and again after every readiness event of the descriptor (a
// frame arriving); while it reports false nothing is read and ReadWhen
// waits for the next event. It returns early like Read: the read deadline
// passes or the tap is closed. A caller that makes ready true must, in the
// same critical section as ready's check, have seen the tap empty (a
// TryRead that returned ErrWouldBlock): a frame arriving after that is an
// event, so ReadWhen runs ready again and reads it.
func (t *Tap) ReadWhen(p []byte, ready func() bool) (int, error) {
	var n int
	var rerr error
	err := t.rc.Read(func(fd uintptr) bool {
		if !ready() {
			return false
		}
		n, rerr = rawsys.Read(int(fd), p)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, &os.PathError{Op: "read", Path: t.f.Name(), Err: rerr}
	}
	return n, nil
}

// TryRead reads one frame, with its header, into p if one is queued, and
// returns ErrWouldBlock if none is; it never waits. Frames larger than p
// come back truncated (p should hold VnetHdrSize + 65535 + 18 bytes, and
// a read that fills it is suspect). TryRead calls must not overlap.
func (t *Tap) TryRead(p []byte) (int, error) {
	t.rd.buf = p
	// Control, not Read: a ReadWhen parked in the poller holds the
	// descriptor's read lock, and TryRead never waits anyway.
	if err := t.rc.Control(t.rdFn); err != nil {
		t.rd.buf = nil
		return 0, err
	}
	n, err := t.rd.n, t.rd.err
	t.rd.buf, t.rd.err = nil, nil
	switch {
	case err == unix.EAGAIN:
		return 0, ErrWouldBlock
	case err != nil:
		return 0, &os.PathError{Op: "read", Path: t.f.Name(), Err: err}
	}
	return n, nil
}

// WriteBuffers writes one frame, with its header, gathered from bufs (at
// most MaxBuffers of them) with a single writev(2); see Write. Calls must
// not overlap.
func (t *Tap) WriteBuffers(bufs [][]byte) (int, error) {
	if len(bufs) > MaxBuffers {
		return 0, fmt.Errorf("tap %s: %d buffers in one frame, at most %d", t.name, len(bufs), MaxBuffers)
	}
	w := &t.wr
	w.iov = w.iov[:0]
	for _, b := range bufs {
		if len(b) > 0 {
			w.iov = append(w.iov, iovec(b))
		}
	}
	err := t.rc.Write(t.wrFn)
	n, werr := w.n, w.err
	clear(w.iov) // drop the references to the caller's memory
	w.err = nil
	if err != nil {
		return 0, err
	}
	if werr != nil {
		return 0, &os.PathError{Op: "writev", Path: t.f.Name(), Err: werr}
	}
	return n, nil
}

// iovec returns the struct iovec of b (non-empty). The caller keeps b
// alive until the system call that uses it returns.
func iovec(b []byte) unix.Iovec {
	v := unix.Iovec{Base: &b[0]}
	v.SetLen(len(b))
	return v
}

// MaxBuffers is the most buffers WriteBuffers takes for one frame: a
// header and a frame split over up to 1023 guest buffers (the kernel's
// IOV_MAX is 1024; a virtio-net device limits chains to 257 buffers).
const MaxBuffers = 1024

// Write writes one frame, with its VnetHdrSize-byte header. The kernel
// refuses frames shorter than the header plus an Ethernet header, and
// everything while the interface is down (EIO).
func (t *Tap) Write(p []byte) (int, error) { return t.f.Write(p) }

// SetReadDeadline sets the deadline of pending and future Reads; a time
// in the past interrupts a Read, the zero time blocks again.
func (t *Tap) SetReadDeadline(d time.Time) error { return t.f.SetReadDeadline(d) }

// SetOffload sets what the kernel may hand to Read (TUNSETOFFLOAD; Offload*
// flags). TSO needs OffloadCsum.
func (t *Tap) SetOffload(flags uint) error {
	if flags&^offloadAll != 0 {
		return fmt.Errorf("tap %s: unknown offload flags %#x", t.name, flags&^offloadAll)
	}
	rc, err := t.f.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetInt(int(fd), uint(tunSetOffload), int(flags))
	}); err != nil {
		return err
	}
	if ioErr != nil {
		return fmt.Errorf("tap %s: TUNSETOFFLOAD %#x: %w", t.name, flags, ioErr)
	}
	return nil
}

// Close detaches from the tap (a non-persistent tap disappears). A Read in
// progress returns os.ErrClosed.
func (t *Tap) Close() error { return t.f.Close() }
