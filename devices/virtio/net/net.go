// Package net is the virtio network device (virtio 1.2 §5.1) over a Linux
// tap (devices/tap): one receive queue (0), one transmit queue (1) and a
// control queue (2), features VIRTIO_F_VERSION_1 (the transport's),
// VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS (the link is always up),
// VIRTIO_NET_F_CSUM and VIRTIO_NET_F_GUEST_CSUM (partial checksums pass
// through the tap), the TCP segmentation offloads (HOST_ and GUEST_TSO4,
// TSO6 and ECN), VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_CTRL_VQ and
// VIRTIO_NET_F_GUEST_ANNOUNCE.
//
// The tap is opened with a 12-byte virtio-net header (struct
// virtio_net_hdr_v1), the header every VERSION_1 device puts before a
// packet, so packets cross with their header. Transmit copies and checks
// the header (against the negotiated features) and writes it and the
// frame to the tap with one writev straight from guest memory. Receive
// runs on the transport's worker: while the driver has buffers it reads
// frames from the tap (nonblocking) into one buffer and copies each into
// the driver's receive buffers with memory.Write (which marks the VMM
// dirty bitmap), fixing up the header (num_buffers, and flags the driver
// did not negotiate), many frames per wake-up. When the tap is empty the
// receive goroutine, parked on the tap in the Go poller, is armed: it
// reads the next frame into a small backlog and kicks the receive queue,
// and the worker takes over again (rx.go). A frame waits in the backlog
// until the driver posts buffers; while the driver has none, frames wait
// in the tap's kernel queue.
//
// Everything from the guest is untrusted: a transmit chain without a
// whole header, a receive chain whose buffers cannot hold a header, or a
// control request without class, command and ack byte breaks the queue
// (virtio.ErrQueueBroken: the transport sets DEVICE_NEEDS_RESET); a
// well-framed packet the device cannot send (GSO, flags not negotiated, a
// checksum position outside the frame, too short or too long) is dropped
// and counted.
//
// Pause stops the receive goroutine (a read in progress is interrupted
// through the tap's read deadline; the worker is stopped already); a frame
// read before stays in the backlog, delivered after Resume or saved with
// the device state and delivered by the migration destination. Frames that arrive while paused
// wait in the tap's kernel queue. The saved state is the MAC, the
// configuration status and the backlog.
//
// After a migration the VMM calls Announce on the destination: it sends a
// few RARP frames with the guest's MAC from the host side of the tap (so
// that switches and bridges learn the new port at once) and, if the
// driver negotiated VIRTIO_NET_F_GUEST_ANNOUNCE, sets VIRTIO_NET_S_ANNOUNCE
// and sends a configuration interrupt so that the guest announces itself
// (gratuitous ARP, IPv6 neighbour advertisements); the driver acknowledges
// with VIRTIO_NET_CTRL_ANNOUNCE_ACK on the control queue, which clears the
// bit (§5.1.6.5.4).
package net

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"godwit/devices/tap"
	"godwit/devices/virtio"
)

// Device limits.
const (
	// QueueSize is the maximum size of every queue.
	QueueSize = 256
	// MaxBacklogFrames and MaxBacklogBytes bound the frames read from
	// the tap and not yet in guest buffers, and so the saved state. The
	// device itself keeps at most two there (see rx.go): while the
	// driver has no buffers frames wait in the tap's own queue (the host
	// kernel's, which holds a thousand): backpressure rather than drops,
	// which would cost TCP a retransmission each. A restored backlog may
	// be fuller.
	MaxBacklogFrames = 128
	MaxBacklogBytes  = 1 << 20
)

// Backend is the host side of a Device: a tap opened with IFF_VNET_HDR
// and a tap.VnetHdrSize-byte header (*tap.Tap), or a fake in tests. Each
// read and write moves one header and frame.
type Backend interface {
	// ReadWhen blocks until ready reports true (it is asked again
	// after every readiness event of the backend) and a frame arrives,
	// the read deadline passes (an error) or the backend is closed (an
	// error); see tap.Tap.ReadWhen.
	ReadWhen(p []byte, ready func() bool) (int, error)
	// TryRead reads a frame if one is queued and otherwise returns an
	// error wrapping tap.ErrWouldBlock at once. Calls do not overlap
	// each other (the worker makes them).
	TryRead(p []byte) (int, error)
	Write(p []byte) (int, error)
	// WriteBuffers writes one frame gathered from bufs (at most
	// tap.MaxBuffers). Calls do not overlap each other (the worker
	// makes them).
	WriteBuffers(bufs [][]byte) (int, error)
	// SetReadDeadline interrupts Read when the time is in the past;
	// the zero time turns the deadline off.
	SetReadDeadline(t time.Time) error
	// SetOffload sets the tap.Offload* flags of what Read may return.
	SetOffload(flags uint) error
	Close() error
}

var _ Backend = (*tap.Tap)(nil)

// The tap's header is the device's: packets cross unchanged (a compile
// error if the sizes ever differ).
var (
	_ [hdrSize - tap.VnetHdrSize]struct{}
	_ [tap.VnetHdrSize - hdrSize]struct{}
)

// Stats are a device's counters since it was created.
type Stats struct {
	// RxFrames and RxBytes count frames (without header) delivered to
	// the driver.
	RxFrames, RxBytes uint64
	// RxDropped counts frames from the tap dropped because the backlog
	// was full (only a restored backlog can leave too little room).
	RxDropped uint64
	// RxInvalid counts frames from the tap the driver cannot take:
	// shorter than an Ethernet header, GSO of a kind it did not
	// negotiate, a partial checksum without VIRTIO_NET_F_GUEST_CSUM, or larger than all the buffers it can
	// post.
	RxInvalid uint64
	// RxErrors counts failed tap reads (the receive goroutine stops at
	// the first one that is not a deadline).
	RxErrors uint64
	// TxFrames and TxBytes count frames written to the tap.
	TxFrames, TxBytes uint64
	// TxDropped counts transmit packets dropped for their header or
	// size.
	TxDropped uint64
	// TxErrors counts failed tap writes (e.g. EIO while the tap is down).
	TxErrors uint64
	// Announcements counts RARP frames sent by Announce.
	Announcements uint64
}

// counters are the atomic form of Stats.
type counters struct {
	rxFrames, rxBytes, rxDropped, rxInvalid, rxErrors atomic.Uint64
	txFrames, txBytes, txDropped, txErrors            atomic.Uint64
	announcements                                     atomic.Uint64
}

// Options configure a network device.
type Options struct {
	// MAC is the address the device reports (VIRTIO_NET_F_MAC) and
	// announces. It must be a unicast address other than zero.
	MAC [6]byte
}

// CheckMAC refuses what cannot be a device's address: the zero address
// and multicast addresses (bit 0 of the first byte).
func CheckMAC(mac [6]byte) error {
	if mac == [6]byte{} {
		return fmt.Errorf("MAC address 00:00:00:00:00:00 is zero")
	}
	if mac[0]&1 != 0 {
		return fmt.Errorf("MAC address %s is multicast", FormatMAC(mac))
	}
	return nil
}

// FormatMAC returns mac as six colon-separated hex bytes.
func FormatMAC(mac [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5])
}

// announceDelays are the waits before each RARP frame Announce sends:
// five frames over 0.8 s, as QEMU's self-announce does by default
// (50 ms, then 100 ms longer each round).
var announceDelays = []time.Duration{0, 50 * time.Millisecond, 150 * time.Millisecond, 250 * time.Millisecond, 350 * time.Millisecond}

// Device is a virtio network device over a Backend.
type Device struct {
	tap    Backend
	mac    [6]byte
	stats  counters
	delays []time.Duration // announceDelays, shorter in tests

	mu        sync.Mutex
	features  uint64
	queues    []*virtio.Queue
	host      virtio.Host
	active    bool
	paused    bool
	closed    bool
	status    uint16   // configuration status
	backlog   [][]byte // header and frame, oldest first
	backlogSz int
	reader    *reader    // the receive goroutine, when running
	announcer *announcer // the RARP goroutine, when running
	// onFrame, when set, runs after the receive goroutine handled a
	// frame it read: queued or dropped (tests).
	onFrame func()

	// Worker only: the receive read buffer, the transmit chain, header
	// copy and gather list, the receive chains and used lengths of a
	// frame (chains reused with virtio.Queue.PopInto).
	rxBuf    []byte
	txChain  virtio.Chain
	txHdr    [hdrSize]byte
	txBufs   [][]byte
	rxChains []virtio.Chain
	rxUsed   []uint32
}

var (
	_ virtio.Device     = (*Device)(nil)
	_ virtio.PCIClasser = (*Device)(nil)
	_ io.Closer         = (*Device)(nil)
)

// New returns a network device over b, which it owns from now on (Close
// closes it).
func New(b Backend, opts Options) (*Device, error) {
	if b == nil {
		return nil, fmt.Errorf("virtio-net: no backend")
	}
	if err := CheckMAC(opts.MAC); err != nil {
		return nil, fmt.Errorf("virtio-net: %w", err)
	}
	d := &Device{tap: b, mac: opts.MAC, delays: announceDelays, status: StatusLinkUp}
	return d, nil
}

// Counters implements virtio.Counterer: Stats, the backlog and whether
// the receive goroutine runs.
func (d *Device) Counters() map[string]uint64 {
	s := d.Stats()
	d.mu.Lock()
	backlog, backlogBytes, reading := len(d.backlog), d.backlogSz, d.reader != nil
	d.mu.Unlock()
	b2u := func(b bool) uint64 {
		if b {
			return 1
		}
		return 0
	}
	return map[string]uint64{
		"rx_frames": s.RxFrames, "rx_bytes": s.RxBytes, "rx_dropped": s.RxDropped,
		"rx_invalid": s.RxInvalid, "rx_errors": s.RxErrors,
		"tx_frames": s.TxFrames, "tx_bytes": s.TxBytes, "tx_dropped": s.TxDropped, "tx_errors": s.TxErrors,
		"announcements":  s.Announcements,
		"backlog_frames": uint64(backlog), "backlog_bytes": uint64(backlogBytes), "reader_running": b2u(reading),
	}
}

// MAC returns the device's MAC address.
func (d *Device) MAC() [6]byte { return d.mac }

// Stats returns the device's counters.
func (d *Device) Stats() Stats {
	c := &d.stats
	return Stats{
		RxFrames: c.rxFrames.Load(), RxBytes: c.rxBytes.Load(), RxDropped: c.rxDropped.Load(),
		RxInvalid: c.rxInvalid.Load(), RxErrors: c.rxErrors.Load(),
		TxFrames: c.txFrames.Load(), TxBytes: c.txBytes.Load(), TxDropped: c.txDropped.Load(),
		TxErrors: c.txErrors.Load(), Announcements: c.announcements.Load(),
	}
}

// DeviceType implements virtio.Device.
func (d *Device) DeviceType() uint16 { return virtio.DeviceNet }

// PCIClass implements virtio.PCIClasser: an Ethernet controller.
func (d *Device) PCIClass() uint32 { return pciClassEthernet }

// Features implements virtio.Device (§5.1.3).
func (d *Device) Features() uint64 { return offeredFeatures }

// NumQueues implements virtio.Device: receiveq1, transmitq1, controlq
// (§5.1.2; no VIRTIO_NET_F_MQ).
func (d *Device) NumQueues() int { return numQueues }

// MaxQueueSize implements virtio.Device.
func (d *Device) MaxQueueSize() uint16 { return QueueSize }

// ConfigSize implements virtio.Device: struct virtio_net_config (§5.1.4).
func (d *Device) ConfigSize() int { return configSize }

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(off uint64, data []byte) {
	var c [configSize]byte
	copy(c[cfgMAC:], d.mac[:])
	d.mu.Lock()
	binary.LittleEndian.PutUint16(c[cfgStatus:], d.status)
	d.mu.Unlock()
	binary.LittleEndian.PutUint16(c[cfgMaxVQPairs:], 1)
	copy(data, c[off:])
}

// WriteConfig implements virtio.Device: the configuration is read-only
// for a VERSION_1 driver (§5.1.4.2: the driver MUST NOT write mac).
func (d *Device) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device: the tap's offloads follow the
// driver's VIRTIO_NET_F_GUEST_CSUM and GUEST_TSO* features, and the receive goroutine starts
// unless the device is paused.
func (d *Device) Activate(features uint64, queues []*virtio.Queue, host virtio.Host) error {
	if len(queues) != numQueues {
		return fmt.Errorf("virtio-net: %d queues, want %d", len(queues), numQueues)
	}
	offload := tapOffload(features)
	if err := d.tap.SetOffload(offload); err != nil {
		return fmt.Errorf("virtio-net: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.features, d.queues, d.host, d.active = features, queues, host, true
	if !d.paused && !d.closed {
		d.startReaderLocked()
	}
	return nil
}

// tapOffload returns the tap.Offload* flags for what the driver takes:
// partial checksums with VIRTIO_NET_F_GUEST_CSUM, and with it each TCP
// segmentation offload the driver negotiated.
func tapOffload(features uint64) uint {
	if features&FeatureGuestCsum == 0 {
		return 0
	}
	offload := uint(tap.OffloadCsum)
	if features&FeatureGuestTSO4 != 0 {
		offload |= tap.OffloadTSO4
	}
	if features&FeatureGuestTSO6 != 0 {
		offload |= tap.OffloadTSO6
	}
	if features&FeatureGuestECN != 0 && offload&(tap.OffloadTSO4|tap.OffloadTSO6) != 0 {
		offload |= tap.OffloadTSOECN
	}
	return offload
}

// ProcessQueue implements virtio.Device. It runs on the transport's
// worker goroutine.
func (d *Device) ProcessQueue(i int) error {
	d.mu.Lock()
	if !d.active || i < 0 || i >= len(d.queues) {
		d.mu.Unlock()
		return nil
	}
	q, features, host := d.queues[i], d.features, d.host
	d.mu.Unlock()
	switch i {
	case rxQueue:
		return d.processRx(q, features, host)
	case txQueue:
		return d.processTx(q, features)
	default:
		return d.processCtrl(q, features)
	}
}

// Reset implements virtio.Device: the receive goroutine stops, the
// backlog is dropped (its frames were for the old driver) and the
// configuration status is back to link up.
func (d *Device) Reset() {
	d.stopReader()
	d.mu.Lock()
	d.features, d.queues, d.host, d.active = 0, nil, nil, false
	d.backlog, d.backlogSz = nil, 0
	d.status = StatusLinkUp
	d.mu.Unlock()
}

// Pause implements virtio.Device: the receive and announce goroutines
// stop; the backlog is kept.
func (d *Device) Pause() {
	d.mu.Lock()
	d.paused = true
	d.mu.Unlock()
	d.stopReader()
	d.stopAnnouncer()
}

// Resume implements virtio.Device.
func (d *Device) Resume() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paused = false
	if d.active && !d.closed {
		d.startReaderLocked()
	}
}

// Close stops the device's goroutines and closes the backend. The
// transport must be closed first. Close is idempotent.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	d.stopReader()
	d.stopAnnouncer()
	return d.tap.Close()
}
