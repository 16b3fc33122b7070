package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"godwit/test/nested/harness"
)

// qemuData lists the firmware and option ROMs Debian's QEMU loads for
// `-M pc|q35 -enable-kvm -nographic -nic none -kernel ...` (found by trying:
// SeaBIOS, the standard VGA BIOS, the Linux loader ROM and kvmvapic).
// Whole /usr/share/seabios is small (under 1 MiB) and copied entirely.
var qemuData = []string{
	"/usr/share/qemu/kvmvapic.bin",
	"/usr/share/qemu/linuxboot.bin",
	"/usr/share/qemu/linuxboot_dma.bin",
	"/usr/share/qemu/multiboot.bin",
	"/usr/share/qemu/multiboot_dma.bin",
	"/usr/share/qemu/pvh.bin",
	"/usr/share/qemu/qboot.rom",
}

// qemuBundle builds (or reuses) a cpio archive holding qemu-system-x86_64,
// its shared libraries (from ldd) and the firmware it needs, at the same
// paths as on this machine.
func (a *assets) qemuBundle() (string, error) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", err
	}
	if bin, err = filepath.EvalSymlinks(bin); err != nil {
		return "", err
	}
	ctx := context.Background()
	out, err := run(ctx, "ldd", bin)
	if err != nil {
		return "", err
	}
	files := append([]string{bin}, harness.ParseLdd(out)...)
	bios, _ := filepath.Glob("/usr/share/seabios/*")
	files = append(files, bios...)
	files = append(files, qemuData...)

	h := sha256.New()
	fmt.Fprintln(h, formatVersion)
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintln(h, f, st.Size(), st.ModTime().UnixNano())
	}
	dir := filepath.Join(a.cache, "qemu")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, "qemu-"+hex.EncodeToString(h.Sum(nil))[:16]+".cpio")
	if fileExists(dst) {
		return dst, nil
	}
	logf("building QEMU bundle %s (%d files)", dst, len(files))
	old, _ := filepath.Glob(filepath.Join(dir, "qemu-*.cpio"))
	for _, o := range old {
		os.Remove(o)
	}
	return dst, writeAtomic(dst, func(w io.Writer) error {
		c := harness.NewCPIOWriter(w)
		for _, f := range files {
			st, err := os.Stat(f)
			if err != nil {
				return err
			}
			if err := addFile(c, f, f, st); err != nil {
				return err
			}
		}
		return c.Close()
	})
}
