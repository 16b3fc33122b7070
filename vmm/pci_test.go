package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"godwit/devices"
	"godwit/devices/pci"
	"godwit/migrate"
	"godwit/vmm/boot"
	"godwit/vmm/memory"
)

// newPCITestVM builds the device side of a VM (RAM, buses, PCI) without
// KVM, as newVM does before it opens /dev/kvm.
func newPCITestVM(t *testing.T, cfg Config) *VM {
	t.Helper()
	v := &VM{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var err error
	if v.mem, err = memory.New(64 << 20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		v.closeDevices()
		v.mem.Close()
	})
	if err := v.setupPCI(); err != nil {
		t.Fatal(err)
	}
	v.pio, v.mmio = devices.NewBus("pio"), devices.NewBus("mmio")
	if err := v.registerPCI(); err != nil {
		t.Fatal(err)
	}
	return v
}

// cfgRead reads a configuration dword of bus 0 slot through the VM's
// port-I/O bus, as a guest does with configuration mechanism 1.
func cfgRead(t *testing.T, v *VM, slot, reg int) uint32 {
	t.Helper()
	addr := binary.LittleEndian.AppendUint32(nil, 1<<31|uint32(slot)<<11|uint32(reg))
	v.pio.Write(pci.ConfigAddressPort, addr)
	data := make([]byte, 4)
	if !v.pio.Read(pci.ConfigAddressPort+4, data) {
		devices.FillOnes(data)
	}
	return binary.LittleEndian.Uint32(data)
}

func TestPCIWiring(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rng     bool
		devices []string
		// slot1 is the vendor/device dword expected at 00:01.0.
		slot1 uint32
	}{
		{"no devices", false, nil, 0xffffffff},
		{"rng", true, []string{pciDeviceRNG}, 0x1044_1af4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newPCITestVM(t, Config{CPUs: 2, RNG: tc.rng})
			if got := v.cfg.pciDevices(); !slices.Equal(got, tc.devices) {
				t.Fatalf("pciDevices = %q, want %q", got, tc.devices)
			}
			if got := cfgRead(t, v, 1, pci.RegVendorID); got != tc.slot1 {
				t.Fatalf("00:01.0 vendor/device = %#x, want %#x", got, tc.slot1)
			}
			mc := v.mpConfig()
			if mc.CPUs != 2 {
				t.Fatalf("MP table CPUs = %d", mc.CPUs)
			}
			if !tc.rng {
				if v.pci != nil || len(mc.Interrupts) != 0 {
					t.Fatalf("PCI bus %v, MP interrupts %v without PCI devices", v.pci, mc.Interrupts)
				}
				if v.pio.Read(pci.ConfigAddressPort, make([]byte, 4)) {
					t.Fatal("0xCF8 answers without PCI devices")
				}
				return
			}
			// The host bridge answers at 00:00.0 too.
			if got := cfgRead(t, v, 0, pci.RegClassCode&^3) >> 16; got != 0x0600 {
				t.Fatalf("00:00.0 class = %#x, want a host bridge", got)
			}
			// The MP table routes INTA of slot 1 to a PCI GSI (16-23).
			want := []boot.MPInterrupt{boot.PCIInterrupt(1, pci.PinA, v.pci.Routes()[0].GSI)}
			if !slices.Equal(mc.Interrupts, want) || want[0].IOAPICPin < 16 || want[0].IOAPICPin > 23 {
				t.Fatalf("MP interrupts = %+v, want %+v on GSI 16-23", mc.Interrupts, want)
			}
			// BAR 0 is in the window and reaches the transport through
			// the MMIO bus: num_queues of the common configuration.
			bar := uint64(cfgRead(t, v, 1, pci.RegBAR0) &^ 0xf)
			if bar < pci.WindowBase || bar >= pci.WindowEnd {
				t.Fatalf("BAR 0 at %#x, outside the window", bar)
			}
			nq := make([]byte, 2)
			if !v.mmio.Read(bar+0x12, nq) || binary.LittleEndian.Uint16(nq) != 1 {
				t.Fatalf("num_queues through the MMIO bus = %v", nq)
			}
		})
	}
}

func TestPCIStateRoundTrip(t *testing.T) {
	src := newPCITestVM(t, Config{CPUs: 1, RNG: true})
	// The guest selects a configuration register; it must survive.
	cfgRead(t, src, 1, pci.RegCommand)
	sections, err := src.savePCIState()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	byID := map[string]migrate.Section{}
	for _, s := range sections {
		ids = append(ids, s.ID)
		byID[s.ID] = s
		if !src.isPCISection(s.ID) {
			t.Errorf("isPCISection(%q) = false", s.ID)
		}
	}
	if want := []string{"pci", "dev/virtio-rng0"}; !slices.Equal(ids, want) {
		t.Fatalf("sections %q, want %q", ids, want)
	}

	for _, tc := range []struct {
		name   string
		mutate func(map[string]migrate.Section)
		want   string // error substring; "" for success
	}{
		{"intact", func(map[string]migrate.Section) {}, ""},
		{"bus missing", func(m map[string]migrate.Section) { delete(m, "pci") }, "section pci missing"},
		{"device missing", func(m map[string]migrate.Section) { delete(m, "dev/virtio-rng0") }, "dev/virtio-rng0 missing"},
		{"device version", func(m map[string]migrate.Section) {
			s := m["dev/virtio-rng0"]
			s.Version = 9
			m[s.ID] = s
		}, "version 9"},
		{"device truncated", func(m map[string]migrate.Section) {
			s := m["dev/virtio-rng0"]
			s.Data = s.Data[:len(s.Data)/2]
			m[s.ID] = s
		}, "restoring virtio-rng0"},
		{"bus garbage", func(m map[string]migrate.Section) {
			s := m["pci"]
			s.Data = []byte{1}
			m[s.ID] = s
		}, "restoring the PCI bus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := make(map[string]migrate.Section, len(byID))
			for k, s := range byID {
				s.Data = slices.Clone(s.Data)
				m[k] = s
			}
			tc.mutate(m)
			dst := newPCITestVM(t, Config{CPUs: 1, RNG: true})
			err := dst.checkPCISections(m)
			if err == nil {
				err = dst.restorePCIState(m)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errState)):
				t.Fatalf("error %v, want one with %q wrapping errState", err, tc.want)
			}
			if tc.want != "" {
				return
			}
			checkSavesSame(t, dst, sections)
		})
	}
}

func TestMigrationDeviceList(t *testing.T) {
	const disk = `{"path":"/a.img","sectors":8}`
	for _, tc := range []struct {
		name    string
		devices string // JSON value of "devices", "" to leave it out
		disks   string // JSON value of "disks", "" to leave it out
		rng     bool
		wantErr string
	}{
		{"none", "", "", false, ""},
		{"empty", "[]", "", false, ""},
		{"rng", `["virtio-rng"]`, "", true, ""},
		{"unknown", `["virtio-gpu"]`, "", false, "unknown PCI device"},
		{"twice", `["virtio-rng","virtio-rng"]`, "", false, "would add"},
		{"rng and disks", `["virtio-rng","virtio-blk","virtio-blk"]`, "[" + disk + "," + disk + "]", true, ""},
		{"disks only", `["virtio-blk"]`, "[" + disk + "]", false, ""},
		{"disk before rng", `["virtio-blk","virtio-rng"]`, "[" + disk + "]", false, "would add"},
		{"disk without a device", `["virtio-rng"]`, "[" + disk + "]", false, "1 disks"},
		{"device without a disk", `["virtio-blk"]`, "", false, "0 disks"},
		{"disk without a path", `["virtio-blk"]`, `[{"sectors":8}]`, false, "no path"},
		{"unknown disk field", `["virtio-blk"]`, `[{"path":"/a","sectors":8,"cache":"none"}]`, false, "unknown field"},
		{"too many disks", `[` + strings.Repeat(`"virtio-blk",`, MaxDisks) + `"virtio-blk"]`, "[" + strings.Repeat(disk+",", MaxDisks) + disk + "]", false, "supports up to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var extra string
			if tc.devices != "" {
				extra += `,"devices":` + tc.devices
			}
			if tc.disks != "" {
				extra += `,"disks":` + tc.disks
			}
			mc, ok := parseTestConfig(t, extra, tc.wantErr)
			if !ok {
				return
			}
			var cfg Config
			disks, err := incomingDisks(mc.Disks, nil)
			if err != nil {
				t.Fatal(err)
			}
			configDevices(&cfg, mc.Devices, disks, nil)
			if cfg.RNG != tc.rng {
				t.Fatalf("RNG = %v, want %v", cfg.RNG, tc.rng)
			}
			if got, want := fmt.Sprint(cfg.pciDevices()), fmt.Sprint(mc.Devices); got != want {
				t.Fatalf("destination adds %s, source had %s", got, want)
			}
		})
	}
}
