package harness

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
)

// HostModules are the modules the nested host loads (dependencies are added
// by ResolveModules): the KVM stack for an AMD SVM CPU (TCG's -cpu max
// offers SVM with nested paging), tun/bridge for guest networking tests,
// and veth for the fault tests' link to a network namespace.
var HostModules = []string{"kvm_amd", "tun", "bridge", "veth"}

// GuestModules are the modules a Linux guest booted by godwit loads: the
// Debian kernel has virtio as modules and finds devices through PCI.
var GuestModules = []string{"virtio_pci", "virtio_blk", "virtio_net", "virtio_rng"}

// ModuleName normalises a module name or file name ("kvm-amd.ko") to the
// kernel's spelling ("kvm_amd").
func ModuleName(s string) string {
	s = filepath.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// ResolveModules orders wanted modules and their dependencies so that every
// module comes after the modules it depends on (the order insmod needs). deps
// returns a module's direct dependencies. Each module appears once; the
// relative order of wanted modules is kept where dependencies allow.
func ResolveModules(wanted []string, deps func(name string) ([]string, error)) ([]string, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var order []string
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		name = ModuleName(name)
		switch state[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(chain, " -> "), name)
		}
		state[name] = visiting
		ds, err := deps(name)
		if err != nil {
			return err
		}
		for _, d := range ds {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = done
		order = append(order, name)
		return nil
	}
	for _, w := range wanted {
		if err := visit(w, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// ParseModinfo parses the content of a module's .modinfo ELF section: a run
// of NUL-terminated "key=value" strings. Repeated keys keep the first value.
func ParseModinfo(data []byte) map[string]string {
	m := map[string]string{}
	for _, f := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(f), "=")
		if !ok || k == "" {
			continue
		}
		if _, seen := m[k]; !seen {
			m[k] = v
		}
	}
	return m
}

// SplitDepends splits a modinfo "depends" value ("kvm,ccp") into names.
func SplitDepends(v string) []string {
	var out []string
	for _, d := range strings.Split(v, ",") {
		if d = strings.TrimSpace(d); d != "" {
			out = append(out, ModuleName(d))
		}
	}
	return out
}

// ModuleDepends reads the "depends" list from an uncompressed .ko file.
func ModuleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("no .modinfo section")
	}
	data, err := s.Data()
	if err != nil {
		return nil, err
	}
	return SplitDepends(ParseModinfo(data)["depends"]), nil
}

// IndexModules walks a kernel module tree (lib/modules/<release>/kernel) and
// maps each module name to its path relative to root.
func IndexModules(root string) (map[string]string, error) {
	idx := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.Contains(d.Name(), ".ko") {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		idx[ModuleName(d.Name())] = rel
		return nil
	})
	return idx, err
}
