package harness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// File type bits of a cpio mode field (the st_mode values of Linux).
const (
	modeDir     = 0o040000
	modeRegular = 0o100000
	modeSymlink = 0o120000
	newcMagic   = "070701"
	newcTrailer = "TRAILER!!!"
	headerLen   = 110
	blockSize   = 512
)

// CPIOWriter writes a "newc" (SVR4, no checksum) cpio archive, the format the
// Linux kernel unpacks as an initramfs. Parent directories are created on
// demand, so callers may add "a/b/c" without adding "a" and "a/b" first.
// Archives written by separate writers may be concatenated: the kernel unpacks
// them in order, later files replacing earlier ones.
type CPIOWriter struct {
	w    io.Writer
	n    int64
	ino  uint32
	dirs map[string]bool
	err  error
}

// NewCPIOWriter returns a writer that emits a newc archive to w.
// Close must be called to write the trailer.
func NewCPIOWriter(w io.Writer) *CPIOWriter {
	return &CPIOWriter{w: w, ino: 1, dirs: map[string]bool{".": true, "": true}}
}

// cleanName turns a guest path ("/bin/sh" or "bin/sh") into an archive name
// ("bin/sh"). It rejects names that escape the root.
func cleanName(name string) (string, error) {
	c := path.Clean("/" + name)
	if c == "/" {
		return "", fmt.Errorf("cpio: empty or root name %q", name)
	}
	if strings.ContainsRune(c, 0) {
		return "", fmt.Errorf("cpio: NUL in name %q", name)
	}
	return c[1:], nil
}

// Dir adds a directory with permission bits perm (and its missing parents).
func (c *CPIOWriter) Dir(name string, perm uint32) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if err := c.parents(n); err != nil {
		return err
	}
	if c.dirs[n] {
		return nil
	}
	c.dirs[n] = true
	return c.entry(n, modeDir|perm&0o7777, 2, nil, 0)
}

// File adds a regular file of size bytes read from r.
func (c *CPIOWriter) File(name string, perm uint32, size int64, r io.Reader) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if err := c.parents(n); err != nil {
		return err
	}
	return c.entry(n, modeRegular|perm&0o7777, 1, r, size)
}

// Bytes adds a regular file with the given content.
func (c *CPIOWriter) Bytes(name string, perm uint32, data []byte) error {
	return c.File(name, perm, int64(len(data)), bytes.NewReader(data))
}

// Symlink adds a symbolic link name -> target.
func (c *CPIOWriter) Symlink(name, target string) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if target == "" {
		return errors.New("cpio: empty symlink target")
	}
	if err := c.parents(n); err != nil {
		return err
	}
	return c.entry(n, modeSymlink|0o777, 1, strings.NewReader(target), int64(len(target)))
}

// Close writes the trailer and pads the archive to a 512-byte boundary (the
// kernel skips the zero padding between concatenated archives). It does not
// close the underlying writer.
func (c *CPIOWriter) Close() error {
	if err := c.entry(newcTrailer, 0, 1, nil, 0); err != nil {
		return err
	}
	if pad := (blockSize - c.n%blockSize) % blockSize; pad > 0 {
		c.write(make([]byte, pad))
	}
	return c.err
}

func (c *CPIOWriter) parents(name string) error {
	dir := path.Dir(name)
	if c.dirs[dir] {
		return nil
	}
	if err := c.parents(dir); err != nil {
		return err
	}
	c.dirs[dir] = true
	return c.entry(dir, modeDir|0o755, 2, nil, 0)
}

func (c *CPIOWriter) write(p []byte) {
	if c.err != nil {
		return
	}
	var k int
	k, c.err = c.w.Write(p)
	c.n += int64(k)
}

func (c *CPIOWriter) pad4() {
	if pad := (4 - c.n%4) % 4; pad > 0 {
		c.write(make([]byte, pad))
	}
}

// entry writes one header, name and body. Header fields (newc): magic, ino,
// mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
// rdevminor, namesize (with NUL), check; each 8 hex digits.
func (c *CPIOWriter) entry(name string, mode, nlink uint32, body io.Reader, size int64) error {
	if c.err != nil {
		return c.err
	}
	if size < 0 || size > 0xffffffff {
		return fmt.Errorf("cpio: %s: size %d does not fit newc", name, size)
	}
	ino := uint32(0)
	if name != newcTrailer {
		ino = c.ino
		c.ino++
	}
	hdr := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		newcMagic, ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name + "\x00"))
	c.pad4()
	if size > 0 {
		if c.err != nil {
			return c.err
		}
		k, err := io.CopyN(c.w, body, size)
		c.n += k
		if err != nil {
			c.err = fmt.Errorf("cpio: %s: %w", name, err)
			return c.err
		}
		c.pad4()
	}
	return c.err
}
