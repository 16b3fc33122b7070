package storage

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// partialInfix is in the temporary name of an image being received:
// ".NAME" + partialInfix + random digits, beside NAME.
const partialInfix = ".godwit-partial-"

// Image is a disk image being received: a new sparse file of the disk's
// size under a temporary name in the directory of its final path, locked
// with flock(2) while this process has it open. It implements the migrate
// engine's TargetDisk.
type Image struct {
	final     string
	size      uint64
	overwrite bool

	f *os.File // never reset: methods on a closed image fail with EBADF

	dirty atomic.Int64 // bytes written since write-back last started

	mu        sync.Mutex
	path      string // where the file is now: the temporary name, or final once committed
	committed bool
	removed   bool
	closed    bool
}

// Create makes the image for final (a path Place returned), size bytes,
// empty and sparse. First it deletes stale temporary images of final
// that no live process holds (a receiver killed mid-migration leaves
// one).
func Create(final string, size uint64, overwrite bool) (*Image, error) {
	dir, base := filepath.Split(final)
	if dir == "" {
		dir = "."
	}
	if err := removeStale(dir, base); err != nil {
		return nil, err
	}
	var f *os.File
	for try := 0; ; try++ {
		var err error
		if f, err = os.CreateTemp(dir, "."+base+partialInfix+"*"); err != nil {
			return nil, fmt.Errorf("creating the image for %s: %w", final, err)
		}
		if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			os.Remove(f.Name())
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
		}
		// Another receiver's removeStale may have taken the file for
		// stale between its creation and the lock: then it is gone.
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Nlink > 0 || try == 3 {
			if err == nil && st.Nlink == 0 {
				err = errors.New("removed as soon as created")
			}
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("creating the image for %s: %w", final, err)
			}
			break
		}
		f.Close()
	}
	img := &Image{final: final, size: size, overwrite: overwrite, f: f, path: f.Name()}
	if err := f.Truncate(int64(size)); err != nil {
		img.Remove()
		return nil, fmt.Errorf("sizing %s: %w", f.Name(), err)
	}
	return img, nil
}

// removeStale deletes the temporary images of base in dir that no
// process holds locked.
func removeStale(dir, base string) error {
	matches, err := filepath.Glob(filepath.Join(dir, globQuote("."+base+partialInfix)+"*"))
	if err != nil {
		return err
	}
	for _, m := range matches {
		f, err := os.OpenFile(m, os.O_RDWR, 0)
		if err != nil {
			continue // gone meanwhile, or not ours to touch
		}
		if flock(f, unix.LOCK_EX|unix.LOCK_NB) == nil {
			if err := os.Remove(m); err != nil && !errors.Is(err, os.ErrNotExist) {
				f.Close()
				return fmt.Errorf("removing the stale partial image %s: %w", m, err)
			}
		}
		f.Close()
	}
	return nil
}

// globQuote escapes the glob metacharacters of s.
func globQuote(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// flock applies flock(2) how to f, retrying on EINTR.
func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// Path returns where the image is now: its temporary name until Commit,
// then its final path.
func (m *Image) Path() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.path
}

// FinalPath returns the path the image gets on Commit.
func (m *Image) FinalPath() string { return m.final }

// Size returns the image size in bytes.
func (m *Image) Size() uint64 { return m.size }

// WriteAt writes received data (pwrite).
func (m *Image) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || uint64(off) > m.size || uint64(len(p)) > m.size-uint64(off) {
		return 0, fmt.Errorf("write of %d bytes at %d outside the image's %d bytes", len(p), off, m.size)
	}
	n, err := m.f.WriteAt(p, off)
	m.wrote(n)
	return n, err
}

// WritevAt writes bufs, in order, from off on: with one pwritev(2), more
// after a short write. It returns the bytes written, all of them unless
// it fails.
func (m *Image) WritevAt(bufs [][]byte, off int64) (int, error) {
	var total uint64
	for _, p := range bufs {
		total += uint64(len(p))
	}
	if off < 0 || uint64(off) > m.size || total > m.size-uint64(off) {
		return 0, fmt.Errorf("write of %d bytes at %d outside the image's %d bytes", total, off, m.size)
	}
	done := 0
	for {
		n, err := vectored(m.f, bufs, off+int64(done), unix.Pwritev)
		n = max(n, 0)
		m.wrote(n)
		done += n
		if bufs = advance(bufs, n); len(bufs) == 0 {
			return done, nil
		}
		if err != nil {
			return done, err
		}
		if n == 0 {
			return done, io.ErrShortWrite
		}
	}
}

// writebackBytes is how much an image receives between two calls that
// start writing its dirty pages back (sync_file_range(2) without
// waiting): the disk works while the data arrives, and the Sync that
// ends a round has little left to flush.
const writebackBytes = 32 << 20

// wrote counts n bytes written and starts the write-back of the image's
// dirty pages every writebackBytes. It never waits for the disk; where
// the call is not supported, Sync does all the work.
func (m *Image) wrote(n int) {
	if n <= 0 || m.dirty.Add(int64(n)) < writebackBytes {
		return
	}
	m.dirty.Store(0)
	rc, err := m.f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SyncFileRange(int(fd), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	})
}

// Zero makes [off, off+n) read as zeros: a hole punched with
// fallocate(2), or zeros written where the file system cannot punch.
func (m *Image) Zero(off, n uint64) error {
	if off > m.size || n > m.size-off {
		return fmt.Errorf("clearing %d bytes at %d outside the image's %d bytes", n, off, m.size)
	}
	err := unix.Fallocate(int(m.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), int64(n))
	if err == nil || !(errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS)) {
		return err
	}
	var zeros [64 << 10]byte
	for n > 0 {
		k := min(n, uint64(len(zeros)))
		if _, err := m.f.WriteAt(zeros[:k], int64(off)); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// Sync makes what was written durable (fdatasync).
func (m *Image) Sync() error {
	for {
		err := unix.Fdatasync(int(m.f.Fd()))
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// Commit makes the image durable and renames it to its final path (which
// must still be free unless overwriting), then syncs the directory.
func (m *Image) Commit() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.committed {
		return nil
	}
	if m.removed {
		return errors.New("image already removed")
	}
	if err := m.f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", m.path, err)
	}
	if err := rename(m.path, m.final, m.overwrite); err != nil {
		return err
	}
	m.path, m.committed = m.final, true
	d, err := os.Open(filepath.Dir(m.final))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// rename moves from to to; without overwrite it fails when to exists.
func rename(from, to string, overwrite bool) error {
	if overwrite {
		return os.Rename(from, to)
	}
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// No RENAME_NOREPLACE here: link(2) fails on an existing name too.
		if err = os.Link(from, to); err == nil {
			err = os.Remove(from)
		}
	}
	if errors.Is(err, unix.EEXIST) || errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s appeared during the migration: refusing to replace it", to)
	}
	if err != nil {
		return fmt.Errorf("renaming %s to %s: %w", from, to, err)
	}
	return nil
}

// Close releases the image's descriptor and lock; the file stays.
func (m *Image) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	return m.f.Close()
}

// Remove deletes the image wherever it is (a failed migration's partial
// copy) and closes it. It is idempotent.
func (m *Image) Remove() error {
	m.mu.Lock()
	if m.removed {
		m.mu.Unlock()
		return nil
	}
	m.removed = true
	path := m.path
	m.mu.Unlock()
	err := os.Remove(path)
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return errors.Join(err, m.Close())
}

// CreateAll creates an image for each path (from Place) with the sizes
// given, removing those it made when one fails.
func CreateAll(paths []string, sizes []uint64, overwrite bool) ([]*Image, error) {
	if len(paths) != len(sizes) {
		return nil, fmt.Errorf("storage: %d paths for %d sizes", len(paths), len(sizes))
	}
	var out []*Image
	for i, p := range paths {
		img, err := Create(p, sizes[i], overwrite)
		if err != nil {
			RemoveAll(out)
			return nil, err
		}
		out = append(out, img)
	}
	return out, nil
}

// RemoveAll removes every image (see Image.Remove).
func RemoveAll(images []*Image) error {
	var errs []error
	for _, m := range images {
		errs = append(errs, m.Remove())
	}
	return errors.Join(errs...)
}
