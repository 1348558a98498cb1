package vfs

import (
	"errors"
	"io/fs"
	"os"
	"sort"
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
}

func (f *osFile) Datasync() error { return datasync(f.File) }

func (f *osFile) Preallocate(size int64) error {
	fi, err := f.File.Stat()
	if err != nil {
		return err
	}
	if fi.Size() >= size {
		return nil
	}
	return preallocate(f.File, size)
}

func (f *osFile) TryLock() error {
	if err := lockFile(f.File, false); err != nil {
		return err
	}
	f.locked = true
	return nil
}

func (f *osFile) Lock() error {
	if err := lockFile(f.File, true); err != nil {
		return err
	}
	f.locked = true
	return nil
}

func (f *osFile) Unlock() error {
	if !f.locked {
		return nil
	}
	f.locked = false
	return unlockFile(f.File)
}

// Close releases the lock with the descriptor, as the kernel does.
func (f *osFile) Close() error {
	f.locked = false
	return f.File.Close()
}
