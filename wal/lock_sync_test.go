package wal

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/etckit/etckit/vfs"
)

// TestSaveSyncsOnlyWhenRaftNeedsIt counts fdatasyncs: entries and term or
// vote changes sync; a commit-only change and an empty Save do not.
func TestSaveSyncsOnlyWhenRaftNeedsIt(t *testing.T) {
	efs := vfs.NewErrorFS(vfs.NewMem())
	w, err := Create("/wal", nil, Options{FS: efs, SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	steps := []struct {
		name string
		st   *raftpb.HardState
		ents []*raftpb.Entry
		sync bool
	}{
		{"entries", hs(1, 1, 0), []*raftpb.Entry{ent(1, 1, nil)}, true},
		{"commit only", hs(1, 1, 1), nil, false},
		{"empty", &raftpb.HardState{}, nil, false},
		{"nil state, no entries", nil, nil, false},
		{"vote change", hs(1, 2, 1), nil, true},
		{"term change", hs(2, 2, 1), nil, true},
		{"same state again", hs(2, 2, 1), nil, false},
		{"entries with unchanged state", hs(2, 2, 1), []*raftpb.Entry{ent(2, 2, []byte("x"))}, true},
	}
	for _, s := range steps {
		before := efs.Count(vfs.OpSync)
		if err := w.Save(s.st, s.ents); err != nil {
			t.Fatal(err)
		}
		if synced := efs.Count(vfs.OpSync) > before; synced != s.sync {
			t.Errorf("%s: synced=%v, want %v", s.name, synced, s.sync)
		}
	}
}

// TestReleaseLockTo holds segments starting at 0, 1, ... and checks which
// locks are released, by trying to lock each segment through a second open
// file description (OFD locks conflict between descriptions).
func TestReleaseLockTo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	w, err := Create(dir, nil, Options{SegmentSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := uint64(1); i <= 5; i++ {
		if err := w.Save(hs(1, 0, i), []*raftpb.Entry{ent(1, i, nil)}); err != nil {
			t.Fatal(err)
		}
		if err := w.Cut(); err != nil {
			t.Fatal(err)
		}
	}
	// Segments start at index 0, 2, 3, 4, 5, 6.
	all := w.Segments()
	if len(all) != 6 {
		t.Fatalf("segments %v", all)
	}
	lockable := func(name string) bool {
		f, err := vfs.OS{}.OpenFile(filepath.Join(dir, name), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		err = f.TryLock()
		if err != nil && !errors.Is(err, vfs.ErrLocked) {
			t.Fatal(err)
		}
		return err == nil
	}
	if err := w.ReleaseLockTo(4); err != nil {
		t.Fatal(err)
	}
	// Index 4 lives in the segment starting at 4; the one before it (3)
	// is kept; 0 and 2 are released.
	want := map[string]bool{all[0]: true, all[1]: true}
	for _, n := range all {
		if got := lockable(n); got != want[n] {
			t.Errorf("%s lockable=%v, want %v", n, got, want[n])
		}
	}
	if got := w.Segments(); len(got) != 4 || got[0] != all[2] {
		t.Fatalf("held %v", got)
	}
	// Appending still works after releasing.
	if err := w.Save(hs(1, 0, 6), []*raftpb.Entry{ent(1, 6, nil)}); err != nil {
		t.Fatal(err)
	}
}
