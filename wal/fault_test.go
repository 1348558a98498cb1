package wal

import (
	"errors"
	"path/filepath"
	"testing"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/etckit/etckit/vfs"
)

// TestInjectedFailuresReturnErrors fails the Nth operation of each kind
// during a workload with cuts: every failure must come back as an error
// that wraps the injected one (never a panic), and a WAL whose write failed
// must be reopenable on the same filesystem.
func TestInjectedFailuresReturnErrors(t *testing.T) {
	for _, op := range []vfs.Op{vfs.OpWrite, vfs.OpSync, vfs.OpRename, vfs.OpCreate, vfs.OpTruncate, vfs.OpPreallocate} {
		for n := 1; n <= 12; n++ {
			mem := vfs.NewMem()
			efs := vfs.NewErrorFS(mem)
			efs.FailNth(op, n, vfs.ErrInjected)
			opts := Options{FS: efs, SegmentSize: 2048}
			dir := "/wal"
			var failed error
			w, err := Create(dir, []byte("m"), opts)
			if err != nil {
				failed = err
			} else {
				for i := uint64(1); i <= 60 && failed == nil; i++ {
					failed = w.Save(hs(1, 0, i), []*raftpb.Entry{ent(1, i, make([]byte, 100))})
				}
				if cerr := w.Close(); failed == nil {
					failed = cerr
				}
			}
			if efs.Count(op) < n {
				continue // the workload did not reach the Nth operation of this kind
			}
			if failed == nil {
				t.Fatalf("%s #%d: injected failure was swallowed", op, n)
			}
			if !errors.Is(failed, vfs.ErrInjected) {
				t.Fatalf("%s #%d: error %v does not wrap the injected failure", op, n, failed)
			}
			if !Exist(mem, dir) {
				continue // Create failed cleanly
			}
			// Whatever is on disk now is a WAL that opens (after a repair
			// of a torn tail, if the failure left one).
			if _, _, _, err := recoverWAL(dir, Options{FS: mem, SegmentSize: 2048}); err != nil {
				t.Fatalf("%s #%d: reopen after failure: %v", op, n, err)
			}
		}
	}
}

func TestCreateRefusesExistingWAL(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	w, err := Create(dir, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if _, err := Create(dir, nil, Options{}); err == nil {
		t.Fatal("Create over an existing WAL succeeded")
	}
}
