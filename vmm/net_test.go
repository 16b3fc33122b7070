package vmm

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"godwit/devices/pci"
	"godwit/devices/tap"
	virtionet "godwit/devices/virtio/net"
)

func TestParseNet(t *testing.T) {
	mac := [6]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	checkParse(t, "ParseNet", ParseNet, []parseCase[NetConfig]{
		{"tap=tap0", NetConfig{Tap: "tap0"}, ""},
		{"tap=tap0,mac=52:54:00:12:34:56", NetConfig{Tap: "tap0", MAC: mac}, ""},
		{"mac=52-54-00-12-34-56,tap=t", NetConfig{Tap: "t", MAC: mac}, ""},
		{"tap=tap0,mac=02:00:00:00:00:01", NetConfig{Tap: "tap0", MAC: [6]byte{2, 0, 0, 0, 0, 1}}, ""},
		{"", NetConfig{}, "want tap=NAME"},
		{"tap0", NetConfig{}, "want tap=NAME"},
		{"tap=", NetConfig{}, "empty interface name"},
		{"mac=52:54:00:12:34:56", NetConfig{}, "tap=NAME is missing"},
		{"tap=a,tap=b", NetConfig{}, "want tap=NAME"},
		{"tap=a,model=virtio", NetConfig{}, "unknown key"},
		{"tap=a/b", NetConfig{}, "interface name"},
		{"tap=averyveryverylongname", NetConfig{}, "longer than 15"},
		{"tap=a,mac=01:00:5e:00:00:01", NetConfig{}, "multicast"},
		{"tap=a,mac=00:00:00:00:00:00", NetConfig{}, "is zero"},
		{"tap=a,mac=52:54:00:12:34", NetConfig{}, "six hex bytes"},
		{"tap=a,mac=0000.5e00.5301", NetConfig{}, "six hex bytes"},
		{"tap=a,mac=00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", NetConfig{}, "six hex bytes"},
	})
}

func TestValidateNets(t *testing.T) {
	m1, m2 := [6]byte{2, 0, 0, 0, 0, 1}, [6]byte{2, 0, 0, 0, 0, 2}
	checkValidate(t, []validateCase{
		{"none", func(c *Config) {}, ""},
		{"two", func(c *Config) { c.Nets = []NetConfig{{Tap: "a", MAC: m1}, {Tap: "b"}} }, ""},
		{"too many", func(c *Config) {
			for i := 0; i <= MaxNets; i++ {
				c.Nets = append(c.Nets, NetConfig{Tap: fmt.Sprintf("t%d", i)})
			}
		}, "at most"},
		{"tap twice", func(c *Config) { c.Nets = []NetConfig{{Tap: "a"}, {Tap: "a"}} }, "used twice"},
		{"MAC twice", func(c *Config) { c.Nets = []NetConfig{{Tap: "a", MAC: m2}, {Tap: "b", MAC: m2}} }, "used twice"},
		{"bad tap", func(c *Config) { c.Nets = []NetConfig{{Tap: ""}} }, "empty"},
		{"multicast MAC", func(c *Config) { c.Nets = []NetConfig{{Tap: "a", MAC: [6]byte{1}}} }, "multicast"},
		{"tap map on a new VM", func(c *Config) { c.TapMap = map[string]string{"a": "b"} }, "only to an incoming VM"},
		{"tap map", func(c *Config) { c.Incoming = true; c.TapMap = map[string]string{"a": "b"} }, ""},
		{"tap map bad name", func(c *Config) { c.Incoming = true; c.TapMap = map[string]string{"a": "b c"} }, "interface name"},
	})
}

func TestWithMACs(t *testing.T) {
	fixed := [6]byte{0x52, 0x54, 0, 1, 2, 3}
	in := []NetConfig{{Tap: "a"}, {Tap: "b", MAC: fixed}, {Tap: "c"}}
	out := withMACs(in)
	if in[0].MAC != ([6]byte{}) {
		t.Fatal("withMACs changed its argument")
	}
	if out[1].MAC != fixed {
		t.Errorf("a given MAC changed to %s", virtionet.FormatMAC(out[1].MAC))
	}
	seen := map[[6]byte]bool{}
	for i, n := range out {
		if n.Tap != in[i].Tap {
			t.Errorf("tap %d changed", i)
		}
		if n.MAC[0]&1 != 0 || n.MAC[0]&2 == 0 && n.MAC != fixed {
			t.Errorf("MAC %s is not a locally administered unicast address", virtionet.FormatMAC(n.MAC))
		}
		if seen[n.MAC] {
			t.Errorf("MAC %s twice", virtionet.FormatMAC(n.MAC))
		}
		seen[n.MAC] = true
	}
	if err := checkNets(out); err != nil {
		t.Error(err)
	}
	// Two VMs get different addresses.
	if again := withMACs(in); again[0].MAC == out[0].MAC {
		t.Errorf("random MAC %s drawn twice", virtionet.FormatMAC(out[0].MAC))
	}
}

func TestIncomingNets(t *testing.T) {
	src := []MigrationNet{{Tap: "tap0", MAC: "52:54:00:00:00:01"}, {Tap: "tap1", MAC: "52:54:00:00:00:02"}}
	m1, m2 := [6]byte{0x52, 0x54, 0, 0, 0, 1}, [6]byte{0x52, 0x54, 0, 0, 0, 2}
	for _, tc := range []struct {
		name    string
		src     []MigrationNet
		m       map[string]string
		want    []NetConfig
		wantErr string
	}{
		{"no map", src, nil, []NetConfig{{"tap0", m1}, {"tap1", m2}}, ""},
		{"one mapped", src, map[string]string{"tap1": "dst1"}, []NetConfig{{"tap0", m1}, {"dst1", m2}}, ""},
		{"swapped", src, map[string]string{"tap0": "tap1", "tap1": "tap0"}, []NetConfig{{"tap1", m1}, {"tap0", m2}}, ""},
		{"unknown source tap", src, map[string]string{"tap9": "x"}, nil, "no such tap"},
		{"two onto one", src, map[string]string{"tap0": "tap1"}, nil, "used twice"},
		{"bad MAC", []MigrationNet{{Tap: "tap0", MAC: "ff:ff:ff:ff:ff:ff"}}, nil, nil, "multicast"},
		{"bad source tap", []MigrationNet{{Tap: "a b", MAC: "52:54:00:00:00:01"}}, nil, nil, "interface name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := incomingNets(tc.src, tc.m)
			checkList(t, "incomingNets", got, err, tc.want, tc.wantErr)
		})
	}
}

func TestMigrationConfigNets(t *testing.T) {
	const n0 = `{"tap":"tap0","mac":"52:54:00:00:00:01"}`
	const n1 = `{"tap":"tap1","mac":"52:54:00:00:00:02"}`
	for _, tc := range []struct {
		name    string
		devices string
		nets    string
		wantErr string
	}{
		{"one", `["virtio-net"]`, "[" + n0 + "]", ""},
		{"rng and two", `["virtio-rng","virtio-net","virtio-net"]`, "[" + n0 + "," + n1 + "]", ""},
		{"device without a tap", `["virtio-net"]`, "", "0 network devices"},
		{"tap without a device", `["virtio-rng"]`, "[" + n0 + "]", "1 network devices"},
		{"net before rng", `["virtio-net","virtio-rng"]`, "[" + n0 + "]", "would add"},
		{"bad MAC", `["virtio-net"]`, `[{"tap":"tap0","mac":"nope"}]`, "six hex bytes"},
		{"no MAC", `["virtio-net"]`, `[{"tap":"tap0"}]`, "six hex bytes"},
		{"tap twice", `["virtio-net","virtio-net"]`, "[" + n0 + "," + n0 + "]", "used twice"},
		{"unknown field", `["virtio-net"]`, `[{"tap":"tap0","mac":"52:54:00:00:00:01","model":"e1000"}]`, "unknown field"},
		{"too many", `[` + strings.Repeat(`"virtio-net",`, MaxNets) + `"virtio-net"]`, "[" + strings.Repeat(n0+",", MaxNets) + n0 + "]", "supports up to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			extra := `,"devices":` + tc.devices
			if tc.nets != "" {
				extra += `,"nets":` + tc.nets
			}
			mc, ok := parseTestConfig(t, extra, tc.wantErr)
			if !ok {
				return
			}
			nets, err := incomingNets(mc.Nets, nil)
			if err != nil {
				t.Fatal(err)
			}
			var cfg Config
			configDevices(&cfg, mc.Devices, nil, nets)
			if got, want := fmt.Sprint(cfg.pciDevices()), fmt.Sprint(mc.Devices); got != want {
				t.Fatalf("destination adds %s, source had %s", got, want)
			}
		})
	}
}

// openableTap skips the test unless this process can create taps.
func openableTap(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("gwv%d", os.Getpid()%1000000)
	tp, err := tap.Open(name)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) {
			t.Skipf("cannot create a tap here: %v", err)
		}
		t.Fatal(err)
	}
	tp.Close()
	return name
}

// TestPCIWiringNets builds the PCI bus with a network device on a real
// tap (skipped where taps cannot be created).
func TestPCIWiringNets(t *testing.T) {
	name := openableTap(t)
	cfg := Config{CPUs: 1, RNG: true, Nets: withMACs([]NetConfig{{Tap: name}})}
	v := newPCITestVM(t, cfg)
	if got, want := v.cfg.pciDevices(), []string{pciDeviceRNG, pciDeviceNet}; !slices.Equal(got, want) {
		t.Fatalf("pciDevices = %q, want %q", got, want)
	}
	if got := cfgRead(t, v, 2, pci.RegVendorID); got != 0x1041_1af4 {
		t.Errorf("00:02.0 vendor/device = %#x, want virtio-net", got)
	}
	if got := cfgRead(t, v, 2, pci.RegClassCode&^3) >> 8; got != 0x020000 {
		t.Errorf("network class %#x", got)
	}
	nics := v.NICs()
	if len(nics) != 1 || nics[0].MAC() != cfg.Nets[0].MAC {
		t.Fatalf("NICs %v", nics)
	}
	// The tap is held: another VM cannot take it.
	if tp, err := tap.Open(name); !errors.Is(err, tap.ErrBusy) {
		if err == nil {
			tp.Close()
		}
		t.Errorf("opening the VM's tap again: %v, want ErrBusy", err)
	}
	want := []MigrationNet{{Tap: name, MAC: virtionet.FormatMAC(cfg.Nets[0].MAC)}}
	if got := v.migrationNets(); !slices.Equal(got, want) {
		t.Errorf("migrationNets = %+v, want %+v", got, want)
	}
	mc := roundTripConfig(t, MigrationConfig{MemoryBytes: 64 << 20, CPUs: 1, Guest: "linux", Devices: v.cfg.pciDevices(), Nets: v.migrationNets()})
	if nets, err := incomingNets(mc.Nets, nil); err != nil || nets[0] != cfg.Nets[0] {
		t.Errorf("the destination would build %+v (%v), want %+v", nets, err, cfg.Nets[0])
	}
	// Device state round trip, as a migration moves it.
	sections, err := v.savePCIState()
	if err != nil {
		t.Fatal(err)
	}
	if len(sections) != 3 || sections[2].ID != "dev/virtio-net0" {
		t.Fatalf("sections %v", sections)
	}
	closeTwice(t, v)
	// Closed, the tap is free again.
	tp, err := tap.Open(name)
	if err != nil {
		t.Fatalf("tap after closeDevices: %v", err)
	}
	tp.Close()
}

func TestSetupPCINetErrors(t *testing.T) {
	name := openableTap(t)
	holder, err := tap.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	err = setupPCIError(t, Config{CPUs: 1, Nets: withMACs([]NetConfig{{Tap: name}})})
	if !errors.Is(err, tap.ErrBusy) || !strings.Contains(err.Error(), "virtio-net0: tap "+name) {
		t.Fatalf("setupPCI on a busy tap = %v", err)
	}
}
