package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// The differential test runs the same script on OS (in t.TempDir()) and on
// MemFS and requires the same result from every step and the same final
// tree.

type env struct {
	fsys  FS
	base  string
	files map[string]File
}

func (e *env) path(name string) string { return filepath.Join(e.base, name) }

// errStr describes err by kind, independent of where the tree lives.
func (e *env) errStr(err error) string {
	if err == nil {
		return "ok"
	}
	op := ""
	var pe *fs.PathError
	var le *os.LinkError
	if errors.As(err, &pe) {
		op = pe.Op + ":"
	} else if errors.As(err, &le) {
		op = le.Op + ":"
	}
	var errno syscall.Errno
	switch {
	case errors.Is(err, io.EOF):
		return op + "EOF"
	case errors.Is(err, fs.ErrClosed):
		return op + "closed"
	case errors.Is(err, ErrLocked):
		return op + "locked"
	case errors.As(err, &errno):
		return op + errno.Error()
	case strings.Contains(err.Error(), "invalid use of WriteAt"):
		return "WriteAt with O_APPEND" // os does not name the path; MemFS does
	}
	return op + strings.ReplaceAll(err.Error(), e.base, "")
}

type step struct {
	desc string
	do   func(e *env) string
}

func infoStr(fi fs.FileInfo) string {
	if fi.IsDir() {
		return fi.Name() + " dir"
	}
	return fmt.Sprintf("%s size=%d", fi.Name(), fi.Size())
}

func openS(h, name string, flag int) step {
	return step{fmt.Sprintf("open %s %s %#x", h, name, flag), func(e *env) string {
		f, err := e.fsys.OpenFile(e.path(name), flag, 0o644)
		if err == nil {
			e.files[h] = f
			if f.Name() != e.path(name) {
				return "bad name " + f.Name()
			}
		}
		return e.errStr(err)
	}}
}

func createS(h, name string) step { return openS(h, name, os.O_RDWR|os.O_CREATE|os.O_TRUNC) }

func writeS(h, s string) step {
	return step{"write " + h + " " + s, func(e *env) string {
		n, err := e.files[h].Write([]byte(s))
		return fmt.Sprintf("%d %s", n, e.errStr(err))
	}}
}

func writeAtS(h, s string, off int64) step {
	return step{fmt.Sprintf("writeAt %s %s %d", h, s, off), func(e *env) string {
		n, err := e.files[h].(io.WriterAt).WriteAt([]byte(s), off)
		return fmt.Sprintf("%d %s", n, e.errStr(err))
	}}
}

func readS(h string, n int) step {
	return step{fmt.Sprintf("read %s %d", h, n), func(e *env) string {
		b := make([]byte, n)
		n, err := e.files[h].Read(b)
		return fmt.Sprintf("%q %s", b[:n], e.errStr(err))
	}}
}

func readAtS(h string, n int, off int64) step {
	return step{fmt.Sprintf("readAt %s %d %d", h, n, off), func(e *env) string {
		b := make([]byte, n)
		n, err := e.files[h].ReadAt(b, off)
		return fmt.Sprintf("%q %s", b[:n], e.errStr(err))
	}}
}

func seekS(h string, off int64, whence int) step {
	return step{fmt.Sprintf("seek %s %d %d", h, off, whence), func(e *env) string {
		n, err := e.files[h].Seek(off, whence)
		return fmt.Sprintf("%d %s", n, e.errStr(err))
	}}
}

func fileS(h, what string, fn func(File) error) step {
	return step{what + " " + h, func(e *env) string { return e.errStr(fn(e.files[h])) }}
}

func truncS(h string, size int64) step {
	return fileS(h, fmt.Sprint("truncate ", size), func(f File) error { return f.Truncate(size) })
}

func preallocS(h string, size int64) step {
	return fileS(h, fmt.Sprint("preallocate ", size), func(f File) error { return f.Preallocate(size) })
}

func closeS(h string) step    { return fileS(h, "close", File.Close) }
func syncS(h string) step     { return fileS(h, "sync", File.Sync) }
func datasyncS(h string) step { return fileS(h, "datasync", File.Datasync) }
func tryLockS(h string) step  { return fileS(h, "trylock", File.TryLock) }
func unlockS(h string) step   { return fileS(h, "unlock", File.Unlock) }

func fstatS(h string) step {
	return step{"fstat " + h, func(e *env) string {
		fi, err := e.files[h].Stat()
		if err != nil {
			return e.errStr(err)
		}
		return infoStr(fi)
	}}
}

func statS(name string) step {
	return step{"stat " + name, func(e *env) string {
		fi, err := e.fsys.Stat(e.path(name))
		if err != nil {
			return e.errStr(err)
		}
		return infoStr(fi)
	}}
}

func readDirS(name string) step {
	return step{"readdir " + name, func(e *env) string {
		names, err := e.fsys.ReadDirNames(e.path(name))
		return fmt.Sprintf("%q %s", names, e.errStr(err))
	}}
}

func fsS(what, name string, fn func(FS, string) error) step {
	return step{what + " " + name, func(e *env) string { return e.errStr(fn(e.fsys, e.path(name))) }}
}

func removeS(name string) step    { return fsS("remove", name, FS.Remove) }
func removeAllS(name string) step { return fsS("removeAll", name, FS.RemoveAll) }
func syncDirS(name string) step   { return fsS("syncDir", name, FS.SyncDir) }
func mkdirAllS(name string) step {
	return fsS("mkdirAll", name, func(f FS, p string) error { return f.MkdirAll(p, 0o755) })
}

func renameS(from, to string) step {
	return step{"rename " + from + " " + to, func(e *env) string {
		return e.errStr(e.fsys.Rename(e.path(from), e.path(to)))
	}}
}

// dump lists the tree under dir: one line per entry with file contents.
func dump(t *testing.T, fsys FS, dir string) []string {
	t.Helper()
	var out []string
	var walk func(rel string)
	walk = func(rel string) {
		names, err := fsys.ReadDirNames(filepath.Join(dir, rel))
		if err != nil {
			t.Fatalf("dump: %v", err)
		}
		for _, name := range names {
			p := filepath.Join(rel, name)
			fi, err := fsys.Stat(filepath.Join(dir, p))
			if err != nil {
				t.Fatalf("dump: %v", err)
			}
			if fi.IsDir() {
				out = append(out, p+"/")
				walk(p)
				continue
			}
			out = append(out, fmt.Sprintf("%s %q", p, readAll(t, fsys, filepath.Join(dir, p))))
		}
	}
	walk("")
	return out
}

func readAll(t *testing.T, fsys FS, name string) []byte {
	t.Helper()
	f, err := fsys.Open(name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}

var diffScripts = map[string][]step{
	"readwrite": {
		createS("h", "a"),
		writeS("h", "hello"),
		seekS("h", 0, io.SeekStart),
		readS("h", 3),
		readS("h", 10),
		readS("h", 10),
		readS("h", 0),
		readAtS("h", 10, 1),
		readAtS("h", 2, 1),
		readAtS("h", 2, 99),
		readAtS("h", 2, -1),
		seekS("h", 10, io.SeekStart),
		writeS("h", "x"),
		readAtS("h", 20, 0),
		fstatS("h"),
		seekS("h", -2, io.SeekCurrent),
		readS("h", 5),
		seekS("h", -3, io.SeekEnd),
		seekS("h", -30, io.SeekEnd),
		writeAtS("h", "WW", 1),
		writeAtS("h", "end", 14),
		writeAtS("h", "", 40),
		writeAtS("h", "z", -1),
		readAtS("h", 30, 0),
		truncS("h", 4),
		truncS("h", -1),
		readAtS("h", 10, 0),
		truncS("h", 6),
		readAtS("h", 10, 0),
		preallocS("h", 9),
		preallocS("h", 3),
		fstatS("h"),
		readAtS("h", 20, 0),
		syncS("h"),
		datasyncS("h"),
		statS("a"),
		closeS("h"),
		closeS("h"),
		writeS("h", "y"),
		readS("h", 1),
		readAtS("h", 1, 0),
		seekS("h", 0, io.SeekStart),
		fstatS("h"),
		syncS("h"),
		datasyncS("h"),
		truncS("h", 0),
		preallocS("h", 100),
		tryLockS("h"),
		unlockS("h"),
	},
	"flags": {
		openS("r", "missing", os.O_RDONLY),
		openS("w", "missing", os.O_WRONLY),
		openS("x", "f", os.O_WRONLY|os.O_CREATE|os.O_EXCL),
		openS("x2", "f", os.O_WRONLY|os.O_CREATE|os.O_EXCL),
		writeS("x", "0123456789"),
		readS("x", 4),
		closeS("x"),
		openS("r", "f", os.O_RDONLY),
		writeS("r", "no"),
		truncS("r", 1),
		preallocS("r", 1),
		preallocS("r", 100),
		readS("r", 4),
		openS("a", "f", os.O_WRONLY|os.O_APPEND),
		writeS("a", "AB"),
		seekS("a", 0, io.SeekStart),
		writeS("a", "CD"),
		writeAtS("a", "no", 0),
		seekS("a", 0, io.SeekCurrent),
		readS("r", 100),
		openS("c", "f", os.O_RDWR|os.O_CREATE),
		readS("c", 3),
		openS("t", "f", os.O_RDWR|os.O_TRUNC),
		readAtS("r", 4, 0),
		readS("c", 3),
		openS("ra", "f", os.O_RDWR|os.O_APPEND),
		writeS("ra", "tail"),
		readAtS("ra", 10, 0),
		readS("ra", 10),
		closeS("r"), closeS("a"), closeS("c"), closeS("t"), closeS("ra"),
	},
	"dirs": {
		mkdirAllS("d/e/f"),
		mkdirAllS("d/e/f"),
		mkdirAllS("d/e"),
		createS("h", "d/e/file"),
		writeS("h", "data"),
		closeS("h"),
		createS("h2", "nodir/file"),
		createS("h3", "d/e/file/x"),
		mkdirAllS("d/e/file/x"),
		mkdirAllS("d/e/file"),
		statS("d"),
		statS("d/e/file"),
		statS("d/e/file/x"),
		statS("nothing"),
		readDirS("d/e"),
		readDirS("d/e/file"),
		readDirS("missing"),
		openS("dh", "d", os.O_RDONLY),
		fstatS("dh"),
		readS("dh", 1),
		syncS("dh"),
		closeS("dh"),
		openS("dw", "d", os.O_RDWR),
		openS("dc", "d", os.O_RDONLY|os.O_CREATE),
		syncDirS("d"),
		syncDirS("d/e/file"),
		syncDirS("missing"),
		removeS("d/e"),
		removeS("d/e/f"),
		removeS("d/e/f"),
		removeS("missing/x"),
		createS("h4", "d/e/z"),
		createS("h5", "d/e/a"),
		readDirS("d/e"),
		removeAllS("d/e"),
		statS("d/e/z"),
		readDirS("d"),
		removeAllS("d/e"),
		removeAllS("missing/deeper"),
		closeS("h4"), closeS("h5"),
	},
	"rename": {
		mkdirAllS("src/sub"),
		mkdirAllS("dst"),
		createS("a", "src/a"),
		writeS("a", "AAA"),
		createS("b", "dst/b"),
		writeS("b", "BB"),
		renameS("src/a", "src/a2"),
		statS("src/a"),
		writeS("a", "+"),
		readAtS("a", 10, 0),
		renameS("src/a2", "dst/b"),
		openS("b2", "dst/b", os.O_RDONLY),
		readS("b2", 10),
		readAtS("b", 10, 0),
		renameS("missing", "dst/x"),
		renameS("dst/b", "nodir/x"),
		renameS("dst/b", "dst/b"),
		renameS("dst/b", "src"),
		renameS("src", "dst/b"),
		renameS("src", "src/sub/inner"),
		renameS("src", "dst"),
		createS("c", "src/sub/c"),
		writeS("c", "C"),
		renameS("src", "moved"),
		readDirS("moved/sub"),
		statS("src"),
		removeS("moved/sub/c"),
		readAtS("c", 5, 0),
		writeS("c", "D"),
		readAtS("c", 5, 0),
		statS("moved/sub/c"),
		mkdirAllS("empty"),
		renameS("empty", "empty2"),
		closeS("a"), closeS("b"), closeS("b2"), closeS("c"),
	},
	"locks": {
		createS("h1", "LOCK"),
		openS("h2", "LOCK", os.O_RDWR),
		tryLockS("h1"),
		tryLockS("h1"),
		tryLockS("h2"),
		unlockS("h2"),
		unlockS("h1"),
		tryLockS("h2"),
		tryLockS("h1"),
		closeS("h2"),
		tryLockS("h1"),
		openS("h3", "LOCK", os.O_WRONLY),
		tryLockS("h3"),
		closeS("h1"),
		tryLockS("h3"),
		closeS("h3"),
	},
}

func TestMemMatchesOS(t *testing.T) {
	for name, script := range diffScripts {
		t.Run(name, func(t *testing.T) {
			osEnv := &env{fsys: OS{}, base: t.TempDir(), files: map[string]File{}}
			mem := NewCrashable()
			memEnv := &env{fsys: mem, base: "/some/dir", files: map[string]File{}}
			if err := mem.MkdirAll(memEnv.base, 0o755); err != nil {
				t.Fatal(err)
			}
			for i, s := range script {
				want, got := s.do(osEnv), s.do(memEnv)
				if got != want {
					t.Errorf("step %d %s: MemFS %q, OS %q", i, s.desc, got, want)
				}
			}
			for _, f := range osEnv.files {
				f.Close()
			}
			want, got := dump(t, OS{}, osEnv.base), dump(t, mem, memEnv.base)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("final tree:\nMemFS:\n%s\nOS:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func TestMemPaths(t *testing.T) {
	m := NewMem()
	if err := m.MkdirAll("a/b", 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := m.OpenFile("a/b/../b/./f", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if f.Name() != "a/b/../b/./f" {
		t.Errorf("Name() = %q, want the name as opened", f.Name())
	}
	f.Close()
	for _, name := range []string{"/a/b/f", "a/b/f", "/a//b/f", "/../a/b/f"} {
		if !Exists(m, name) {
			t.Errorf("%s: does not exist", name)
		}
	}
	fi, err := m.Stat("/")
	if err != nil || !fi.IsDir() || fi.Name() != "/" {
		t.Errorf("Stat(/) = %v, %v", fi, err)
	}
	fi, err = m.Stat("a/b/f")
	if err != nil || fi.Mode() != 0o600 || !fi.ModTime().IsZero() {
		t.Errorf("Stat(a/b/f) = %v, %v", fi, err)
	}
	_, err = m.Stat("/a/x")
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Path != "/a/x" || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat missing: %v, want *fs.PathError naming /a/x and ErrNotExist", err)
	}
	if _, err := m.OpenFile("a/b/f", os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0); !errors.Is(err, fs.ErrExist) {
		t.Errorf("O_EXCL on existing: %v, want ErrExist", err)
	}
	if err := m.Remove("/"); err == nil {
		t.Error("Remove(/) succeeded")
	}
	if err := m.RemoveAll("/"); err != nil || !Exists(m, "/") || Exists(m, "/a") {
		t.Errorf("RemoveAll(/) = %v; / must stay, empty", err)
	}
}

func TestMemLockBlocks(t *testing.T) {
	m := NewMem()
	f1, _ := m.OpenFile("l", os.O_RDWR|os.O_CREATE, 0o644)
	f2, _ := m.OpenFile("l", os.O_RDWR, 0)
	if err := f1.Lock(); err != nil {
		t.Fatal(err)
	}
	got := make(chan error)
	go func() { got <- f2.Lock() }()
	select {
	case err := <-got:
		t.Fatalf("Lock returned %v while another handle holds the lock", err)
	default:
	}
	f1.Close()
	if err := <-got; err != nil {
		t.Fatalf("Lock after the holder closed: %v", err)
	}
	if err := f1.TryLock(); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("TryLock on closed handle: %v, want ErrClosed", err)
	}
	f3, _ := m.OpenFile("l", os.O_RDWR, 0)
	if err := f3.TryLock(); err != ErrLocked {
		t.Errorf("TryLock: %v, want ErrLocked", err)
	}
	r, _ := m.Open("l")
	if err := r.TryLock(); err == nil || err == ErrLocked {
		t.Errorf("TryLock on read-only handle: %v, want EBADF as with OFD locks", err)
	}
}

// TestMemConcurrent writes one file while other goroutines create and
// preallocate others, as the WAL does; run with -race.
func TestMemConcurrent(t *testing.T) {
	m := NewCrashable()
	w, err := m.OpenFile("wal", os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				f, err := m.OpenFile(fmt.Sprintf("tmp%d.%d", g, i), os.O_RDWR|os.O_CREATE, 0o644)
				if err != nil {
					t.Error(err)
					return
				}
				f.Preallocate(4096)
				f.Sync()
				f.Close()
				m.SyncDir("/")
				m.ReadDirNames("/")
			}
		}()
	}
	for range 500 {
		if _, err := w.Write([]byte("0123456789")); err != nil {
			t.Fatal(err)
		}
		w.Datasync()
	}
	wg.Wait()
	if fi, _ := w.Stat(); fi.Size() != 5000 {
		t.Errorf("size %d, want 5000", fi.Size())
	}
	if names, _ := m.ReadDirNames("/"); len(names) != 201 {
		t.Errorf("%d names, want 201", len(names))
	}
}

// TestOSLockExcludesSecondHandle: OFD locks (and flock) belong to the open
// file description, so two opens in one process exclude each other.
func TestOSLockExcludesSecondHandle(t *testing.T) {
	name := filepath.Join(t.TempDir(), "LOCK")
	f1, err := OS{}.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f2, err := OS{}.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if err := f1.TryLock(); err != nil {
		t.Fatalf("first TryLock: %v", err)
	}
	if err := f2.TryLock(); err != ErrLocked {
		t.Fatalf("second handle TryLock: %v, want ErrLocked", err)
	}
	if err := f1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f2.TryLock(); err != nil {
		t.Fatalf("TryLock after the holder closed: %v", err)
	}
	if err := f1.TryLock(); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("TryLock on closed handle: %v, want ErrClosed", err)
	}
}
