package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// ErrInjected is the error ErrorFS injects when a rule names none.
var ErrInjected = errors.New("vfs: injected failure")

// Op is a kind of operation ErrorFS can fail.
type Op int

const (
	OpCreate      Op = iota + 1 // FS.OpenFile with os.O_CREATE (whether or not it creates)
	OpOpen                      // FS.Open and FS.OpenFile without os.O_CREATE
	OpWrite                     // File.Write and WriteAt
	OpSync                      // File.Sync, File.Datasync and FS.SyncDir
	OpRename                    // FS.Rename
	OpRemove                    // FS.Remove and FS.RemoveAll
	OpTruncate                  // File.Truncate
	OpPreallocate               // File.Preallocate
	OpMkdir                     // FS.MkdirAll
	OpRead                      // File.Read and ReadAt
	numOps
)

var opNames = [numOps]string{"", "create", "open", "write", "sync", "rename", "remove", "truncate", "preallocate", "mkdir", "read"}

func (o Op) String() string {
	if o <= 0 || o >= numOps {
		return fmt.Sprintf("Op(%d)", int(o))
	}
	return opNames[o]
}

// Rule describes failures to inject.
type Rule struct {
	Op Op
	// Match restricts the rule to operations on paths it accepts (nil
	// accepts all). A rename matches if either path does; a File operation
	// uses the name the file was opened with.
	Match func(path string) bool
	// Nth > 0 fails only the Nth matching operation counted from when the
	// rule was added (1-based), once. Nth <= 0 fails every match.
	Nth int
	// Err is the error returned; nil means ErrInjected.
	Err error
	// ShortWrite makes a failing OpWrite write the first half of its buffer
	// before failing. Otherwise a failed write writes nothing.
	ShortWrite bool
}

type rule struct {
	Rule
	seen int
	done bool
}

// ErrorFS wraps an FS and makes chosen operations fail. A failed operation
// does not reach the wrapped FS (except a ShortWrite's first half). Stat,
// ReadDirNames, Seek, Close and the locks are passed through and never fail
// by injection. It is safe for concurrent use.
type ErrorFS struct {
	inner  FS
	mu     sync.Mutex
	rules  []*rule
	counts [numOps]int
}

var _ FS = (*ErrorFS)(nil)

// NewErrorFS wraps inner with no rules.
func NewErrorFS(inner FS) *ErrorFS { return &ErrorFS{inner: inner} }

// Add installs r.
func (e *ErrorFS) Add(r Rule) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rules = append(e.rules, &rule{Rule: r})
}

// FailNth fails the nth operation of kind op from now (1-based), once, with
// err (nil means ErrInjected).
func (e *ErrorFS) FailNth(op Op, n int, err error) { e.Add(Rule{Op: op, Nth: n, Err: err}) }

// FailNthMatching is FailNth counting only operations on paths match accepts.
func (e *ErrorFS) FailNthMatching(op Op, n int, match func(path string) bool, err error) {
	e.Add(Rule{Op: op, Nth: n, Match: match, Err: err})
}

// FailAlways fails every operation of kind op on a path matching pattern
// until Reset. The pattern is a filepath.Match glob tried against both the
// whole path and its base name; "" matches every path.
func (e *ErrorFS) FailAlways(op Op, pattern string, err error) {
	e.Add(Rule{Op: op, Match: Glob(pattern), Err: err})
}

// Glob returns a Rule.Match that accepts a path when pattern (a
// filepath.Match glob) matches the whole path or its base name. The empty
// pattern accepts everything.
func Glob(pattern string) func(path string) bool {
	if pattern == "" {
		return nil
	}
	return func(path string) bool {
		ok, _ := filepath.Match(pattern, path)
		if !ok {
			ok, _ = filepath.Match(pattern, filepath.Base(path))
		}
		return ok
	}
}

// Reset removes all rules and zeroes the counters.
func (e *ErrorFS) Reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rules = nil
	e.counts = [numOps]int{}
}

// Count returns how many operations of kind op were attempted (failed ones
// included) since NewErrorFS or Reset.
func (e *ErrorFS) Count(op Op) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if op <= 0 || op >= numOps {
		return 0
	}
	return e.counts[op]
}

// check counts an operation and returns the rule that fails it, if any.
func (e *ErrorFS) check(op Op, paths ...string) *rule {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.counts[op]++
	var fired *rule
	for _, r := range e.rules {
		if r.Op != op || r.done || !r.matches(paths) {
			continue
		}
		r.seen++
		if r.Nth > 0 && r.seen != r.Nth {
			continue
		}
		if r.Nth > 0 {
			r.done = true
		}
		if fired == nil {
			fired = r
		}
	}
	return fired
}

func (r *rule) matches(paths []string) bool {
	if r.Match == nil {
		return true
	}
	for _, p := range paths {
		if r.Match(p) {
			return true
		}
	}
	return false
}

func (r *rule) err() error {
	if r.Err != nil {
		return r.Err
	}
	return ErrInjected
}

// fail returns the injected error for op on path wrapped like os does, or nil.
func (e *ErrorFS) fail(op Op, path string) error {
	if r := e.check(op, path); r != nil {
		return &fs.PathError{Op: op.String(), Path: path, Err: r.err()}
	}
	return nil
}

func (e *ErrorFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	op := OpOpen
	if flag&os.O_CREATE != 0 {
		op = OpCreate
	}
	if err := e.fail(op, name); err != nil {
		return nil, err
	}
	f, err := e.inner.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &errorFile{File: f, fs: e}, nil
}

func (e *ErrorFS) Open(name string) (File, error) { return e.OpenFile(name, os.O_RDONLY, 0) }

func (e *ErrorFS) Remove(name string) error {
	if err := e.fail(OpRemove, name); err != nil {
		return err
	}
	return e.inner.Remove(name)
}

func (e *ErrorFS) RemoveAll(name string) error {
	if err := e.fail(OpRemove, name); err != nil {
		return err
	}
	return e.inner.RemoveAll(name)
}

func (e *ErrorFS) Rename(oldpath, newpath string) error {
	if r := e.check(OpRename, oldpath, newpath); r != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: r.err()}
	}
	return e.inner.Rename(oldpath, newpath)
}

func (e *ErrorFS) MkdirAll(dir string, perm fs.FileMode) error {
	if err := e.fail(OpMkdir, dir); err != nil {
		return err
	}
	return e.inner.MkdirAll(dir, perm)
}

func (e *ErrorFS) ReadDirNames(dir string) ([]string, error) { return e.inner.ReadDirNames(dir) }
func (e *ErrorFS) Stat(name string) (fs.FileInfo, error)     { return e.inner.Stat(name) }

func (e *ErrorFS) SyncDir(dir string) error {
	if err := e.fail(OpSync, dir); err != nil {
		return err
	}
	return e.inner.SyncDir(dir)
}

// errorFile injects failures into the File operations of ErrorFS; the rest
// is the wrapped File's.
type errorFile struct {
	File
	fs *ErrorFS
}

func (f *errorFile) Read(p []byte) (int, error) {
	if err := f.fs.fail(OpRead, f.Name()); err != nil {
		return 0, err
	}
	return f.File.Read(p)
}

func (f *errorFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.fs.fail(OpRead, f.Name()); err != nil {
		return 0, err
	}
	return f.File.ReadAt(p, off)
}

func (f *errorFile) Write(p []byte) (int, error) {
	return f.write(p, f.File.Write)
}

// WriteAt fails with errors.ErrUnsupported if the wrapped File has no
// WriteAt.
func (f *errorFile) WriteAt(p []byte, off int64) (int, error) {
	w, ok := f.File.(io.WriterAt)
	if !ok {
		return 0, &fs.PathError{Op: "writeat", Path: f.Name(), Err: errors.ErrUnsupported}
	}
	return f.write(p, func(b []byte) (int, error) { return w.WriteAt(b, off) })
}

func (f *errorFile) write(p []byte, write func([]byte) (int, error)) (int, error) {
	r := f.fs.check(OpWrite, f.Name())
	if r == nil {
		return write(p)
	}
	var n int
	if r.ShortWrite {
		var err error
		if n, err = write(p[:len(p)/2]); err != nil {
			return n, err
		}
	}
	return n, &fs.PathError{Op: "write", Path: f.Name(), Err: r.err()}
}

func (f *errorFile) Sync() error {
	if err := f.fs.fail(OpSync, f.Name()); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *errorFile) Datasync() error {
	if err := f.fs.fail(OpSync, f.Name()); err != nil {
		return err
	}
	return f.File.Datasync()
}

func (f *errorFile) Truncate(size int64) error {
	if err := f.fs.fail(OpTruncate, f.Name()); err != nil {
		return err
	}
	return f.File.Truncate(size)
}

func (f *errorFile) Preallocate(size int64) error {
	if err := f.fs.fail(OpPreallocate, f.Name()); err != nil {
		return err
	}
	return f.File.Preallocate(size)
}
