package snap

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/etckit/etckit/vfs"
)

const crashDir = "/data/member/snap"

func newCrashableSnapDir(t *testing.T) *vfs.MemFS {
	t.Helper()
	m := vfs.NewCrashable()
	if err := m.MkdirAll(crashDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"/", "/data", "/data/member", crashDir} {
		if err := m.SyncDir(d); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// A process that dies at any step of Save, followed by power loss, leaves
// either the old newest snapshot or the new one complete: never a broken
// file under a .snap name. Once Save returns, the new one survives.
func TestSaveCrashConsistency(t *testing.T) {
	old := testSnapshot(1000, 2, bytes.Repeat([]byte("a"), 3000))
	nw := testSnapshot(2000, 2, bytes.Repeat([]byte("b"), 5000))
	valid := []Point{PointOf(old), PointOf(nw)}
	for _, op := range []vfs.Op{vfs.OpCreate, vfs.OpWrite, vfs.OpSync, vfs.OpRename} {
		for nth := 1; nth <= 2; nth++ {
			for seed := int64(0); seed < 8; seed++ {
				name := fmt.Sprintf("%v#%d/seed%d", op, nth, seed)
				mem := newCrashableSnapDir(t)
				if _, err := Save(mem, crashDir, old); err != nil {
					t.Fatal(err)
				}
				efs := vfs.NewErrorFS(mem)
				efs.FailNth(op, nth, nil)
				_, saveErr := Save(efs, crashDir, nw)
				crashed := mem.Crash(seed)
				s, p, skipped, err := LoadNewest(crashed, crashDir, valid)
				if err != nil || len(skipped) != 0 {
					t.Fatalf("%s: after crash: %v, skipped %v", name, err, skipped)
				}
				// Only a failed directory fsync (the 2nd sync) comes after
				// the rename: then the complete new file may survive.
				afterRename := op == vfs.OpSync && nth == 2
				if saveErr != nil && p != PointOf(old) && !afterRename {
					t.Fatalf("%s: Save failed (%v) but %v loaded", name, saveErr, p)
				}
				if saveErr == nil && p != PointOf(nw) {
					t.Fatalf("%s: Save succeeded but %v loaded", name, p)
				}
				if !bytes.Equal(Encode(s), Encode(map[Point]*raftpb.Snapshot{PointOf(old): old, PointOf(nw): nw}[p])) {
					t.Fatalf("%s: content differs", name)
				}
				if saveErr != nil {
					// The failed save cleaned up after itself in the live FS.
					for _, n := range mustMemNames(t, mem, crashDir) {
						if strings.HasPrefix(n, TempPrefix) || n == PointOf(nw).FileName() && !afterRename {
							t.Fatalf("%s: failed Save left %s", name, n)
						}
					}
				}
			}
		}
	}
}

// A failing directory fsync is reported: the snapshot might not survive.
func TestSaveReportsDirSyncFailure(t *testing.T) {
	mem := newCrashableSnapDir(t)
	efs := vfs.NewErrorFS(mem)
	efs.FailNthMatching(vfs.OpSync, 1, func(p string) bool { return p == crashDir }, nil)
	if _, err := Save(efs, crashDir, testSnapshot(5, 1, []byte("x"))); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("Save = %v", err)
	}
}

// Reads never write: every read API on an ErrorFS that fails all
// mutations succeeds.
func TestReadsHaveNoSideEffects(t *testing.T) {
	mem := vfs.NewMem()
	if err := mem.MkdirAll(crashDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for i, name := range fixtureSnapNames {
		f, err := mem.OpenFile(crashDir+"/"+name, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		b := fixtureSnaps(t)[name]
		if i == 5 {
			b = b[:100] // broken newest
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	efs := vfs.NewErrorFS(mem)
	for _, op := range []vfs.Op{vfs.OpCreate, vfs.OpWrite, vfs.OpSync, vfs.OpRename, vfs.OpRemove, vfs.OpTruncate, vfs.OpMkdir} {
		efs.FailAlways(op, "", nil)
	}
	if _, err := List(efs, crashDir); err != nil {
		t.Fatal(err)
	}
	_, p, skipped, err := LoadNewestMatching(efs, crashDir, nil)
	if err != nil || p != (Point{2, 5005}) || len(skipped) != 1 {
		t.Fatalf("LoadNewest = %v, %v, %v", p, skipped, err)
	}
	for _, op := range []vfs.Op{vfs.OpCreate, vfs.OpWrite, vfs.OpSync, vfs.OpRename, vfs.OpRemove, vfs.OpTruncate, vfs.OpMkdir} {
		if n := efs.Count(op); n != 0 {
			t.Errorf("%d %v operations during reads", n, op)
		}
	}
}
