package vmm

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"

	"godwit/devices/tap"
	virtionet "godwit/devices/virtio/net"
)

// MaxCPUs is the largest number of vCPUs a VM may have (the MP table's limit).
const MaxCPUs = 16

// SerialConfig says where COM1 goes.
type SerialConfig struct {
	// Mode is "stdio", "file" or "none".
	Mode string
	// Path is the output file for Mode "file".
	Path string
	// Out, when set, replaces Mode: guest output is written to it and
	// nothing is read from the host (used by in-process tools and tests).
	Out io.Writer
}

// ParseSerial parses the --serial flag: stdio, none or file=PATH.
func ParseSerial(s string) (SerialConfig, error) {
	switch {
	case s == "stdio" || s == "none":
		return SerialConfig{Mode: s}, nil
	case strings.HasPrefix(s, "file="):
		p := strings.TrimPrefix(s, "file=")
		if p == "" {
			return SerialConfig{}, errors.New("--serial file= needs a path")
		}
		return SerialConfig{Mode: "file", Path: p}, nil
	}
	return SerialConfig{}, fmt.Errorf("--serial %q: want stdio, none or file=PATH", s)
}

// String returns the flag form of the serial configuration.
func (s SerialConfig) String() string {
	switch {
	case s.Out != nil:
		return "writer"
	case s.Mode == "file":
		return "file=" + s.Path
	}
	return s.Mode
}

// MaxDisks is the largest number of virtio-blk disks a VM may have (each
// takes a PCI slot; bus 0 has 31 besides the host bridge).
const MaxDisks = 16

// DiskConfig is one virtio-blk disk.
type DiskConfig struct {
	// Path is the raw image file (or block device).
	Path string
	// ReadOnly opens the image read-only and tells the guest
	// (VIRTIO_BLK_F_RO).
	ReadOnly bool
}

// ParseDisk parses a --disk flag: path=FILE[,readonly=on|off]. Keys may
// come in any order; the path cannot contain a comma.
func ParseDisk(s string) (DiskConfig, error) {
	var d DiskConfig
	seen := map[string]bool{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || seen[k] {
			return DiskConfig{}, fmt.Errorf("--disk %q: want path=FILE[,readonly=on]", s)
		}
		seen[k] = true
		switch k {
		case "path":
			d.Path = v
		case "readonly":
			switch v {
			case "on", "true", "yes":
				d.ReadOnly = true
			case "off", "false", "no":
				d.ReadOnly = false
			default:
				return DiskConfig{}, fmt.Errorf("--disk %q: readonly=%q, want on or off", s, v)
			}
		default:
			return DiskConfig{}, fmt.Errorf("--disk %q: unknown key %q (want path, readonly)", s, k)
		}
	}
	if d.Path == "" {
		return DiskConfig{}, fmt.Errorf("--disk %q: path=FILE is missing", s)
	}
	return d, nil
}

// String returns the flag form of the disk.
func (d DiskConfig) String() string {
	if d.ReadOnly {
		return "path=" + d.Path + ",readonly=on"
	}
	return "path=" + d.Path
}

// MaxNets is the largest number of virtio-net devices a VM may have.
const MaxNets = 8

// NetConfig is one virtio-net device on a Linux tap.
type NetConfig struct {
	// Tap is the name of the host's tap interface; it is created when
	// absent (and then disappears with the VM).
	Tap string
	// MAC is the guest's address. Zero means a random locally
	// administered unicast address, drawn when the VM is created; it
	// then travels with the VM in a migration.
	MAC [6]byte
}

// ParseNet parses a --net flag: tap=NAME[,mac=MAC]. Keys may come in any
// order; the MAC is six colon-separated hex bytes, unicast.
func ParseNet(s string) (NetConfig, error) {
	var n NetConfig
	seen := map[string]bool{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || seen[k] {
			return NetConfig{}, fmt.Errorf("--net %q: want tap=NAME[,mac=MAC]", s)
		}
		seen[k] = true
		switch k {
		case "tap":
			if err := tap.ValidName(v); err != nil {
				return NetConfig{}, fmt.Errorf("--net %q: %v", s, err)
			}
			n.Tap = v
		case "mac":
			mac, err := parseMAC(v)
			if err != nil {
				return NetConfig{}, fmt.Errorf("--net %q: %v", s, err)
			}
			n.MAC = mac
		default:
			return NetConfig{}, fmt.Errorf("--net %q: unknown key %q (want tap, mac)", s, k)
		}
	}
	if n.Tap == "" {
		return NetConfig{}, fmt.Errorf("--net %q: tap=NAME is missing", s)
	}
	return n, nil
}

// parseMAC parses a unicast, non-zero EUI-48 address written as six
// colon- or dash-separated hex bytes.
func parseMAC(s string) ([6]byte, error) {
	var mac [6]byte
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 || strings.Contains(s, ".") {
		return mac, fmt.Errorf("MAC %q: want six hex bytes like 52:54:00:12:34:56", s)
	}
	copy(mac[:], hw)
	if err := virtionet.CheckMAC(mac); err != nil {
		return mac, err
	}
	return mac, nil
}

// String returns the flag form of the device.
func (n NetConfig) String() string {
	if n.MAC == [6]byte{} {
		return "tap=" + n.Tap
	}
	return "tap=" + n.Tap + ",mac=" + virtionet.FormatMAC(n.MAC)
}

// randomMAC returns a random locally administered unicast MAC address
// (bit 1 of the first byte set, bit 0 clear) different from those in
// taken.
func randomMAC(taken map[[6]byte]bool) [6]byte {
	for {
		var mac [6]byte
		rand.Read(mac[:])
		mac[0] = mac[0]&^1 | 2
		if !taken[mac] && virtionet.CheckMAC(mac) == nil {
			return mac
		}
	}
}

// withMACs returns nets with a random MAC for every device that has none.
func withMACs(nets []NetConfig) []NetConfig {
	out := append([]NetConfig(nil), nets...)
	taken := map[[6]byte]bool{}
	for _, n := range out {
		taken[n.MAC] = true
	}
	for i := range out {
		if out[i].MAC == [6]byte{} {
			out[i].MAC = randomMAC(taken)
			taken[out[i].MAC] = true
		}
	}
	return out
}

// Config is everything needed to create a VM. The CLI fills it from flags.
type Config struct {
	// MemoryBytes is the guest RAM size.
	MemoryBytes uint64
	// CPUs is the number of vCPUs, 1..MaxCPUs.
	CPUs int
	// Kernel is a Linux bzImage path; Initrd and Cmdline go with it.
	Kernel, Initrd, Cmdline string
	// BootSector is a raw boot sector or flat real-mode image path.
	BootSector string
	// GuestArgs are key=value parameters for the embedded test guest, in order.
	GuestArgs []string
	// Serial says where COM1 goes.
	Serial SerialConfig
	// APISocket, when set, is the unix socket the control API listens on.
	APISocket string
	// Log receives the VMM's log; nil means slog.Default().
	Log *slog.Logger
	// RNG adds a virtio entropy device (virtio-rng on PCI) fed from the
	// host's getrandom(2).
	RNG bool
	// Disks are virtio-blk disks over raw images, one PCI function each,
	// added after the entropy device in this order (the guest's vda,
	// vdb, ...).
	Disks []DiskConfig
	// DiskMap, for an incoming VM only, maps the image path of a source
	// disk to the path to open here (`godwit receive --disk-map
	// OLD=NEW`); source paths not in it are opened as they are (shared
	// storage mounted at the same place).
	DiskMap map[string]string
	// StorageDir, for an incoming VM only, is where the images of a
	// storage migration are created, each under its source image's base
	// name (`godwit receive --storage-dir`); DiskMap entries name their
	// images' paths instead.
	StorageDir string
	// Overwrite, for an incoming VM only, lets a storage migration
	// replace existing files (`godwit receive --overwrite`).
	Overwrite bool
	// Nets are virtio-net devices on taps, one PCI function each, added
	// after the disks in this order (the guest's eth0, eth1, ...).
	Nets []NetConfig
	// TapMap, for an incoming VM only, maps the tap name of a source
	// network device to the tap to use here (`godwit receive --tap-map
	// OLD=NEW`); unmapped devices use the source's tap name.
	TapMap map[string]string
	// ACPI gives a Linux guest ACPI tables (FADT, MADT, DSDT with S5 and
	// the PCI host bridge), so that it can power off. Opt-in for now: with
	// ACPI, about one boot in three hangs in the nested test host (open
	// bug); the PM1 block that powers off exists either way.
	ACPI bool
	// MemPrealloc allocates all guest RAM before the guest starts
	// (`--mem-prealloc`, QEMU's -mem-prealloc): slower start, no host
	// allocation on the guest's first touch of each page. Host-side only:
	// a migration does not carry it.
	MemPrealloc bool
	// Incoming means the VM will receive a migrated guest: nothing is
	// loaded and the vCPUs get their state from the migration stream.
	Incoming bool
}

// GuestKind names what the VM boots: "linux", "boot-sector" or "test-guest".
func (c *Config) GuestKind() string {
	switch {
	case c.Kernel != "":
		return "linux"
	case c.BootSector != "":
		return "boot-sector"
	}
	return "test-guest"
}

// Validate checks the configuration without touching the host.
func (c *Config) Validate() error {
	if c.CPUs < 1 || c.CPUs > MaxCPUs {
		return fmt.Errorf("--cpus %d out of range 1..%d", c.CPUs, MaxCPUs)
	}
	if c.Kernel != "" && c.BootSector != "" {
		return errors.New("--kernel and --boot-sector are mutually exclusive")
	}
	if c.Kernel == "" && (c.Initrd != "" || c.Cmdline != "") {
		return errors.New("--initrd and --cmdline need --kernel")
	}
	if c.GuestKind() != "test-guest" && len(c.GuestArgs) > 0 {
		return errors.New("--guest-arg applies only to the embedded test guest (no --kernel or --boot-sector)")
	}
	for _, a := range c.GuestArgs {
		if k, _, ok := strings.Cut(a, "="); !ok || k == "" {
			return fmt.Errorf("--guest-arg %q: want key=value", a)
		}
	}
	if len(c.Disks) > MaxDisks {
		return fmt.Errorf("%d disks, at most %d", len(c.Disks), MaxDisks)
	}
	for i, d := range c.Disks {
		if d.Path == "" {
			return fmt.Errorf("disk %d: no path", i)
		}
	}
	if len(c.DiskMap) > 0 && !c.Incoming {
		return errors.New("a disk map applies only to an incoming VM")
	}
	if (c.StorageDir != "" || c.Overwrite) && !c.Incoming {
		return errors.New("a storage directory and overwriting apply only to an incoming VM")
	}
	if err := checkNets(c.Nets); err != nil {
		return err
	}
	if len(c.TapMap) > 0 && !c.Incoming {
		return errors.New("a tap map applies only to an incoming VM")
	}
	if err := CheckTapMap(c.TapMap); err != nil {
		return err
	}
	if c.Serial.Out == nil {
		if _, err := ParseSerial(c.Serial.String()); err != nil {
			return err
		}
	}
	return nil
}

// CheckTapMap checks the taps of a --tap-map: the local names must be
// valid interface names (the source's names are matched as they are).
func CheckTapMap(m map[string]string) error {
	for old, local := range m {
		if err := tap.ValidName(local); err != nil {
			return fmt.Errorf("--tap-map %s=%s: %v", old, local, err)
		}
	}
	return nil
}

// checkNets validates network devices: their number, tap names (each tap
// once: a tap has one holder) and MACs (unicast, each once).
func checkNets(nets []NetConfig) error {
	if len(nets) > MaxNets {
		return fmt.Errorf("%d network devices, at most %d", len(nets), MaxNets)
	}
	taps := map[string]bool{}
	macs := map[[6]byte]bool{}
	for i, n := range nets {
		if err := tap.ValidName(n.Tap); err != nil {
			return fmt.Errorf("network device %d: %v", i, err)
		}
		if taps[n.Tap] {
			return fmt.Errorf("network device %d: tap %s is used twice", i, n.Tap)
		}
		taps[n.Tap] = true
		if n.MAC == [6]byte{} {
			continue
		}
		if err := virtionet.CheckMAC(n.MAC); err != nil {
			return fmt.Errorf("network device %d: %v", i, err)
		}
		if macs[n.MAC] {
			return fmt.Errorf("network device %d: MAC %s is used twice", i, virtionet.FormatMAC(n.MAC))
		}
		macs[n.MAC] = true
	}
	return nil
}

// cutEq splits a key=value argument.
func cutEq(s string) (key, value string, ok bool) { return strings.Cut(s, "=") }

// DefaultCmdline is the kernel command line used when --kernel is given
// without --cmdline: the console on COM1 and a reboot through the i8042,
// which godwit treats as a clean stop.
const DefaultCmdline = "console=ttyS0 reboot=k panic=1"
