package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"godwit/internal/remap"
)

// Want is one disk a destination receives, as the source described it.
// Everything in it comes from the migration stream: untrusted.
type Want struct {
	// Source is the image path on the source; its base name names the
	// image in a storage directory.
	Source string
	// Size is the disk size in bytes.
	Size uint64
	// Allocated is what the source image has allocated, in bytes: the
	// space the copy needs at least.
	Allocated uint64
}

// PlaceOptions say where received images go.
type PlaceOptions struct {
	// Dir is the storage directory (`receive --storage-dir`): an image
	// not in Map is created there under its source image's base name.
	Dir string
	// Map maps a source image path to its destination path (`receive
	// --disk-map OLD=NEW`). An entry that names no source disk is an
	// error.
	Map map[string]string
	// Overwrite allows replacing existing regular files (`receive
	// --overwrite`).
	Overwrite bool
	// FreeSpace returns the bytes available to this process on the file
	// system of dir; nil means statfs(2).
	FreeSpace func(dir string) (uint64, error)
}

// maxBaseName bounds an image's base name: the temporary name adds a
// prefix and a suffix, and a name has at most 255 bytes.
const maxBaseName = 200

// Place returns the destination path of every disk in wants, in order. It
// refuses, with a message that says what to change: a disk with no
// destination (neither in Map nor a Dir), a source base name that cannot
// name a file, a Map entry for no source disk, two disks on one path, a
// destination whose directory does not exist, an existing file (unless
// Overwrite, and then only a regular file), and a file system with less
// free space than the images it receives have allocated on the source.
func Place(wants []Want, o PlaceOptions) ([]string, error) {
	used := map[string]bool{}
	paths := make([]string, len(wants))
	for i, w := range wants {
		if p, ok := o.Map[w.Source]; ok {
			used[w.Source] = true
			paths[i] = p
			continue
		}
		if o.Dir == "" {
			return nil, fmt.Errorf("disk %d (%s on the source): the source sends its disks, and this side has nowhere to put it: give receive --storage-dir DIR or --disk-map %s=PATH", i, w.Source, w.Source)
		}
		base, err := baseName(w.Source)
		if err != nil {
			return nil, fmt.Errorf("disk %d: %w; give receive --disk-map %s=PATH", i, err, w.Source)
		}
		paths[i] = filepath.Join(o.Dir, base)
	}
	var have []string
	for _, w := range wants {
		have = append(have, w.Source)
	}
	if err := remap.Unused("--disk-map", "disk", o.Map, used, have); err != nil {
		return nil, err
	}
	seen := map[string]int{}
	for i, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("disk %d: %s: %w", i, p, err)
		}
		if j, dup := seen[abs]; dup {
			return nil, fmt.Errorf("disks %d and %d would both be received as %s (use receive --disk-map)", j, i, p)
		}
		seen[abs] = i
	}
	type fsNeed struct {
		dir        string
		need, free uint64
	}
	needs := map[uint64]*fsNeed{} // by device of the directory
	for i, p := range paths {
		dir := filepath.Dir(p)
		var dst unix.Stat_t
		if err := unix.Stat(dir, &dst); err != nil {
			return nil, fmt.Errorf("disk %d: directory %s: %w", i, dir, err)
		}
		if dst.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil, fmt.Errorf("disk %d: %s is not a directory", i, dir)
		}
		credit, err := existing(p, o.Overwrite)
		if err != nil {
			return nil, fmt.Errorf("disk %d: %w", i, err)
		}
		n := needs[dst.Dev]
		if n == nil {
			n = &fsNeed{dir: dir}
			needs[dst.Dev] = n
		}
		n.need += min(wants[i].Allocated, wants[i].Size)
		n.free += credit
	}
	free := o.FreeSpace
	if free == nil {
		free = statfsFree
	}
	for _, n := range needs {
		avail, err := free(n.dir)
		if err != nil {
			return nil, fmt.Errorf("free space in %s: %w", n.dir, err)
		}
		if avail+n.free < n.need {
			return nil, fmt.Errorf("not enough space for the disks in %s: they need %d MiB (what the source images have allocated), %d MiB are free", n.dir, (n.need+1<<20-1)>>20, (avail+n.free)>>20)
		}
	}
	return paths, nil
}

// baseName returns the base name of a source image path, refusing one
// that cannot name a file here.
func baseName(src string) (string, error) {
	b := filepath.Base(src)
	if b == "." || b == ".." || b == "/" || b == "" || strings.ContainsRune(b, 0) || len(b) > maxBaseName {
		return "", fmt.Errorf("the source image %q has no usable file name", src)
	}
	return b, nil
}

// existing checks a destination path: absent, or with overwrite a regular
// file (or a symbolic link, which the rename replaces). It returns the
// bytes replacing it frees.
func existing(path string, overwrite bool) (uint64, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if !overwrite {
		return 0, fmt.Errorf("%s exists: refusing to replace it (receive --overwrite does)", path)
	}
	switch {
	case fi.Mode().IsRegular():
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink == 1 {
			return uint64(st.Blocks) * 512, nil
		}
		return 0, nil
	case fi.Mode()&os.ModeSymlink != 0:
		return 0, nil
	}
	return 0, fmt.Errorf("%s exists and is not a regular file (%v): refusing to replace it", path, fi.Mode().Type())
}

// statfsFree returns the bytes available to unprivileged users on the
// file system of dir.
func statfsFree(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}
