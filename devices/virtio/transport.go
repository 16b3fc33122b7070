package virtio

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"godwit/devices"
	"godwit/devices/pci"
	"godwit/vmm/memory"
)

// Layout of the transport's single 32-bit memory BAR 0. Each structure
// sits in its own 4 KiB page; the MSI-X table and PBA follow (PCI 3.0
// §6.8.2 recommends they not share a page with other registers).
const (
	barIndex      = 0
	barSize       = 0x8000
	commonOffset  = 0x0000
	isrOffset     = 0x1000
	isrLen        = 1
	deviceOffset  = 0x2000
	maxConfigSize = 0x1000
	notifyOffset  = 0x3000
	notifyMult    = 4 // notify_off_multiplier: one dword per queue (§4.1.4.4)
	msixTableOff  = 0x4000
	msixPBAOff    = 0x6000
)

// Transport is the modern virtio-pci transport of one device (virtio 1.2
// §4.1). It is a pci.Function: add it to a pci.Bus, which routes
// configuration cycles and BAR accesses to it. It owns the queues, runs a
// worker goroutine that calls Device.ProcessQueue after the driver
// notifies a queue, and delivers interrupts through MSI-X (or INTx and the
// ISR while the driver has MSI-X disabled, §4.1.5.3-4).
//
// Lock order: Transport.mu → worker shutdown (the worker never takes mu)
// → pci.MSIX.mu / irqMu → pci.ConfigSpace.mu.
type Transport struct {
	mem     *memory.Memory
	dev     Device
	cs      *pci.ConfigSpace
	msix    *pci.MSIX
	offered uint64
	nq      int
	cfgSize uint64

	mu         sync.Mutex
	devFeatSel uint32
	drvFeatSel uint32
	acked      uint64
	status     uint8
	queueSel   uint16
	queues     []*Queue
	activated  bool
	paused     bool
	devPaused  bool // Device.Pause called, Resume owed
	closed     bool
	w          *worker

	// Read by the worker and vCPUs without mu.
	configGen  atomic.Uint32
	configVec  atomic.Uint32
	vectors    []atomic.Uint32
	needsReset atomic.Bool
	pending    []atomic.Bool
	mirrors    []queueMirror // the queues' indices for Inspect
	wait       *waiter       // what the worker sleeps on (wait.go)

	irqMu sync.Mutex
	isr   uint8

	errMu   sync.Mutex
	lastErr error
}

// NewTransport returns the transport for dev over guest memory mem; MSI-X
// messages go to msi.
func NewTransport(dev Device, mem *memory.Memory, msi pci.MSIDelivery) (*Transport, error) {
	if dev == nil || mem == nil {
		return nil, fmt.Errorf("virtio: nil device or memory")
	}
	nq := dev.NumQueues()
	if nq < 1 || nq > maxQueueCount {
		return nil, fmt.Errorf("virtio: %d queues out of range [1, %d]", nq, maxQueueCount)
	}
	if max := dev.MaxQueueSize(); !validSize(max, MaxQueueSize) {
		return nil, fmt.Errorf("virtio: maximum queue size %d is not a power of two ≤ %d", max, MaxQueueSize)
	}
	cfgSize := dev.ConfigSize()
	if cfgSize < 0 || cfgSize > maxConfigSize {
		return nil, fmt.Errorf("virtio: device configuration of %d bytes", cfgSize)
	}
	if f := dev.Features(); f&^DeviceFeatureMask != 0 {
		return nil, fmt.Errorf("virtio: device features %#x outside the device-specific bits", f)
	}
	msix, err := pci.NewMSIX(nq+1, barIndex, msixTableOff, msixPBAOff, msi)
	if err != nil {
		return nil, err
	}
	t := &Transport{
		mem:     mem,
		dev:     dev,
		msix:    msix,
		offered: dev.Features() | transportFeatures,
		nq:      nq,
		cfgSize: uint64(cfgSize),
		vectors: make([]atomic.Uint32, nq),
		pending: make([]atomic.Bool, nq),
		mirrors: make([]queueMirror, nq),
	}
	for i := 0; i < nq; i++ {
		t.queues = append(t.queues, newQueue(mem, dev.MaxQueueSize()))
	}
	t.resetRegsLocked()

	class := uint32(0xff0000)
	if c, ok := dev.(PCIClasser); ok {
		class = c.PCIClass()
	}
	var bars [pci.NumBARs]pci.BAR
	bars[barIndex] = pci.BAR{Kind: pci.BARMem32, Size: barSize}
	caps := []pci.Capability{
		virtioCap(pciCapCommon, commonOffset, commonLen, nil),
		virtioCap(pciCapNotify, notifyOffset, uint32(notifyMult*nq), binary.LittleEndian.AppendUint32(nil, notifyMult)),
		virtioCap(pciCapISR, isrOffset, isrLen, nil),
	}
	if cfgSize > 0 {
		caps = append(caps, virtioCap(pciCapDevice, deviceOffset, uint32(cfgSize), nil))
	}
	caps = append(caps, msix)
	if t.wait, err = newWaiter(nq); err != nil {
		return nil, err
	}
	t.cs, err = pci.NewConfigSpace(pci.Header{
		VendorID:       pciVendor,
		DeviceID:       pciDeviceBase + dev.DeviceType(),
		Revision:       pciRevision,
		Class:          class,
		SubsysVendorID: pciSubsysVendor,
		SubsysID:       pciSubsysID,
		InterruptPin:   pci.PinA,
		BARs:           bars,
	}, caps...)
	if err != nil {
		t.wait.close()
		return nil, err
	}
	return t, nil
}

// virtioCap builds a struct virtio_pci_cap (§4.1.4) for a structure in
// BAR 0; extra follows it (notify_off_multiplier for the notify cap).
func virtioCap(cfgType uint8, offset, length uint32, extra []byte) *pci.StaticCapability {
	body := []byte{byte(16 + len(extra)), cfgType, barIndex, 0, 0, 0}
	body = binary.LittleEndian.AppendUint32(body, offset)
	body = binary.LittleEndian.AppendUint32(body, length)
	return &pci.StaticCapability{ID: pci.CapIDVendor, Body: append(body, extra...)}
}

// Config implements pci.Function.
func (t *Transport) Config() *pci.ConfigSpace { return t.cs }

// MSIX returns the transport's MSI-X capability.
func (t *Transport) MSIX() *pci.MSIX { return t.msix }

// Device returns the device backend.
func (t *Transport) Device() Device { return t.dev }

// ReadBAR implements pci.Function.
func (t *Transport) ReadBAR(bar int, off uint64, data []byte) {
	n := uint64(len(data))
	switch {
	case bar != barIndex:
		devices.FillOnes(data)
	case t.msix.Contains(bar, off, n):
		t.msix.ReadBAR(off, data)
	case off >= commonOffset && off < commonOffset+commonLen:
		t.readCommon(off-commonOffset, data)
	case off == isrOffset:
		clear(data)
		data[0] = t.readISR()
	case off >= deviceOffset && off-deviceOffset < t.cfgSize && n <= t.cfgSize-(off-deviceOffset):
		t.dev.ReadConfig(off-deviceOffset, data)
	default:
		clear(data)
	}
}

// WriteBAR implements pci.Function.
func (t *Transport) WriteBAR(bar int, off uint64, data []byte) {
	n := uint64(len(data))
	switch {
	case bar != barIndex:
	case t.msix.Contains(bar, off, n):
		t.msix.WriteBAR(off, data)
	case off >= commonOffset && off < commonOffset+commonLen:
		t.writeCommon(off-commonOffset, data)
	case off >= notifyOffset && off < notifyOffset+notifyMult*uint64(t.nq):
		// §4.1.5.2: the driver writes the queue index (or notification
		// data); the address alone identifies the queue here.
		t.Notify(int((off - notifyOffset) / notifyMult))
	case off >= deviceOffset && off-deviceOffset < t.cfgSize && n <= t.cfgSize-(off-deviceOffset):
		t.dev.WriteConfig(off-deviceOffset, data)
	}
}

// readISR returns the ISR status and clears it, deasserting INTx
// (§4.1.4.5).
func (t *Transport) readISR() byte {
	t.irqMu.Lock()
	defer t.irqMu.Unlock()
	v := t.isr
	t.isr = 0
	t.cs.SetINTx(false)
	return v
}

// raise sends an interrupt: the MSI-X vector when MSI-X is enabled (none
// for NoVector), otherwise the ISR bit and INTx (§4.1.5.3-4).
func (t *Transport) raise(vector uint16, isrBit uint8) {
	if t.msix.Notify(vector) {
		return
	}
	t.irqMu.Lock()
	t.isr |= isrBit
	t.cs.SetINTx(true)
	t.irqMu.Unlock()
}

// Notify records a driver notification for queue i and wakes the worker.
// The notify region of BAR 0 calls it (the MMIO path, where no ioeventfd
// takes the write), and so does Host.Kick. Safe from any goroutine;
// out-of-range queues are ignored.
func (t *Transport) Notify(i int) {
	if i < 0 || i >= t.nq {
		return
	}
	t.pending[i].Store(true)
	t.wait.signal()
}

// WatchNotifyFD makes the worker wait on fd for queue i's notifications:
// fd is an eventfd that KVM signals when the driver writes the queue's
// notify register (KVM_IOEVENTFD), so a notification wakes the worker
// directly. The transport never reads or closes fd: the caller keeps it
// open until UnwatchNotifyFD (or Close) and may move its KVM registration
// freely. A queue has at most one such eventfd.
func (t *Transport) WatchNotifyFD(i, fd int) error {
	return t.wait.watch(i, fd)
}

// UnwatchNotifyFD undoes WatchNotifyFD(i, fd); call it before closing fd.
func (t *Transport) UnwatchNotifyFD(i, fd int) {
	t.wait.unwatch(i, fd)
}

// NotifyAddress returns the guest-physical address of queue i's notify
// register while BAR 0 is at base, for the VMM's ioeventfd registration
// (a 4-byte write; the value is the queue index or notification data).
func NotifyAddress(base uint64, i int) uint64 {
	return base + notifyOffset + notifyMult*uint64(i)
}

// signalQueue sends queue i's used-buffer notification if the driver
// wants one; worker only.
func (t *Transport) signalQueue(i int) {
	need, err := t.queues[i].NeedsInterrupt()
	if err != nil {
		t.deviceError(err)
		return
	}
	if need {
		t.raise(uint16(t.vectors[i].Load()), isrQueue)
	}
}

// signalConfig bumps config_generation and sends the configuration change
// interrupt (§4.1.4.3, §4.1.5.4).
func (t *Transport) signalConfig() {
	t.configGen.Add(1)
	t.raise(uint16(t.configVec.Load()), isrConfig)
}

// deviceError sets DEVICE_NEEDS_RESET and tells the driver (§2.1.2).
func (t *Transport) deviceError(err error) {
	t.errMu.Lock()
	if t.lastErr == nil {
		t.lastErr = err
	}
	t.errMu.Unlock()
	if !t.needsReset.Swap(true) {
		t.signalConfig()
	}
}

// Err returns the first error that made the device need a reset since the
// last reset, or nil.
func (t *Transport) Err() error {
	t.errMu.Lock()
	defer t.errMu.Unlock()
	return t.lastErr
}

// host is the Host a device gets on activation.
type host struct{ t *Transport }

func (h host) SignalQueue(i int) {
	if i >= 0 && i < h.t.nq {
		h.t.signalQueue(i)
	}
}
func (h host) SignalConfig() { h.t.signalConfig() }
func (h host) Kick(i int)    { h.t.Notify(i) }
