// Package vfs is the filesystem seam under every etckit package that touches
// disk (wal, snap, engine and the offline tools).
//
// Four implementations live here:
//
//   - OS: the real filesystem, with etcd-compatible file locks (Linux
//     open-file-description locks, flock elsewhere) so that etckit never
//     writes a WAL that a running etcd holds, and the reverse.
//   - NewMem: an in-memory filesystem for fast, hermetic tests (a *MemFS
//     that never loses anything).
//   - NewCrashable: an in-memory filesystem that can be "crashed": a crash
//     keeps what was synced (file data by File.Sync/Datasync, directory
//     entries by FS.SyncDir) plus a seeded random subset of the unsynced
//     512-byte sectors. MemFS.CrashWith documents the exact model.
//   - NewErrorFS: a wrapper that fails the Nth operation of a kind (write,
//     sync, rename, create, ...), optionally only for matching paths.
//
// System assumptions (the same ones etcd makes): a 512-byte sector is written
// atomically or not at all; after fsync/fdatasync returns, the file's data up
// to its size is durable; a directory entry (create or rename) is durable only
// after the directory itself is fsynced.
package vfs

import (
	"errors"
	"io"
	"io/fs"
)

// ErrLocked is returned by File.TryLock when another process (or another
// open file description in this process) holds the lock.
var ErrLocked = errors.New("vfs: file already locked")

// File is an open file. The methods mirror *os.File; Datasync, Preallocate
// and the locks are the additions a write-ahead log needs.
type File interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.Seeker
	io.Closer

	// Name returns the path the file was opened with.
	Name() string
	Stat() (fs.FileInfo, error)
	// Sync flushes data and metadata (fsync).
	Sync() error
	// Datasync flushes data and the metadata needed to read it back
	// (fdatasync). Implementations without the distinction call Sync.
	Datasync() error
	Truncate(size int64) error
	// Preallocate makes the file at least size bytes long, reserving the
	// space on disk where the filesystem supports it (fallocate mode 0, as
	// etcd does); new bytes read as zeros. It never shrinks the file.
	Preallocate(size int64) error
	// TryLock takes an exclusive lock on the whole file without waiting and
	// returns ErrLocked when it is held elsewhere. Lock waits. The lock is
	// released by Unlock or Close.
	TryLock() error
	Lock() error
	Unlock() error
}

// FS is a filesystem. Paths are ordinary OS paths (filepath.Join, Clean).
type FS interface {
	// OpenFile is os.OpenFile: flag is a combination of os.O_* values.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// Open opens a file read-only.
	Open(name string) (File, error)
	Remove(name string) error
	RemoveAll(name string) error
	Rename(oldpath, newpath string) error
	MkdirAll(dir string, perm fs.FileMode) error
	// ReadDirNames returns the names in dir, sorted.
	ReadDirNames(dir string) ([]string, error)
	Stat(name string) (fs.FileInfo, error)
	// SyncDir fsyncs a directory, making the entries created, renamed or
	// removed in it durable.
	SyncDir(dir string) error
}

// Exists reports whether name exists (any error other than "not exist" is
// reported as existing, so callers do not overwrite what they cannot see).
func Exists(fsys FS, name string) bool {
	_, err := fsys.Stat(name)
	return err == nil || !errors.Is(err, fs.ErrNotExist)
}
