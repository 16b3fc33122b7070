package vmm

import (
	"encoding/binary"
	"testing"
	"time"

	"godwit/devices/virtio"
	"godwit/migrate"
	"godwit/vmm/kvm"
)

// chanMSIKVM is an msiKVM without routing that hands every KVM_SIGNAL_MSI
// to a channel, standing in for the irqchip.
type chanMSIKVM struct{ c chan kvm.MSI }

func (f chanMSIKVM) SetGSIRouting([]kvm.IRQRoutingEntry) error { return nil }
func (f chanMSIKVM) IRQFD(int, uint32, uint32, int) error      { return nil }
func (f chanMSIKVM) SignalMSI(m kvm.MSI) (bool, error)         { f.c <- m; return true, nil }
func (f chanMSIKVM) wait(t *testing.T, what string) kvm.MSI {
	t.Helper()
	select {
	case m := <-f.c:
		return m
	case <-time.After(10 * time.Second): // a deadline, not a delay
		t.Fatalf("%s: no MSI", what)
	}
	return kvm.MSI{}
}

// Guest-physical layout of the hand-built receive-like queue.
const (
	inDesc   = 0x100000
	inAvail  = 0x101000
	inUsed   = 0x102000
	inBuffer = 0x103000
	inSize   = 16
	inVector = 1
	inMSIMsg = 0x41
)

// activeRNGState returns the source's PCI sections with its virtio-rng
// device made active as a driver would have left it: MSI-X on (queue 0 on
// vector inVector), VERSION_1 and DRIVER_OK, queue 0 enabled at the
// layout above with nothing taken yet.
func activeRNGState(t *testing.T) map[string]migrate.Section {
	t.Helper()
	src := newPCITestVM(t, Config{CPUs: 1, RNG: true})
	m := src.pciDevs[0].t.MSIX()
	entry := make([]byte, 16)
	binary.LittleEndian.PutUint32(entry[0:], 0xfee00000)
	binary.LittleEndian.PutUint32(entry[8:], inMSIMsg)
	m.WriteBAR(0x4000+16*inVector, entry) // unmasked (vector control 0)
	m.WriteCap(2, []byte{0, 0x80})        // message control: MSI-X enable
	sections, err := src.savePCIState()
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]migrate.Section{}
	for _, s := range sections {
		byID[s.ID] = s
	}
	dev := byID[sectionDevPrefix+"virtio-rng0"]
	var ts virtio.TransportState
	if err := ts.UnmarshalBinary(dev.Data); err != nil {
		t.Fatal(err)
	}
	ts.Status = virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK | virtio.StatusDriverOK
	ts.DriverFeatures = virtio.FeatureVersion1
	ts.Queues[0] = virtio.QueueState{Size: inSize, Ready: true, Vector: inVector, Desc: inDesc, Driver: inAvail, Device: inUsed}
	if dev.Data, err = ts.MarshalBinary(); err != nil {
		t.Fatal(err)
	}
	byID[dev.ID] = dev
	return byID
}

// TestIncomingDevicesWaitForStart is the regression test of a lost
// network after a migration: a destination restores its devices before
// the irqchips and LAPICs, so a device that ran from its RestoreState on
// (processing a buffer the driver had posted, or a frame already queued
// on the destination's tap) signalled an MSI that KVM_SET_LAPIC then
// wiped out; with VIRTIO_F_EVENT_IDX the device never signals that queue
// again and a Linux guest's receive queue stops for good. Here the
// restored device has a buffer posted and not taken: an incoming VM must
// neither take it nor interrupt before Start, and must do both after.
func TestIncomingDevicesWaitForStart(t *testing.T) {
	byID := activeRNGState(t)
	dst := newPCITestVM(t, Config{CPUs: 1, RNG: true, Incoming: true})
	sink := chanMSIKVM{c: make(chan kvm.MSI, 8)}
	dst.msi = newMSIRoutes(sink, false, quietLog())
	// The driver's buffer: one device-writable descriptor, made
	// available (avail idx 1), not taken.
	desc := make([]byte, 16)
	binary.LittleEndian.PutUint64(desc[0:], inBuffer)
	binary.LittleEndian.PutUint32(desc[8:], 64)
	binary.LittleEndian.PutUint16(desc[12:], 2) // VIRTQ_DESC_F_WRITE
	if err := dst.mem.Write(inDesc, desc); err != nil {
		t.Fatal(err)
	}
	if err := dst.mem.Write(inAvail, []byte{0, 0, 1, 0, 0, 0}); err != nil { // flags, idx 1, ring[0] = 0
		t.Fatal(err)
	}

	if err := dst.checkPCISections(byID); err != nil {
		t.Fatal(err)
	}
	if err := dst.restorePCIState(byID); err != nil {
		t.Fatal(err)
	}
	// The rest of RestoreState (irqchips, vCPUs) would run now: the
	// device must be held.
	info := dst.pciDevs[0].t.Inspect()
	if !info.Activated || !info.Paused {
		t.Fatalf("after restoring the PCI state: activated %v, paused %v; want an activated device held paused until Start", info.Activated, info.Paused)
	}
	if used, err := dst.mem.ReadUint16(inUsed + 2); err != nil || used != 0 {
		t.Fatalf("used idx %d (%v) before Start, want 0", used, err)
	}

	if err := dst.startIncomingDevices(); err != nil {
		t.Fatal(err)
	}
	msi := sink.wait(t, "after Start")
	if msi.AddressLo != 0xfee00000 || msi.AddressHi != 0 || msi.Data != inMSIMsg {
		t.Errorf("MSI %#x:%#x/%#x, want 0xfee00000/%#x", msi.AddressHi, msi.AddressLo, msi.Data, inMSIMsg)
	}
	if used, err := dst.mem.ReadUint16(inUsed + 2); err != nil || used != 1 {
		t.Errorf("used idx %d (%v) after Start, want 1", used, err)
	}
	if info := dst.pciDevs[0].t.Inspect(); info.Paused {
		t.Error("still paused after Start")
	}
}
