package interop

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/server"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// snapshotOf is what a member serves: every key, the revision and HashKV.
type snapshotOf struct {
	all  *pb.RangeResponse
	hash *pb.HashKVResponse
}

func capture(t *testing.T, m *member) snapshotOf {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	all, err := m.kv.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	if err != nil {
		t.Fatalf("%s: range: %v", m.name, err)
	}
	h, err := m.maint.HashKV(ctx, &pb.HashKVRequest{})
	if err != nil {
		t.Fatalf("%s: hashkv: %v", m.name, err)
	}
	return snapshotOf{all, h}
}

func sameState(t *testing.T, what string, a, b snapshotOf) {
	t.Helper()
	if !proto.Equal(normalize(a.all), normalize(b.all)) {
		t.Fatalf("%s: key spaces differ (revisions %d vs %d, counts %d vs %d)", what,
			a.all.Header.Revision, b.all.Header.Revision, a.all.Count, b.all.Count)
	}
	if !proto.Equal(normalize(a.hash), normalize(b.hash)) {
		t.Fatalf("%s: HashKV differs:\n%s\n%s", what, text(normalize(a.hash)), text(normalize(b.hash)))
	}
}

// TestServerEtcdBootsEtckitDir: etckit writes a data dir (bootstrap, a
// seeded workload with compactions and leases, snapshots every 50 entries
// and purge), stops; etcd 3.7.3 boots that dir and serves the same keys,
// revision and HashKV; then etckit boots the dir etcd left and still agrees.
func TestServerEtcdBootsEtckitDir(t *testing.T) {
	const seed = 7
	t.Logf("seed %d", seed)
	dir := dataDir(t, "default.etckit")
	s, k := startEtckit(t, dir, func(c *server.Config) { c.Engine.SnapshotCount = 50 })
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	w := &workload{r: rand.New(rand.NewSource(seed)), rev: 1,
		keys: []string{"a", "b", "foo", "foo/1", "foo/2", "zz", "\x00bin"}}
	for i := 0; i < 300; i++ {
		call(ctx, k, w.next(i))
	}
	// Keep some keys alive at the end.
	for _, key := range []string{"final/1", "final/2", "a"} {
		if _, e := call(ctx, k, &pb.PutRequest{Key: []byte(key), Value: []byte("v-" + key)}); e != "" {
			t.Fatal(e)
		}
	}
	before := capture(t, k)
	k.stop()
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	snaps, _ := filepath.Glob(filepath.Join(dir, "member", "snap", "*.snap"))
	t.Logf("etckit: revision %d, %d keys, HashKV %d; %d .snap files", before.all.Header.Revision, before.all.Count, before.hash.Hash, len(snaps))
	if len(snaps) == 0 {
		t.Fatal("no snapshot was written")
	}

	_, e := startEtcd(t, dir)
	afterEtcd := capture(t, e)
	sameState(t, "etcd on etckit's dir", before, afterEtcd)
	ml, err := e.cluster.MemberList(ctx, &pb.MemberListRequest{})
	if err != nil || len(ml.Members) != 1 || ml.Members[0].Name != testName || ml.Members[0].PeerURLs[0] != testPeerURL || ml.Members[0].ID != s.ID() {
		t.Fatalf("etcd member list %v %v", ml, err)
	}
	if _, err := e.kv.Put(ctx, &pb.PutRequest{Key: []byte("by-etcd"), Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	afterWrite := capture(t, e)
	e.stop()

	_, k2 := startEtckit(t, dir, nil)
	sameState(t, "etckit on the dir etcd wrote", afterWrite, capture(t, k2))
	t.Logf("etcd and etckit agree: revision %d, HashKV %d", afterWrite.all.Header.Revision, afterWrite.hash.Hash)
}

// fixtureKVs is etcdctl's `get --prefix -w json` output.
type fixtureKVs struct {
	Header struct {
		Revision int64 `json:"revision"`
	} `json:"header"`
	Kvs []struct {
		Key            []byte `json:"key"`
		CreateRevision int64  `json:"create_revision"`
		ModRevision    int64  `json:"mod_revision"`
		Version        int64  `json:"version"`
		Value          []byte `json:"value"`
		Lease          int64  `json:"lease"`
	} `json:"kvs"`
	Count int64 `json:"count"`
}

type fixtureHashKV []struct {
	HashKV struct {
		Header struct {
			Revision int64 `json:"revision"`
		} `json:"header"`
		Hash            uint32 `json:"hash"`
		CompactRevision int64  `json:"compact_revision"`
		HashRevision    int64  `json:"hash_revision"`
	} `json:"HashKV"`
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = gz
	}
	if err := json.NewDecoder(r).Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestServerBootsEtcdFixtures: etckit boots the data dirs etcd 3.6.16 wrote
// (small; snapshot: two WAL segments, six .snap files, 93 MB db; restored:
// what etcdutl snapshot restore wrote) and serves the keys, revision and
// HashKV that etcdctl recorded from etcd on the same dirs.
func TestServerBootsEtcdFixtures(t *testing.T) {
	for _, tc := range []struct {
		tarball, dir, kvs, hashkv string
	}{
		{"etcd-3.6.16/small.tar.gz", "small", "small/get-prefix.json", "small/endpoint-hashkv.json"},
		{"etcd-3.6.16/snapshot.tar.gz", "snapshot", "snapshot/get-prefix.json.gz", "snapshot/endpoint-hashkv.json"},
		{"etcd-3.6.16/snapshot-restored.tar.gz", "restored", "snapshot-db/restored-get-prefix.json", "snapshot-db/restored-endpoint-hashkv.json"},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			root := fixture.Extract(t, tc.tarball)
			s, k := startEtckit(t, filepath.Join(root, tc.dir), nil)
			got := capture(t, k)
			var want fixtureKVs
			readJSON(t, fixture.Path(t, "etcd-3.6.16/"+tc.kvs), &want)
			var wh fixtureHashKV
			readJSON(t, fixture.Path(t, "etcd-3.6.16/"+tc.hashkv), &wh)
			if got.all.Header.Revision != want.Header.Revision || got.all.Count != want.Count || len(got.all.Kvs) != len(want.Kvs) {
				t.Fatalf("revision %d count %d (%d kvs), fixture %d %d (%d kvs)", got.all.Header.Revision, got.all.Count, len(got.all.Kvs),
					want.Header.Revision, want.Count, len(want.Kvs))
			}
			for i, w := range want.Kvs {
				g := got.all.Kvs[i]
				wkv := &mvccpb.KeyValue{Key: w.Key, CreateRevision: w.CreateRevision, ModRevision: w.ModRevision, Version: w.Version, Value: w.Value, Lease: w.Lease}
				if !proto.Equal(g, wkv) {
					t.Fatalf("kv %d: got %s, fixture %s", i, text(g), text(wkv))
				}
			}
			h := wh[0].HashKV
			if got.hash.Hash != h.Hash || got.hash.CompactRevision != h.CompactRevision || got.hash.HashRevision != h.HashRevision || got.hash.Header.Revision != h.Header.Revision {
				t.Fatalf("HashKV %s, fixture %+v", text(got.hash), h)
			}
			if got.all.Header.MemberId != s.ID() || s.ID() != 3319814642761637952 || s.ClusterID() != 324952591200643719 {
				t.Fatalf("ids %x %x", s.ID(), s.ClusterID())
			}
			t.Logf("%s: revision %d, %d keys, HashKV %d (compact revision %d) as recorded from etcd", tc.dir, got.all.Header.Revision, got.all.Count, got.hash.Hash, got.hash.CompactRevision)
		})
	}
}
