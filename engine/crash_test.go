package engine

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/etckit/etckit/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// TestCrashRecovery crashes a member at many points of a seeded workload
// with snapshots, purges and segment cuts. The WAL and .snap files live in a
// crashable filesystem (unsynced writes lost, sectors kept at random); the
// db is the last bbolt commit, which lags the WAL by up to a batch, as after
// a real crash. Every crashed copy must open, replay the committed log above
// its consistent_index, and serve the revision and HashKV the member had.
func TestCrashRecovery(t *testing.T) {
	const seed = 424242
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewSource(seed))
	mem := vfs.NewCrashable()
	tmp := t.TempDir()
	opts := Options{Name: "m1", DataDir: "/data/m1", InitialCluster: "m1=http://127.0.0.1:2380", FS: mem,
		DBPath: filepath.Join(tmp, "live", "db"), SnapshotCount: 7, CatchUpEntries: 3, MaxSnapshots: 2, MaxWALs: 2,
		WALSegmentSize: 8192}
	e, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cc := NewConfTracker(nil)
	if err := e.Apply(committed(t, e), cc.Apply, nil); err != nil {
		t.Fatal(err)
	}
	crashes, replayed := 0, 0
	for i := 0; i < 150; i++ {
		key := fmt.Sprintf("k%d", r.Intn(12))
		var data []byte
		if r.Intn(4) == 0 {
			data, _ = proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: uint64(i + 1)},
				DeleteRange: &pb.DeleteRangeRequest{Key: []byte(key)}})
		} else {
			data = put(uint64(i+1), key, fmt.Sprintf("v%d-%d", i, r.Intn(1000)))
		}
		appendNormal(t, e, cc, 2, data)
		if e.SnapshotDue() {
			if err := e.Snapshot(); err != nil {
				t.Fatal(err)
			}
		}
		if r.Intn(3) != 0 {
			continue
		}
		crashes++
		crashed := mem.CrashWith(vfs.CrashOptions{Seed: seed + int64(i), KeepProb: 0.5})
		dbCopy := filepath.Join(tmp, fmt.Sprintf("crash%d", i), "db")
		copyCommittedDB(t, e, dbCopy)
		wantHash, wantRev, err := e.Store().HashKV(0)
		if err != nil {
			t.Fatal(err)
		}
		o := opts
		o.FS, o.DBPath = crashed, dbCopy
		e2, err := Open(o)
		if err != nil {
			t.Fatalf("step %d: open after crash: %v", i, err)
		}
		ci, _, _ := e2.Store().ConsistentIndex()
		n := 0
		if err := e2.Apply(committed(t, e2), NewConfTracker(nil).Apply, func(Result) { n++ }); err != nil {
			t.Fatalf("step %d: replay: %v", i, err)
		}
		replayed += n
		h, rev, err := e2.Store().HashKV(0)
		if err != nil {
			t.Fatal(err)
		}
		if rev != wantRev || h.Hash != wantHash.Hash {
			t.Fatalf("step %d: after crash rev %d hash %d (db consistent index %d, %d replayed), want rev %d hash %d",
				i, rev, h.Hash, ci, n, wantRev, wantHash.Hash)
		}
		if err := e2.Close(); err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(filepath.Dir(dbCopy))
	}
	t.Logf("%d crashes recovered, %d entries replayed from the WAL above the db's consistent_index", crashes, replayed)
}

// copyCommittedDB writes the db as of its last bbolt commit to path.
func copyCommittedDB(t *testing.T, e *Engine, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	v := e.Store().Backend().Snapshot()
	defer v.Release()
	if err := v.Tx().CopyFile(path, 0o600); err != nil {
		t.Fatal(err)
	}
}
