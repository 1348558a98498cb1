package vfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"sync/atomic"
)

// OS is the operating system's filesystem.
type OS struct{}

var _ FS = OS{}

func (OS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &osFile{File: f}, nil
}

func (o OS) Open(name string) (File, error) { return o.OpenFile(name, os.O_RDONLY, 0) }

func (OS) Remove(name string) error                    { return os.Remove(name) }
func (OS) RemoveAll(name string) error                 { return os.RemoveAll(name) }
func (OS) Rename(oldpath, newpath string) error        { return os.Rename(oldpath, newpath) }
func (OS) MkdirAll(dir string, perm fs.FileMode) error { return os.MkdirAll(dir, perm) }
func (OS) Stat(name string) (fs.FileInfo, error)       { return os.Stat(name) }

func (OS) ReadDirNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

func (OS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	return errors.Join(serr, cerr)
}

type osFile struct {
	*os.File
	locked bool
	closed atomic.Bool
}

// check returns fs.ErrClosed if f was closed and otherwise err, either named
// by op and the path like os errors. ErrLocked is returned as is.
func (f *osFile) check(op string, err error) error {
	if f.closed.Load() {
		err = fs.ErrClosed
	}
	if err == nil || err == ErrLocked {
		return err
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return &fs.PathError{Op: op, Path: f.Name(), Err: err}
}

func (f *osFile) Datasync() error {
	if err := f.check("sync", nil); err != nil {
		return err
	}
	return f.check("sync", datasync(f.File))
}

func (f *osFile) Preallocate(size int64) error {
	fi, err := f.File.Stat()
	if err != nil {
		return err
	}
	if fi.Size() >= size {
		return nil
	}
	return f.check("fallocate", preallocate(f.File, size))
}

func (f *osFile) TryLock() error { return f.lock(false) }
func (f *osFile) Lock() error    { return f.lock(true) }

func (f *osFile) lock(wait bool) error {
	if err := f.check("lock", nil); err != nil {
		return err
	}
	if err := f.check("lock", lockFile(f.File, wait)); err != nil {
		return err
	}
	f.locked = true
	return nil
}

func (f *osFile) Unlock() error {
	if err := f.check("unlock", nil); err != nil || !f.locked {
		return err
	}
	f.locked = false
	return f.check("unlock", unlockFile(f.File))
}

// Close releases the lock with the descriptor, as the kernel does.
func (f *osFile) Close() error {
	f.locked = false
	f.closed.Store(true)
	return f.File.Close()
}

// ZeroWriter is implemented by files of filesystems that tell space written
// with zeros from space only allocated (vfs.OS). See WriteZeros.
type ZeroWriter interface {
	// WriteZeros writes n zero bytes at off, within the file's size: the
	// content does not change, but on ext4 and XFS preallocated
	// ("unwritten") extents become written ones, so later writes there
	// need no extent conversion, and no journal commit in their fdatasync.
	WriteZeros(off, n int64) error
}

var _ ZeroWriter = (*osFile)(nil)

var zeroPage [256 << 10]byte

func (f *osFile) WriteZeros(off, n int64) error {
	if err := f.check("write", nil); err != nil {
		return err
	}
	size, err := fileSize(f.File)
	if err != nil {
		return f.check("write", err)
	}
	if off < 0 || n < 0 || off+n > size {
		return f.check("write", fmt.Errorf("zero range [%d, %d) is outside the file's %d bytes", off, off+n, size))
	}
	for n > 0 {
		c := min(n, int64(len(zeroPage)))
		if _, err := f.File.WriteAt(zeroPage[:c], off); err != nil {
			return f.check("write", err)
		}
		off, n = off+c, n-c
	}
	return nil
}
