package vmm

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"godwit/devices/pci"
	"godwit/devices/virtio"
)

// TestGuestMisprogramsBARs plays a guest that misprograms the BARs of two
// virtio devices (an entropy device in the lower slot, a disk) through
// configuration cycles on the VM's port-I/O bus, exactly as vCPU exits
// reach it: BARs that overlap (also while the device that wins the
// overlap stops decoding), land over RAM, are sized with all-ones writes
// and are swapped. At every step the queue notification
// ioeventfds follow the PCI decode (one registration per address, for the
// device the MMIO path routes it to, none outside the PCI window), MMIO
// writes into an overlap never reach the device that lost it, and once
// the BARs are back everything is as it was.
func TestGuestMisprogramsBARs(t *testing.T) {
	img := image(t, t.TempDir(), "disk.img", 1<<20)
	v := newPCITestVM(t, Config{CPUs: 1, RNG: true, Disks: []DiskConfig{{Path: img}}})
	k := newFakeIOEventFDs()
	if err := v.notify.attach(k); err != nil {
		t.Fatal(err)
	}
	rng, disk := v.pciDevs[0], v.pciDevs[1]
	if rng.slot >= disk.slot {
		t.Fatalf("slots %d, %d: the entropy device should come first", rng.slot, disk.slot)
	}
	a, _ := transportBAR0(rng.t)
	b, _ := transportBAR0(disk.t)
	nr, nd := rng.t.Device().NumQueues(), disk.t.Device().NumQueues()
	// expect checks the registrations: the addresses of each device's
	// queues at the base given (none for a device with ok false).
	expect := func(step string, ra uint64, rok bool, db uint64, dok bool) {
		t.Helper()
		var want []uint64
		if rok {
			want = append(want, notifyAddrs(ra, nr)...)
		}
		if dok {
			for _, addr := range notifyAddrs(db, nd) {
				if !rok || !slices.Contains(notifyAddrs(ra, nr), addr) {
					want = append(want, addr)
				}
			}
		}
		slices.Sort(want)
		if got := k.addrs(); !slices.Equal(got, want) {
			t.Fatalf("%s: ioeventfds at %#x, want %#x", step, got, want)
		}
		for _, addr := range k.addrs() {
			if addr < pci.WindowBase || addr >= pci.WindowEnd {
				t.Fatalf("%s: an ioeventfd at %#x, outside the PCI window", step, addr)
			}
		}
	}
	expect("start", a, true, b, true)
	diskState, err := disk.t.SaveState()
	if err != nil {
		t.Fatal(err)
	}

	// The disk's BAR over the entropy device's: the lower slot keeps the
	// address, for MMIO and for notifications alike.
	cfgWrite(t, v, int(disk.slot), pci.RegBAR0, uint32(a))
	expect("overlap", a, true, a, true)
	for off := uint64(0); off < 0x4000; off += 4 {
		v.mmio.Write(a+off, []byte{0xff, 0xff, 0xff, 0xff}) // hits the entropy device only
	}
	// The disk's registers (its configuration state apart) are as they
	// were: the writes did not reach it.
	now, err := disk.t.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if !sameExceptPCI(t, diskState, now) {
		t.Fatal("MMIO writes into the overlap changed the disk that lost it")
	}

	// The entropy device stops decoding: the address is the disk's now,
	// for MMIO and notifications alike; and back.
	cmd := cfgRead(t, v, int(rng.slot), pci.RegCommand) & 0xffff
	cfgWrite(t, v, int(rng.slot), pci.RegCommand, cmd&^pci.CommandMemory)
	expect("entropy device off", 0, false, a, true)
	cfgWrite(t, v, int(rng.slot), pci.RegCommand, cmd)
	expect("entropy device on", a, true, a, true)

	// Swapped: each device gets the other's old place.
	cfgWrite(t, v, int(rng.slot), pci.RegBAR0, uint32(b))
	expect("swapped", b, true, a, true)

	// The entropy device's BAR over RAM: not decoded, no ioeventfd.
	cfgWrite(t, v, int(rng.slot), pci.RegBAR0, 0x100000)
	expect("over RAM", 0, false, a, true)
	if got := cfgRead(t, v, int(rng.slot), pci.RegBAR0) &^ 0xf; got != 0x100000 {
		t.Fatalf("BAR 0 reads %#x", got)
	}

	// Sizing: all ones reads back the size mask; the BAR then sits at the
	// top of the 32-bit space, outside the window.
	cfgWrite(t, v, int(disk.slot), pci.RegBAR0, 0xffffffff)
	if got := cfgRead(t, v, int(disk.slot), pci.RegBAR0); got&^0xf != ^uint32(0x8000-1) {
		t.Fatalf("sizing BAR 0 reads %#x", got)
	}
	expect("sized", 0, false, 0, false)
	if v.mmio.Read(0xffff_8000, make([]byte, 4)) {
		t.Fatal("an access at the sized BAR reached a device")
	}

	// Back home: as at the start.
	cfgWrite(t, v, int(rng.slot), pci.RegBAR0, uint32(a))
	cfgWrite(t, v, int(disk.slot), pci.RegBAR0, uint32(b))
	expect("home", a, true, b, true)
	for _, d := range v.pciDevs {
		st, err := d.t.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		if err := d.t.RestoreState(st); err != nil {
			t.Fatalf("%s refuses its own state: %v", d.name, err)
		}
	}
}

// sameExceptPCI compares two transport states apart from their PCI
// configuration state (which holds the BAR the guest moved).
func sameExceptPCI(t *testing.T, a, b []byte) bool {
	t.Helper()
	var sa, sb virtio.TransportState
	if err := sa.UnmarshalBinary(a); err != nil {
		t.Fatal(err)
	}
	if err := sb.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	sa.PCIConfig, sb.PCIConfig = nil, nil
	ea, _ := sa.MarshalBinary()
	eb, _ := sb.MarshalBinary()
	return bytes.Equal(ea, eb)
}

// TestGuestHammersPorts: every port of the port-I/O space, read and
// written at every width by a guest, except the ones that stop the VM
// (reset, power off), neither panics nor reaches a device it does not
// address; unhandled accesses are counted. The MMIO hole around the PCI
// window likewise.
func TestGuestHammersPorts(t *testing.T) {
	v := newPCITestVM(t, Config{CPUs: 1, RNG: true})
	rng := v.pciDevs[0]
	before, err := rng.t.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	var misses uint64
	for port := uint64(0); port < 0x10000; port++ {
		if port >= pci.ConfigAddressPort && port < pci.ConfigAddressPort+8 {
			continue // configuration cycles: TestGuestMisprogramsBARs
		}
		for _, n := range []int{1, 2, 4} {
			data := bytes.Repeat([]byte{0xa5}, n)
			if !v.pio.Write(port, data) {
				misses++
			}
			if !v.pio.Read(port, data) {
				misses++
				if !bytes.Equal(data, bytes.Repeat([]byte{0xff}, n)) {
					t.Fatalf("unhandled read of port %#x gave % x", port, data)
				}
			}
		}
	}
	r, w := v.pio.Unhandled()
	if r+w != misses || misses == 0 {
		t.Fatalf("%d+%d unhandled accesses counted, %d made", r, w, misses)
	}
	// MMIO below and above the window, and between BARs inside it.
	base, _ := transportBAR0(rng.t)
	for _, addr := range []uint64{pci.WindowBase - 4, base + 0x10000, pci.WindowEnd, 0xfec0_0000} {
		v.mmio.Write(addr, []byte{1, 2, 3, 4})
		v.mmio.Read(addr, make([]byte, 8))
	}
	after, err := rng.t.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("hammering unhandled ports and MMIO changed the entropy device")
	}
	binary.LittleEndian.Uint32(after) // keep the import honest
}
