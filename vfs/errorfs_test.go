package vfs

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
)

func TestErrorFSNthWrite(t *testing.T) {
	mem := NewMem()
	e := NewErrorFS(mem)
	f, err := e.OpenFile("/w", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("a")) // before the rule: not counted by it
	e.FailNth(OpWrite, 2, nil)
	for i, want := range []bool{false, true, false, false} {
		n, err := f.Write([]byte("b"))
		if failed := err != nil; failed != want {
			t.Fatalf("write %d after rule: err %v, want failure %v", i+1, err, want)
		}
		if err != nil {
			var pe *fs.PathError
			if !errors.Is(err, ErrInjected) || !errors.As(err, &pe) || pe.Path != "/w" || n != 0 {
				t.Errorf("injected error %v (n=%d), want ErrInjected naming /w and nothing written", err, n)
			}
		}
	}
	if got := readAll(t, mem, "/w"); string(got) != "abbb" {
		t.Errorf("content %q, want %q: the failed write must write nothing", got, "abbb")
	}
	if got := e.Count(OpWrite); got != 5 {
		t.Errorf("Count(OpWrite) = %d, want 5", got)
	}
	if got := e.Count(OpCreate); got != 1 {
		t.Errorf("Count(OpCreate) = %d, want 1", got)
	}
	e.Reset()
	if e.Count(OpWrite) != 0 {
		t.Error("Reset did not zero the counters")
	}
}

func TestErrorFSShortWrite(t *testing.T) {
	mem := NewMem()
	e := NewErrorFS(mem)
	boom := errors.New("disk full")
	e.Add(Rule{Op: OpWrite, Nth: 1, Err: boom, ShortWrite: true})
	f, _ := e.OpenFile("/w", os.O_WRONLY|os.O_CREATE, 0o644)
	if n, err := f.Write([]byte("abcd")); n != 2 || !errors.Is(err, boom) {
		t.Errorf("short write: n=%d err=%v, want 2 and the rule's error", n, err)
	}
	if got := readAll(t, mem, "/w"); string(got) != "ab" {
		t.Errorf("content %q, want %q", got, "ab")
	}
}

func TestErrorFSPathMatch(t *testing.T) {
	e := NewErrorFS(NewMem())
	e.MkdirAll("/wal", 0o755)
	e.FailNthMatching(OpSync, 2, func(p string) bool { return strings.HasSuffix(p, ".wal") }, nil)
	e.FailAlways(OpRename, "*.tmp", nil)
	e.FailAlways(OpCreate, "/snap/*", nil)

	a, _ := e.OpenFile("/wal/0.wal", os.O_RDWR|os.O_CREATE, 0o644)
	b, _ := e.OpenFile("/wal/x.other", os.O_RDWR|os.O_CREATE, 0o644)
	type outcome struct {
		desc string
		err  error
		fail bool
	}
	steps := []outcome{
		{"sync other", b.Sync(), false},
		{"sync wal 1", a.Sync(), false},
		{"syncdir", e.SyncDir("/wal"), false},
		{"datasync wal 2", a.Datasync(), true},
		{"sync wal 3", a.Sync(), false},
		{"rename from tmp", e.Rename("/wal/1.tmp", "/wal/1.wal"), true},
		{"rename to tmp", e.Rename("/wal/x.other", "/wal/y.tmp"), true},
		{"rename plain", e.Rename("/wal/x.other", "/wal/y.other"), false},
		{"create in snap", e.MkdirAll("/snap", 0o755), false},
	}
	_, err := e.OpenFile("/snap/1.snap", os.O_WRONLY|os.O_CREATE, 0o644)
	steps = append(steps, outcome{"create /snap/1.snap", err, true})
	_, err = e.Open("/wal/y.other")
	steps = append(steps, outcome{"open (not create)", err, false})
	for _, s := range steps {
		if got := errors.Is(s.err, ErrInjected); got != s.fail {
			t.Errorf("%s: err %v, want injected %v", s.desc, s.err, s.fail)
		}
	}
	if got := e.Count(OpSync); got != 5 {
		t.Errorf("Count(OpSync) = %d, want 5", got)
	}
	if Exists(e, "/snap/1.snap") {
		t.Error("a failed create reached the wrapped FS")
	}
}

func TestErrorFSOtherOps(t *testing.T) {
	e := NewErrorFS(NewMem())
	for _, op := range []Op{OpOpen, OpRead, OpTruncate, OpPreallocate, OpRemove, OpMkdir} {
		e.FailNth(op, 1, nil)
	}
	if err := e.MkdirAll("/d", 0o755); !errors.Is(err, ErrInjected) {
		t.Errorf("MkdirAll: %v", err)
	}
	f, err := e.OpenFile("/f", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("x"))
	if _, err := e.Open("/f"); !errors.Is(err, ErrInjected) {
		t.Errorf("Open: %v", err)
	}
	if _, err := f.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrInjected) {
		t.Errorf("ReadAt: %v", err)
	}
	if err := f.Truncate(0); !errors.Is(err, ErrInjected) {
		t.Errorf("Truncate: %v", err)
	}
	if err := f.Preallocate(10); !errors.Is(err, ErrInjected) {
		t.Errorf("Preallocate: %v", err)
	}
	if err := e.RemoveAll("/f"); !errors.Is(err, ErrInjected) {
		t.Errorf("RemoveAll: %v", err)
	}
	// Each rule fired once; everything works again.
	if err := f.Preallocate(10); err != nil {
		t.Errorf("second Preallocate: %v", err)
	}
	if err := e.Remove("/f"); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if OpPreallocate.String() != "preallocate" || Op(99).String() != "Op(99)" {
		t.Errorf("Op.String: %q %q", OpPreallocate, Op(99))
	}
}
