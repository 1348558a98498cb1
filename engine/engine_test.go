package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/wal"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// fixtureID is the member of every etcd 3.6.16 fixture: --name default,
// peer URL http://127.0.0.1:23800, token etcd-cluster.
const (
	fixtureMemberID  = 3319814642761637952
	fixtureClusterID = 324952591200643719
)

func TestIDsAsEtcd(t *testing.T) {
	ms, cid, err := InitialMembers("default=http://127.0.0.1:23800", "etcd-cluster")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].ID != fixtureMemberID || cid != fixtureClusterID {
		t.Fatalf("got members %+v cluster %d, want member %d cluster %d", ms, cid, uint64(fixtureMemberID), uint64(fixtureClusterID))
	}
	if _, _, err := InitialMembers("a=http://x:1,b=http://x:1", "t"); err == nil {
		t.Fatal("duplicate peer URL accepted")
	}
}

// committed returns the committed entries of the raft log after the
// snapshot, as raft would deliver them at start.
func committed(t *testing.T, e *Engine) []*raftpb.Entry {
	t.Helper()
	first, _ := e.RaftStorage().FirstIndex()
	hs, _, _ := e.RaftStorage().InitialState()
	if hs.GetCommit() < first {
		return nil
	}
	ents, err := e.RaftStorage().Entries(first, hs.GetCommit()+1, 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	return ents
}

func TestOpenFixtures(t *testing.T) {
	for _, tc := range []struct {
		tarball, dir string
		rev          int64
		hash         uint32
		compact      int64
	}{
		{"etcd-3.6.16/small.tar.gz", "small", 105, 336939241, 81},
		{"etcd-3.6.16/snapshot.tar.gz", "snapshot", 6004, 419984033, -1},
		{"etcd-3.6.16/snapshot-restored.tar.gz", "restored", 105, 336939241, 81},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			root := fixture.Extract(t, tc.tarball)
			e, err := Open(Options{Name: "default", DataDir: filepath.Join(root, tc.dir), NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			if e.ID() != fixtureMemberID || e.ClusterID() != fixtureClusterID {
				t.Errorf("ids %x/%x", e.ID(), e.ClusterID())
			}
			ms := e.Members()
			if len(ms) != 1 || ms[0].Name != "default" || ms[0].PeerURLs[0] != "http://127.0.0.1:23800" {
				t.Errorf("members %+v", ms)
			}
			check := func(when string) {
				h, rev, err := e.Store().HashKV(0)
				if err != nil {
					t.Fatal(err)
				}
				if rev != tc.rev || h.Hash != tc.hash || h.CompactRevision != tc.compact {
					t.Errorf("%s: rev %d hash %d compact %d, want %d %d %d", when, rev, h.Hash, h.CompactRevision, tc.rev, tc.hash, tc.compact)
				}
			}
			check("open")
			// Replaying the committed log changes nothing: every entry is at
			// or below the db's consistent_index.
			cc := NewConfTracker(nil)
			n := 0
			if err := e.Apply(committed(t, e), cc.Apply, func(Result) { n++ }); err != nil {
				t.Fatal(err)
			}
			check("replay")
			if n != 0 {
				t.Errorf("%d entries re-applied", n)
			}
			t.Logf("%s: revision %d, hash %d, applied %v", tc.dir, tc.rev, tc.hash, fmt.Sprint(e.Applied()))
		})
	}
}

func put(id uint64, key, val string) []byte {
	b, _ := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: id}, Put: &pb.PutRequest{Key: []byte(key), Value: []byte(val)}})
	return b
}

// appendNormal persists and applies one normal entry, as the server's
// Ready loop would.
func appendNormal(t *testing.T, e *Engine, cc *ConfTracker, term uint64, data []byte) Result {
	t.Helper()
	res, err := saveAndApply(e, cc, term, data)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// saveAndApply is appendNormal for goroutines other than the test's.
func saveAndApply(e *Engine, cc *ConfTracker, term uint64, data []byte) (Result, error) {
	last, _ := e.RaftStorage().LastIndex()
	typ := raftpb.EntryNormal
	ent := &raftpb.Entry{Term: proto.Uint64(term), Index: proto.Uint64(last + 1), Type: &typ, Data: data}
	hs := &raftpb.HardState{Term: proto.Uint64(term), Vote: proto.Uint64(e.ID()), Commit: proto.Uint64(last + 1)}
	if err := e.SaveReady(hs, []*raftpb.Entry{ent}, nil); err != nil {
		return Result{}, err
	}
	var res Result
	err := e.Apply([]*raftpb.Entry{ent}, cc.Apply, func(r Result) { res = r })
	return res, err
}

func TestBootstrapLayoutAndApply(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m1.etckit")
	opts := Options{Name: "m1", DataDir: dir, InitialCluster: "m1=http://127.0.0.1:2380", NoSync: true}
	e, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !e.Bootstrapped() {
		t.Fatal("not bootstrapped")
	}
	for _, p := range []struct {
		path string
		mode os.FileMode
	}{
		{dir, 0o700}, {filepath.Join(dir, "member"), 0o700}, {filepath.Join(dir, "member", "wal"), 0o700},
		{filepath.Join(dir, "member", "snap"), 0o700}, {filepath.Join(dir, "member", "snap", "db"), 0o600},
		{filepath.Join(dir, "member", "wal", wal.SegmentName(0, 0)), 0o600},
	} {
		fi, err := os.Stat(p.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != p.mode {
			t.Errorf("%s: mode %o, want %o", p.path, fi.Mode().Perm(), p.mode)
		}
	}
	// Apply the bootstrap conf change, then two puts.
	cc := NewConfTracker(nil)
	if err := e.Apply(committed(t, e), cc.Apply, nil); err != nil {
		t.Fatal(err)
	}
	empty := appendNormal(t, e, cc, 2, nil) // the new leader's empty entry
	_ = empty
	r := appendNormal(t, e, cc, 2, put(7, "foo", "bar"))
	if r.Err != nil || r.ID != 7 || r.Resp.(*pb.PutResponse).Header.Revision != 2 {
		t.Fatalf("put result %+v", r)
	}
	appendNormal(t, e, cc, 2, put(8, "foo", "baz"))
	ci, term, err := e.Store().ConsistentIndex()
	if err != nil || ci != 4 || term != 2 {
		t.Fatalf("consistent index %d term %d err %v, want 4 2", ci, term, err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// What etcd would read: WAL metadata, entries, HardState; the buckets.
	w, err := wal.OpenForRead(filepath.Join(dir, "member", "wal"), wal.Snapshot{}, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	md, hs, ents, err := w.ReadAll()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	var meta pb.Metadata
	if err := proto.Unmarshal(md, &meta); err != nil || meta.GetNodeID() != e.ID() || meta.GetClusterID() != e.ClusterID() {
		t.Fatalf("metadata %v err %v", &meta, err)
	}
	if len(ents) != 4 || hs.GetCommit() != 4 || hs.GetTerm() != 2 {
		t.Fatalf("%d entries, hardstate %v", len(ents), hs)
	}
	var c raftpb.ConfChange
	if err := proto.Unmarshal(ents[0].GetData(), &c); err != nil {
		t.Fatal(err)
	}
	wantCtx := fmt.Sprintf(`{"id":%d,"peerURLs":["http://127.0.0.1:2380"],"name":"m1"}`, e.ID())
	if ents[0].GetType() != raftpb.EntryConfChange || ents[0].GetTerm() != 1 || c.GetNodeId() != e.ID() || string(c.GetContext()) != wantCtx {
		t.Fatalf("bootstrap entry %v / %v", ents[0], &c)
	}

	// Reopen: same state, and the members bucket and confState are etcd's.
	e2, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if e2.Bootstrapped() || e2.Store().Rev() != 3 {
		t.Fatalf("reopened: bootstrapped %v rev %d", e2.Bootstrapped(), e2.Store().Rev())
	}
	rr, err := e2.Store().Range(&pb.RangeRequest{Key: []byte("foo")})
	if err != nil || len(rr.Kvs) != 1 || string(rr.Kvs[0].Value) != "baz" || rr.Kvs[0].Version != 2 {
		t.Fatalf("range %v %v", rr, err)
	}
	v := e2.Store().Backend().View()
	mj, _ := v.Get([]byte(mvcc.BucketMembers), memberKey(e.ID()))
	cs, _ := v.Get([]byte(mvcc.BucketMeta), []byte(mvcc.MetaConfState))
	ar, _ := v.Get([]byte(mvcc.BucketAuth), []byte("authRevision"))
	v.Release()
	if string(mj) != wantCtx || string(cs) != fmt.Sprintf(`{"voters":[%d],"auto_leave":false}`, e.ID()) || binary.BigEndian.Uint64(ar) != 1 {
		t.Fatalf("members %s confState %s authRevision %x", mj, cs, ar)
	}
	var m Member
	if err := json.Unmarshal(mj, &m); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotAndPurge(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m1")
	opts := Options{Name: "m1", DataDir: dir, InitialCluster: "m1=http://127.0.0.1:2380", NoSync: true,
		SnapshotCount: 10, CatchUpEntries: 5, MaxSnapshots: 2, MaxWALs: 2, WALSegmentSize: 4096}
	e, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	cc := NewConfTracker(nil)
	if err := e.Apply(committed(t, e), cc.Apply, nil); err != nil {
		t.Fatal(err)
	}
	snaps := 0
	for i := 0; i < 100; i++ {
		appendNormal(t, e, cc, 2, put(uint64(i+1), fmt.Sprintf("k%03d", i), strings.Repeat("v", 100)))
		if e.SnapshotDue() {
			if err := e.Snapshot(); err != nil {
				t.Fatal(err)
			}
			snaps++
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	var nsnap, nwal int
	names, _ := os.ReadDir(filepath.Join(dir, "member", "snap"))
	for _, n := range names {
		if strings.HasSuffix(n.Name(), ".snap") {
			nsnap++
		}
	}
	names, _ = os.ReadDir(filepath.Join(dir, "member", "wal"))
	for _, n := range names {
		if strings.HasSuffix(n.Name(), ".wal") {
			nwal++
		}
	}
	t.Logf("%d snapshots taken, %d .snap and %d WAL segments kept", snaps, nsnap, nwal)
	if snaps < 8 || nsnap != 2 {
		t.Fatalf("%d snapshots, %d .snap files kept", snaps, nsnap)
	}
	e2, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if idx, _ := e2.Applied(); idx < 90 {
		t.Fatalf("reopened at snapshot index %d", idx)
	}
	if e2.Store().Rev() != 101 {
		t.Fatalf("rev %d", e2.Store().Rev())
	}
	if err := e2.Apply(committed(t, e2), cc.Apply, nil); err != nil {
		t.Fatal(err)
	}
	if e2.Store().Rev() != 101 {
		t.Fatalf("rev after replay %d", e2.Store().Rev())
	}
}

// TestReplayAboveConsistentIndex: apply resumes exactly at
// consistent_index+1 (here the index is lowered by hand, so the 13 entries
// above it are applied a second time on top of their own data) and leaves
// consistent_index at the last entry.
func TestReplayAboveConsistentIndex(t *testing.T) {
	root := fixture.Extract(t, "etcd-3.6.16/small.tar.gz")
	dir := filepath.Join(root, "small")
	// Pretend the db only saw entries up to 100 of 113.
	st, err := mvcc.Open(filepath.Join(dir, "member", "snap", "db"), mvcc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetConsistentIndex(100, 2); err != nil {
		t.Fatal(err)
	}
	st.Close()
	e, err := Open(Options{Name: "default", DataDir: dir, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	n := 0
	cc := NewConfTracker(nil)
	if err := e.Apply(committed(t, e), cc.Apply, func(Result) { n++ }); err != nil {
		t.Fatal(err)
	}
	if ci, _, _ := e.Store().ConsistentIndex(); ci != 113 {
		t.Fatalf("consistent index %d", ci)
	}
	t.Logf("re-applied %d entries, revision now %d", n, e.Store().Rev())
	if n != 13 {
		t.Fatalf("re-applied %d entries, want 13", n)
	}
}

// TestMidLogCorruptionRefused: a damaged record before the tail is refused
// with the segment and offset, and nothing is repaired.
func TestMidLogCorruptionRefused(t *testing.T) {
	root := fixture.Extract(t, "etcd-3.6.16/small.tar.gz")
	dir := filepath.Join(root, "small")
	walDir := filepath.Join(dir, "member", "wal")
	seg := filepath.Join(walDir, wal.SegmentName(0, 0))
	var pos []wal.Position
	sc, err := wal.NewScanner(walDir, wal.ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for sc.Next() {
		pos = append(pos, sc.Position())
	}
	sc.Close()
	mid := pos[len(pos)/2]
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	f.ReadAt(b, mid.Offset+12)
	b[0] ^= 0xff
	f.WriteAt(b, mid.Offset+12)
	f.Close()
	_, err = Open(Options{Name: "default", DataDir: dir, NoSync: true})
	var ce *corrupt.Error
	if err == nil || !errors.As(err, &ce) || errors.Is(err, corrupt.ErrTornTail) {
		t.Fatalf("open: %v", err)
	}
	if !strings.Contains(err.Error(), wal.SegmentName(0, 0)) {
		t.Fatalf("error does not name the segment: %v", err)
	}
	t.Logf("refused: %v", err)
}

// TestBootRemovesDefragLeftovers: a defrag cut short leaves
// snap/db.tmp.<random>; the next boot deletes it as etcd's snapshotter
// does, with snap/tmp*, and keeps the db.
func TestBootRemovesDefragLeftovers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m1.etckit")
	opts := Options{Name: "m1", DataDir: dir, InitialCluster: "m1=http://127.0.0.1:2380", NoSync: true}
	e, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	rev := e.Store().Rev()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	snapDir := filepath.Join(dir, "member", "snap")
	for _, n := range []string{"db.tmp.123456", "tmp0123.snap"} {
		if err := os.WriteFile(filepath.Join(snapDir, n), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e, err = Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if left, _ := filepath.Glob(filepath.Join(snapDir, "*tmp*")); len(left) != 0 {
		t.Fatalf("left after boot: %v", left)
	}
	if e.Store().Rev() != rev {
		t.Fatalf("revision %d after reboot, was %d", e.Store().Rev(), rev)
	}
}

// TestDBOlderThanSnapshotRefused is etcd's
// TestBreakConsistentIndexNewerThanSnapshot at the engine: a db copied back
// from before the newest .snap (or lost and recreated empty) cannot be
// brought up to date, because the WAL is replayed only from the snapshot
// on. The member must refuse to start with etcd's message and the paths,
// leave the files as they were, and start again once the right db is back.
func TestDBOlderThanSnapshotRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m1")
	opts := Options{Name: "m1", DataDir: dir, InitialCluster: "m1=http://127.0.0.1:2380", NoSync: true, SnapshotCount: 10}
	e, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	cc := NewConfTracker(nil)
	if err := e.Apply(committed(t, e), cc.Apply, nil); err != nil {
		t.Fatal(err)
	}
	write := func(from, n int) {
		for i := from; i < from+n; i++ {
			appendNormal(t, e, cc, 2, put(uint64(i+1), fmt.Sprintf("k%03d", i), "v"))
			if e.SnapshotDue() {
				if err := e.Snapshot(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	write(0, 5)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(dir, "member", "snap", "db")
	old, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if e, err = Open(opts); err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(committed(t, e), cc.Apply, nil); err != nil {
		t.Fatal(err)
	}
	write(5, 30)
	snapIndex, _ := e.Applied()
	rev := e.Store().Rev()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	current, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		db   []byte // nil: no db at all
	}{{"older db", old}, {"no db", nil}} {
		os.Remove(dbPath)
		if tc.db != nil {
			if err := os.WriteFile(dbPath, tc.db, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, err := Open(opts)
		if err == nil {
			t.Fatalf("%s: opened a member whose db is older than its snapshot (applied %d)", tc.name, snapIndex)
		}
		for _, want := range []string{"failed to find database snapshot file (snap: snapshot file doesn't exist)", dbPath, ".snap.db"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("%s: error %q does not say %q", tc.name, err, want)
			}
		}
		t.Logf("%s: refused: %v", tc.name, err)
		got, _ := os.ReadFile(dbPath)
		if !bytes.Equal(got, tc.db) {
			t.Fatalf("%s: the refused start changed the db", tc.name)
		}
	}
	if err := os.WriteFile(dbPath, current, 0o600); err != nil {
		t.Fatal(err)
	}
	e, err = Open(opts)
	if err != nil {
		t.Fatalf("with its own db back: %v", err)
	}
	defer e.Close()
	if e.Store().Rev() != rev {
		t.Fatalf("revision %d, was %d", e.Store().Rev(), rev)
	}
}

// TestSnapshotAfterReplayKeepsVoters: a member that restarts replays its
// conf changes below the consistent index (the db has them). The
// configuration must still come back, or the next snapshot records no
// voters and the member never elects a leader again (found by the kill -9
// test in cmd/etckit).
func TestSnapshotAfterReplayKeepsVoters(t *testing.T) {
	root := fixture.Extract(t, "etcd-3.6.16/small.tar.gz")
	dir := filepath.Join(root, "small")
	e, err := Open(Options{Name: "default", DataDir: dir, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cc := NewConfTracker(nil)
	if err := e.Apply(committed(t, e), cc.Apply, func(Result) {}); err != nil {
		t.Fatal(err)
	}
	if v := e.ConfState().GetVoters(); len(v) != 1 || v[0] != 0x2e1259d415f2a040 {
		t.Fatalf("after replay the configuration has voters %x", v)
	}
	if err := e.Snapshot(); err != nil {
		t.Fatal(err)
	}
	snaps, err := wal.ValidSnapshotEntries(filepath.Join(dir, "member", "wal"), wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	last := snaps[len(snaps)-1]
	if last.Index != 113 || len(last.ConfState.GetVoters()) != 1 {
		t.Fatalf("snapshot record %d has voters %v", last.Index, last.ConfState.GetVoters())
	}
}

// TestCompactionDoesNotHoldApply: applying a compaction answers once the
// index is compacted and the schedule committed; the physical compaction
// (here pausing an hour between batches of 2 revisions) runs behind the
// entries applied after it, and closing the engine interrupts it.
func TestCompactionDoesNotHoldApply(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m1.etckit")
	opts := Options{Name: "m1", DataDir: dir, InitialCluster: "m1=http://127.0.0.1:2380", NoSync: true}
	opts.MVCC.CompactionBatchLimit = 2
	opts.MVCC.CompactionSleepInterval = time.Hour
	e, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	cc := NewConfTracker(nil)
	if err := e.Apply(committed(t, e), cc.Apply, nil); err != nil {
		t.Fatal(err)
	}
	appendNormal(t, e, cc, 2, nil)
	for i := range 20 {
		appendNormal(t, e, cc, 2, put(uint64(100+i), "k", fmt.Sprint(i)))
	}
	compact, _ := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: 200}, Compaction: &pb.CompactionRequest{Revision: 15}})
	// A watchdog, not a timing: an apply held by the physical compaction
	// would wait an hour; after a minute the store is closed, which ends
	// the pause, and the test fails.
	done := make(chan error, 1)
	var rs [2]Result
	go func() {
		var err error
		if rs[0], err = saveAndApply(e, cc, 2, compact); err == nil {
			rs[1], err = saveAndApply(e, cc, 2, put(201, "k", "after"))
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		e.Store().Close()
		t.Fatal("applying a compaction waited for its physical part")
	}
	if r := rs[0]; r.Err != nil || r.ID != 200 {
		t.Fatalf("compaction result %+v", r)
	}
	if r := rs[1]; r.Err != nil || r.Resp.(*pb.PutResponse).Header.Revision != 22 {
		t.Fatalf("put after the compaction: %+v", r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.Store().WaitCompacted(ctx, 15); err != context.Canceled {
		t.Fatalf("physical compaction already done (%v) in spite of its hour-long pauses", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}
