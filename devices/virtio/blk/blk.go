// Package blk is the virtio block device (virtio 1.2 §5.2) over a raw
// image file: one request queue, requests IN, OUT, FLUSH and GET_ID
// (everything else is answered VIRTIO_BLK_S_UNSUPP), features
// VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE (512), VIRTIO_BLK_F_FLUSH and,
// for a read-only disk, VIRTIO_BLK_F_RO.
//
// Requests run on the transport's worker goroutine, never on a vCPU
// thread: reads pread(2) from the image straight into guest memory
// obtained with memory.WritableSlice (which marks the VMM dirty bitmap,
// marked again once the bytes landed), writes pwrite(2) from guest memory,
// and FLUSH is fdatasync(2). A driver that does not negotiate
// VIRTIO_BLK_F_FLUSH gets a write-through disk (every write is followed by
// fdatasync before it completes, §5.2.6.2 and Linux's
// virtblk_get_cache_mode).
//
// Guest requests are untrusted: a request whose framing cannot carry a
// status (device-readable header shorter than 16 bytes, no device-writable
// status byte) breaks the queue (virtio.ErrQueueBroken: the transport sets
// DEVICE_NEEDS_RESET); a well-framed request that asks for something
// impossible (sectors beyond the capacity, a length not a multiple of 512
// bytes, data in the wrong direction, a write to a read-only disk, an I/O
// error) completes with VIRTIO_BLK_S_IOERR.
//
// Every successful write also marks the disk's WrittenBlocks bitmap (64 KiB
// granularity), which a storage migration reads and clears to send the
// blocks written since its last pass.
//
// Migration state is the device's configuration (capacity, read-only flag,
// serial); nothing is in flight when it is saved, because requests
// complete synchronously on the worker and the transport's Pause waits for
// the worker. Pause also flushes the image, so a destination sharing the
// storage reads what the source wrote.
package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"godwit/devices/virtio"
)

// Device limits.
const (
	// QueueSize is the maximum size of the request queue.
	QueueSize = 256
	// SegMax is the seg_max the device reports: the most data
	// segments in one request. The header and the status take two more
	// descriptors and a chain (or an indirect table) holds at most the
	// queue size.
	SegMax = QueueSize - 2
)

// pciClassStorageSCSI is the PCI class code virtio-blk devices
// conventionally report (mass storage, SCSI; Linux does not look at it).
const pciClassStorageSCSI = 0x010000

// backend is the storage under a disk: a raw image file (pread, pwrite,
// fdatasync), or a fake in tests.
type backend interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// Sync makes written data durable (fdatasync).
	Sync() error
	Close() error
}

// imageFile is a raw image file. os.File's ReadAt and WriteAt are pread(2)
// and pwrite(2) loops.
type imageFile struct{ *os.File }

// Sync implements backend with fdatasync(2).
func (f imageFile) Sync() error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if !errors.Is(serr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

// Options configure a disk.
type Options struct {
	// ReadOnly opens the image read-only and offers VIRTIO_BLK_F_RO;
	// writes complete with VIRTIO_BLK_S_IOERR.
	ReadOnly bool
	// Serial is the GET_ID answer: at most IDBytes bytes, no NUL.
	Serial string
}

// checkSerial validates a serial string.
func checkSerial(s string) error {
	if len(s) > IDBytes {
		return fmt.Errorf("serial %q longer than %d bytes", s, IDBytes)
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return fmt.Errorf("serial %q contains a NUL byte", s)
		}
	}
	return nil
}

// Disk is a virtio block device backed by a raw image. Its capacity is
// the image size rounded down to whole 512-byte sectors, fixed when the
// image is opened. Several processes may open the same image (a migration
// source and destination on shared storage do); nothing locks it.
type Disk struct {
	img      backend
	path     string
	capacity uint64 // in sectors
	readOnly bool
	written  *WrittenBlocks

	mu           sync.Mutex
	queue        *virtio.Queue
	writeThrough bool
	serial       string
	pauseErr     error

	chain virtio.Chain // the worker's, reused by every request
}

var (
	_ virtio.Device     = (*Disk)(nil)
	_ virtio.PCIClasser = (*Disk)(nil)
	_ io.Closer         = (*Disk)(nil)
	_ backend           = imageFile{}
)

// Open opens the raw image at path as a disk.
func Open(path string, opts Options) (*Disk, error) {
	if err := checkSerial(opts.Serial); err != nil {
		return nil, fmt.Errorf("disk %s: %w", path, err)
	}
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("disk: %w", err)
	}
	if m := st.Mode(); !m.IsRegular() && (m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0) {
		f.Close()
		return nil, fmt.Errorf("disk %s: not a regular file or block device (%v)", path, m.Type())
	}
	// Seeking to the end gives the size of block devices too.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("disk %s: size: %w", path, err)
	}
	d, err := newDisk(imageFile{f}, uint64(size), opts)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("disk %s: %w", path, err)
	}
	d.path = path
	return d, nil
}

// newDisk returns a disk of size bytes over img (the tail beyond the last
// whole sector is not reachable).
func newDisk(img backend, size uint64, opts Options) (*Disk, error) {
	if err := checkSerial(opts.Serial); err != nil {
		return nil, err
	}
	if size > 1<<62 {
		return nil, fmt.Errorf("image of %d bytes is too large", size)
	}
	capacity := size / SectorSize
	return &Disk{
		img:      img,
		capacity: capacity,
		readOnly: opts.ReadOnly,
		serial:   opts.Serial,
		written:  newWrittenBlocks(capacity * SectorSize),
	}, nil
}

// Path returns the image path given to Open.
func (d *Disk) Path() string { return d.path }

// Capacity returns the disk size in 512-byte sectors.
func (d *Disk) Capacity() uint64 { return d.capacity }

// ReadOnly reports whether the disk is read-only.
func (d *Disk) ReadOnly() bool { return d.readOnly }

// Serial returns the GET_ID string (after a restore, the source's).
func (d *Disk) Serial() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.serial
}

// Written returns the disk's written-block bitmap.
func (d *Disk) Written() *WrittenBlocks { return d.written }

// PauseErr returns the error of the last flush Pause made, if it failed.
func (d *Disk) PauseErr() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pauseErr
}

// Close closes the image. The transport must be closed first.
func (d *Disk) Close() error { return d.img.Close() }

// DeviceType implements virtio.Device.
func (d *Disk) DeviceType() uint16 { return virtio.DeviceBlock }

// PCIClass implements virtio.PCIClasser.
func (d *Disk) PCIClass() uint32 { return pciClassStorageSCSI }

// Features implements virtio.Device (§5.2.3).
func (d *Disk) Features() uint64 {
	f := uint64(FeatureSegMax | FeatureBlkSize | FeatureFlush)
	if d.readOnly {
		f |= FeatureRO
	}
	return f
}

// NumQueues implements virtio.Device: one requestq (§5.2.2; no
// VIRTIO_BLK_F_MQ).
func (d *Disk) NumQueues() int { return 1 }

// MaxQueueSize implements virtio.Device.
func (d *Disk) MaxQueueSize() uint16 { return QueueSize }

// ConfigSize implements virtio.Device: struct virtio_blk_config (§5.2.4).
func (d *Disk) ConfigSize() int { return configSize }

// ReadConfig implements virtio.Device. The configuration never changes
// while the device exists.
func (d *Disk) ReadConfig(off uint64, data []byte) {
	var c [configSize]byte
	le := binary.LittleEndian
	le.PutUint64(c[cfgCapacity:], d.capacity)
	le.PutUint32(c[cfgSegMax:], SegMax)
	le.PutUint32(c[cfgBlkSize:], SectorSize)
	copy(data, c[off:])
}

// WriteConfig implements virtio.Device: nothing is writable without
// VIRTIO_BLK_F_CONFIG_WCE.
func (d *Disk) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device.
func (d *Disk) Activate(features uint64, queues []*virtio.Queue, _ virtio.Host) error {
	if len(queues) != 1 {
		return fmt.Errorf("blk: %d queues, want 1", len(queues))
	}
	d.mu.Lock()
	d.queue = queues[0]
	d.writeThrough = features&FeatureFlush == 0
	d.mu.Unlock()
	return nil
}

// ProcessQueue implements virtio.Device: every available request is
// executed and returned. It runs on the transport's worker goroutine.
func (d *Disk) ProcessQueue(i int) error {
	d.mu.Lock()
	q, wt := d.queue, d.writeThrough
	d.mu.Unlock()
	if i != 0 || q == nil {
		return nil
	}
	mem := q.Memory()
	c := &d.chain
	for {
		if ok, err := q.PopInto(c); !ok {
			return err
		}
		used, err := d.serve(mem, c, wt)
		if err != nil {
			return err
		}
		if err := q.PushUsed(c.Head, used); err != nil {
			return err
		}
	}
}

// Reset implements virtio.Device.
func (d *Disk) Reset() {
	d.mu.Lock()
	d.queue = nil
	d.writeThrough = false
	d.mu.Unlock()
}

// Pause implements virtio.Device. Requests complete inside ProcessQueue,
// so once the worker stopped nothing is in flight; Pause then flushes the
// image (a migration destination on shared storage must read what this
// side wrote). A failed flush is kept for PauseErr.
func (d *Disk) Pause() {
	var err error
	if !d.readOnly {
		err = d.img.Sync()
	}
	d.mu.Lock()
	d.pauseErr = err
	d.mu.Unlock()
}

// Resume implements virtio.Device.
func (d *Disk) Resume() {}
