package mvcc

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etckit/etckit/internal/fixture"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// etcdctlGet is `etcdctl get -w json` output.
type etcdctlGet struct {
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
	More  bool  `json:"more"`
}

func loadGet(t *testing.T, rel string) etcdctlGet {
	t.Helper()
	f, err := os.Open(fixture.Path(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(rel, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	var g etcdctlGet
	if err := json.NewDecoder(r).Decode(&g); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return g
}

// checkGet compares a Range answer with etcdctl's.
func checkGet(t *testing.T, name string, got *pb.RangeResponse, want etcdctlGet, keysOnly bool) {
	t.Helper()
	if got.Header.Revision != want.Header.Revision || got.Count != want.Count || got.More != want.More {
		t.Fatalf("%s: header rev %d count %d more %v, want %d %d %v", name,
			got.Header.Revision, got.Count, got.More, want.Header.Revision, want.Count, want.More)
	}
	if len(got.Kvs) != len(want.Kvs) {
		t.Fatalf("%s: %d kvs, want %d", name, len(got.Kvs), len(want.Kvs))
	}
	for i, w := range want.Kvs {
		g := got.Kvs[i]
		if !bytes.Equal(g.Key, w.Key) || g.CreateRevision != w.CreateRevision || g.ModRevision != w.ModRevision ||
			g.Version != w.Version || !bytes.Equal(g.Value, w.Value) || (!keysOnly && g.Lease != w.Lease) {
			t.Fatalf("%s: kv %d = %q c%d m%d v%d lease %d len(value) %d, want %q c%d m%d v%d lease %d len(value) %d", name, i,
				g.Key, g.CreateRevision, g.ModRevision, g.Version, g.Lease, len(g.Value),
				w.Key, w.CreateRevision, w.ModRevision, w.Version, w.Lease, len(w.Value))
		}
	}
}

func allKeys(rev int64) *pb.RangeRequest {
	return &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev}
}

func openSmall(t *testing.T, readOnly bool) *Store {
	t.Helper()
	dir := fixture.Extract(t, "etcd-3.6.16/small.tar.gz")
	s, err := Open(filepath.Join(dir, "small/member/snap/db"), Options{Backend: BackendOptions{ReadOnly: readOnly}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestFixtureSmall(t *testing.T) {
	for _, ro := range []bool{true, false} {
		t.Run(map[bool]string{true: "readonly", false: "readwrite"}[ro], func(t *testing.T) {
			s := openSmall(t, ro)
			if s.Rev() != 105 || s.CompactRev() != 81 {
				t.Fatalf("rev %d compact %d, want 105 81", s.Rev(), s.CompactRev())
			}
			latest := loadGet(t, "etcd-3.6.16/small/get-prefix.json")
			at81 := loadGet(t, "etcd-3.6.16/small/get-prefix-at-compact-rev-81.json")
			for _, c := range []struct {
				rev  int64
				want etcdctlGet
			}{{0, latest}, {105, latest}, {81, at81}} {
				resp, err := s.Range(allKeys(c.rev))
				if err != nil {
					t.Fatal(err)
				}
				checkGet(t, fmt.Sprintf("rev %d", c.rev), resp, c.want, false)
			}
			// below the compaction: etcd's error
			below, err := os.ReadFile(fixture.Path(t, "etcd-3.6.16/small/get-prefix-below-compact.txt"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Range(allKeys(80))
			if err != ErrCompacted || !strings.Contains(string(below), "Error: etcdserver: "+err.Error()+"\n") {
				t.Fatalf("range at 80: %v; fixture says %s", err, below)
			}
			if _, err := s.Range(allKeys(106)); err != ErrFutureRev {
				t.Fatalf("range at 106: %v", err)
			}
			for _, rev := range []int64{0, 105} {
				h, cur, err := s.HashKV(rev)
				if err != nil {
					t.Fatal(err)
				}
				if h.Hash != 336939241 || h.CompactRevision != 81 || h.Revision != 105 || cur != 105 {
					t.Fatalf("HashKV(%d) = %+v cur %d, want 336939241/81/105", rev, h, cur)
				}
			}
			// every retained revision answers, and what it answers is
			// consistent with the revision asked
			for rev := int64(81); rev <= 105; rev++ {
				resp, err := s.Range(allKeys(rev))
				if err != nil {
					t.Fatalf("rev %d: %v", rev, err)
				}
				for _, kv := range resp.Kvs {
					if kv.ModRevision > rev || kv.CreateRevision > kv.ModRevision {
						t.Fatalf("rev %d: %q mod %d create %d", rev, kv.Key, kv.ModRevision, kv.CreateRevision)
					}
				}
				if _, _, err := s.HashKV(rev); err != nil {
					t.Fatalf("HashKV(%d): %v", rev, err)
				}
			}
			// leases: lease-list.json and lease-timetolive-L1.json
			const l1 = 2324035512816342630
			if ids := s.Lessor().Leases(); len(ids) != 1 || ids[0] != l1 {
				t.Fatalf("leases %v", ids)
			}
			st, err := s.Lessor().TimeToLive(l1, true)
			if err != nil {
				t.Fatal(err)
			}
			if st.GrantedTTL != 3600 || len(st.Keys) != 2 || string(st.Keys[0]) != "/small/lease/kept" || string(st.Keys[1]) != "/small/lease/kept2" {
				t.Fatalf("TimeToLive: %+v", st)
			}
		})
	}
}

func TestFixtureSnapshotDB(t *testing.T) {
	dir := fixture.Extract(t, "etcd-3.6.16/snapshot.tar.gz")
	matches, _ := filepath.Glob(filepath.Join(dir, "*/member/snap/db"))
	if len(matches) != 1 {
		t.Fatalf("db files: %v", matches)
	}
	s, err := Open(matches[0], Options{Backend: BackendOptions{ReadOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Rev() != 6004 {
		t.Fatalf("rev %d", s.Rev())
	}
	resp, err := s.Range(allKeys(0))
	if err != nil {
		t.Fatal(err)
	}
	checkGet(t, "latest", resp, loadGet(t, "etcd-3.6.16/snapshot/get-prefix.json.gz"), false)
	resp, err = s.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	checkGet(t, "keys-only", resp, loadGet(t, "etcd-3.6.16/snapshot/get-prefix-keys-only.json"), true)
	h, _, err := s.HashKV(0)
	if err != nil {
		t.Fatal(err)
	}
	if h.Hash != 419984033 || h.CompactRevision != -1 || h.Revision != 6004 {
		t.Fatalf("HashKV = %+v, want 419984033/-1/6004", h)
	}
}

// The `etcdctl snapshot save` copy of the small db hashes the same.
func TestFixtureSmallSnapshotSave(t *testing.T) {
	src := fixture.Path(t, "etcd-3.6.16/snapshot-db/small-snapshot.db")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "db")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h, _, err := s.HashKV(0)
	if err != nil {
		t.Fatal(err)
	}
	if h.Hash != 336939241 || h.CompactRevision != 81 || h.Revision != 105 {
		t.Fatalf("HashKV = %+v", h)
	}
	resp, err := s.Range(allKeys(0))
	if err != nil {
		t.Fatal(err)
	}
	checkGet(t, "latest", resp, loadGet(t, "etcd-3.6.16/small/get-prefix.json"), false)
}
