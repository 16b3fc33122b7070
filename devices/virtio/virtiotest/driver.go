package virtiotest

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"godwit/devices/pci"
	"godwit/devices/virtio"
)

// Common configuration offsets (virtio 1.2 §4.1.4.3).
const (
	CommonDevFeatSel   = 0x00
	CommonDevFeat      = 0x04
	CommonDrvFeatSel   = 0x08
	CommonDrvFeat      = 0x0c
	CommonConfigVector = 0x10
	CommonNumQueues    = 0x12
	CommonStatus       = 0x14
	CommonConfigGen    = 0x15
	CommonQueueSel     = 0x16
	CommonQueueSize    = 0x18
	CommonQueueVector  = 0x1a
	CommonQueueEnable  = 0x1c
	CommonQueueNotify  = 0x1e
	CommonQueueDesc    = 0x20
	CommonQueueDriver  = 0x28
	CommonQueueDevice  = 0x30
)

// Descriptor flags (§2.7.5).
const (
	DescNext     = 1
	DescWrite    = 2
	DescIndirect = 4
)

// MSI-X message the driver programs for vector v: Data is MSIBaseData+v.
const (
	MSIAddr     = 0xfee0_0000
	MSIBaseData = 0x30
)

// Driver is a guest virtio-pci driver in Go. It finds the virtio
// capabilities by walking the capability list through ports 0xCF8/0xCFC,
// and reaches the structures through the MMIO window, as Linux's
// virtio_pci_modern does. Guest memory it writes is written through the
// untracked host mapping, like a guest's own stores.
type Driver struct {
	T testing.TB
	M *Machine

	// BAR0 is the base of BAR 0; Common, Notify, ISR and DeviceCfg are
	// the structure addresses found through the capabilities.
	BAR0                           uint64
	Common, Notify, ISR, DeviceCfg uint64
	NotifyMult                     uint32
	MSIXCap                        int
	alloc                          uint64
}

// NewDriver probes the device in m.
func NewDriver(t testing.TB, m *Machine) *Driver {
	t.Helper()
	d := &Driver{T: t, M: m, alloc: 1 << 20}
	if id := d.Cfg32(0); id>>16 < 0x1040 || id&0xffff != 0x1af4 {
		t.Fatalf("not a modern virtio device: %#x", id)
	}
	d.BAR0 = uint64(d.Cfg32(pci.RegBAR0) &^ 0xf)
	ptr := int(d.Cfg32(pci.RegCapPointer) & 0xff)
	for n := 0; ptr != 0 && n < 48; n++ {
		hdr := d.Cfg32(ptr)
		switch hdr & 0xff {
		case pci.CapIDVendor:
			typ := hdr >> 24
			bar := d.Cfg32(ptr+4) & 0xff
			off := uint64(d.Cfg32(ptr + 8))
			if bar != 0 {
				t.Fatalf("capability type %d in BAR %d", typ, bar)
			}
			switch typ {
			case 1:
				d.Common = d.BAR0 + off
			case 2:
				d.Notify = d.BAR0 + off
				d.NotifyMult = d.Cfg32(ptr + 16)
			case 3:
				d.ISR = d.BAR0 + off
			case 4:
				d.DeviceCfg = d.BAR0 + off
			}
		case pci.CapIDMSIX:
			d.MSIXCap = ptr
		}
		ptr = int(hdr >> 8 & 0xff)
	}
	if d.Common == 0 || d.Notify == 0 || d.ISR == 0 || d.MSIXCap == 0 {
		t.Fatalf("missing capabilities: common %#x notify %#x isr %#x msix %#x", d.Common, d.Notify, d.ISR, d.MSIXCap)
	}
	return d
}

// Cfg32 reads a configuration dword of the device.
func (d *Driver) Cfg32(reg int) uint32 {
	io := d.M.Bus.ConfigIO()
	io.Write(0, binary.LittleEndian.AppendUint32(nil, 0x8000_0000|uint32(d.M.Slot)<<11|uint32(reg&0xfc)))
	var b [4]byte
	io.Read(4, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// CfgWrite writes configuration bytes of the device.
func (d *Driver) CfgWrite(reg int, data []byte) {
	io := d.M.Bus.ConfigIO()
	io.Write(0, binary.LittleEndian.AppendUint32(nil, 0x8000_0000|uint32(d.M.Slot)<<11|uint32(reg&0xfc)))
	io.Write(4+uint64(reg&3), data)
}

// Read reads n (1, 2, 4 or 8) bytes of MMIO at gpa.
func (d *Driver) Read(gpa uint64, n int) uint64 {
	b := make([]byte, 8)
	d.M.Bus.MMIO().Read(gpa-pci.WindowBase, b[:n])
	return binary.LittleEndian.Uint64(b)
}

// Write writes the low n bytes of v to MMIO at gpa.
func (d *Driver) Write(gpa uint64, n int, v uint64) {
	b := binary.LittleEndian.AppendUint64(nil, v)
	d.M.Bus.MMIO().Write(gpa-pci.WindowBase, b[:n])
}

// Status reads device_status.
func (d *Driver) Status() uint8 { return uint8(d.Read(d.Common+CommonStatus, 1)) }

// SetStatus writes device_status.
func (d *Driver) SetStatus(s uint8) { d.Write(d.Common+CommonStatus, 1, uint64(s)) }

// Negotiate resets the device and runs §3.1.1 steps 1-6, accepting the
// offered features in want; it returns the accepted set.
func (d *Driver) Negotiate(want uint64) (uint64, error) {
	d.SetStatus(0)
	if s := d.Status(); s != 0 {
		return 0, fmt.Errorf("status %#x after reset", s)
	}
	d.SetStatus(virtio.StatusAcknowledge)
	d.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver)
	var offered uint64
	for sel := uint64(0); sel < 2; sel++ {
		d.Write(d.Common+CommonDevFeatSel, 4, sel)
		offered |= d.Read(d.Common+CommonDevFeat, 4) << (32 * sel)
	}
	acked := offered & want
	for sel := uint64(0); sel < 2; sel++ {
		d.Write(d.Common+CommonDrvFeatSel, 4, sel)
		d.Write(d.Common+CommonDrvFeat, 4, acked>>(32*sel)&0xffffffff)
	}
	d.SetStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK)
	if d.Status()&virtio.StatusFeaturesOK == 0 {
		return acked, fmt.Errorf("device refused features %#x", acked)
	}
	return acked, nil
}

// EnableMSIX programs table entry v with MSIAddr / MSIBaseData+v for each
// of vectors entries, unmasks them and enables MSI-X.
func (d *Driver) EnableMSIX(vectors int) {
	table := d.BAR0 + uint64(d.Cfg32(d.MSIXCap+4)&^7)
	for v := 0; v < vectors; v++ {
		e := table + uint64(v)*16
		d.Write(e, 4, MSIAddr)
		d.Write(e+4, 4, 0)
		d.Write(e+8, 4, uint64(MSIBaseData+v))
		d.Write(e+12, 4, 0)
	}
	d.CfgWrite(d.MSIXCap+2, []byte{0, 0x80})
}

// Alloc returns n bytes of zeroed guest RAM aligned to align (a power of
// two), from a bump allocator starting at 1 MiB.
func (d *Driver) Alloc(n, align uint64) uint64 {
	a := (d.alloc + align - 1) &^ (align - 1)
	if a+n > RAMSize {
		d.T.Fatalf("test driver out of guest RAM")
	}
	d.alloc = a + n
	clear(d.Mem(a, n))
	return a
}

// Mem returns guest RAM [gpa, gpa+n) through the host mapping, as the
// guest sees it (writes are not marked dirty, like a guest's).
func (d *Driver) Mem(gpa, n uint64) []byte {
	return d.M.Mem.RegionHost(0)[gpa : gpa+n]
}

// Queue is a split virtqueue as the driver sets it up.
type Queue struct {
	D                  *Driver
	Index              int
	Size               uint16
	Desc, Avail, Used  uint64
	AvailIdx, LastUsed uint16
	nextDesc           uint16 // next free descriptor for Post
}

// SetupQueue configures queue i with size entries and MSI-X vector
// (virtio.NoVector for none), allocating the rings, and enables it.
func (d *Driver) SetupQueue(i int, size uint16, vector uint16) *Queue {
	q := &Queue{D: d, Index: i, Size: size}
	n := uint64(size)
	q.Desc = d.Alloc(16*n, 16)
	q.Avail = d.Alloc(6+2*n, 2)
	q.Used = d.Alloc(6+8*n, 4)
	c := d.Common
	d.Write(c+CommonQueueSel, 2, uint64(i))
	if max := d.Read(c+CommonQueueSize, 2); max < n {
		d.T.Fatalf("queue %d: maximum size %d < %d", i, max, n)
	}
	d.Write(c+CommonQueueSize, 2, n)
	d.Write(c+CommonQueueVector, 2, uint64(vector))
	d.Write(c+CommonQueueDesc, 4, q.Desc&0xffffffff) // 64-bit fields as two dwords
	d.Write(c+CommonQueueDesc+4, 4, q.Desc>>32)
	d.Write(c+CommonQueueDriver, 8, q.Avail)
	d.Write(c+CommonQueueDevice, 8, q.Used)
	d.Write(c+CommonQueueEnable, 2, 1)
	return q
}

// DriverOK sets DRIVER_OK.
func (d *Driver) DriverOK() {
	d.SetStatus(d.Status() | virtio.StatusDriverOK)
}

// SetDesc writes descriptor i of the queue's table.
func (q *Queue) SetDesc(i uint16, addr uint64, length uint32, flags, next uint16) {
	WriteDesc(q.D.Mem(q.Desc+16*uint64(i), 16), addr, length, flags, next)
}

// WriteDesc encodes a descriptor into b (16 bytes).
func WriteDesc(b []byte, addr uint64, length uint32, flags, next uint16) {
	binary.LittleEndian.PutUint64(b, addr)
	binary.LittleEndian.PutUint32(b[8:], length)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

// Publish makes head available (§2.7.13.2-3): ring entry, then idx. Like
// Linux with callbacks enabled it also asks for an interrupt on the next
// used entry (used_event = last seen used idx, §2.7.10).
func (q *Queue) Publish(head uint16) {
	q.SetUsedEvent(q.LastUsed)
	binary.LittleEndian.PutUint16(q.D.Mem(q.Avail+4+2*uint64(q.AvailIdx%q.Size), 2), head)
	q.AvailIdx++
	binary.LittleEndian.PutUint16(q.D.Mem(q.Avail+2, 2), q.AvailIdx)
}

// SetAvailIdx writes the available index directly (hostile tests).
func (q *Queue) SetAvailIdx(idx uint16) {
	q.AvailIdx = idx
	binary.LittleEndian.PutUint16(q.D.Mem(q.Avail+2, 2), idx)
}

// SetAvailFlags writes the available ring flags.
func (q *Queue) SetAvailFlags(f uint16) {
	binary.LittleEndian.PutUint16(q.D.Mem(q.Avail, 2), f)
}

// SetUsedEvent writes used_event (VIRTIO_F_EVENT_IDX).
func (q *Queue) SetUsedEvent(v uint16) {
	binary.LittleEndian.PutUint16(q.D.Mem(q.Avail+4+2*uint64(q.Size), 2), v)
}

// AvailEvent reads avail_event (VIRTIO_F_EVENT_IDX).
func (q *Queue) AvailEvent() uint16 {
	return binary.LittleEndian.Uint16(q.D.Mem(q.Used+4+8*uint64(q.Size), 2))
}

// Kick notifies the queue through its notify register.
func (q *Queue) Kick() {
	q.D.Write(q.D.Notify+uint64(q.Index)*uint64(q.D.NotifyMult), 2, uint64(q.Index))
}

// UsedElem is one used ring entry.
type UsedElem struct {
	ID, Len uint32
}

// UsedIdx reads the used index.
func (q *Queue) UsedIdx() uint16 {
	return binary.LittleEndian.Uint16(q.D.Mem(q.Used+2, 2))
}

// TakeUsed returns the used entries published since the last call.
func (q *Queue) TakeUsed() []UsedElem {
	var out []UsedElem
	for idx := q.UsedIdx(); q.LastUsed != idx; q.LastUsed++ {
		b := q.D.Mem(q.Used+4+8*uint64(q.LastUsed%q.Size), 8)
		out = append(out, UsedElem{binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:])})
	}
	return out
}

// driverFence orders the test driver's used_event store before its
// re-read of the used index, as the virtio_mb of a guest driver does (an
// atomic read-modify-write is a locked instruction on amd64).
var driverFence atomic.Uint64

// WaitUsed returns once q has n more used entries, waiting for the MSI-X
// message of vector whenever there are too few, after asking for one with
// used_event and re-reading the used index, as Linux's driver re-enables
// callbacks (§2.7.10; without it a device with VIRTIO_F_EVENT_IDX sends
// no further interrupt). It fails the test after WaitTimeout without an
// interrupt. It returns the entries.
func (d *Driver) WaitUsed(q *Queue, n, vector int) []UsedElem {
	d.T.Helper()
	return collectUsed(q, n, func() { d.WaitMSI(vector) })
}

// collectUsed takes q's used entries until it has n, calling wait for an
// interrupt whenever there are too few after re-arming used_event and
// re-reading the used index (the driver side of §2.7.10).
func collectUsed(q *Queue, n int, wait func()) []UsedElem {
	var got []UsedElem
	for {
		got = append(got, q.TakeUsed()...)
		if len(got) >= n {
			return got
		}
		q.SetUsedEvent(q.LastUsed)
		driverFence.Add(1)
		if q.UsedIdx() != q.LastUsed {
			continue
		}
		wait()
	}
}

// WaitMSI waits for an MSI-X message with data MSIBaseData+vector,
// discarding others; it fails the test after WaitTimeout.
func (d *Driver) WaitMSI(vector int) {
	d.T.Helper()
	deadline := time.NewTimer(WaitTimeout)
	defer deadline.Stop()
	for {
		select {
		case m := <-d.M.MSI.C:
			if m.Addr == MSIAddr && m.Data == uint32(MSIBaseData+vector) {
				return
			}
		case <-deadline.C:
			d.T.Fatalf("no MSI-X message for vector %d within %v", vector, WaitTimeout)
		}
	}
}

// WaitINTx waits until the INTx line goes high; it fails the test after
// WaitTimeout.
func (d *Driver) WaitINTx() {
	d.T.Helper()
	deadline := time.NewTimer(WaitTimeout)
	defer deadline.Stop()
	for {
		select {
		case high := <-d.M.INTx.C:
			if high {
				return
			}
		case <-deadline.C:
			d.T.Fatalf("INTx not asserted within %v", WaitTimeout)
		}
	}
}

// WaitStatus waits until device_status has all bits of mask, polling
// after each interrupt (the device signals a configuration change when it
// sets DEVICE_NEEDS_RESET, §2.1.2).
func (d *Driver) WaitStatus(mask uint8, configVector int) {
	d.T.Helper()
	if d.Status()&mask == mask {
		return
	}
	d.WaitMSI(configVector)
	if s := d.Status(); s&mask != mask {
		d.T.Fatalf("status %#x after the configuration interrupt, want bits %#x", s, mask)
	}
}
