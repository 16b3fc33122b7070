package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// debianDeps mirrors the modinfo "depends" of Debian 6.1's modules.
var debianDeps = map[string][]string{
	"irqbypass": nil, "ccp": nil, "kvm": {"irqbypass"}, "kvm_amd": {"kvm", "ccp"},
	"tun": nil, "llc": nil, "stp": {"llc"}, "bridge": {"llc", "stp"}, "veth": nil,
	"virtio_ring": nil, "virtio": {"virtio_ring"}, "virtio_pci_legacy_dev": nil,
	"virtio_pci_modern_dev": nil,
	"virtio_pci":            {"virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio"},
	"virtio_blk":            {"virtio", "virtio_ring"}, "failover": nil, "net_failover": {"failover"},
	"virtio_net": {"virtio_ring", "virtio", "net_failover"}, "virtio_rng": {"virtio", "virtio_ring"},
	"loop_a": {"loop_b"}, "loop_b": {"loop_a"},
}

func fakeDeps(name string) ([]string, error) {
	d, ok := debianDeps[name]
	if !ok {
		return nil, fmt.Errorf("module %s not found", name)
	}
	return d, nil
}

func TestResolveModules(t *testing.T) {
	tests := []struct {
		name    string
		wanted  []string
		want    []string
		wantErr bool
	}{
		{"host", HostModules, []string{"irqbypass", "kvm", "ccp", "kvm_amd", "tun", "llc", "stp", "bridge", "veth"}, false},
		{"guest", GuestModules, []string{"virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio",
			"virtio_pci", "virtio_blk", "failover", "net_failover", "virtio_net", "virtio_rng"}, false},
		{"dash spelling and duplicates", []string{"kvm-amd", "kvm", "kvm_amd"}, []string{"irqbypass", "kvm", "ccp", "kvm_amd"}, false},
		{"missing module", []string{"nosuch"}, nil, true},
		{"cycle", []string{"loop_a"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveModules(tt.wanted, fakeDeps)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("order %v, want %v", got, tt.want)
			}
			// Every module must come after its dependencies.
			pos := map[string]int{}
			for i, m := range got {
				pos[m] = i
			}
			for _, m := range got {
				for _, d := range debianDeps[m] {
					if pos[d] >= pos[m] {
						t.Errorf("%s loaded before its dependency %s", m, d)
					}
				}
			}
		})
	}
}

func TestModuleName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"kvm-amd.ko", "kvm_amd"},
		{"/lib/modules/6.1/kernel/drivers/char/hw_random/virtio-rng.ko.xz", "virtio_rng"},
		{"bridge.ko.zst", "bridge"},
		{"kvm_amd", "kvm_amd"},
	}
	for _, tt := range tests {
		if got := ModuleName(tt.in); got != tt.want {
			t.Errorf("ModuleName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseModinfo(t *testing.T) {
	tests := []struct {
		name string
		data string
		deps []string
		lic  string
	}{
		{"deps", "license=GPL\x00depends=kvm,ccp\x00retpoline=Y\x00", []string{"kvm", "ccp"}, "GPL"},
		{"no deps", "depends=\x00license=GPL v2\x00", nil, "GPL v2"},
		{"dash names, junk", "\x00\x00junk\x00depends=virtio-ring, virtio\x00", []string{"virtio_ring", "virtio"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ParseModinfo([]byte(tt.data))
			if got := SplitDepends(m["depends"]); !reflect.DeepEqual(got, tt.deps) {
				t.Errorf("depends %v, want %v", got, tt.deps)
			}
			if m["license"] != tt.lic {
				t.Errorf("license %q, want %q", m["license"], tt.lic)
			}
		})
	}
}

func TestIndexModules(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"arch/x86/kvm/kvm-amd.ko":                 "kvm_amd",
		"drivers/char/hw_random/virtio-rng.ko.xz": "virtio_rng",
		"net/bridge/bridge.ko":                    "bridge",
		"net/bridge/README":                       "",
	}
	for rel := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := IndexModules(root)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for rel, name := range files {
		if name != "" {
			want[name] = rel
		}
	}
	if !reflect.DeepEqual(idx, want) {
		t.Errorf("index %v, want %v", idx, want)
	}
}

func TestModuleDependsRejectsNonELF(t *testing.T) {
	if _, err := ModuleDepends([]byte("not an ELF file")); err == nil {
		t.Error("want an error for non-ELF input")
	}
}
