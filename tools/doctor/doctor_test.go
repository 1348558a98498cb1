package doctor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/tools/tooltest"
	bolt "go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func run(t *testing.T, args ...string) tooltest.Result {
	t.Helper()
	return tooltest.Run(t, NewCommand(), args...)
}

// small extracts the small fixture and returns its root (holding small/).
func small(t *testing.T) string {
	t.Helper()
	return fixture.Extract(t, "etcd-3.6.16/small.tar.gz")
}

// setCI rewrites meta/consistent_index and meta/term of a copy's db.
func setCI(t *testing.T, dir string, index, term uint64) {
	t.Helper()
	s, err := mvcc.Open(filepath.Join(dir, "member", "snap", "db"), mvcc.Options{Backend: mvcc.BackendOptions{NoSync: true, InitialMmapSize: -1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetConsistentIndex(index, term); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %q", err, l)
		}
		out = append(out, m)
	}
	return out
}

func TestSmallClean(t *testing.T) {
	root := small(t)
	dir := filepath.Join(root, "small")
	t.Chdir(root)
	before := tooltest.HashDir(t, dir)
	for _, c := range []struct{ name, format string }{{"simple", "simple"}, {"table", "table"}, {"json", "json"}} {
		r := run(t, "--data-dir", "small", "-w", c.format)
		if r.Code != 0 || r.Stderr != "" {
			t.Fatalf("%s: code %d err %v stderr %q\n%s", c.name, r.Code, r.Err, r.Stderr, r.Stdout)
		}
		tooltest.Golden(t, "doctor/small."+c.name+".txt", r.Stdout)
	}
	r := run(t, "small", "--replay")
	if r.Code != 0 || !strings.Contains(r.Stdout, "after replay: consistent index 113, revision 105, compact revision 81, 72 keys, hashkv 336939241") {
		t.Fatalf("replay: %d %v\n%s", r.Code, r.Err, r.Stdout)
	}
	tooltest.Golden(t, "doctor/small.replay.txt", r.Stdout)
	// --wal-dir given separately resolves the same WAL.
	r = run(t, "--data-dir", "small", "--wal-dir", filepath.Join("small", "member", "wal"))
	if r.Code != 0 {
		t.Errorf("--wal-dir: %d %v", r.Code, r.Err)
	}
	tooltest.RequireUnchanged(t, dir, before)
}

// TestRewoundIndexReplays: a db whose consistent_index says 100 of 113
// (only the index was rewound: the data of 101..113 is in the db) is not
// an error (info), and the replay on a copy applies the 13 entries again.
func TestRewoundIndexReplays(t *testing.T) {
	root := small(t)
	dir := filepath.Join(root, "small")
	setCI(t, dir, 100, 2)
	before := tooltest.HashDir(t, dir)
	r := run(t, dir, "--replay")
	if r.Code != 0 {
		t.Fatalf("code %d %v\n%s", r.Code, r.Err, r.Stdout)
	}
	finding(t, r.Stdout, SevInfo, "consistent-index", "13 committed entries (101..113) are not applied to the db yet")
	if !strings.Contains(r.Stdout, "replay: 13 entries applied (101..113) on a copy") || !strings.Contains(r.Stdout, "after replay: consistent index 113,") {
		t.Errorf("%s", r.Stdout)
	}
	tooltest.RequireUnchanged(t, dir, before)
}

// committed returns the engine's committed entries.
func committed(t *testing.T, e *engine.Engine) []*raftpb.Entry {
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

// member makes a one-member data dir that persisted and committed five
// puts (indexes 2..6) and applied the first applied of them.
func member(t *testing.T, dir string, applied int) {
	t.Helper()
	e, err := engine.Open(engine.Options{Name: "m1", DataDir: dir, InitialCluster: "m1=http://127.0.0.1:2380", NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	cc := engine.NewConfTracker(nil)
	if err := e.Apply(committed(t, e), cc.Apply, nil); err != nil {
		t.Fatal(err)
	}
	typ := raftpb.EntryNormal
	for i := 1; i <= 5; i++ {
		last, _ := e.RaftStorage().LastIndex()
		data, _ := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: uint64(i)}, Put: &pb.PutRequest{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte("v")}})
		ent := &raftpb.Entry{Term: proto.Uint64(2), Index: proto.Uint64(last + 1), Type: &typ, Data: data}
		hs := &raftpb.HardState{Term: proto.Uint64(2), Vote: proto.Uint64(e.ID()), Commit: proto.Uint64(last + 1)}
		if err := e.SaveReady(hs, []*raftpb.Entry{ent}, nil); err != nil {
			t.Fatal(err)
		}
		if i <= applied {
			if err := e.Apply([]*raftpb.Entry{ent}, cc.Apply, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestBehindReplays: a member that persisted and committed five puts but
// crashed after applying three. The doctor says two entries wait, and the
// replay on a copy reaches the state of a member that applied all five.
func TestBehindReplays(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "m1")
	member(t, dir, 3)
	// The same member had it applied all five: the hash the replay must reach.
	full := filepath.Join(t.TempDir(), "m1")
	member(t, full, 5)
	st, err := mvcc.Open(filepath.Join(full, "member", "snap", "db"), mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true, InitialMmapSize: -1}})
	if err != nil {
		t.Fatal(err)
	}
	wantHash, _, err := st.HashKV(0)
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(root)
	before := tooltest.HashDir(t, dir)
	r := run(t, "m1", "--replay", "-w", "json")
	if r.Code != 0 {
		t.Fatalf("code %d %v\n%s", r.Code, r.Err, r.Stdout)
	}
	var sawInfo, sawReplay bool
	for _, o := range jsonLines(t, r.Stdout) {
		switch o["kind"] {
		case "finding":
			if o["check"] == "consistent-index" && o["severity"] == SevInfo && strings.Contains(o["detail"].(string), "2 committed entries (5..6)") {
				sawInfo = true
			}
		case "replay":
			sawReplay = true
			if o["applied"].(float64) != 2 || o["consistent_index"].(float64) != 6 || o["revision"].(float64) != 6 || o["keys"].(float64) != 5 || uint32(o["hash"].(float64)) != wantHash.Hash {
				t.Errorf("replay %v", o)
			}
		case "summary":
			if o["revision"].(float64) != 4 || o["consistent_index"].(float64) != 4 || o["hard_state_commit"].(float64) != 6 {
				t.Errorf("summary %v", o)
			}
		}
	}
	if !sawInfo || !sawReplay {
		t.Errorf("info %v replay %v:\n%s", sawInfo, sawReplay, r.Stdout)
	}
	tooltest.Golden(t, "doctor/behind.replay.json.txt", r.Stdout)
	tooltest.RequireUnchanged(t, dir, before)
}

func finding(t *testing.T, out, sev, check, substr string) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, sev+" "+check+" at ") && strings.Contains(l, substr) {
			return
		}
	}
	t.Errorf("no %s %s finding with %q in:\n%s", sev, check, substr, out)
}

func TestAheadOfWAL(t *testing.T) {
	root := small(t)
	dir := filepath.Join(root, "small")
	setCI(t, dir, 200, 5)
	before := tooltest.HashDir(t, dir)
	r := run(t, dir)
	if r.Code != 1 {
		t.Fatalf("code %d %v\n%s", r.Code, r.Err, r.Stdout)
	}
	finding(t, r.Stdout, SevError, "consistent-index", "consistent_index 200 is beyond the WAL's commit 113")
	finding(t, r.Stdout, SevError, "term", "meta/term 5 is beyond the WAL's HardState term 2")
	if !strings.Contains(r.Stdout, "result: 2 errors, 0 warnings") {
		t.Errorf("%s", r.Stdout)
	}
	tooltest.RequireUnchanged(t, dir, before)
}

// TestDamagedDB: a key bucket value that does not decode, a put whose
// mod_revision lies, a lease that does not decode and a member not in
// confState are all reported, keys with the file offset of the pair.
func TestDamagedDB(t *testing.T) {
	root := small(t)
	dir := filepath.Join(root, "small")
	path := filepath.Join(dir, "member", "snap", "db")
	bad := mvcc.RevKey(mvcc.Revision{Main: 200}, false)
	liar := mvcc.RevKey(mvcc.Revision{Main: 201}, false)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		kb := tx.Bucket([]byte(mvcc.BucketKey))
		if err := kb.Put(bad, []byte{0x0a, 0xff}); err != nil {
			return err
		}
		if err := kb.Put(liar, mvcc.EncodeKeyValueFields([]byte("x"), 201, 7, 1, []byte("v"), 0)); err != nil {
			return err
		}
		if err := tx.Bucket([]byte(mvcc.BucketLease)).Put([]byte{1}, []byte{0xff}); err != nil {
			return err
		}
		return tx.Bucket([]byte(mvcc.BucketMembers)).Put([]byte("abc"), []byte(`{"id":2748,"peerURLs":["http://x:1"]}`))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	file, _ := os.ReadFile(path)
	before := tooltest.HashDir(t, dir)
	r := run(t, dir, "-w", "json")
	if r.Code != 1 {
		t.Fatalf("code %d %v\n%s", r.Code, r.Err, r.Stdout)
	}
	want := map[string][]byte{"revisions": nil, "lease": {1}, "membership": nil}
	got := map[string]bool{}
	for _, o := range jsonLines(t, r.Stdout) {
		if o["kind"] != "finding" {
			continue
		}
		check := o["check"].(string)
		got[check] = true
		off := int64(o["offset"].(float64))
		detail := o["detail"].(string)
		switch {
		case check == "revisions" && strings.Contains(detail, fmt.Sprintf("%x", bad)):
			if off < 0 || !bytes.Equal(file[off:off+17], bad) {
				t.Errorf("bad value finding at %d does not hold its key: %s", off, detail)
			}
		case check == "revisions" && strings.Contains(detail, "mod_revision 7 differs"):
			if off < 0 || !bytes.Equal(file[off:off+17], liar) {
				t.Errorf("mod finding at %d does not hold its key: %s", off, detail)
			}
		case check == "lease":
			if off < 0 || file[off] != 1 {
				t.Errorf("lease finding at %d: %s", off, detail)
			}
		}
	}
	for c := range want {
		if !got[c] {
			t.Errorf("no %s finding:\n%s", c, r.Stdout)
		}
	}
	tooltest.RequireUnchanged(t, dir, before)
}

func TestMissingDBAndWAL(t *testing.T) {
	root := small(t)
	dir := filepath.Join(root, "small")
	if err := os.Remove(filepath.Join(dir, "member", "snap", "db")); err != nil {
		t.Fatal(err)
	}
	r := run(t, dir)
	if r.Code != 1 || !strings.Contains(r.Stdout, "error db at ") {
		t.Errorf("no db: %d %v\n%s", r.Code, r.Err, r.Stdout)
	}
	if err := os.RemoveAll(filepath.Join(dir, "member", "wal")); err != nil {
		t.Fatal(err)
	}
	r = run(t, dir, "--replay")
	if r.Code != 1 || !strings.Contains(r.Stdout, "error wal at ") {
		t.Errorf("no wal: %d %v\n%s", r.Code, r.Err, r.Stdout)
	}
	for _, args := range [][]string{{}, {filepath.Join(root, "nothing")}, {dir, "-w", "yaml"}} {
		if r := run(t, args...); r.Code != 2 {
			t.Errorf("%v: %d %v", args, r.Code, r.Err)
		}
	}
}

func TestLockedDB(t *testing.T) {
	dir := filepath.Join(small(t), "small")
	path := filepath.Join(dir, "member", "snap", "db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r := run(t, dir, "--timeout", "200ms")
	if r.Code != 2 || !strings.Contains(r.Err.Error(), "is locked by") {
		t.Fatalf("code %d %v", r.Code, r.Err)
	}
	if h := cli.LockHolders(path); len(h) > 0 && !strings.Contains(r.Err.Error(), fmt.Sprintf("pid %d ", os.Getpid())) {
		t.Errorf("holder not named: %v", r.Err)
	}
}

// TestSnapshotFixture: six .snap files, two segments, a 93 MB db: clean,
// membership in the newest .snap equals the members bucket; a db older than
// the newest WAL snapshot is an error (etcd would need the .snap.db).
func TestSnapshotFixture(t *testing.T) {
	if testing.Short() {
		t.Skip("93 MB db")
	}
	root := fixture.Extract(t, "etcd-3.6.16/snapshot.tar.gz")
	dir := filepath.Join(root, "snapshot")
	before := tooltest.HashDir(t, dir)
	r := run(t, dir, "--replay")
	if r.Code != 0 || !strings.Contains(r.Stdout, "snap members: 2e1259d415f2a040 (") || !strings.Contains(r.Stdout, "hashkv 419984033") {
		t.Fatalf("code %d %v\n%s", r.Code, r.Err, r.Stdout)
	}
	tooltest.RequireUnchanged(t, dir, before)
	// A member the .snap and confState do not know.
	db, err := bolt.Open(filepath.Join(dir, "member", "snap", "db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(mvcc.BucketMembers)).Put([]byte("abc"), []byte(`{"id":2748,"peerURLs":["http://x:1"]}`))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	r = run(t, dir)
	if r.Code != 1 {
		t.Fatalf("code %d\n%s", r.Code, r.Stdout)
	}
	finding(t, r.Stdout, SevWarn, "membership", "members in the .snap [2e1259d415f2a040] differ from the members bucket [2e1259d415f2a040,abc]")
	finding(t, r.Stdout, SevWarn, "membership", "meta/confState [2e1259d415f2a040] differs from the members bucket")
	setCI(t, dir, 5000, 2)
	r = run(t, dir)
	if r.Code != 1 {
		t.Fatalf("code %d\n%s", r.Code, r.Stdout)
	}
	finding(t, r.Stdout, SevError, "consistent-index", "older than the newest WAL snapshot (index 6006)")
}

// TestDamagedPage: a branch-free leaf page of the key bucket whose header
// is overwritten is reported with its offset; the doctor does not crash.
func TestDamagedPage(t *testing.T) {
	dir := filepath.Join(small(t), "small")
	path := filepath.Join(dir, "member", "snap", "db")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Every page from 2 up: damage each page's id field in turn.
	for pg := 2; pg < 14; pg++ {
		c := bytes.Clone(b)
		c[pg*4096] ^= 0x55
		if err := os.WriteFile(path, c, 0o600); err != nil {
			t.Fatal(err)
		}
		r := run(t, dir)
		if r.Code != 0 && r.Code != 1 {
			t.Fatalf("page %d: code %d %v", pg, r.Code, r.Err)
		}
		if r.Code == 1 && !strings.Contains(r.Stdout, fmt.Sprintf("error bbolt-pages at %s:%d: page %d", path, pg*4096, pg)) {
			t.Errorf("page %d:\n%s", pg, r.Stdout)
		}
	}
}

// TestRandomDamageNeverPanics: random bytes of the db's pages and of the
// WAL overwritten; the doctor always ends with exit 0, 1 or 2.
func TestRandomDamageNeverPanics(t *testing.T) {
	dir := filepath.Join(small(t), "small")
	dbPath := filepath.Join(dir, "member", "snap", "db")
	walPath := filepath.Join(dir, "member", "wal", "0000000000000000-0000000000000000.wal")
	db0, _ := os.ReadFile(dbPath)
	wal0, _ := os.ReadFile(walPath)
	codes := map[int]int{}
	for seed := int64(1); seed <= 40; seed++ {
		rng := rand.New(rand.NewSource(seed))
		d, w := bytes.Clone(db0), bytes.Clone(wal0)
		for i := 0; i < 1+rng.Intn(6); i++ {
			d[2*4096+rng.Intn(12*4096)] = byte(rng.Intn(256))
		}
		if rng.Intn(2) == 0 {
			w[rng.Intn(23320)] ^= byte(1 + rng.Intn(255))
		}
		if err := os.WriteFile(dbPath, d, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(walPath, w, 0o600); err != nil {
			t.Fatal(err)
		}
		r := run(t, dir, "--replay", "-w", "json")
		if r.Code < 0 || r.Code > 2 {
			t.Fatalf("seed %d: code %d", seed, r.Code)
		}
		codes[r.Code]++
	}
	t.Logf("exit codes %v", codes)
}

// TestDamagedAuth: an undecodable user is an error at its key's offset; auth
// enabled without root is a warning.
func TestDamagedAuth(t *testing.T) {
	root := small(t)
	dir := filepath.Join(root, "small")
	path := filepath.Join(dir, "member", "snap", "db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte("authUsers")).Put([]byte("mallory"), []byte{0x0a, 0x09, 'm'}); err != nil {
			return err
		}
		return tx.Bucket([]byte("auth")).Put([]byte("authEnabled"), []byte{1})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	file, _ := os.ReadFile(path)
	r := run(t, dir, "-w", "json")
	if r.Code != 1 {
		t.Fatalf("code %d %v\n%s", r.Code, r.Err, r.Stdout)
	}
	var found bool
	for _, o := range jsonLines(t, r.Stdout) {
		if o["kind"] != "finding" || o["check"] != "auth" {
			continue
		}
		found = true
		off := int64(o["offset"].(float64))
		if detail := o["detail"].(string); !strings.Contains(detail, `authUsers/"mallory"`) {
			t.Errorf("auth finding does not name the user: %s", detail)
		}
		if off < 0 || !bytes.Equal(file[off:off+7], []byte("mallory")) {
			t.Errorf("auth finding at %d does not hold its key", off)
		}
	}
	if !found {
		t.Fatalf("no auth finding:\n%s", r.Stdout)
	}
	// With the bad user gone, the missing root is reported.
	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("authUsers")).Delete([]byte("mallory")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	r = run(t, dir, "-w", "json")
	if !strings.Contains(r.Stdout, `auth is enabled but user \"root\"`) {
		t.Fatalf("no root warning:\n%s", r.Stdout)
	}
}
