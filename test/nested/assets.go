package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"godwit/test/nested/harness"
)

// formatVersion is part of every cache key: bump it when the layout of the
// generated archives changes in a way the hashed inputs do not capture.
const formatVersion = "godwit-nested-v1"

const busyboxPath = "/bin/busybox"

// assets locates (and builds on demand) everything a nested boot needs.
//
// Cache layout ($GODWIT_CACHE):
//
//	kernel/<pkg>_<version>/kernel.deb              the Debian kernel package
//	kernel/<pkg>_<version>/vmlinuz                 its bzImage (host and guest kernel)
//	kernel/<pkg>_<version>/base-<hash>.cpio        nested host base initramfs
//	kernel/<pkg>_<version>/guest-initrd-<hash>.gz  guest initramfs
//	qemu/qemu-<hash>.cpio                          --with-qemu bundle
//	run-*/                                         per-run initrd (removed after the run)
//
// <hash> covers the init scripts, module lists, busybox and formatVersion;
// a new kernel package version gets a new directory and the old one is
// removed.
type assets struct {
	cache       string
	kernelDir   string
	vmlinuz     string
	baseCPIO    string
	guestInitrd string
	aptUpdated  bool
	extracted   string // temporary dpkg-deb -x of the kernel package, if made
}

func (a *assets) prepare(ctx context.Context, forBoot bool) error {
	if err := os.MkdirAll(a.cache, 0o755); err != nil {
		return err
	}
	pkgs := []string{"busybox-static"}
	if forBoot {
		pkgs = append(pkgs, "qemu-system-x86", "cpio")
	}
	if err := a.ensurePackages(ctx, pkgs); err != nil {
		return err
	}
	defer func() {
		if a.extracted != "" {
			os.RemoveAll(filepath.Dir(a.extracted))
		}
	}()
	if err := a.ensureKernel(ctx); err != nil {
		return err
	}
	return a.ensureImages(ctx)
}

func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (a *assets) aptUpdate(ctx context.Context) error {
	if a.aptUpdated {
		return nil
	}
	logf("apt-get update")
	if _, err := run(ctx, "apt-get", "update"); err != nil {
		return err
	}
	a.aptUpdated = true
	return nil
}

// ensurePackages installs the Debian packages that are not installed yet,
// running apt-get update first only when something is missing.
func (a *assets) ensurePackages(ctx context.Context, pkgs []string) error {
	var missing []string
	for _, p := range pkgs {
		out, err := run(ctx, "dpkg-query", "-W", "-f=${db:Status-Abbrev}", p)
		if err != nil || !strings.HasPrefix(out, "ii") {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("missing packages %s: install them (apt-get install %s) or run as root", missing, strings.Join(missing, " "))
	}
	if err := a.aptUpdate(ctx); err != nil {
		return err
	}
	logf("apt-get install %s", strings.Join(missing, " "))
	_, err := run(ctx, "apt-get", append([]string{"install", "-y", "--no-install-recommends"}, missing...)...)
	return err
}

// kernelPackage resolves the versioned package linux-image-amd64 depends on.
func (a *assets) kernelPackage(ctx context.Context) (pkg, version string, err error) {
	lookup := func() (string, string, error) {
		out, err := run(ctx, "apt-cache", "show", "--no-all-versions", "linux-image-amd64")
		if err != nil {
			return "", "", err
		}
		p, v, ok := harness.ParseKernelPackage(out)
		if !ok {
			return "", "", fmt.Errorf("apt-cache show linux-image-amd64: no linux-image dependency")
		}
		if v != "" {
			return p, v, nil
		}
		out, err = run(ctx, "apt-cache", "show", "--no-all-versions", p)
		if err != nil {
			return "", "", err
		}
		v, ok = harness.ParseAptVersion(out)
		if !ok {
			return "", "", fmt.Errorf("apt-cache show %s: no Version", p)
		}
		return p, v, nil
	}
	pkg, version, err = lookup()
	if err != nil && !a.aptUpdated && os.Geteuid() == 0 {
		if uerr := a.aptUpdate(ctx); uerr != nil {
			return "", "", uerr
		}
		pkg, version, err = lookup()
	}
	return pkg, version, err
}

func (a *assets) ensureKernel(ctx context.Context) error {
	pkg, version, err := a.kernelPackage(ctx)
	if err != nil {
		// Offline: fall back to the newest complete kernel in the cache.
		dirs, _ := filepath.Glob(filepath.Join(a.cache, "kernel", "*", "vmlinuz"))
		if len(dirs) == 0 {
			return err
		}
		sort.Strings(dirs)
		a.kernelDir = filepath.Dir(dirs[len(dirs)-1])
		a.vmlinuz = dirs[len(dirs)-1]
		logf("warning: %v; using cached kernel %s", err, filepath.Base(a.kernelDir))
		return nil
	}
	key := pkg + "_" + strings.ReplaceAll(version, ":", "%3a")
	a.kernelDir = filepath.Join(a.cache, "kernel", key)
	a.vmlinuz = filepath.Join(a.kernelDir, "vmlinuz")
	if fileExists(a.vmlinuz) {
		return nil
	}
	if err := os.MkdirAll(a.kernelDir, 0o755); err != nil {
		return err
	}
	deb := filepath.Join(a.kernelDir, "kernel.deb")
	if !fileExists(deb) {
		err := a.download(ctx, pkg, version, deb)
		if err != nil && !a.aptUpdated && os.Geteuid() == 0 {
			// Stale package lists point at files the mirror no longer has.
			if uerr := a.aptUpdate(ctx); uerr != nil {
				return uerr
			}
			err = a.download(ctx, pkg, version, deb)
		}
		if err != nil {
			return err
		}
	}
	x, err := a.extract(ctx)
	if err != nil {
		return err
	}
	vm, _ := filepath.Glob(filepath.Join(x, "boot", "vmlinuz-*"))
	if len(vm) != 1 {
		return fmt.Errorf("%s: want one boot/vmlinuz-*, got %d", pkg, len(vm))
	}
	if err := copyFile(vm[0], a.vmlinuz); err != nil {
		return err
	}
	// Drop other kernels: a new kernel package replaces the old assets.
	others, _ := filepath.Glob(filepath.Join(a.cache, "kernel", "*"))
	for _, o := range others {
		if o != a.kernelDir {
			logf("removing stale kernel assets %s", o)
			os.RemoveAll(o)
		}
	}
	return nil
}

// download fetches pkg=version with apt-get download into dst.
func (a *assets) download(ctx context.Context, pkg, version, dst string) error {
	logf("downloading kernel package %s %s", pkg, version)
	tmp, err := os.MkdirTemp(a.kernelDir, "dl-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "apt-get", "download", pkg+"="+version)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %v: %s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s: want one .deb, got %d", pkg, len(debs))
	}
	return os.Rename(debs[0], dst)
}

// extract unpacks the cached kernel .deb (dpkg-deb -x) once per run and
// returns the directory; prepare removes it at the end.
func (a *assets) extract(ctx context.Context) (string, error) {
	if a.extracted != "" {
		return a.extracted, nil
	}
	tmp, err := os.MkdirTemp(a.kernelDir, "x-")
	if err != nil {
		return "", err
	}
	dir := filepath.Join(tmp, "root")
	logf("unpacking the kernel package")
	if _, err := run(ctx, "dpkg-deb", "-x", filepath.Join(a.kernelDir, "kernel.deb"), dir); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	a.extracted = dir
	return dir, nil
}

// ensureImages builds the base initramfs and the guest initramfs unless the
// cache already has them for the same inputs.
func (a *assets) ensureImages(ctx context.Context) error {
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		return err
	}
	if err := checkStatic(bb); err != nil {
		return fmt.Errorf("%s: %v (install busybox-static, not busybox)", busyboxPath, err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%q\n%q\n", formatVersion, filepath.Base(a.kernelDir),
		harness.HostInit(), harness.HostModules, harness.GuestModules)
	h.Write(bb)
	sum := hex.EncodeToString(h.Sum(nil))[:16]
	a.baseCPIO = filepath.Join(a.kernelDir, "base-"+sum+".cpio")
	a.guestInitrd = filepath.Join(a.kernelDir, "guest-initrd-"+sum+".gz")
	if fileExists(a.baseCPIO) && fileExists(a.guestInitrd) {
		return nil
	}
	logf("building initramfs images in %s", a.kernelDir)
	for _, pat := range []string{"base-*.cpio", "guest-initrd-*.gz"} {
		old, _ := filepath.Glob(filepath.Join(a.kernelDir, pat))
		for _, o := range old {
			os.Remove(o)
		}
	}
	tmp, err := a.extract(ctx)
	if err != nil {
		return err
	}
	rels, _ := filepath.Glob(filepath.Join(tmp, "lib", "modules", "*"))
	if len(rels) != 1 {
		return fmt.Errorf("kernel package: want one lib/modules/<release>, got %d", len(rels))
	}
	release := filepath.Base(rels[0])
	mods, err := newModuleSet(ctx, filepath.Join(rels[0], "kernel"), "/lib/modules/"+release+"/kernel")
	if err != nil {
		return err
	}
	applets, err := busyboxApplets(ctx)
	if err != nil {
		return err
	}
	guestMods, err := mods.resolve(harness.GuestModules)
	if err != nil {
		return err
	}
	if err := writeAtomic(a.guestInitrd, func(w io.Writer) error {
		zw := gzip.NewWriter(w)
		c := harness.NewCPIOWriter(zw)
		if err := addBusybox(c, bb, applets); err != nil {
			return err
		}
		if err := mods.add(c, guestMods); err != nil {
			return err
		}
		if err := c.Bytes("/init", 0o755, []byte(harness.GuestInit(mods.guestPaths(guestMods)))); err != nil {
			return err
		}
		if err := c.Close(); err != nil {
			return err
		}
		return zw.Close()
	}); err != nil {
		return err
	}
	hostMods, err := mods.resolve(harness.HostModules)
	if err != nil {
		return err
	}
	return writeAtomic(a.baseCPIO, func(w io.Writer) error {
		c := harness.NewCPIOWriter(w)
		if err := addBusybox(c, bb, applets); err != nil {
			return err
		}
		if err := mods.add(c, hostMods); err != nil {
			return err
		}
		list := strings.Join(mods.guestPaths(hostMods), "\n") + "\n"
		if err := c.Bytes(harness.ModulesListPath, 0o644, []byte(list)); err != nil {
			return err
		}
		if err := c.Bytes("/init", 0o755, []byte(harness.HostInit())); err != nil {
			return err
		}
		for _, f := range [][2]string{{a.vmlinuz, harness.GuestKernelPath}, {a.guestInitrd, harness.GuestInitrdPath}} {
			st, err := os.Stat(f[0])
			if err != nil {
				return err
			}
			if err := addFile(c, f[0], f[1], st); err != nil {
				return err
			}
		}
		for _, d := range []string{"/proc", "/sys", "/dev", "/tmp", "/run", "/root", "/etc/godwit"} {
			if err := c.Dir(d, 0o755); err != nil {
				return err
			}
		}
		return c.Close()
	})
}

// moduleSet reads modules from an extracted kernel tree.
type moduleSet struct {
	ctx       context.Context
	root      string // host dir of lib/modules/<release>/kernel
	guestRoot string // the same dir inside the initramfs
	index     map[string]string
}

func newModuleSet(ctx context.Context, root, guestRoot string) (*moduleSet, error) {
	idx, err := harness.IndexModules(root)
	if err != nil {
		return nil, err
	}
	return &moduleSet{ctx: ctx, root: root, guestRoot: guestRoot, index: idx}, nil
}

// read returns the uncompressed content of a module.
func (m *moduleSet) read(name string) ([]byte, error) {
	rel, ok := m.index[name]
	if !ok {
		return nil, fmt.Errorf("module %s not found in the kernel package", name)
	}
	p := filepath.Join(m.root, rel)
	switch {
	case strings.HasSuffix(rel, ".ko"):
		return os.ReadFile(p)
	case strings.HasSuffix(rel, ".ko.xz"):
		out, err := run(m.ctx, "xz", "-dc", p)
		return []byte(out), err
	case strings.HasSuffix(rel, ".ko.zst"):
		out, err := run(m.ctx, "zstd", "-dc", p)
		return []byte(out), err
	}
	return nil, fmt.Errorf("module %s: unsupported file %s", name, rel)
}

func (m *moduleSet) resolve(wanted []string) ([]string, error) {
	return harness.ResolveModules(wanted, func(name string) ([]string, error) {
		ko, err := m.read(name)
		if err != nil {
			return nil, err
		}
		d, err := harness.ModuleDepends(ko)
		if err != nil {
			return nil, fmt.Errorf("module %s: %v", name, err)
		}
		return d, nil
	})
}

// guestPath is where a module lives in the initramfs (always uncompressed).
func (m *moduleSet) guestPath(name string) string {
	rel := m.index[name]
	if i := strings.Index(rel, ".ko"); i >= 0 {
		rel = rel[:i+3]
	}
	return path.Join(m.guestRoot, filepath.ToSlash(rel))
}

func (m *moduleSet) guestPaths(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = m.guestPath(n)
	}
	return out
}

func (m *moduleSet) add(c *harness.CPIOWriter, names []string) error {
	for _, n := range names {
		ko, err := m.read(n)
		if err != nil {
			return err
		}
		if err := c.Bytes(m.guestPath(n), 0o644, ko); err != nil {
			return err
		}
	}
	return nil
}

// busyboxApplets lists the applet paths of the static busybox ("bin/sh", ...).
func busyboxApplets(ctx context.Context) ([]string, error) {
	out, err := run(ctx, busyboxPath, "--list-full")
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

func addBusybox(c *harness.CPIOWriter, bb []byte, applets []string) error {
	if err := c.Bytes(busyboxPath, 0o755, bb); err != nil {
		return err
	}
	for _, ap := range applets {
		if ap == "bin/busybox" {
			continue
		}
		if err := c.Symlink("/"+ap, busyboxPath); err != nil {
			return err
		}
	}
	return nil
}

func checkStatic(bin []byte) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked")
		}
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// writeAtomic writes dst through a temporary file renamed into place, so an
// interrupted run never leaves a truncated cache entry.
func writeAtomic(dst string, fill func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(dst), ".tmp-"+filepath.Base(dst))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := fill(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), dst)
}

func copyFile(src, dst string) error {
	return writeAtomic(dst, func(w io.Writer) error {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	})
}
