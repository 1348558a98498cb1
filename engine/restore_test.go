package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/mvcc/boltfile"
	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/vfs"
	"github.com/etckit/etckit/wal"
	bolt "go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// The flags of the recorded `etcdutl snapshot restore` (restore.log and
// restored-member-list.json: member "default" at http://127.0.0.1:23800,
// default token).
func fixtureRestoreOptions(t *testing.T, dataDir string) RestoreOptions {
	return RestoreOptions{
		SnapshotPath:             fixture.Path(t, "etcd-3.6.16/snapshot-db/small-snapshot.db"),
		DataDir:                  dataDir,
		Name:                     "default",
		InitialCluster:           "default=http://127.0.0.1:23800",
		InitialClusterToken:      "etcd-cluster",
		InitialAdvertisePeerURLs: []string{"http://127.0.0.1:23800"},
		NoSync:                   true,
	}
}

type walRec struct {
	Type wal.RecordType
	CRC  uint32
	Data []byte
}

func walRecords(t *testing.T, dir string) []walRec {
	t.Helper()
	var out []walRec
	if err := wal.Scan(dir, wal.ScanOptions{}, func(_ wal.Position, r wal.Record) error {
		out = append(out, walRec{r.Type, r.CRC, slices.Clone(r.Data)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// dbBuckets returns every bucket's key/value pairs.
func dbBuckets(t *testing.T, path string) map[string]map[string]string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]map[string]string{}
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			m := map[string]string{}
			out[string(name)] = m
			return b.ForEach(func(k, v []byte) error { m[string(k)] = string(v); return nil })
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRestoreMatchesEtcdutlFixture restores small-snapshot.db with the
// flags etcdutl was given and compares the result with what etcdutl wrote:
// WAL records (type, CRC, payload) and the whole segment, the .snap bytes,
// and every bucket of the db.
func TestRestoreMatchesEtcdutlFixture(t *testing.T) {
	want := filepath.Join(fixture.Extract(t, "etcd-3.6.16/snapshot-restored.tar.gz"), "restored")
	got := filepath.Join(t.TempDir(), "restored")
	res, err := Restore(fixtureRestoreOptions(t, got))
	if err != nil {
		t.Fatal(err)
	}
	if res.MemberID != 0x2e1259d415f2a040 || res.ClusterID != 0x48276a8f75b6a87 {
		t.Errorf("IDs %x/%x, want 2e1259d415f2a040/48276a8f75b6a87 (etcdutl's)", res.MemberID, res.ClusterID)
	}
	if res.Revision != 105 || res.CompactRevision != 81 || res.Index != 1 {
		t.Errorf("result rev %d compact %d index %d", res.Revision, res.CompactRevision, res.Index)
	}

	wr, gr := walRecords(t, filepath.Join(want, "member/wal")), walRecords(t, filepath.Join(got, "member/wal"))
	if len(wr) != len(gr) {
		t.Fatalf("%d WAL records, etcdutl wrote %d", len(gr), len(wr))
	}
	for i := range wr {
		if wr[i].Type != gr[i].Type || wr[i].CRC != gr[i].CRC || !bytes.Equal(wr[i].Data, gr[i].Data) {
			t.Errorf("WAL record %d: got %v crc %08x %x, etcdutl %v crc %08x %x", i, gr[i].Type, gr[i].CRC, gr[i].Data, wr[i].Type, wr[i].CRC, wr[i].Data)
		}
	}
	seg := "member/wal/0000000000000000-0000000000000000.wal"
	wb, _ := os.ReadFile(filepath.Join(want, seg))
	gb, err := os.ReadFile(filepath.Join(got, seg))
	if err != nil || !bytes.Equal(wb, gb) {
		t.Errorf("WAL segment bytes differ from etcdutl's (%d vs %d bytes, err %v)", len(gb), len(wb), err)
	}

	sn := "member/snap/0000000000000001-0000000000000001.snap"
	ws, _ := os.ReadFile(filepath.Join(want, sn))
	gs, err := os.ReadFile(filepath.Join(got, sn))
	if err != nil || !bytes.Equal(ws, gs) {
		t.Errorf(".snap differs from etcdutl's (%d vs %d bytes, err %v)", len(gs), len(ws), err)
	}
	if res.SnapPath != filepath.Join(got, sn) {
		t.Errorf("SnapPath %s", res.SnapPath)
	}

	wd, gd := dbBuckets(t, filepath.Join(want, "member/snap/db")), dbBuckets(t, filepath.Join(got, "member/snap/db"))
	if len(wd) != len(gd) {
		t.Errorf("db has buckets %v, etcdutl's %v", keys(gd), keys(wd))
	}
	for name, wm := range wd {
		gm := gd[name]
		if len(gm) != len(wm) {
			t.Errorf("bucket %s: %d keys, etcdutl's %d", name, len(gm), len(wm))
		}
		for k, v := range wm {
			if gv, ok := gm[k]; !ok || gv != v {
				t.Errorf("bucket %s key %q: got %q, etcdutl %q", name, k, gv, v)
			}
		}
	}
	for _, d := range []string{"", "member", "member/snap", "member/wal"} {
		fi, err := os.Stat(filepath.Join(got, d))
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v err %v, want 0700", d, fi.Mode(), err)
		}
	}
	if fi, err := os.Stat(filepath.Join(got, "member/snap/db")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("db mode %v err %v", fi.Mode(), err)
	}

	// And the engine boots it: the keys of the snapshot at revision 105.
	e, err := Open(Options{Name: "default", DataDir: got, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.ID() != res.MemberID || e.Store().Rev() != 105 || len(e.Members()) != 1 {
		t.Errorf("booted: id %x rev %d members %v", e.ID(), e.Store().Rev(), e.Members())
	}
}

func keys[M ~map[string]V, V any](m M) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestRestoreWALDir: a dedicated --wal-dir receives the WAL and
// member/wal is not created; the engine opens the pair.
func TestRestoreWALDir(t *testing.T) {
	root := t.TempDir()
	o := fixtureRestoreOptions(t, filepath.Join(root, "data"))
	o.WALDir = filepath.Join(root, "fast-disk", "wal")
	res, err := Restore(o)
	if err != nil {
		t.Fatal(err)
	}
	if res.WALDir != o.WALDir || !wal.Exist(vfs.OS{}, o.WALDir) {
		t.Fatalf("WAL not in %s: %+v", o.WALDir, res)
	}
	if _, err := os.Stat(filepath.Join(o.DataDir, "member", "wal")); !os.IsNotExist(err) {
		t.Errorf("member/wal exists next to a --wal-dir: %v", err)
	}
	e, err := Open(Options{Name: "default", DataDir: o.DataDir, WALDir: o.WALDir, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Store().Rev() != 105 || e.CommitIndex() != 1 {
		t.Errorf("rev %d commit %d", e.Store().Rev(), e.CommitIndex())
	}
}

func TestRestoreRefusals(t *testing.T) {
	root := t.TempDir()
	nonEmpty := filepath.Join(root, "nonempty")
	os.MkdirAll(filepath.Join(nonEmpty, "member"), 0o700)
	walExists := filepath.Join(root, "walexists")
	os.MkdirAll(walExists, 0o700)
	for _, tc := range []struct {
		name string
		mod  func(o *RestoreOptions)
		want string
	}{
		{"non-empty data dir", func(o *RestoreOptions) { o.DataDir = nonEmpty }, "never merges"},
		{"existing wal dir", func(o *RestoreOptions) { o.WALDir = walExists }, "wal dir " + walExists + " exists"},
		{"name not in cluster", func(o *RestoreOptions) { o.Name = "other" }, `--name "other" is not in --initial-cluster`},
		{"peer urls differ", func(o *RestoreOptions) { o.InitialAdvertisePeerURLs = []string{"http://127.0.0.1:9"} }, "must be the same URLs"},
		{"bump without mark", func(o *RestoreOptions) { o.BumpRevision = 10 }, "requires --mark-compacted"},
		{"mark without bump", func(o *RestoreOptions) { o.MarkCompacted = true }, "requires --bump-revision"},
		{"duplicate url", func(o *RestoreOptions) {
			o.InitialCluster = "default=http://127.0.0.1:23800,b=http://127.0.0.1:23800"
		}, "duplicate url"},
		{"missing file", func(o *RestoreOptions) { o.SnapshotPath = filepath.Join(root, "nope.db") }, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := fixtureRestoreOptions(t, filepath.Join(root, "out-"+strings.ReplaceAll(tc.name, " ", "-")))
			tc.mod(&o)
			_, err := Restore(o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if o.DataDir != nonEmpty {
				if _, serr := os.Stat(o.DataDir); !os.IsNotExist(serr) {
					t.Errorf("refused restore left %s behind", o.DataDir)
				}
			}
		})
	}
}

// TestRestoreMissingTrailer: a db copied out of a data dir has no trailer;
// restore explains and refuses, and succeeds with SkipHashCheck.
func TestRestoreMissingTrailer(t *testing.T) {
	src := filepath.Join(fixture.Extract(t, "etcd-3.6.16/snapshot-restored.tar.gz"), "restored/member/snap/db")
	root := t.TempDir()
	o := fixtureRestoreOptions(t, filepath.Join(root, "a"))
	o.SnapshotPath = src
	_, err := Restore(o)
	if !errors.Is(err, snap.ErrNoTrailer) || !strings.Contains(err.Error(), "--skip-hash-check") ||
		!strings.Contains(err.Error(), "copied out of a data dir") {
		t.Fatalf("err %v", err)
	}
	if _, serr := os.Stat(o.DataDir); !os.IsNotExist(serr) {
		t.Errorf("failed restore left %s", o.DataDir)
	}
	o.SkipHashCheck = true
	res, err := Restore(o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Revision != 105 {
		t.Errorf("revision %d", res.Revision)
	}
}

// TestRestoreCorrupted: damage in a page header is located by offset;
// damage in a value is reported at the trailer.
func TestRestoreCorrupted(t *testing.T) {
	orig, err := os.ReadFile(fixture.Path(t, "etcd-3.6.16/snapshot-db/small-snapshot.db"))
	if err != nil {
		t.Fatal(err)
	}
	image := int64(len(orig) - 32)
	if cerr := boltfile.Check(bytes.NewReader(orig), image, boltfile.Options{}).First("x"); cerr != nil {
		t.Fatalf("intact snapshot: %v", cerr)
	}
	// Find the key bucket's first leaf page holding "/small/kv/00" and damage
	// its header, then a byte of that value.
	ps := int64(4096)
	var leafOff int64 = -1
	for off := 2 * ps; off < image; off += ps {
		if bytes.Contains(orig[off:off+ps], []byte("value-00")) && orig[off+8] == boltfile.LeafFlag {
			leafOff = off
			break
		}
	}
	if leafOff < 0 {
		t.Fatal("no leaf page with value-00")
	}
	t.Logf("leaf page with value-00 at offset %d", leafOff)
	root := t.TempDir()
	for _, tc := range []struct {
		name string
		off  int64
		want string
	}{
		{"page header", leafOff, fmt.Sprintf("first damage found at offset %d: page %d: header says page", leafOff, leafOff/ps)},
		{"value byte", leafOff + int64(bytes.Index(orig[leafOff:leafOff+ps], []byte("value-00"))), "damage is inside key or value bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := slices.Clone(orig)
			b[tc.off] ^= 0x40
			p := filepath.Join(root, strings.ReplaceAll(tc.name, " ", "-")+".db")
			os.WriteFile(p, b, 0o600)
			o := fixtureRestoreOptions(t, filepath.Join(root, "out-"+strings.ReplaceAll(tc.name, " ", "-")))
			o.SnapshotPath = p
			_, err := Restore(o)
			if !errors.Is(err, snap.ErrDigestMismatch) || !strings.Contains(err.Error(), tc.want) ||
				!strings.Contains(err.Error(), fmt.Sprintf("trailer (at offset %d)", image)) {
				t.Fatalf("err %v\nwant %q", err, tc.want)
			}
			t.Log(err)
			if _, serr := os.Stat(o.DataDir); !os.IsNotExist(serr) {
				t.Errorf("failed restore left %s", o.DataDir)
			}
		})
	}
}

func allKVs(t *testing.T, s *mvcc.Store, rev int64) []string {
	t.Helper()
	resp, err := s.Range(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev})
	if err != nil {
		t.Fatalf("range at %d: %v", rev, err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, fmt.Sprintf("%q=%q c%d m%d v%d l%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease))
	}
	return out
}

// TestRestoreBumpRevision: --bump-revision 1000 --mark-compacted puts the
// empty key (105+1000, 0) and scheduledCompactRev; on open the store is at
// 1105, compacted there, with the same keys.
func TestRestoreBumpRevision(t *testing.T) {
	o := fixtureRestoreOptions(t, filepath.Join(t.TempDir(), "d"))
	o.BumpRevision, o.MarkCompacted = 1000, true
	res, err := Restore(o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Revision != 1105 || res.CompactRevision != 1105 {
		t.Errorf("result %d/%d", res.Revision, res.CompactRevision)
	}
	b := dbBuckets(t, res.DBPath)
	if v, ok := b["key"][string(mvcc.RevKey(mvcc.Revision{Main: 1105}, false))]; !ok || v != "" {
		t.Errorf("bump key missing or not empty: %q %v", v, ok)
	}
	if v := b["meta"]["scheduledCompactRev"]; v != string(mvcc.RevKey(mvcc.Revision{Main: 1105}, false)) {
		t.Errorf("scheduledCompactRev %x", v)
	}
	src := filepath.Join(t.TempDir(), "src.db")
	if _, err := snap.CopyWithoutTrailer(vfs.OS{}, o.SnapshotPath, src, false); err != nil {
		t.Fatal(err)
	}
	orig, err := mvcc.Open(src, mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	s, err := mvcc.Open(res.DBPath, mvcc.Options{CompactionSleepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Rev() != 1105 {
		t.Errorf("rev %d", s.Rev())
	}
	if got, want := allKVs(t, s, 0), allKVs(t, orig, 0); !slices.Equal(got, want) {
		t.Errorf("keys after bump differ:\n%v\n%v", got, want)
	}
	if _, err := s.Range(&pb.RangeRequest{Key: []byte("a"), Revision: 1000}); !errors.Is(err, mvcc.ErrCompacted) {
		t.Errorf("range at 1000: %v, want compacted", err)
	}
}

// TestRestorePointInTime replays the small fixture (113 entries from index
// 0, compaction at revision 81) to several points and compares the
// keyspace with what the original db answers at the same revision.
func TestRestorePointInTime(t *testing.T) {
	src := filepath.Join(fixture.Extract(t, "etcd-3.6.16/small.tar.gz"), "small")
	origCopy := filepath.Join(t.TempDir(), "orig.db")
	if err := copyDB(vfs.OS{}, filepath.Join(src, "member/snap/db"), origCopy); err != nil {
		t.Fatal(err)
	}
	orig, err := mvcc.Open(origCopy, mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	before := hashTree(t, src)
	root := t.TempDir()
	run := func(name string, idx uint64, rev int64, base string) *RestoreResult {
		t.Helper()
		o := PointInTimeOptions{RestoreOptions: fixtureRestoreOptions(t, filepath.Join(root, name)), FromDataDir: src, ToIndex: idx, ToRevision: rev, Base: base}
		res, err := RestorePointInTime(o)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return res
	}
	check := func(name string, res *RestoreResult) {
		t.Helper()
		s, err := mvcc.Open(res.DBPath, mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		pr := res.PointInTime
		if s.Rev() != pr.Revision {
			t.Errorf("%s: store rev %d, result %d", name, s.Rev(), pr.Revision)
		}
		if pr.Revision < 81 {
			return // the original db no longer holds revisions below 81
		}
		if got, want := allKVs(t, s, 0), allKVs(t, orig, pr.Revision); !slices.Equal(got, want) {
			t.Errorf("%s (index %d, rev %d): keyspace differs from the original at that revision:\ngot  %v\nwant %v", name, pr.Index, pr.Revision, got, want)
		}
		ci, term, _ := s.ConsistentIndex()
		if ci != 1 || term != 1 {
			t.Errorf("%s: consistent index %d/%d, want 1/1", name, ci, term)
		}
	}
	seen := map[int64]bool{}
	for _, idx := range []uint64{1, 40, 95, 100, 104, 108, 109, 111, 113} {
		res := run(fmt.Sprintf("idx-%d", idx), idx, 0, "")
		pr := res.PointInTime
		wantBase, wantApplied := "empty", int(idx)
		if idx == 113 { // the db itself is at index 113
			wantBase, wantApplied = "db", 0
		}
		if pr.BaseKind != wantBase || pr.Index != idx || pr.Applied != wantApplied || pr.WALCommit != 113 {
			t.Errorf("index %d: %+v", idx, pr)
		}
		t.Logf("index %d -> revision %d (compact %d)", idx, pr.Revision, pr.CompactRevision)
		seen[pr.Revision] = true
		check(fmt.Sprintf("index %d", idx), res)
	}
	if len(seen) < 4 {
		t.Errorf("only %d distinct revisions reached", len(seen))
	}
	for _, rev := range []int64{81, 88, 96, 101, 105} {
		res := run(fmt.Sprintf("rev-%d", rev), 0, rev, "")
		if res.PointInTime.Revision != rev {
			t.Errorf("revision %d: reached %d", rev, res.PointInTime.Revision)
		}
		check(fmt.Sprintf("revision %d", rev), res)
	}
	// Every index whose revision the original db still holds (>= 81).
	for idx := uint64(85); idx <= 113; idx++ {
		res := run(fmt.Sprintf("all-%d", idx), idx, 0, "empty")
		check(fmt.Sprintf("index %d", idx), res)
	}
	// And what etcd itself answered at revision 81 (etcdctl get --rev 81,
	// recorded with the fixture).
	var rec struct {
		Kvs []struct {
			Key, Value                                  []byte
			CreateRevision, ModRevision, Version, Lease int64
		} `json:"kvs"`
	}
	b, err := os.ReadFile(fixture.Path(t, "etcd-3.6.16/small/get-prefix-at-compact-rev-81.json"))
	if err != nil {
		t.Fatal(err)
	}
	// create_revision -> createrevision: encoding/json matches field names
	// case-insensitively.
	if err := json.Unmarshal(bytes.ReplaceAll(b, []byte("_revision"), []byte("revision")), &rec); err != nil {
		t.Fatal(err)
	}
	var etcdAt81 []string
	for _, kv := range rec.Kvs {
		etcdAt81 = append(etcdAt81, fmt.Sprintf("%q=%q c%d m%d v%d l%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease))
	}
	res81 := run("etcd-81", 0, 81, "")
	s81, err := mvcc.Open(res81.DBPath, mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	got81 := allKVs(t, s81, 0)
	s81.Close()
	if len(etcdAt81) != 74 || !slices.Equal(got81, etcdAt81) {
		t.Errorf("revision 81: %d keys, etcdctl recorded %d:\n%v\n%v", len(got81), len(etcdAt81), got81, etcdAt81)
	}
	// Replaying all 113 entries on an empty store gives the original
	// keyspace, compaction and HashKV.
	res := run("last", 113, 0, "empty")
	if res.PointInTime.Applied != 113 || res.PointInTime.CompactRevision != 81 {
		t.Errorf("full replay: %+v", res.PointInTime)
	}
	s, err := mvcc.Open(res.DBPath, mvcc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h1, _, err1 := s.HashKV(0)
	h2, _, err2 := orig.HashKV(0)
	s.Close()
	if err1 != nil || err2 != nil || h1 != h2 {
		t.Errorf("HashKV after full replay %+v, original %+v (%v %v)", h1, h2, err1, err2)
	}
	// Refusals: beyond the commit index, beyond the last revision.
	if _, err := RestorePointInTime(PointInTimeOptions{RestoreOptions: fixtureRestoreOptions(t, filepath.Join(root, "x")), FromDataDir: src, ToIndex: 500}); err == nil || !strings.Contains(err.Error(), "not committed") {
		t.Errorf("index 500: %v", err)
	}
	if _, err := RestorePointInTime(PointInTimeOptions{RestoreOptions: fixtureRestoreOptions(t, filepath.Join(root, "y")), FromDataDir: src, ToRevision: 900}); err == nil || !strings.Contains(err.Error(), "beyond the last committed entry") {
		t.Errorf("revision 900: %v", err)
	}
	after := hashTree(t, src)
	if !maps2Equal(before, after) {
		t.Errorf("source directory changed")
	}
}

func hashTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			m[p] = string(b)
		}
		return nil
	})
	return m
}

func maps2Equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestRestorePointInTimeBases: a member dir written by the engine with a
// .snap.db at index 151 (as a leader's snapshot would leave) and later WAL
// segments purged: the newest base at or below each target is used, and a
// target the WAL no longer reaches is refused.
func TestRestorePointInTimeBases(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m1")
	opts := Options{Name: "m1", DataDir: dir, InitialCluster: "m1=http://127.0.0.1:2380", NoSync: true,
		WALSegmentSize: 16 << 10, MaxWALs: 1, MaxSnapshots: 5}
	e, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	cc := NewConfTracker(nil)
	if err := e.Apply(committed(t, e), cc.Apply, nil); err != nil {
		t.Fatal(err)
	}
	at := map[uint64][]string{} // keyspace after each index
	for i := 0; i < 300; i++ {
		appendNormal(t, e, cc, 2, put(uint64(i+1), fmt.Sprintf("k%02d", i%40), fmt.Sprintf("%03d-%s", i, strings.Repeat("v", 150))))
		idx, _ := e.Applied()
		at[idx] = allKVs(t, e.Store(), 0)
		if idx == 151 {
			// A db snapshot received from a leader at index 151.
			if err := e.Store().Commit(); err != nil {
				t.Fatal(err)
			}
			v := e.Store().Backend().Snapshot()
			f, err := os.Create(filepath.Join(dir, "member", "snap", snap.DBFileName(151)))
			if err == nil {
				_, err = v.Tx().WriteTo(f)
				f.Close()
			}
			v.Release()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	n := 0
	pitr := func(o PointInTimeOptions) (*RestoreResult, error) {
		n++
		o.RestoreOptions = fixtureRestoreOptions(t, filepath.Join(root, fmt.Sprint(n)))
		o.FromDataDir = dir
		return RestorePointInTime(o)
	}
	check := func(idx uint64, wantBase string, wantApplied int) {
		t.Helper()
		res, err := pitr(PointInTimeOptions{ToIndex: idx})
		if err != nil {
			t.Fatalf("index %d: %v", idx, err)
		}
		pr := res.PointInTime
		if pr.BaseKind != wantBase || pr.Applied != wantApplied || pr.Index != idx {
			t.Fatalf("index %d: %+v, want base %s + %d", idx, pr, wantBase, wantApplied)
		}
		s, err := mvcc.Open(res.DBPath, mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if got := allKVs(t, s, 0); !slices.Equal(got, at[idx]) {
			t.Fatalf("index %d: keyspace differs", idx)
		}
	}
	check(100, "empty", 100)
	check(151, "snap.db", 0)
	check(200, "snap.db", 49)
	check(301, "db", 0)
	if _, err := pitr(PointInTimeOptions{ToIndex: 200, Base: "empty"}); err != nil {
		t.Errorf("forced empty base: %v", err)
	}

	// Later: more entries and a snapshot; the purge keeps only the last
	// segment, so the WAL no longer reaches back to index 0 or 151.
	e, err = Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		appendNormal(t, e, cc, 3, put(uint64(1000+i), "late", fmt.Sprint(i)))
	}
	if err := e.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "member", "wal", "*.wal"))
	if len(segs) != 1 {
		t.Fatalf("segments after purge: %v", segs)
	}
	if _, err := pitr(PointInTimeOptions{ToIndex: 200}); err == nil || !strings.Contains(err.Error(), "older than the WAL") {
		t.Errorf("index 200 after purge: %v", err)
	}
	res, err := pitr(PointInTimeOptions{ToIndex: 306})
	if err != nil || res.PointInTime.BaseKind != "db" || res.PointInTime.Applied != 0 {
		t.Errorf("index 306 after purge: %+v %v", res, err)
	}
	if _, err := pitr(PointInTimeOptions{ToIndex: 303}); err == nil || !strings.Contains(err.Error(), "older than the WAL (it starts after index 306)") {
		t.Errorf("index 303 after purge: %v", err)
	}
}

// TestRestoreSkipHashCheckDamaged: --skip-hash-check does not let a
// structurally damaged db through; the offset is named.
func TestRestoreSkipHashCheckDamaged(t *testing.T) {
	b, err := os.ReadFile(fixture.Path(t, "etcd-3.6.16/snapshot-db/small-snapshot.db"))
	if err != nil {
		t.Fatal(err)
	}
	b = b[:len(b)-32] // a bare db
	b[16384] ^= 0x40
	p := filepath.Join(t.TempDir(), "db")
	os.WriteFile(p, b, 0o600)
	o := fixtureRestoreOptions(t, filepath.Join(t.TempDir(), "out"))
	o.SnapshotPath, o.SkipHashCheck = p, true
	if _, err := Restore(o); err == nil || !strings.Contains(err.Error(), "corrupt at offset 16384") {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Stat(o.DataDir); !os.IsNotExist(err) {
		t.Errorf("left %s", o.DataDir)
	}
}

// TestRestorePointInTimeSnapshotFixture: the 6,008-entry fixture (two WAL
// segments, six .snap files, never compacted) restored to several indexes
// on both sides of the segment cut equals the original db read at the
// reached revision, key for key.
func TestRestorePointInTimeSnapshotFixture(t *testing.T) {
	src := filepath.Join(fixture.Extract(t, "etcd-3.6.16/snapshot.tar.gz"), "snapshot")
	orig, err := mvcc.Open(filepath.Join(src, "member/snap/db"), mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	root := t.TempDir()
	for _, idx := range []uint64{2, 1001, 3000, 5774, 5775, 6007} {
		o := PointInTimeOptions{RestoreOptions: fixtureRestoreOptions(t, filepath.Join(root, fmt.Sprint(idx))), FromDataDir: src, ToIndex: idx}
		res, err := RestorePointInTime(o)
		if err != nil {
			t.Fatalf("index %d: %v", idx, err)
		}
		s, err := mvcc.Open(res.DBPath, mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true}})
		if err != nil {
			t.Fatal(err)
		}
		got, want := allKVs(t, s, 0), allKVs(t, orig, res.PointInTime.Revision)
		s.Close()
		if !slices.Equal(got, want) {
			t.Fatalf("index %d (revision %d): %d keys, original at that revision %d", idx, res.PointInTime.Revision, len(got), len(want))
		}
		t.Logf("index %d: revision %d, %d keys, base %s + %d entries", idx, res.PointInTime.Revision, len(got), res.PointInTime.BaseKind, res.PointInTime.Applied)
	}
}

// TestRestoreUsesItsFS: the restore's file operations go through the FS it
// is given: a failed .snap write or WAL directory creation fails the
// restore, and what it created is removed (through the same FS).
func TestRestoreUsesItsFS(t *testing.T) {
	for _, c := range []struct {
		op      vfs.Op
		pattern string
	}{{vfs.OpCreate, "*.snap*"}, {vfs.OpMkdir, "wal*"}, {vfs.OpRename, "db"}} {
		t.Run(c.op.String()+" "+c.pattern, func(t *testing.T) {
			efs := vfs.NewErrorFS(vfs.OS{})
			efs.FailAlways(c.op, c.pattern, nil)
			dir := filepath.Join(t.TempDir(), "m")
			o := fixtureRestoreOptions(t, dir)
			o.FS = efs
			if _, err := Restore(o); !errors.Is(err, vfs.ErrInjected) {
				t.Fatalf("restore through a failing FS: %v", err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the failed restore left %s behind (%v)", dir, err)
			}
		})
	}
}
