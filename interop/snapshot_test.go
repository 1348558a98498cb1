package interop

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/tools/snapshot"
	"github.com/etckit/etckit/vfs"
	"github.com/etckit/etckit/wal"
	bolt "go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	etcdutl "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

func snapshotFixture(t *testing.T) string {
	return fixture.Path(t, "etcd-3.6.16/snapshot-db/small-snapshot.db")
}

// restoreOpts restores as the interop members are named: "default" at
// testPeerURL with the default token.
func restoreOpts(dataDir, file string) engine.RestoreOptions {
	return engine.RestoreOptions{SnapshotPath: file, DataDir: dataDir, Name: testName,
		InitialCluster: testName + "=" + testPeerURL, InitialAdvertisePeerURLs: []string{testPeerURL}, NoSync: true}
}

// wantRestored is what etcd served from the etcdutl-restored fixture
// (etcdctl get and endpoint hashkv recorded with it).
func checkAgainstRestoredFixture(t *testing.T, what string, got snapshotOf) {
	t.Helper()
	var want fixtureKVs
	readJSON(t, fixture.Path(t, "etcd-3.6.16/snapshot-db/restored-get-prefix.json"), &want)
	var wh fixtureHashKV
	readJSON(t, fixture.Path(t, "etcd-3.6.16/snapshot-db/restored-endpoint-hashkv.json"), &wh)
	if got.all.Header.Revision != want.Header.Revision || got.all.Count != want.Count || len(got.all.Kvs) != len(want.Kvs) {
		t.Fatalf("%s: revision %d count %d, fixture %d %d", what, got.all.Header.Revision, got.all.Count, want.Header.Revision, want.Count)
	}
	for i, w := range want.Kvs {
		wkv := &mvccpb.KeyValue{Key: w.Key, CreateRevision: w.CreateRevision, ModRevision: w.ModRevision, Version: w.Version, Value: w.Value, Lease: w.Lease}
		if !proto.Equal(got.all.Kvs[i], wkv) {
			t.Fatalf("%s: kv %d: got %s, fixture %s", what, i, text(got.all.Kvs[i]), text(wkv))
		}
	}
	h := wh[0].HashKV
	if got.hash.Hash != h.Hash || got.hash.CompactRevision != h.CompactRevision || got.hash.HashRevision != h.HashRevision {
		t.Fatalf("%s: HashKV %s, fixture %+v", what, text(got.hash), h)
	}
}

// TestSnapshotEtcdBootsEtckitRestore: etcd 3.7.3 boots the member dir
// etckit restored from small-snapshot.db and serves the keys and HashKV
// etcd served from the etcdutl-restored dir; member list has etckit's IDs.
func TestSnapshotEtcdBootsEtckitRestore(t *testing.T) {
	dir := dataDir(t, "restored")
	res, err := engine.Restore(restoreOpts(dir, snapshotFixture(t)))
	if err != nil {
		t.Fatal(err)
	}
	_, e := startEtcd(t, dir)
	got := capture(t, e)
	checkAgainstRestoredFixture(t, "etcd on etckit's restore", got)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ml, err := e.cluster.MemberList(ctx, &pb.MemberListRequest{})
	if err != nil || len(ml.Members) != 1 || ml.Members[0].ID != res.MemberID || ml.Header.ClusterId != res.ClusterID {
		t.Fatalf("member list %v %v, restore said %x/%x", ml, err, res.MemberID, res.ClusterID)
	}
	t.Logf("etcd 3.7.3 serves etckit's restore: revision %d, %d keys, HashKV %d, member %x cluster %x",
		got.all.Header.Revision, got.all.Count, got.hash.Hash, res.MemberID, res.ClusterID)

	// And etckit serves its own restore the same way.
	dir2 := dataDir(t, "restored2")
	if _, err := engine.Restore(restoreOpts(dir2, snapshotFixture(t))); err != nil {
		t.Fatal(err)
	}
	s, k := startEtckit(t, dir2, nil)
	checkAgainstRestoredFixture(t, "etckit on etckit's restore", capture(t, k))
	if s.ID() != res.MemberID || s.ClusterID() != res.ClusterID {
		t.Fatalf("etckit ids %x/%x", s.ID(), s.ClusterID())
	}
}

// TestSnapshotEtckitBootsEtcdutlRestore: `etckit serve` (server package)
// boots the dir etcdutl restored and serves what etcd served from it.
func TestSnapshotEtckitBootsEtcdutlRestore(t *testing.T) {
	root := fixture.Extract(t, "etcd-3.6.16/snapshot-restored.tar.gz")
	s, k := startEtckit(t, filepath.Join(root, "restored"), nil)
	got := capture(t, k)
	checkAgainstRestoredFixture(t, "etckit on etcdutl's restore", got)
	if s.ID() != 0x2e1259d415f2a040 || s.ClusterID() != 0x48276a8f75b6a87 {
		t.Fatalf("ids %x/%x", s.ID(), s.ClusterID())
	}
}

// TestSnapshotEtcdBootsBumpedAndPointInTime: etcd boots a restore with
// --bump-revision 1000 --mark-compacted (revision 1105, everything before
// compacted, same keys) and a point-in-time restore of the small fixture
// at revision 96 (the keys the original db holds at 96).
func TestSnapshotEtcdBootsBumpedAndPointInTime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bumped := dataDir(t, "bumped")
	o := restoreOpts(bumped, snapshotFixture(t))
	o.BumpRevision, o.MarkCompacted = 1000, true
	if _, err := engine.Restore(o); err != nil {
		t.Fatal(err)
	}
	_, e := startEtcd(t, bumped)
	got := capture(t, e)
	if got.all.Header.Revision != 1105 || got.all.Count != 72 {
		t.Fatalf("bumped: revision %d count %d", got.all.Header.Revision, got.all.Count)
	}
	if _, err := e.kv.Range(ctx, &pb.RangeRequest{Key: []byte("a"), Revision: 1104}); err == nil {
		t.Fatal("range at 1104 after the bump is not compacted")
	}
	if r, err := e.kv.Put(ctx, &pb.PutRequest{Key: []byte("after"), Value: []byte("bump")}); err != nil || r.Header.Revision != 1106 {
		t.Fatalf("put after bump: %v %v", r, err)
	}
	e.stop()

	src := filepath.Join(fixture.Extract(t, "etcd-3.6.16/small.tar.gz"), "small")
	orig, err := mvcc.Open(filepath.Join(src, "member/snap/db"), mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	want, err := orig.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: 96})
	orig.Close()
	if err != nil {
		t.Fatal(err)
	}
	pitr := dataDir(t, "pitr")
	res, err := engine.RestorePointInTime(engine.PointInTimeOptions{RestoreOptions: restoreOpts(pitr, ""), FromDataDir: src, ToRevision: 96})
	if err != nil {
		t.Fatal(err)
	}
	_, e2 := startEtcd(t, pitr)
	got = capture(t, e2)
	if got.all.Header.Revision != 96 || !slices.EqualFunc(got.all.Kvs, want.Kvs, func(a, b *mvccpb.KeyValue) bool { return proto.Equal(a, b) }) {
		t.Fatalf("etcd on the point-in-time restore: revision %d, %d keys; original at 96 has %d keys", got.all.Header.Revision, len(got.all.Kvs), len(want.Kvs))
	}
	t.Logf("point in time: index %d revision %d from %s base + %d entries; etcd serves %d keys", res.PointInTime.Index,
		res.PointInTime.Revision, res.PointInTime.BaseKind, res.PointInTime.Applied, got.all.Count)
}

// TestSnapshotStatusAndRestoreMatchEtcdutl runs etcdutl 3.7.3's own
// snapshot package next to etckit: status fields on the fixture, and
// restore of the same file into two dirs (one and three members, with and
// without a bump) compared record by record and bucket by bucket.
func TestSnapshotStatusAndRestoreMatchEtcdutl(t *testing.T) {
	f := snapshotFixture(t)
	m := etcdutl.NewV3(zap.NewNop())
	ds, err := m.Status(f)
	if err != nil {
		t.Fatal(err)
	}
	st, err := snapshot.ReadStatus(vfs.OS{}, f, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.Hash != ds.Hash || st.Revision != ds.Revision || st.TotalKey != ds.TotalKey || st.TotalSize != ds.TotalSize || st.Version != ds.Version {
		t.Errorf("status %+v, etcdutl %+v", st, ds)
	}
	for _, tc := range []struct {
		name, cluster, self, peer, token string
		bump                             uint64
	}{
		{"one", "default=http://127.0.0.1:23800", "default", "http://127.0.0.1:23800", "etcd-cluster", 0},
		{"three-bumped", "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380,b=http://10.0.0.22:2380,c=http://10.0.0.3:2380", "b",
			"http://10.0.0.2:2380,http://10.0.0.22:2380", "tok-7", 5000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			peers := splitComma(tc.peer)
			ed := filepath.Join(root, "etcdutl")
			if err := m.Restore(etcdutl.RestoreConfig{SnapshotPath: f, Name: tc.self, OutputDataDir: ed, PeerURLs: peers,
				InitialCluster: tc.cluster, InitialClusterToken: tc.token, RevisionBump: tc.bump, MarkCompacted: tc.bump > 0}); err != nil {
				t.Fatal(err)
			}
			kd := filepath.Join(root, "etckit")
			if _, err := engine.Restore(engine.RestoreOptions{SnapshotPath: f, Name: tc.self, DataDir: kd, InitialAdvertisePeerURLs: peers,
				InitialCluster: tc.cluster, InitialClusterToken: tc.token, BumpRevision: tc.bump, MarkCompacted: tc.bump > 0, NoSync: true}); err != nil {
				t.Fatal(err)
			}
			compareRestores(t, ed, kd)
		})
	}
}

func splitComma(s string) []string {
	var out []string
	for _, p := range bytes.Split([]byte(s), []byte(",")) {
		out = append(out, string(p))
	}
	return out
}

// compareRestores compares a member dir etcdutl 3.7.3 restored with the
// one etckit restored: every WAL record (type and decoded payload), the
// .snap (name, metadata, decoded membership), and every db bucket pair.
//
// etcd 3.7 moved raftpb to pointer fields: its etcdutl no longer writes
// ConfChange.id = 0 nor ConfState.auto_leave = false, which etcd 3.6.16 (the
// fixture; wal's package doc, "Payloads") always writes. etckit writes 3.6's
// bytes (equal to the fixture's, see engine's
// TestRestoreMatchesEtcdutlFixture); both decode to the same values, which
// is what is compared here, so record CRCs and .snap bytes legitimately
// differ from 3.7.3's.
func compareRestores(t *testing.T, want, got string) {
	t.Helper()
	rec := func(dir string) []string {
		var out []string
		if err := wal.Scan(filepath.Join(dir, "member/wal"), wal.ScanOptions{}, func(_ wal.Position, r wal.Record) error {
			out = append(out, fmt.Sprintf("%v %s", r.Type, decodeRecord(t, r)))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if w, g := rec(want), rec(got); !slices.Equal(w, g) {
		t.Errorf("WAL records differ:\netcdutl %q\netckit  %q", w, g)
	}
	wn, _ := filepath.Glob(filepath.Join(want, "member/snap/*.snap"))
	gn, _ := filepath.Glob(filepath.Join(got, "member/snap/*.snap"))
	if len(wn) != 1 || len(gn) != 1 || filepath.Base(wn[0]) != filepath.Base(gn[0]) {
		t.Fatalf(".snap files %v vs %v", wn, gn)
	}
	ws, err1 := snap.Read(vfs.OS{}, wn[0])
	gs, err2 := snap.Read(vfs.OS{}, gn[0])
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	wv, err1 := snap.DecodeV2Store(ws.GetData())
	gv, err2 := snap.DecodeV2Store(gs.GetData())
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	sortM := func(ms []snap.Member) []string {
		var out []string
		for _, m := range ms {
			out = append(out, fmt.Sprintf("%x %v %v %q %v", m.ID, m.PeerURLs, m.IsLearner, m.Name, m.ClientURLs))
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(sortM(wv.Members), sortM(gv.Members)) || wv.Version != gv.Version || !proto.Equal(normConfState(ws.GetMetadata().GetConfState()), normConfState(gs.GetMetadata().GetConfState())) ||
		ws.GetMetadata().GetIndex() != gs.GetMetadata().GetIndex() || ws.GetMetadata().GetTerm() != gs.GetMetadata().GetTerm() {
		t.Errorf(".snap content differs: %+v %v vs %+v %v", wv, ws.GetMetadata(), gv, gs.GetMetadata())
	}
	if !bytes.Equal(ws.GetData(), gs.GetData()) && len(wv.Members) == 1 {
		t.Errorf(".snap v2 JSON differs")
	}
	wb, gb := buckets(t, filepath.Join(want, "member/snap/db")), buckets(t, filepath.Join(got, "member/snap/db"))
	if !slices.Equal(wb, gb) {
		for i := range max(len(wb), len(gb)) {
			var w, g string
			if i < len(wb) {
				w = wb[i]
			}
			if i < len(gb) {
				g = gb[i]
			}
			if w != g {
				t.Errorf("db differs at pair %d:\netcdutl %q\netckit  %q", i, w, g)
				break
			}
		}
	}
	t.Logf("%d WAL records, .snap %s and %d db pairs equal", len(rec(got)), filepath.Base(gn[0]), len(gb))
}

func buckets(t *testing.T, path string) []string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var out []string
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			out = append(out, "bucket "+string(name))
			return b.ForEach(func(k, v []byte) error { out = append(out, fmt.Sprintf("%s %x=%x", name, k, v)); return nil })
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSnapshotSaveFromServers: `snapshot save --endpoints` against a
// running etcd 3.7.3 and a running etckit (both on 127.0.0.1) gives files
// whose trailer verifies, that etcdutl's status and restore accept, and
// whose etckit restore etcd boots with the keys and HashKV the server had.
func TestSnapshotSaveFromServers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, kind := range []string{"etcd", "etckit"} {
		t.Run(kind, func(t *testing.T) {
			dir := dataDir(t, "src")
			var m *member
			if kind == "etcd" {
				_, m = startEtcd(t, dir)
			} else {
				_, m = startEtckit(t, dir, nil)
			}
			for i := range 50 {
				if _, err := m.kv.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "k/%02d", i%20), Value: fmt.Appendf(nil, "v%d", i)}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := m.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("k/1"), RangeEnd: []byte("k/2")}); err != nil {
				t.Fatal(err)
			}
			if _, err := m.kv.Compact(ctx, &pb.CompactionRequest{Revision: 30, Physical: true}); err != nil {
				t.Fatal(err)
			}
			before := capture(t, m)
			file := filepath.Join(t.TempDir(), "saved.db")
			res, err := snapshot.SaveFromEndpoint(ctx, m.endpoint, file, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if err := snap.Verify(vfs.OS{}, file); err != nil {
				t.Fatal(err)
			}
			ds, err := etcdutl.NewV3(zap.NewNop()).Status(file)
			if err != nil || ds.Revision != before.all.Header.Revision {
				t.Fatalf("etcdutl status %+v %v (server at %d)", ds, err, before.all.Header.Revision)
			}
			ud := filepath.Join(t.TempDir(), "etcdutl")
			if err := etcdutl.NewV3(zap.NewNop()).Restore(etcdutl.RestoreConfig{SnapshotPath: file, Name: testName, OutputDataDir: ud,
				PeerURLs: []string{testPeerURL}, InitialCluster: testName + "=" + testPeerURL, InitialClusterToken: "etcd-cluster"}); err != nil {
				t.Fatalf("etcdutl restore of etckit's save: %v", err)
			}
			m.stop()
			kd := dataDir(t, "etckit-restored")
			if _, err := engine.Restore(restoreOpts(kd, file)); err != nil {
				t.Fatal(err)
			}
			compareRestores(t, ud, kd)
			_, e := startEtcd(t, kd)
			after := capture(t, e)
			sameState(t, "etcd on the restore of a "+kind+" snapshot", before, after)
			t.Logf("%s: saved %d bytes (server version %q), revision %d, HashKV %d", kind, res.Size, res.ServerVersion, after.all.Header.Revision, after.hash.Hash)
		})
	}
}

// decodeRecord renders a WAL record's payload with the presence of
// zero-valued proto2 fields normalised (see compareRestores).
func decodeRecord(t *testing.T, r wal.Record) string {
	t.Helper()
	switch r.Type {
	case wal.EntryType:
		e, err := wal.UnmarshalEntry(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		s := fmt.Sprintf("term=%d index=%d type=%v", e.GetTerm(), e.GetIndex(), e.GetType())
		if e.GetType() == raftpb.EntryConfChange {
			var cc raftpb.ConfChange
			if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
				t.Fatal(err)
			}
			s += fmt.Sprintf(" cc{id=%d type=%v node=%x ctx=%s}", cc.GetId(), cc.GetType(), cc.GetNodeId(), cc.GetContext())
		} else {
			s += fmt.Sprintf(" data=%x", e.GetData())
		}
		return s
	case wal.SnapshotType:
		sn, err := wal.UnmarshalSnapshot(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("index=%d term=%d %s", sn.Index, sn.Term, text(normConfState(sn.ConfState)))
	case wal.StateType:
		hs, err := wal.UnmarshalHardState(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("term=%d vote=%x commit=%d", hs.GetTerm(), hs.GetVote(), hs.GetCommit())
	}
	return fmt.Sprintf("%x", r.Data)
}

func normConfState(cs *raftpb.ConfState) *raftpb.ConfState {
	if cs == nil {
		return nil
	}
	c := proto.Clone(cs).(*raftpb.ConfState)
	c.AutoLeave = proto.Bool(cs.GetAutoLeave())
	return c
}

// freePorts returns n ports that were free on 127.0.0.1 a moment ago (the
// peer URLs must be known before restore, since IDs derive from them).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// TestSnapshotEtcdClusterFromEtckitRestore: three members restored by
// etckit from small-snapshot.db (same --initial-cluster and token, each its
// own --name) start as a three-node etcd 3.7.3 cluster on 127.0.0.1: a
// leader is elected, every member lists the three derived IDs and serves
// the snapshot's keys and HashKV, and a write after the restore reaches
// all three.
func TestSnapshotEtcdClusterFromEtckitRestore(t *testing.T) {
	ports := freePorts(t, 3)
	names := []string{"m1", "m2", "m3"}
	var ic []string
	for i, n := range names {
		ic = append(ic, fmt.Sprintf("%s=http://127.0.0.1:%d", n, ports[i]))
	}
	initial := strings.Join(ic, ",")
	root := t.TempDir()
	var res []*engine.RestoreResult
	for i, n := range names {
		r, err := engine.Restore(engine.RestoreOptions{SnapshotPath: snapshotFixture(t), DataDir: filepath.Join(root, n), Name: n,
			InitialCluster: initial, InitialClusterToken: "interop-3", InitialAdvertisePeerURLs: []string{fmt.Sprintf("http://127.0.0.1:%d", ports[i])}, NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		res = append(res, r)
	}
	etcds := make([]*embed.Etcd, 3)
	errc := make(chan error, 3)
	for i, n := range names {
		go func() {
			cfg := embed.NewConfig()
			cfg.Name, cfg.Dir, cfg.LogLevel, cfg.UnsafeNoFsync = n, filepath.Join(root, n), "fatal", true
			lc, _ := url.Parse("http://127.0.0.1:0")
			p, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[i]))
			cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*lc}, []url.URL{*lc}
			cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*p}, []url.URL{*p}
			cfg.InitialCluster, cfg.InitialClusterToken = initial, "interop-3"
			cfg.ListenMetricsUrls = nil
			e, err := embed.StartEtcd(cfg)
			if err == nil {
				etcds[i] = e
			}
			errc <- err
		}()
	}
	for range names {
		if err := <-errc; err != nil {
			for _, e := range etcds {
				if e != nil {
					e.Close()
				}
			}
			t.Fatal(err)
		}
	}
	var ms []*member
	for i, e := range etcds {
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(60 * time.Second):
			t.Fatalf("%s not ready", names[i])
		}
		m := dial(t, names[i], e.Clients[0].Addr().String(), e.Close)
		waitReady(t, m)
		ms = append(ms, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := ms[0].kv.Put(ctx, &pb.PutRequest{Key: []byte("after-restore"), Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	var first snapshotOf
	for i, m := range ms {
		ml, err := m.cluster.MemberList(ctx, &pb.MemberListRequest{})
		if err != nil || len(ml.Members) != 3 || ml.Header.ClusterId != res[i].ClusterID || ml.Header.MemberId != res[i].MemberID {
			t.Fatalf("%s: member list %v %v", names[i], ml, err)
		}
		// Linearizable reads: each member sees the post-restore write.
		got := capture(t, m)
		if got.all.Header.Revision != 106 || got.all.Count != 73 {
			t.Fatalf("%s: revision %d, %d keys", names[i], got.all.Header.Revision, got.all.Count)
		}
		if i == 0 {
			first = got
		} else {
			sameState(t, names[i]+" vs "+names[0], first, got)
		}
	}
	t.Logf("three etcd 3.7.3 members from etckit restores: cluster %x, revision %d, HashKV %d", res[0].ClusterID, first.all.Header.Revision, first.hash.Hash)
}

// TestSnapshotSaveFromEtcdWithAuth: with auth enabled on etcd 3.7.3,
// `snapshot save --user` authenticates and saves; without it etcd refuses.
func TestSnapshotSaveFromEtcdWithAuth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, m := startEtcd(t, dataDir(t, "auth"))
	auth := pb.NewAuthClient(m.conn)
	for _, step := range []func() error{
		func() error { _, err := auth.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "root"}); return err },
		func() error {
			_, err := auth.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "root", Password: "s3cret"})
			return err
		},
		func() error {
			_, err := auth.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"})
			return err
		},
		func() error {
			_, err := m.kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
			return err
		},
		func() error { _, err := auth.AuthEnable(ctx, &pb.AuthEnableRequest{}); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	if _, err := snapshot.SaveFromEndpoint(ctx, m.endpoint, filepath.Join(dir, "no-user.db"), 5*time.Second); err == nil {
		t.Fatal("saved without credentials from an etcd with auth enabled")
	}
	res, err := snapshot.SaveFromEndpointTLS(ctx, m.endpoint, filepath.Join(dir, "user.db"), 5*time.Second, snapshot.TLSOptions{User: "root:s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := snapshot.ReadStatus(vfs.OS{}, res.Path, time.Second)
	if err != nil || st.Trailer != "match" || st.TotalKey != 1 {
		t.Fatalf("status %+v %v", st, err)
	}
}
