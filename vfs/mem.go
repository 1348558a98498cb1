package vfs

import (
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SectorSize is the unit a crash keeps or loses atomically (see
// MemFS.CrashWith).
const SectorSize = 512

// MemFS is an in-memory FS with a real directory tree. Paths are cleaned and
// relative paths are taken relative to "/", which always exists. Errors are
// the ones os returns on Linux (*fs.PathError, or *os.LinkError for Rename,
// wrapping a syscall.Errno), so errors.Is(err, fs.ErrNotExist) and friends
// work. Like os.Rename, Rename onto an existing directory fails with EEXIST.
//
// Files are inodes shared by all handles; each handle has its own offset.
// Locks are exclusive per inode across the handles of one MemFS; as with
// Linux open-file-description locks a handle must be open for writing to
// take one (EBADF otherwise). Lock blocks until the holder unlocks or closes.
// ModTime is always the zero time.
//
// A MemFS is safe for concurrent use; a single mutex serialises all
// operations.
//
// A MemFS from NewMem behaves like a disk that never loses anything: Sync is
// a no-op and Crash returns an exact copy. A MemFS from NewCrashable tracks
// what is durable; see CrashWith for the model.
type MemFS struct {
	mu        sync.Mutex
	unlocked  *sync.Cond // broadcast whenever a lock is released
	root      *node
	crashable bool
}

var _ FS = (*MemFS)(nil)

// node is an inode: a regular file or a directory.
type node struct {
	mode fs.FileMode

	// Regular files.
	data     []byte
	lockedBy *memFile
	// Crashable only: the content as of the last Sync, and the byte range
	// [dirtyLo, dirtyHi) that may differ from it.
	durable          []byte
	dirtyLo, dirtyHi int64

	// Directories.
	children map[string]*node
	// Crashable only: the entries as of the last SyncDir.
	durableChildren map[string]*node
}

func (n *node) isDir() bool { return n.mode.IsDir() }

func newDir(perm fs.FileMode) *node {
	return &node{mode: fs.ModeDir | perm&fs.ModePerm, children: map[string]*node{}}
}

// NewMem returns an empty in-memory filesystem whose every change is
// immediately durable.
func NewMem() *MemFS { return newMem(false) }

// NewCrashable returns an empty in-memory filesystem that tracks what a real
// disk would keep on power loss; see CrashWith.
func NewCrashable() *MemFS { return newMem(true) }

func newMem(crashable bool) *MemFS {
	m := &MemFS{root: newDir(0o755), crashable: crashable}
	m.unlocked = sync.NewCond(&m.mu)
	return m
}

// clean makes name absolute ("/" based) and clean.
func clean(name string) string { return filepath.Join(string(filepath.Separator), name) }

func components(p string) []string {
	if p == string(filepath.Separator) {
		return nil
	}
	return strings.Split(p[1:], string(filepath.Separator))
}

// lookup returns the node at the clean path p.
func (m *MemFS) lookup(p string) (*node, error) {
	n := m.root
	for _, c := range components(p) {
		if !n.isDir() {
			return nil, syscall.ENOTDIR
		}
		child, ok := n.children[c]
		if !ok {
			return nil, syscall.ENOENT
		}
		n = child
	}
	return n, nil
}

// parent returns the directory that holds the clean path p and p's base name.
func (m *MemFS) parent(p string) (*node, string, error) {
	if p == string(filepath.Separator) {
		return nil, "", syscall.EBUSY
	}
	d, err := m.lookup(filepath.Dir(p))
	if err != nil {
		return nil, "", err
	}
	if !d.isDir() {
		return nil, "", syscall.ENOTDIR
	}
	return d, filepath.Base(p), nil
}

// resize returns b with length n; bytes past the old length are zero.
func resize(b []byte, n int64) []byte {
	old := int64(len(b))
	switch {
	case n <= old:
		return b[:n]
	case n <= int64(cap(b)):
		b = b[:n]
		clear(b[old:])
		return b
	}
	nb := make([]byte, n, max(n, 2*int64(cap(b))))
	copy(nb, b)
	return nb
}

// markDirty records that bytes [lo, hi) of a file changed since its last Sync.
func (m *MemFS) markDirty(n *node, lo, hi int64) {
	if !m.crashable || lo >= hi {
		return
	}
	if n.dirtyLo >= n.dirtyHi {
		n.dirtyLo, n.dirtyHi = lo, hi
		return
	}
	n.dirtyLo, n.dirtyHi = min(n.dirtyLo, lo), max(n.dirtyHi, hi)
}

func (m *MemFS) setSize(n *node, size int64) {
	old := int64(len(n.data))
	n.data = resize(n.data, size)
	m.markDirty(n, min(old, size), max(old, size))
}

// syncFile makes a file's current content durable.
func (m *MemFS) syncFile(n *node) {
	if !m.crashable {
		return
	}
	size := int64(len(n.data))
	n.durable = resize(n.durable, size)
	if lo, hi := n.dirtyLo, min(n.dirtyHi, size); lo < hi {
		copy(n.durable[lo:hi], n.data[lo:hi])
	}
	n.dirtyLo, n.dirtyHi = 0, 0
}

// syncDir makes a directory's current entries durable.
func (m *MemFS) syncDir(n *node) {
	if m.crashable {
		n.durableChildren = maps.Clone(n.children)
	}
}

const accMode = os.O_RDONLY | os.O_WRONLY | os.O_RDWR

// OpenFile opens name like os.OpenFile. Directories may be opened read-only;
// Sync on such a handle is SyncDir.
func (m *MemFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fail := func(err error) (File, error) { return nil, &fs.PathError{Op: "open", Path: name, Err: err} }
	p := clean(name)
	writable := flag&accMode != os.O_RDONLY
	n, err := m.lookup(p)
	switch {
	case err == nil:
		if flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL {
			return fail(syscall.EEXIST)
		}
		if n.isDir() {
			if writable || flag&(os.O_CREATE|os.O_TRUNC) != 0 {
				return fail(syscall.EISDIR)
			}
		} else if writable && flag&os.O_TRUNC != 0 {
			m.setSize(n, 0)
		}
	case errors.Is(err, syscall.ENOENT) && flag&os.O_CREATE != 0:
		d, base, err := m.parent(p)
		if err != nil {
			return fail(err)
		}
		n = &node{mode: perm & fs.ModePerm}
		d.children[base] = n
	default:
		return fail(err)
	}
	return &memFile{fs: m, n: n, name: name, flag: flag}, nil
}

// Open opens name read-only.
func (m *MemFS) Open(name string) (File, error) { return m.OpenFile(name, os.O_RDONLY, 0) }

// Remove removes a file or an empty directory.
func (m *MemFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	fail := func(err error) error { return &fs.PathError{Op: "remove", Path: name, Err: err} }
	d, base, err := m.parent(clean(name))
	if err != nil {
		return fail(err)
	}
	n, ok := d.children[base]
	switch {
	case !ok:
		return fail(syscall.ENOENT)
	case n.isDir() && len(n.children) > 0:
		return fail(syscall.ENOTEMPTY)
	}
	delete(d.children, base)
	return nil
}

// RemoveAll removes name and everything under it; a missing name is not an
// error. RemoveAll("/") empties the root.
func (m *MemFS) RemoveAll(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := clean(name)
	if p == string(filepath.Separator) {
		clear(m.root.children)
		return nil
	}
	d, base, err := m.parent(p)
	if errors.Is(err, syscall.ENOENT) {
		return nil
	}
	if err != nil {
		return &fs.PathError{Op: "unlinkat", Path: name, Err: err}
	}
	delete(d.children, base)
	return nil
}

// Rename moves a file or a directory subtree, replacing an existing file at
// newpath. Like os.Rename it refuses to replace a directory (EEXIST).
func (m *MemFS) Rename(oldpath, newpath string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	fail := func(err error) error { return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err} }
	op, np := clean(oldpath), clean(newpath)
	od, ob, err := m.parent(op)
	if err != nil {
		return fail(err)
	}
	n, ok := od.children[ob]
	if !ok {
		return fail(syscall.ENOENT)
	}
	nd, nb, err := m.parent(np)
	if err != nil {
		return fail(err)
	}
	if target, ok := nd.children[nb]; ok {
		switch {
		case target.isDir():
			return fail(syscall.EEXIST)
		case target == n:
			return nil
		case n.isDir():
			return fail(syscall.ENOTDIR)
		}
	}
	if n.isDir() && strings.HasPrefix(np, op+string(filepath.Separator)) {
		return fail(syscall.EINVAL)
	}
	delete(od.children, ob)
	nd.children[nb] = n
	return nil
}

// MkdirAll creates dir and any missing parents.
func (m *MemFS) MkdirAll(dir string, perm fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.root
	for _, c := range components(clean(dir)) {
		child, ok := n.children[c]
		if !ok {
			child = newDir(perm)
			n.children[c] = child
		} else if !child.isDir() {
			return &fs.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
		}
		n = child
	}
	return nil
}

// ReadDirNames returns the sorted names in dir.
func (m *MemFS) ReadDirNames(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(clean(dir))
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	if !n.isDir() {
		return nil, &fs.PathError{Op: "readdirent", Path: dir, Err: syscall.ENOTDIR}
	}
	return slices.Sorted(maps.Keys(n.children)), nil
}

// Stat describes the file or directory at name.
func (m *MemFS) Stat(name string) (fs.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := clean(name)
	n, err := m.lookup(p)
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	return n.info(filepath.Base(p)), nil
}

// SyncDir makes dir's current entries durable. Like fsync on an open
// regular file, SyncDir of a file syncs the file.
func (m *MemFS) SyncDir(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(clean(dir))
	if err != nil {
		return &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	m.sync(n)
	return nil
}

func (m *MemFS) sync(n *node) {
	if n.isDir() {
		m.syncDir(n)
	} else {
		m.syncFile(n)
	}
}

func (n *node) info(name string) fs.FileInfo {
	return memInfo{name: name, size: int64(len(n.data)), mode: n.mode}
}

type memInfo struct {
	name string
	size int64
	mode fs.FileMode
}

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) Mode() fs.FileMode  { return i.mode }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return i.mode.IsDir() }
func (i memInfo) Sys() any           { return nil }

// memFile is a handle on a MemFS inode. All fields but fs, n, name and flag
// are guarded by fs.mu.
type memFile struct {
	fs     *MemFS
	n      *node
	name   string
	flag   int
	off    int64
	closed bool
}

func (f *memFile) pathErr(op string, err error) error {
	return &fs.PathError{Op: op, Path: f.name, Err: err}
}

// begin locks the filesystem and checks that f is open; on success the
// caller must unlock.
func (f *memFile) begin(op string) error {
	f.fs.mu.Lock()
	if f.closed {
		f.fs.mu.Unlock()
		return f.pathErr(op, fs.ErrClosed)
	}
	return nil
}

func (f *memFile) readable() bool { return f.flag&accMode != os.O_WRONLY }
func (f *memFile) writable() bool { return f.flag&accMode != os.O_RDONLY }

func (f *memFile) Name() string { return f.name }

func (f *memFile) Read(p []byte) (int, error) {
	if err := f.begin("read"); err != nil {
		return 0, err
	}
	defer f.fs.mu.Unlock()
	n, err := f.readAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.begin("read"); err != nil {
		return 0, err
	}
	defer f.fs.mu.Unlock()
	if off < 0 {
		return 0, f.pathErr("readat", errors.New("negative offset"))
	}
	return f.readAt(p, off)
}

// readAt reads like ReadAt: a short read returns io.EOF.
func (f *memFile) readAt(p []byte, off int64) (int, error) {
	switch {
	case !f.readable():
		return 0, f.pathErr("read", syscall.EBADF)
	case f.n.isDir():
		return 0, f.pathErr("read", syscall.EISDIR)
	case len(p) == 0:
		return 0, nil
	case off >= int64(len(f.n.data)):
		return 0, io.EOF
	}
	n := copy(p, f.n.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Write(p []byte) (int, error) {
	if err := f.begin("write"); err != nil {
		return 0, err
	}
	defer f.fs.mu.Unlock()
	off := f.off
	if f.flag&os.O_APPEND != 0 {
		off = int64(len(f.n.data))
	}
	n, err := f.writeAt(p, off)
	f.off = off + int64(n)
	return n, err
}

// WriteAt writes at off without moving the offset, like os.File.WriteAt.
func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.begin("write"); err != nil {
		return 0, err
	}
	defer f.fs.mu.Unlock()
	if f.flag&os.O_APPEND != 0 {
		return 0, f.pathErr("writeat", errors.New("invalid use of WriteAt on file opened with O_APPEND"))
	}
	if off < 0 {
		return 0, f.pathErr("writeat", errors.New("negative offset"))
	}
	return f.writeAt(p, off)
}

func (f *memFile) writeAt(p []byte, off int64) (int, error) {
	if !f.writable() {
		return 0, f.pathErr("write", syscall.EBADF)
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := f.n
	old, end := int64(len(n.data)), off+int64(len(p))
	lo := off
	if end > old {
		n.data = resize(n.data, end)
		lo = min(lo, old)
	}
	copy(n.data[off:], p)
	f.fs.markDirty(n, lo, end)
	return len(p), nil
}

func (f *memFile) Seek(offset int64, whence int) (int64, error) {
	if err := f.begin("seek"); err != nil {
		return 0, err
	}
	defer f.fs.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += int64(len(f.n.data))
	default:
		return 0, f.pathErr("seek", syscall.EINVAL)
	}
	if offset < 0 {
		return 0, f.pathErr("seek", syscall.EINVAL)
	}
	f.off = offset
	return offset, nil
}

func (f *memFile) Stat() (fs.FileInfo, error) {
	if err := f.begin("stat"); err != nil {
		return nil, err
	}
	defer f.fs.mu.Unlock()
	return f.n.info(filepath.Base(f.name)), nil
}

func (f *memFile) Sync() error {
	if err := f.begin("sync"); err != nil {
		return err
	}
	defer f.fs.mu.Unlock()
	f.fs.sync(f.n)
	return nil
}

// Datasync is Sync: the model has no metadata apart from the size.
func (f *memFile) Datasync() error { return f.Sync() }

func (f *memFile) Truncate(size int64) error {
	if err := f.begin("truncate"); err != nil {
		return err
	}
	defer f.fs.mu.Unlock()
	if size < 0 || !f.writable() || f.n.isDir() {
		return f.pathErr("truncate", syscall.EINVAL)
	}
	f.fs.setSize(f.n, size)
	return nil
}

func (f *memFile) Preallocate(size int64) error {
	if err := f.begin("stat"); err != nil { // as OS, which stats first
		return err
	}
	defer f.fs.mu.Unlock()
	if size <= int64(len(f.n.data)) {
		return nil
	}
	if !f.writable() {
		return f.pathErr("fallocate", syscall.EBADF)
	}
	f.fs.setSize(f.n, size)
	return nil
}

func (f *memFile) TryLock() error { return f.lock(false) }

// Lock waits until no other handle holds the lock.
func (f *memFile) Lock() error { return f.lock(true) }

func (f *memFile) lock(wait bool) error {
	if err := f.begin("lock"); err != nil {
		return err
	}
	defer f.fs.mu.Unlock()
	if !f.writable() {
		return f.pathErr("lock", syscall.EBADF)
	}
	for f.n.lockedBy != nil && f.n.lockedBy != f {
		if !wait {
			return ErrLocked
		}
		f.fs.unlocked.Wait()
		if f.closed {
			return f.pathErr("lock", fs.ErrClosed)
		}
	}
	f.n.lockedBy = f
	return nil
}

func (f *memFile) Unlock() error {
	if err := f.begin("unlock"); err != nil {
		return err
	}
	defer f.fs.mu.Unlock()
	f.unlock()
	return nil
}

func (f *memFile) unlock() {
	if f.n.lockedBy == f {
		f.n.lockedBy = nil
		f.fs.unlocked.Broadcast()
	}
}

// Close releases the handle's lock.
func (f *memFile) Close() error {
	if err := f.begin("close"); err != nil {
		return err
	}
	defer f.fs.mu.Unlock()
	f.unlock()
	f.closed = true
	f.fs.unlocked.Broadcast() // wakes a Lock waiting on this handle
	return nil
}
