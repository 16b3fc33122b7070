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
// interrupts it (how a device quiesces its receive goroutine).
package tap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/abi/linux"
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

// Tap is an open tap device. Read and Write may be called from different
// goroutines; each call moves one frame.
type Tap struct {
	f          *os.File
	name       string
	persistent bool
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
	return &Tap{f: f, name: name, persistent: flags&iffPersist != 0}, nil
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
