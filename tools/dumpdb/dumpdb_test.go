package dumpdb

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/tools/tooltest"
	bolt "go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/encoding/protowire"
)

func run(t *testing.T, args ...string) tooltest.Result {
	t.Helper()
	return tooltest.Run(t, NewCommand(), args...)
}

// extract unpacks a fixture tarball and returns its root (holding <dir>/member/...).
func extract(t *testing.T, tarball string) string {
	t.Helper()
	return fixture.Extract(t, "etcd-3.6.16/"+tarball)
}

// dumpSections splits an etcd-dump-db transcript into "### <command>" sections.
func dumpSections(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	out := map[string]*strings.Builder{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	cur := ""
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "### ") {
			cur = strings.TrimPrefix(line, "### ")
			out[cur] = &strings.Builder{}
			continue
		}
		if out[cur] == nil {
			out[cur] = &strings.Builder{}
		}
		out[cur].WriteString(line + "\n")
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for k, b := range out {
		m[k] = b.String()
	}
	return m
}

// checkAgainstEtcdDumpDB runs buckets, hash and iterate --decode for every
// bucket and compares with etcd-dump-db's recorded output byte for byte.
func checkAgainstEtcdDumpDB(t *testing.T, dataDir, transcript string) {
	t.Helper()
	want := dumpSections(t, transcript)
	r := run(t, "buckets", "--data-dir", dataDir)
	if r.Code != 0 {
		t.Fatalf("buckets: %d %v", r.Code, r.Err)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		names = append(names, strings.Fields(l)[0])
	}
	if got := strings.Join(names, "\n") + "\n"; got != want["etcd-dump-db list-bucket"] {
		t.Errorf("buckets %q, etcd-dump-db list-bucket %q", got, want["etcd-dump-db list-bucket"])
	}
	r = run(t, "hash", dataDir)
	wantHash := want["etcd-dump-db hash"]
	wantHash = wantHash[strings.Index(wantHash, "Hash:"):]
	if !strings.HasSuffix(r.Stdout, wantHash) || r.Code != 0 {
		t.Errorf("hash %q, want ...%q", r.Stdout, wantHash)
	}
	for _, b := range names {
		sec, ok := want["etcd-dump-db iterate-bucket "+b+" --decode"]
		if !ok {
			t.Fatalf("no etcd-dump-db section for %s", b)
		}
		r := run(t, "iterate", b, dataDir, "--decode")
		if r.Code != 0 || r.Stderr != "" {
			t.Fatalf("iterate %s: code %d err %v stderr %q", b, r.Code, r.Err, r.Stderr)
		}
		if r.Stdout != sec {
			t.Errorf("iterate %s --decode differs from etcd-dump-db:\n%s", b, firstDiff(sec, r.Stdout))
		}
	}
}

func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(wl), len(gl)); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return fmt.Sprintf("line %d:\nwant %.200q\ngot  %.200q", i+1, w, g)
		}
	}
	return "(equal lines)"
}

func TestSmallEqualsEtcdDumpDB(t *testing.T) {
	root := extract(t, "small.tar.gz")
	dir := filepath.Join(root, "small")
	before := tooltest.HashDir(t, dir)
	checkAgainstEtcdDumpDB(t, dir, tooltest.Fixture(t, "etcd-3.6.16/small/small.dump-db.txt"))
	tooltest.RequireUnchanged(t, dir, before)
}

func TestRestoredEqualsEtcdDumpDB(t *testing.T) {
	root := extract(t, "snapshot-restored.tar.gz")
	checkAgainstEtcdDumpDB(t, filepath.Join(root, "restored"), tooltest.Fixture(t, "etcd-3.6.16/snapshot-db/restored.dump-db.txt"))
}

func TestSnapshotFixture(t *testing.T) {
	if testing.Short() {
		t.Skip("93 MB db")
	}
	root := extract(t, "snapshot.tar.gz")
	dir := filepath.Join(root, "snapshot")
	before := tooltest.HashDir(t, dir)
	checkAgainstEtcdDumpDB(t, dir, tooltest.Fixture(t, "etcd-3.6.16/snapshot/snapshot.dump-db.txt.gz"))
	r := run(t, "hashkv", dir, "-w", "json")
	want, _ := os.ReadFile(tooltest.Fixture(t, "etcd-3.6.16/snapshot/snapshot.hashkv-etcdutl-v3.7.3.json"))
	if r.Stdout != strings.TrimSpace(string(want))+"\n" {
		t.Errorf("hashkv %q, etcdutl %q", r.Stdout, want)
	}
	// keys --keys-only equals etcdctl get --prefix --keys-only.
	var resp struct {
		KVs []struct {
			Key         string `json:"key"`
			ModRevision int64  `json:"mod_revision"`
		} `json:"kvs"`
	}
	b, _ := os.ReadFile(tooltest.Fixture(t, "etcd-3.6.16/snapshot/get-prefix-keys-only.json"))
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	r = run(t, "keys", dir, "--keys-only", "-w", "json")
	got := jsonLines(t, r.Stdout)
	if len(got)-1 != len(resp.KVs) {
		t.Fatalf("%d keys, etcdctl %d", len(got)-1, len(resp.KVs))
	}
	for i, kv := range resp.KVs {
		k, _ := base64.StdEncoding.DecodeString(kv.Key)
		if got[i]["key"] != string(k) || int64(got[i]["mod_revision"].(float64)) != kv.ModRevision {
			t.Fatalf("key %d: %v, etcdctl %q mod %d", i, got[i], k, kv.ModRevision)
		}
	}
	hashKVAgainstStore(t, filepath.Join(dir, "member", "snap", "db"), 499)
	r = run(t, "diff", dir, dir)
	if r.Code != 0 || !strings.Contains(r.Stdout, "result: same") {
		t.Errorf("diff with itself: %d %s", r.Code, r.Stdout)
	}
	tooltest.RequireUnchanged(t, dir, before)
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

// etcdctlKVs reads an etcdctl get -w json output.
func etcdctlKVs(t *testing.T, rel string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(tooltest.Fixture(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		KVs []map[string]any `json:"kvs"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	return resp.KVs
}

func num(v any) int64 {
	f, _ := v.(float64)
	return int64(f)
}

// TestKeysEqualEtcdctl: the keyspace at the current revision and at the
// compact revision equals etcdctl get --prefix "" at the same revisions.
func TestKeysEqualEtcdctl(t *testing.T) {
	dir := filepath.Join(extract(t, "small.tar.gz"), "small")
	before := tooltest.HashDir(t, dir)
	for _, c := range []struct {
		rev  string
		file string
	}{{"0", "get-prefix.json"}, {"105", "get-prefix.json"}, {"81", "get-prefix-at-compact-rev-81.json"}} {
		want := etcdctlKVs(t, "etcd-3.6.16/small/"+c.file)
		r := run(t, "keys", dir, "--rev", c.rev, "-w", "json")
		if r.Code != 0 {
			t.Fatalf("rev %s: %d %v", c.rev, r.Code, r.Err)
		}
		got := jsonLines(t, r.Stdout)
		sum := got[len(got)-1]
		got = got[:len(got)-1]
		if len(got) != len(want) || num(sum["count"]) != int64(len(want)) {
			t.Fatalf("rev %s: %d keys, etcdctl %d", c.rev, len(got), len(want))
		}
		for i, w := range want {
			k, _ := base64.StdEncoding.DecodeString(w["key"].(string))
			v, _ := base64.StdEncoding.DecodeString(fmt.Sprint(w["value"]))
			if w["value"] == nil {
				v = nil
			}
			g := got[i]
			gk, gv := keyOf(g, "key"), keyOf(g, "value")
			if gk != string(k) || gv != string(v) || num(g["create_revision"]) != num(w["create_revision"]) ||
				num(g["mod_revision"]) != num(w["mod_revision"]) || num(g["version"]) != num(w["version"]) || num(g["lease"]) != num(w["lease"]) {
				t.Errorf("rev %s key %d: got %v, etcdctl %q=%q %v", c.rev, i, g, k, v, w)
			}
		}
	}
	// Below the compact revision: etcd's error, exit 2.
	r := run(t, "keys", dir, "--rev", "80")
	if r.Code != 2 || !strings.Contains(r.Err.Error(), "required revision has been compacted") {
		t.Errorf("rev 80: %d %v", r.Code, r.Err)
	}
	tooltest.RequireUnchanged(t, dir, before)
}

// keyOf returns a string field, decoding <name>_base64 when present.
func keyOf(m map[string]any, name string) string {
	if s, ok := m[name].(string); ok {
		return s
	}
	if s, ok := m[name+"_base64"].(string); ok {
		b, _ := base64.StdEncoding.DecodeString(s)
		return string(b)
	}
	return ""
}

// TestHashKVEqualsEtcd: the recorded HashKV RPC and etcdutl hashkv values
// at 105, and at every revision 81..105 the store's HashKV.
func TestHashKVEqualsEtcd(t *testing.T) {
	dir := filepath.Join(extract(t, "small.tar.gz"), "small")
	r := run(t, "hashkv", dir, "-w", "json")
	want, _ := os.ReadFile(tooltest.Fixture(t, "etcd-3.6.16/small/small.hashkv-etcdutl-v3.7.3.json"))
	if r.Stdout != strings.TrimSpace(string(want))+"\n" {
		t.Errorf("hashkv %q, etcdutl %q", r.Stdout, want)
	}
	var ep []struct {
		HashKV struct {
			Hash         uint32 `json:"hash"`
			HashRevision int64  `json:"hash_revision"`
		}
	}
	b, _ := os.ReadFile(tooltest.Fixture(t, "etcd-3.6.16/small/endpoint-hashkv.json"))
	if err := json.Unmarshal(b, &ep); err != nil || len(ep) != 1 {
		t.Fatal(err)
	}
	r = run(t, "hashkv", dir, "--rev", "105")
	if want := fmt.Sprintf("hash: %d\nhash revision: 105\n", ep[0].HashKV.Hash); !strings.HasPrefix(r.Stdout, want) {
		t.Errorf("%q, want %q", r.Stdout, want)
	}
	s, err := mvcc.Open(filepath.Join(dir, "member", "snap", "db"), mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for rev := int64(81); rev <= 105; rev++ {
		h, _, err := s.HashKV(rev)
		if err != nil {
			t.Fatal(err)
		}
		r := run(t, "hashkv", dir, "--rev", fmt.Sprint(rev), "-w", "json")
		if want := fmt.Sprintf(`{"hash":%d,"hashRevision":%d,"compactRevision":81}`+"\n", h.Hash, rev); r.Stdout != want {
			t.Errorf("rev %d: %q, want %q", rev, r.Stdout, want)
		}
	}
	if r := run(t, "hashkv", dir, "--rev", "106"); r.Code != 2 {
		t.Errorf("future rev: %d", r.Code)
	}
}

// TestGoldens covers every subcommand and format on the small fixture,
// and proves none of them changes the data directory.
func TestGoldens(t *testing.T) {
	root := extract(t, "small.tar.gz")
	dir := filepath.Join(root, "small")
	t.Chdir(root)
	before := tooltest.HashDir(t, dir)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"buckets.simple", []string{"buckets", "small"}},
		{"buckets.table", []string{"buckets", "--data-dir", "small", "-w", "table"}},
		{"buckets.json", []string{"buckets", "small/member/snap/db", "-w", "json"}},
		{"iterate-key-raw-limit3", []string{"iterate", "key", "small", "--limit", "3"}},
		{"iterate-key-oldest-limit5.json", []string{"iterate", "key", "small", "--decode", "--oldest-first", "--limit", "5", "-w", "json"}},
		{"iterate-key-limit5.table", []string{"iterate", "key", "small", "--decode", "--limit", "5", "-w", "table"}},
		{"iterate-meta.json", []string{"iterate", "meta", "small", "--decode", "-w", "json"}},
		{"iterate-members.json", []string{"iterate", "members", "small", "--decode", "-w", "json"}},
		{"iterate-lease.table", []string{"iterate", "lease", "small", "--decode", "-w", "table"}},
		{"keys.simple", []string{"keys", "small"}},
		{"keys-prefix-foo-rev95.table", []string{"keys", "small", "--prefix", "foo", "--rev", "95", "-w", "table"}},
		{"keys-lease.json", []string{"keys", "small", "--prefix", "/small/lease/", "-w", "json"}},
		{"history-versioned.simple", []string{"history", "/small/versioned", "small"}},
		{"history-kv1-prefix.json", []string{"history", "/small/kv/1", "small", "--prefix", "-w", "json"}},
		{"history-a.table", []string{"history", "a", "small", "-w", "table"}},
		{"hashkv.simple", []string{"hashkv", "small"}},
		{"hashkv-90.table", []string{"hashkv", "small", "--rev", "90", "-w", "table"}},
		{"hash.simple", []string{"hash", "small"}},
		{"hash-all.json", []string{"hash", "small", "--all", "-w", "json"}},
		{"stats.simple", []string{"stats", "small"}},
		{"stats.json", []string{"stats", "small", "-w", "json"}},
		{"diff-self.simple", []string{"diff", "small", "small/member/snap/db"}},
		{"diff-self.json", []string{"diff", "small", "small", "-w", "json"}},
	} {
		r := run(t, c.args...)
		if r.Code != 0 || r.Stderr != "" {
			t.Fatalf("%s: code %d err %v stderr %q", c.name, r.Code, r.Err, r.Stderr)
		}
		tooltest.Golden(t, "dump-db/small."+c.name+".txt", r.Stdout)
	}
	tooltest.RequireUnchanged(t, dir, before)
}

func TestUsage(t *testing.T) {
	dir := filepath.Join(extract(t, "small.tar.gz"), "small")
	for _, args := range [][]string{
		{},
		{"buckets"},
		{"buckets", dir, "--data-dir", dir},
		{"iterate"},
		{"iterate", "nosuchbucket", dir},
		{"iterate", "key", dir, "--limit", "-1"},
		{"keys", dir, "--rev", "-1"},
		{"hashkv", dir, "-w", "yaml"},
		{"diff", dir},
		{"buckets", filepath.Join(dir, "nothing")},
	} {
		if r := run(t, args...); r.Code != 2 {
			t.Errorf("%v: code %d (%v)", args, r.Code, r.Err)
		}
	}
}

// TestLockedDBNamesHolder: a db held read-write (as a running etcd holds
// it) makes every command give up after --timeout, naming the holder.
func TestLockedDBNamesHolder(t *testing.T) {
	dir := filepath.Join(extract(t, "small.tar.gz"), "small")
	path := filepath.Join(dir, "member", "snap", "db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, args := range [][]string{{"buckets", dir}, {"keys", dir}, {"hashkv", dir}, {"diff", dir, dir}} {
		start := time.Now()
		r := run(t, append(args, "--timeout", "200ms")...)
		if r.Code != 2 || !strings.Contains(r.Err.Error(), "is locked by") || !strings.Contains(r.Err.Error(), "200ms") {
			t.Fatalf("%v: code %d err %v", args, r.Code, r.Err)
		}
		if h := cli.LockHolders(path); len(h) > 0 && !strings.Contains(r.Err.Error(), fmt.Sprintf("pid %d ", os.Getpid())) {
			t.Errorf("%v: holder not named: %v", args, r.Err)
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("%v: took %v", args, time.Since(start))
		}
	}
}

// damage writes pairs straight into a copy of the small db with bbolt.
func damage(t *testing.T, edit func(tx *bolt.Tx) error) (dir, path string) {
	t.Helper()
	dir = filepath.Join(extract(t, "small.tar.gz"), "small")
	path = filepath.Join(dir, "member", "snap", "db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(edit); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

// TestUndecodableValues: garbage values are printed raw and reported with
// the file offset of their key, the dump goes on, exit 1.
func TestUndecodableValues(t *testing.T) {
	badRev := mvcc.RevKey(mvcc.Revision{Main: 200, Sub: 0}, false)
	dir, path := damage(t, func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte("key")).Put(badRev, []byte{0x0a, 0xff, 0x01}); err != nil {
			return err
		}
		if err := tx.Bucket([]byte("key")).Put([]byte("short"), []byte("x")); err != nil {
			return err
		}
		if err := tx.Bucket([]byte("lease")).Put([]byte{1, 2, 3}, []byte{0x08, 0x01}); err != nil {
			return err
		}
		return tx.Bucket([]byte("meta")).Put([]byte("consistent_index"), []byte{1, 2})
	})
	file, _ := os.ReadFile(path)
	before := tooltest.HashDir(t, dir)
	for _, c := range []struct {
		bucket string
		key    []byte
		lines  int
	}{{"key", badRev, 116}, {"lease", []byte{1, 2, 3}, 2}, {"meta", []byte("consistent_index"), 6}} {
		r := run(t, "iterate", c.bucket, dir, "--decode")
		if r.Code != 1 {
			t.Fatalf("%s: code %d err %v", c.bucket, r.Code, r.Err)
		}
		if n := strings.Count(r.Stdout, "\n"); n != c.lines {
			t.Errorf("%s: %d lines, want %d (the dump must go on)", c.bucket, n, c.lines)
		}
		if !strings.Contains(r.Stderr, fmt.Sprintf("problem at %s:", path)) {
			t.Errorf("%s: stderr %q", c.bucket, r.Stderr)
		}
		// json: problems inline, still exit 1.
		r = run(t, "iterate", c.bucket, dir, "--decode", "-w", "json")
		if r.Code != 1 || !strings.Contains(r.Stdout, `"kind":"problem"`) {
			t.Errorf("%s json: %d %s", c.bucket, r.Code, r.Stdout)
		}
		found := false
		for _, o := range jsonLines(t, r.Stdout) {
			if o["kind"] != "problem" {
				continue
			}
			off := num(o["offset"])
			k := keyOf(o, "key")
			if off < 0 || !bytes.Equal(file[off:off+int64(len(k))], []byte(k)) {
				t.Errorf("%s: problem %v: offset does not hold the key", c.bucket, o)
			}
			found = found || k == string(c.key)
		}
		if !found {
			t.Errorf("%s: no problem for key %x", c.bucket, c.key)
		}
	}
	// The raw key line for the undecodable value.
	r := run(t, "iterate", "key", dir, "--decode", "--limit", "2")
	if !strings.Contains(r.Stdout, `key="\x00\x00\x00\x00\x00\x00\x00\xc8_\x00\x00\x00\x00\x00\x00\x00\x00", value="\n\xff\x01"`+"\n") {
		t.Errorf("%q", r.Stdout)
	}
	// history reports and goes on.
	r = run(t, "history", "/small/versioned", dir)
	if r.Code != 1 || !strings.Contains(r.Stdout, "105_0 put") {
		t.Errorf("history: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	tooltest.RequireUnchanged(t, dir, before)
}

// TestDecodeNeverPanics feeds random bytes to every bucket decoder.
func TestDecodeNeverPanics(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	buckets := []string{"key", "meta", "lease", "auth", "authUsers", "authRoles", "members", "alarm", "cluster", "members_removed"}
	for i := 0; i < 20000; i++ {
		k := make([]byte, rng.Intn(20))
		v := make([]byte, rng.Intn(40))
		rng.Read(k)
		rng.Read(v)
		if rng.Intn(4) == 0 {
			k = mvcc.RevKey(mvcc.Revision{Main: rng.Int63n(100), Sub: 0}, rng.Intn(2) == 0)
		}
		if rng.Intn(4) == 0 {
			v = append([]byte(k8sMagic), v...)
		}
		for _, b := range buckets {
			d := Decode(b, k, v)
			if d.Etcd == "" || d.JSON == nil {
				t.Fatalf("%s %x %x: empty rendering", b, k, v)
			}
		}
		DecodeK8s(v)
	}
}

func bytesField(num protowire.Number, s []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), s)
}

func TestDecodeK8s(t *testing.T) {
	typeMeta := append(bytesField(1, []byte("v1")), bytesField(2, []byte("Pod"))...)
	objMeta := append(bytesField(1, []byte("web-0")), bytesField(3, []byte("default"))...)
	obj := bytesField(1, objMeta)
	v := append([]byte(k8sMagic), append(bytesField(1, typeMeta), bytesField(2, obj)...)...)
	k, ok := DecodeK8s(v)
	if !ok || k != (K8s{APIVersion: "v1", Kind: "Pod", Namespace: "default", Name: "web-0"}) {
		t.Fatalf("%+v %v", k, ok)
	}
	if s := k8sSuffix(v); s != " <k8s v1 Pod default/web-0>" {
		t.Errorf("%q", s)
	}
	if _, ok := DecodeK8s([]byte("plain")); ok {
		t.Error("plain value decoded as k8s")
	}
	// A key bucket value holding the object: the k8s identity is rendered.
	kv := mvcc.EncodeKeyValueFields([]byte("/registry/pods/default/web-0"), 2, 2, 1, v, 0)
	d := Decode("key", mvcc.RevKey(mvcc.Revision{Main: 2}, false), kv)
	if d.Err != nil || !strings.HasSuffix(d.Etcd, " <k8s v1 Pod default/web-0>") {
		t.Errorf("%v %q", d.Err, d.Etcd)
	}
	if k8, _ := d.JSON.Get("k8s"); k8 == nil {
		t.Error("no k8s field in json")
	}
}

// newStore makes a db with mvcc and runs ops on it.
func newStore(t *testing.T, path string, ops func(s *mvcc.Store)) {
	t.Helper()
	s, err := mvcc.Open(path, mvcc.Options{Backend: mvcc.BackendOptions{NoSync: true, InitialMmapSize: -1}, CompactionSleepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ops(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func put(t *testing.T, s *mvcc.Store, k, v string) {
	t.Helper()
	if _, err := s.Put(&pb.PutRequest{Key: []byte(k), Value: []byte(v)}); err != nil {
		t.Fatal(err)
	}
}

// TestDiff: two members' dbs that agree up to revision 4, then one applied
// a different value at revision 5 (the v3.5 inconsistency); the first
// divergent revision and the differing keys are named.
func TestDiff(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db"), filepath.Join(dir, "c.db")
	common := func(s *mvcc.Store) {
		put(t, s, "k1", "v1") // 2
		put(t, s, "k2", "v2") // 3
		put(t, s, "k3", "v3") // 4
	}
	newStore(t, a, func(s *mvcc.Store) {
		common(s)
		put(t, s, "k2", "good")                                                             // 5
		put(t, s, "k4", "v4")                                                               // 6
		if _, err := s.DeleteRange(&pb.DeleteRangeRequest{Key: []byte("k3")}); err != nil { // 7
			t.Fatal(err)
		}
	})
	newStore(t, b, func(s *mvcc.Store) {
		common(s)
		put(t, s, "k2", "bad") // 5
		put(t, s, "k4", "v4")  // 6
		put(t, s, "k5", "v5")  // 7: differs too (no delete of k3)
		put(t, s, "k6", "v6")  // 8: b is ahead
	})
	// c: same history as a, but compacted at 4 and one revision behind.
	newStore(t, c, func(s *mvcc.Store) {
		common(s)
		put(t, s, "k2", "good")
		put(t, s, "k4", "v4")
		if err := s.Compact(4); err != nil {
			t.Fatal(err)
		}
	})
	t.Chdir(dir)
	r := run(t, "diff", "a.db", "b.db")
	if r.Code != 1 {
		t.Fatalf("code %d %v\n%s", r.Code, r.Err, r.Stdout)
	}
	for _, want := range []string{
		"first divergent revision: 5 (differs)",
		`  a 5_0 put "k2" = "good"`,
		`  b 5_0 put "k2" = "bad"`,
		"divergent revisions: 2",
		"keys that differ at revision 7: 3",
		`"k2": a mod=5`,
		`"k3": a absent | b mod=4`,
		`"k5": a absent | b mod=7`,
		"a is behind b by 1 revisions",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("missing %q in:\n%s", want, r.Stdout)
		}
	}
	tooltest.Golden(t, "dump-db/diff-divergent.simple.txt", r.Stdout)
	r = run(t, "diff", "a.db", "b.db", "-w", "json")
	tooltest.Golden(t, "dump-db/diff-divergent.json.txt", r.Stdout)
	r = run(t, "diff", "a.db", "b.db", "-w", "table")
	tooltest.Golden(t, "dump-db/diff-divergent.table.txt", r.Stdout)
	// A compacted, lagging copy of the same history is not a divergence.
	r = run(t, "diff", "a.db", "c.db")
	if r.Code != 0 || !strings.Contains(r.Stdout, "first divergent revision: none") || !strings.Contains(r.Stdout, "compared revisions 5..6") {
		t.Errorf("a vs c: %d %v\n%s", r.Code, r.Err, r.Stdout)
	}
	// The same db against itself.
	if r := run(t, "diff", "b.db", "b.db"); r.Code != 0 {
		t.Errorf("b vs b: %d", r.Code)
	}
	// A copy of a that lost revision 6 (surgery on the key bucket).
	ab, _ := os.ReadFile(a)
	d := filepath.Join(dir, "d.db")
	if err := os.WriteFile(d, ab, 0o600); err != nil {
		t.Fatal(err)
	}
	ddb, err := bolt.Open(d, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ddb.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("key")).Delete(mvcc.RevKey(mvcc.Revision{Main: 6}, false))
	}); err != nil {
		t.Fatal(err)
	}
	ddb.Close()
	r = run(t, "diff", "a.db", "d.db")
	if r.Code != 1 || !strings.Contains(r.Stdout, "first divergent revision: 6 (only in a)") || !strings.Contains(r.Stdout, `  a 6_0 put "k4" = "v4"`) || !strings.Contains(r.Stdout, `"k4": a mod=6 create=6 ver=1 lease=0 value="v4" | b absent`) {
		t.Errorf("a vs d: %d\n%s", r.Code, r.Stdout)
	}
}

// TestStatsAfterDeletes: deleting most of a db's pairs leaves free pages;
// stats sees them and predicts a smaller file after defrag.
func TestStatsAfterDeletes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	val := bytes.Repeat([]byte("x"), 1000)
	if err := db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucket([]byte("key"))
		for i := 0; i < 2000; i++ {
			if err := b.Put(binary.BigEndian.AppendUint64(nil, uint64(i)), val); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("key"))
		for i := 0; i < 1900; i++ {
			if err := b.Delete(binary.BigEndian.AppendUint64(nil, uint64(i))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = OpenDB(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := DBStats(db, path)
	if err != nil {
		t.Fatal(err)
	}
	if s.FreePages < 400 || s.Fragmentation < 0.7 || s.PredictedSize >= s.HighWater*int64(s.PageSize)/3 {
		t.Errorf("stats %+v", s)
	}
	if s.MetaPages+s.FreelistPages+s.TreePages+s.FreePages != s.HighWater {
		t.Errorf("pages do not add up: %+v", s)
	}
}

// hashKVAgainstStore compares HashKV computed from the file with the
// store's HashKV (a freshly opened read-only store, as a restarted etcd)
// at every revision from the compact revision to the current one.
func hashKVAgainstStore(t *testing.T, path string, step int64) {
	t.Helper()
	s, err := mvcc.Open(path, mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true, InitialMmapSize: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db, err := OpenDB(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	from := max(s.CompactRev(), 1)
	t.Logf("%s: compact revision %d, revision %d", path, s.CompactRev(), s.Rev())
	for rev := from; rev <= s.Rev(); rev += step {
		want, _, err := s.HashKV(rev)
		if err != nil {
			t.Fatal(err)
		}
		got, err := HashKV(db, path, rev)
		if err != nil || got != want {
			t.Fatalf("%s rev %d: %+v %v, store %+v", path, rev, got, err, want)
		}
	}
	want, _, _ := s.HashKV(0)
	if got, err := HashKV(db, path, 0); err != nil || got != want {
		t.Fatalf("rev 0: %+v %v, store %+v", got, err, want)
	}
}

func TestHashKVMatchesStore(t *testing.T) {
	dir := filepath.Join(extract(t, "small.tar.gz"), "small")
	hashKVAgainstStore(t, filepath.Join(dir, "member", "snap", "db"), 1)
	// Random histories: puts, overwrites, single and range deletes,
	// compactions (tombstones at the compact revision included).
	for seed := int64(1); seed <= 6; seed++ {
		rng := rand.New(rand.NewSource(seed))
		path := filepath.Join(t.TempDir(), "db")
		newStore(t, path, func(s *mvcc.Store) {
			for i := 0; i < 300; i++ {
				k := fmt.Sprintf("k%02d", rng.Intn(25))
				switch x := rng.Intn(10); {
				case x < 6:
					put(t, s, k, fmt.Sprint(i))
				case x < 8:
					_, _ = s.DeleteRange(&pb.DeleteRangeRequest{Key: []byte(k)})
				case x < 9:
					_, _ = s.DeleteRange(&pb.DeleteRangeRequest{Key: []byte(k), RangeEnd: []byte(fmt.Sprintf("k%02d", rng.Intn(25)+5))})
				default:
					if r := s.Rev(); r > 2 && r > s.CompactRev() && rng.Intn(8) == 0 {
						c := s.CompactRev() + 1 + rng.Int63n(r-s.CompactRev())
						if c > s.CompactRev() && c <= r {
							if err := s.Compact(c); err != nil {
								t.Fatal(err)
							}
						}
					}
				}
			}
		})
		hashKVAgainstStore(t, path, 1)
	}
}

// TestRandomDamageNeverPanics overwrites random bytes of the small db's
// pages and runs every subcommand: each ends with exit 1 or 2 (or 0 when
// the damage hit unused bytes), never a panic.
func TestRandomDamageNeverPanics(t *testing.T) {
	root := extract(t, "small.tar.gz")
	orig, err := os.ReadFile(filepath.Join(root, "small", "member", "snap", "db"))
	if err != nil {
		t.Fatal(err)
	}
	const hwm = 14 * 4096 // pages in use (stats.simple golden)
	codes := map[int]int{}
	defer func() { t.Logf("exit codes: %v", codes) }()
	for seed := int64(1); seed <= 100; seed++ {
		rng := rand.New(rand.NewSource(seed))
		b := bytes.Clone(orig)
		page := 2 + rng.Intn(hwm/4096-2)
		for i := 0; i < 1+rng.Intn(8); i++ {
			off := page*4096 + rng.Intn(4096)
			if rng.Intn(3) == 0 {
				off = page*4096 + rng.Intn(16) // the page header
			}
			b[off] = byte(rng.Intn(256))
		}
		path := filepath.Join(t.TempDir(), "db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			{"buckets", path}, {"iterate", "key", path, "--decode"}, {"iterate", "meta", path, "--decode"},
			{"keys", path}, {"history", "foo", path}, {"hashkv", path}, {"hash", path}, {"stats", path}, {"diff", path, path},
		} {
			r := run(t, append(args, "--timeout", "1s")...)
			if r.Code < 0 || r.Code > 2 {
				t.Fatalf("seed %d %v: code %d", seed, args, r.Code)
			}
			codes[r.Code]++
		}
	}
}

// TestSnapshotFile: an `etcdctl snapshot save` file (bbolt image with its
// sha256 trailer) is a db path too: hashkv equals etcdutl hashkv on it and
// hash --all equals etcdutl snapshot status' hash.
func TestSnapshotFile(t *testing.T) {
	b, err := os.ReadFile(tooltest.Fixture(t, "etcd-3.6.16/snapshot-db/small-snapshot.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "small-snapshot.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(tooltest.Fixture(t, "etcd-3.6.16/snapshot-db/small-snapshot.db.hashkv-etcdutl-v3.7.3.json"))
	if r := run(t, "hashkv", path, "-w", "json"); r.Stdout != strings.TrimSpace(string(want))+"\n" {
		t.Errorf("hashkv %q, etcdutl %q", r.Stdout, want)
	}
	var status struct{ Hash uint32 }
	sb, _ := os.ReadFile(tooltest.Fixture(t, "etcd-3.6.16/snapshot-db/snapshot-status.json"))
	if err := json.Unmarshal(sb, &status); err != nil {
		t.Fatal(err)
	}
	if r := run(t, "hash", path, "--all"); !strings.HasSuffix(r.Stdout, fmt.Sprintf("Hash: %d\n", status.Hash)) {
		t.Errorf("hash --all %q, snapshot status %d", r.Stdout, status.Hash)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after, b) {
		t.Error("the snapshot file changed")
	}
}
