package dumplogs

import (
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/tools/tooltest"
	"github.com/etckit/etckit/tools/walverify"
)

const seg0 = "0000000000000000-0000000000000000.wal"

func run(t testing.TB, args ...string) tooltest.Result {
	t.Helper()
	return tooltest.Run(t, NewCommand(), args...)
}

// smallDir extracts the small fixture, changes the working directory to
// its parent (so outputs name the relative "small" and goldens are stable)
// and returns the absolute data dir.
func smallDir(t *testing.T) string {
	t.Helper()
	parent := fixture.Extract(t, "etcd-3.6.16/small.tar.gz")
	t.Chdir(parent)
	return filepath.Join(parent, "small")
}

func fixtureText(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(tooltest.Fixture(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var goldenCases = []struct {
	name string
	args []string
}{
	{"default", nil},
	{"json", []string{"-w", "json"}},
	{"table-range", []string{"-w", "table", "--start-index", "95", "--end-index", "110", "--max-value", "24"}},
	{"alltypes", []string{"--entry-type", "ConfigChange,Normal,Request,InternalRaftRequest,IRRRange,IRRPut,IRRDeleteRange,IRRTxn,IRRCompaction,IRRLeaseGrant,IRRLeaseRevoke,IRRLeaseCheckpoint"}},
	{"irr-filters", []string{"--entry-type", "IRRTxn,IRRCompaction,IRRLeaseGrant,IRRLeaseRevoke,IRRDeleteRange"}},
	{"raw", []string{"--raw"}},
	{"raw-json", []string{"--raw", "-w", "json"}},
	{"raw-table", []string{"--raw", "-w", "table", "--start-index", "110"}},
	{"summary", []string{"--summary"}},
	{"summary-table", []string{"--summary", "-w", "table", "--prefix-depth", "1", "--top", "5"}},
	{"summary-json", []string{"--summary", "-w", "json"}},
}

// TestGoldenSmall checks every output mode against testdata/golden, and
// that none of them changes a byte of the data directory.
func TestGoldenSmall(t *testing.T) {
	dir := smallDir(t)
	before := tooltest.HashDir(t, dir)
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, append([]string{"small"}, c.args...)...)
			if r.Code != 0 || r.Stderr != "" {
				t.Fatalf("code %d err %v stderr %q", r.Code, r.Err, r.Stderr)
			}
			tooltest.Golden(t, "dump-logs/small-"+c.name+".txt", r.Stdout)
		})
	}
	tooltest.RequireUnchanged(t, dir, before)
}

// TestLayoutMatchesEtcd: the header, the conf-change lines and the closing
// count are byte-identical to etcd-dump-logs' output, for the default and
// the all-types filter.
func TestLayoutMatchesEtcd(t *testing.T) {
	smallDir(t)
	for _, c := range []struct{ fixture, args string }{
		{"etcd-3.6.16/small/small.dump-logs.txt", ""},
		{"etcd-3.6.16/small/small.dump-logs-alltypes.txt", goldenCases[3].args[1]},
	} {
		args := []string{"small", "--max-value", "0"}
		if c.args != "" {
			args = append(args, "--entry-type", c.args)
		}
		got := strings.Split(run(t, args...).Stdout, "\n")
		want := strings.Split(fixtureText(t, c.fixture), "\n")
		if len(got) != len(want) {
			t.Fatalf("%s: %d lines, want %d", c.fixture, len(got), len(want))
		}
		for i := range want {
			isEntry := entryLine.MatchString(want[i])
			if !isEntry || strings.Contains(want[i], "\tconf\t") {
				if got[i] != strings.TrimRight(want[i], " ") {
					t.Errorf("%s line %d:\n got %q\nwant %q", c.fixture, i+1, got[i], want[i])
				}
			}
		}
	}
}

var (
	entryLine = regexp.MustCompile(`^\s*(\d+)\t\s*(\d+)\t(conf|norm)\t(.*)$`)
	// etcd's protobuf text: header:<ID:N > op:<... key:"..." value:"..." >
	etcdHeaderID = regexp.MustCompile(`^header:<ID:(\d+) > ([a-z_]+):<`)
	etcdBytes    = regexp.MustCompile(`(?:^|[\s<])(key|value|range_end):"((?:[^"\\]|\\.)*)"`)
	etcdLease    = regexp.MustCompile(`lease_(?:grant|revoke):<(?:TTL:\d+ )?ID:(\d+)`)
	etcdRev      = regexp.MustCompile(`compaction:<revision:(\d+)`)
	ourBytes     = regexp.MustCompile(`(?:^|[\s\[{])(key|value|range_end)=("(?:[^"\\]|\\.)*")`)
	ourReqID     = regexp.MustCompile(` req_id=(\d+)$`)
	ourLease     = regexp.MustCompile(`^lease_(?:grant|revoke) id=([0-9a-f]+)`)
	ourRev       = regexp.MustCompile(`^compaction revision=(\d+)`)
)

// unquoteProtoText undoes protobuf text format's C-style escapes.
func unquoteProtoText(t *testing.T, s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b = append(b, c)
			continue
		}
		i++
		switch e := s[i]; {
		case e >= '0' && e <= '7':
			v, err := strconv.ParseUint(s[i:i+3], 8, 8)
			if err != nil {
				t.Fatalf("bad escape in %q", s)
			}
			b = append(b, byte(v))
			i += 2
		case e == 'x':
			v, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
			b = append(b, byte(v))
			i += 2
		default:
			b = append(b, map[byte]byte{'n': '\n', 't': '\t', 'r': '\r', '"': '"', '\'': '\'', '\\': '\\'}[e])
		}
	}
	return string(b)
}

// normalized extracts the comparable content of one entry's data column:
// the op, the request ID, every key/value/range_end in order, lease IDs and
// compaction revisions.
func normalizedEtcd(t *testing.T, data string, keysOnly bool) string {
	m := etcdHeaderID.FindStringSubmatch(data)
	if m == nil {
		return "noop"
	}
	out := []string{m[2], "id=" + m[1]}
	for _, b := range etcdBytes.FindAllStringSubmatch(data, -1) {
		if keysOnly && b[1] == "value" {
			continue
		}
		out = append(out, b[1]+"="+strconv.Quote(unquoteProtoText(t, b[2])))
	}
	if l := etcdLease.FindStringSubmatch(data); l != nil {
		v, _ := strconv.ParseInt(l[1], 10, 64)
		out = append(out, "lease="+strconv.FormatUint(uint64(v), 16))
	}
	if r := etcdRev.FindStringSubmatch(data); r != nil {
		out = append(out, "revision="+r[1])
	}
	return strings.Join(out, " ")
}

func normalizedOurs(t *testing.T, data string, keysOnly bool) string {
	if data == "" {
		return "noop"
	}
	op := strings.SplitN(data, " ", 2)[0]
	m := ourReqID.FindStringSubmatch(data)
	if m == nil {
		t.Fatalf("no req_id in %q", data)
	}
	out := []string{op, "id=" + m[1]}
	for _, b := range ourBytes.FindAllStringSubmatch(data, -1) {
		s, err := strconv.Unquote(b[2])
		if err != nil {
			t.Fatalf("unquote %s: %v", b[2], err)
		}
		if b[1] == "value" && (s == "" || keysOnly) {
			continue // protobuf text omits empty values; etckit shows value=""
		}
		out = append(out, b[1]+"="+strconv.Quote(s))
	}
	if l := ourLease.FindStringSubmatch(data); l != nil {
		out = append(out, "lease="+l[1])
	}
	if r := ourRev.FindStringSubmatch(data); r != nil {
		out = append(out, "revision="+r[1])
	}
	return strings.Join(out, " ")
}

type entryRow struct{ term, index, class, data string }

func parseEntries(text string) []entryRow {
	var rows []entryRow
	for _, l := range strings.Split(text, "\n") {
		if m := entryLine.FindStringSubmatch(strings.TrimRight(l, " ")); m != nil {
			rows = append(rows, entryRow{m[1], m[2], m[3], strings.TrimRight(m[4], " ")})
		}
	}
	return rows
}

// compareEntries checks that our listing has the same entries as
// etcd-dump-logs' (term, index, type) and, entry by entry, the same op,
// request ID, keys, values, range ends, lease IDs and revisions.
func compareEntries(t *testing.T, ours, etcds string, keysOnly bool) int {
	t.Helper()
	got, want := parseEntries(ours), parseEntries(etcds)
	if len(got) != len(want) || len(want) == 0 {
		t.Fatalf("%d entries, etcd-dump-logs lists %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.term != w.term || g.index != w.index || g.class != w.class {
			t.Fatalf("entry %d: %v, want %v", i, g, w)
		}
		if w.class == "conf" {
			continue // compared byte for byte by TestLayoutMatchesEtcd
		}
		if gn, wn := normalizedOurs(t, g.data, keysOnly), normalizedEtcd(t, w.data, keysOnly); gn != wn {
			t.Errorf("index %s:\n ours %s\n etcd %s", w.index, clip(gn), clip(wn))
		}
	}
	return len(want)
}

func clip(s string) string {
	if len(s) > 400 {
		return s[:400] + "..."
	}
	return s
}

func TestEntriesMatchEtcd(t *testing.T) {
	smallDir(t)
	r := run(t, "small", "--max-value", "0")
	if n := compareEntries(t, r.Stdout, fixtureText(t, "etcd-3.6.16/small/small.dump-logs.txt"), false); n != 113 {
		t.Errorf("%d entries", n)
	}
}

// TestRawMatchesEtcd: the raw listing has etcd-dump-logs --raw's records in
// the same order with the same values (CRC, metadata IDs, entry term and
// index, HardState fields, snapshot index and term).
func TestRawMatchesEtcd(t *testing.T) {
	smallDir(t)
	r := run(t, "small", "--raw", "-w", "json")
	compareRaw(t, r.Stdout, fixtureText(t, "etcd-3.6.16/small/small.dump-logs-raw.txt"))
}

func compareRaw(t *testing.T, ours, etcds string) {
	t.Helper()
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(ours), "\n") {
		var o map[string]any
		dec := json.NewDecoder(strings.NewReader(l))
		dec.UseNumber()
		if err := dec.Decode(&o); err != nil {
			t.Fatal(err)
		}
		n := func(k string) string { return o[k].(json.Number).String() }
		switch o["type"] {
		case "crc":
			got = append(got, "CRC: "+n("crc"))
		case "metadata":
			got = append(got, "Metadata: "+n("node_id")+" "+n("cluster_id"))
		case "entry":
			got = append(got, "Entry: "+n("term")+" "+n("index"))
		case "state":
			got = append(got, "HardState: "+n("term")+" "+n("vote")+" "+n("commit"))
		case "snapshot":
			got = append(got, "Snapshot: "+n("index")+" "+n("term"))
		}
	}
	var want []string
	field := func(l, name string) string {
		m := regexp.MustCompile(name + `:(\d+)`).FindStringSubmatch(l)
		if m == nil {
			return "0"
		}
		return m[1]
	}
	for _, l := range strings.Split(etcds, "\n") {
		switch {
		case strings.HasPrefix(l, "CRC: "):
			want = append(want, strings.TrimSpace(l))
		case strings.HasPrefix(l, "Metadata: "):
			want = append(want, "Metadata: "+field(l, "NodeID")+" "+field(l, "ClusterID"))
		case strings.HasPrefix(l, "Entry: "):
			want = append(want, "Entry: "+field(l, "Term")+" "+field(l, "Index"))
		case strings.HasPrefix(l, "HardState: "):
			want = append(want, "HardState: "+field(l, "term")+" "+field(l, "vote")+" "+field(l, "commit"))
		case strings.HasPrefix(l, "Snapshot: "):
			want = append(want, "Snapshot: "+field(l, "index")+" "+field(l, "term"))
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d raw records, etcd-dump-logs --raw lists %d", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Fatalf("record %d: %q, want %q", i, got[i], want[i])
		}
	}
}

// TestLiveKeysAreInTheLog: every key etcdctl returned at the end of the
// fixture's run (get --prefix "" -w json) was written by a put in the log
// with that exact value.
func TestLiveKeysAreInTheLog(t *testing.T) {
	smallDir(t)
	r := run(t, "small", "-w", "json")
	puts := map[string]bool{}
	var walk func(o map[string]any)
	walk = func(o map[string]any) {
		if k, ok := o["key"].(string); ok {
			if v, ok := o["value"].(string); ok {
				puts[k+"\x00"+v] = true
			}
		}
		if k, ok := o["key_base64"].(string); ok {
			kb, _ := base64.StdEncoding.DecodeString(k)
			v, _ := o["value"].(string)
			if vb, ok := o["value_base64"].(string); ok {
				b, _ := base64.StdEncoding.DecodeString(vb)
				v = string(b)
			}
			puts[string(kb)+"\x00"+v] = true
		}
		for _, x := range o {
			switch x := x.(type) {
			case map[string]any:
				walk(x)
			case []any:
				for _, y := range x {
					if m, ok := y.(map[string]any); ok {
						walk(m)
					}
				}
			}
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		var o map[string]any
		if err := json.Unmarshal([]byte(l), &o); err != nil {
			t.Fatal(err)
		}
		walk(o)
	}
	var live struct {
		Kvs []struct{ Key, Value []byte }
	}
	if err := json.Unmarshal([]byte(fixtureText(t, "etcd-3.6.16/small/get-prefix.json")), &live); err != nil {
		t.Fatal(err)
	}
	if len(live.Kvs) != 72 {
		t.Fatalf("%d live keys", len(live.Kvs))
	}
	for _, kv := range live.Kvs {
		if !puts[string(kv.Key)+"\x00"+string(kv.Value)] {
			t.Errorf("live key %q = %q is not a put in the log", kv.Key, kv.Value)
		}
	}
}

func TestDamagedLog(t *testing.T) {
	dir := smallDir(t)
	seg := filepath.Join(dir, "member", "wal", seg0)
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	b = b[:64<<10]
	b[5128+20] ^= 0x10 // inside entry 50
	if err := os.WriteFile(seg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	rel := filepath.Join("small", "member", "wal", seg0)
	r := run(t, "small")
	if r.Code != cli.ExitProblems || !strings.Contains(r.Stderr, "etckit: problem: mid-log corruption at "+rel+":5128: crc mismatch") {
		t.Fatalf("code %d stderr %q", r.Code, r.Stderr)
	}
	// The dump goes on past the damage.
	if !strings.Contains(r.Stdout, "\t       113\tnorm\tput") {
		t.Errorf("the entries after the damage are missing")
	}
	r = run(t, "small", "--raw")
	if r.Code != cli.ExitProblems || !strings.Contains(r.Stdout, seg0+":5128\tError: ") || !strings.HasSuffix(r.Stdout, "EOF: All entries were processed.\n") {
		t.Fatalf("raw: code %d out tail %q", r.Code, r.Stdout[max(0, len(r.Stdout)-300):])
	}
	r = run(t, "small", "--raw", "-w", "json")
	if r.Code != cli.ExitProblems || !strings.Contains(r.Stdout, `{"kind":"problem","problem":"mid-log corruption","file":"`+rel+`","offset":5128,`) {
		t.Fatalf("raw json: code %d", r.Code)
	}

	// A torn tail: the file ends inside entry 113.
	if err := os.WriteFile(seg, b[:23208+30], 0o600); err != nil {
		t.Fatal(err)
	}
	r = run(t, "small", "--raw")
	if r.Code != cli.ExitProblems || !strings.Contains(r.Stdout, "ErrUnexpectedEOF: The last record might be corrupted, error: "+rel+": torn tail at offset 23208") {
		t.Fatalf("torn raw: code %d tail %q", r.Code, r.Stdout[max(0, len(r.Stdout)-300):])
	}
}

func TestUsageErrors(t *testing.T) {
	smallDir(t)
	for _, args := range [][]string{
		{},
		{"small", "--entry-type", "Bogus"},
		{"small", "-w", "yaml"},
		{"small", "--start-snap", "x.snap", "--start-index", "3"},
		{"small", "--raw", "--entry-type", "IRRPut"},
		{"small", "other"},
		{"/nonexistent/etckit"},
		{"small", "--start-snap", "0000000000000001-0000000000000001.snap"},
		{"small", "--stream-decoder", "/nonexistent/decoder"},
		{"small", "--stream-decoder", "  "},
	} {
		r := run(t, args...)
		if r.Code != cli.ExitUsage {
			t.Errorf("%v: code %d (err %v), want 2", args, r.Code, r.Err)
		}
	}
}

func TestStreamDecoder(t *testing.T) {
	dir := smallDir(t)
	script := filepath.Join(filepath.Dir(dir), "decoder.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nwhile read l; do echo \"OK|len=${#l}\"; done\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := run(t, "small", "--stream-decoder", script, "--end-index", "7")
	if r.Code != 0 {
		t.Fatalf("code %d err %v stderr %q", r.Code, r.Err, r.Stderr)
	}
	tooltest.Golden(t, "dump-logs/small-stream-decoder.txt", r.Stdout)
}

// TestNeverPanics runs every mode on copies of the log with random damage:
// the exit code is always 0, 1 or 2 and nothing panics.
func TestNeverPanics(t *testing.T) {
	dir := smallDir(t)
	seg := filepath.Join(dir, "member", "wal", seg0)
	orig, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	orig = orig[:32<<10]
	seed := int64(20261121)
	rng := rand.New(rand.NewSource(seed))
	iters := 40
	if testing.Short() {
		iters = 8
	}
	for i := 0; i < iters; i++ {
		b := append([]byte{}, orig...)
		for n := rng.Intn(4) + 1; n > 0; n-- {
			switch rng.Intn(3) {
			case 0:
				b[rng.Intn(min(len(b), 23320)+1)%len(b)] ^= byte(1 << rng.Intn(8))
			case 1:
				off := rng.Intn(min(len(b), 23320) + 1)
				clear(b[off:min(len(b), off+rng.Intn(700))])
			case 2:
				b = b[:rng.Intn(len(b))+1]
			}
		}
		if err := os.WriteFile(seg, b, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"small"}, {"small", "--raw"}, {"small", "-w", "json", "--summary"}} {
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("seed %d iteration %d %v: panic %v", seed, i, args, p)
					}
				}()
				r := run(t, args...)
				if r.Code < 0 || r.Code > 2 {
					t.Fatalf("seed %d iteration %d %v: code %d", seed, i, args, r.Code)
				}
			}()
		}
	}
}

func TestQuoteBytes(t *testing.T) {
	for _, c := range []struct {
		in    string
		limit int
		want  string
	}{
		{"/registry/pods/default/web-0", 0, `"/registry/pods/default/web-0"`},
		{"bin\x00\xff", 0, `"bin\x00\xff"`},
		{"ключ", 0, `"ключ"`},
		{"abcdef", 3, `"abc"...(6 bytes)`},
		{"ééé", 3, `"é"...(6 bytes)`},
	} {
		if got := QuoteBytes([]byte(c.in), c.limit); got != c.want {
			t.Errorf("QuoteBytes(%q, %d) = %s, want %s", c.in, c.limit, got, c.want)
		}
	}
	// A Kubernetes protobuf value names its type.
	k8s := append([]byte("k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Secret"), 0x12, 0x01, 'x')
	if got := describeK8s(k8s); got != "k8s v1 Secret" {
		t.Errorf("describeK8s = %q", got)
	}
	if got := describeK8s([]byte("k8s\x00\xff\xff")); got != "" {
		t.Errorf("describeK8s(garbage) = %q", got)
	}
}

func TestKeyPrefix(t *testing.T) {
	for _, c := range []struct {
		key   string
		depth int
		want  string
	}{
		{"/registry/pods/default/web-0", 2, "/registry/pods/"},
		{"/registry/pods/default/web-0", 3, "/registry/pods/default/"},
		{"/small/versioned", 2, "/small/versioned"},
		{"foo/bar", 1, "foo/"},
	} {
		if got := keyPrefix([]byte(c.key), c.depth); got != c.want {
			t.Errorf("keyPrefix(%q, %d) = %q, want %q", c.key, c.depth, got, c.want)
		}
	}
}

func gunzipFixture(t *testing.T, rel string) string {
	t.Helper()
	f, err := os.Open(tooltest.Fixture(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSnapshotFixture runs the tools on the two-segment fixture with six
// .snap files (a 64 MB segment cut, snapshots every 1,001 entries, 80 KB
// values): the default start (newest .snap), --start-snap on the first
// .snap (5,007 entries), --raw over both segments, and wal verify; none of
// them changes the directory.
func TestSnapshotFixture(t *testing.T) {
	if testing.Short() {
		t.Skip("extracts 220 MB")
	}
	parent := fixture.Extract(t, "etcd-3.6.16/snapshot.tar.gz")
	t.Chdir(parent)
	before := tooltest.HashDir(t, "snapshot")

	r := run(t, "snapshot", "--max-value", "0")
	want := fixtureText(t, "etcd-3.6.16/snapshot/snapshot.dump-logs.txt")
	if r.Code != 0 || compareEntries(t, r.Stdout, want, false) != 2 {
		t.Fatalf("code %d", r.Code)
	}
	gl, wl := strings.Split(r.Stdout, "\n"), strings.Split(want, "\n")
	for i := range 8 {
		if gl[i] != wl[i] {
			t.Errorf("line %d: %q, want %q", i+1, gl[i], wl[i])
		}
	}
	tooltest.Golden(t, "dump-logs/snapshot-default.txt", r.Stdout)

	r = run(t, "snapshot", "--start-snap", "0000000000000002-00000000000003e9.snap")
	want = gunzipFixture(t, "etcd-3.6.16/snapshot/snapshot.dump-logs-from-first-snap.txt.gz")
	if r.Code != 0 || compareEntries(t, r.Stdout, want, true) != 5007 {
		t.Fatalf("code %d", r.Code)
	}
	if !strings.HasPrefix(want, strings.Join(strings.Split(r.Stdout, "\n")[:8], "\n")) {
		t.Errorf("header differs from etcd-dump-logs':\n%s", strings.Join(strings.Split(r.Stdout, "\n")[:8], "\n"))
	}

	r = run(t, "snapshot", "--raw", "-w", "json")
	if r.Code != 0 {
		t.Fatalf("raw: code %d", r.Code)
	}
	compareRaw(t, r.Stdout, gunzipFixture(t, "etcd-3.6.16/snapshot/snapshot.dump-logs-raw.txt.gz"))

	r = run(t, "snapshot", "--summary")
	if r.Code != 0 {
		t.Fatalf("summary: code %d", r.Code)
	}
	tooltest.Golden(t, "dump-logs/snapshot-summary.txt", r.Stdout)

	r = tooltest.Run(t, walverify.NewCommand(), "verify", "snapshot")
	if r.Code != 0 {
		t.Fatalf("verify: code %d out:\n%s", r.Code, r.Stdout)
	}
	tooltest.Golden(t, "wal-verify/snapshot.txt", r.Stdout)
	tooltest.RequireUnchanged(t, "snapshot", before)
}

// TestSeparateWALDir: --wal-dir points at a WAL outside the data dir (etcd
// --wal-dir); the output is the same.
func TestSeparateWALDir(t *testing.T) {
	dir := smallDir(t)
	want := run(t, "small").Stdout
	if err := os.Rename(filepath.Join(dir, "member", "wal"), "elsewhere"); err != nil {
		t.Fatal(err)
	}
	r := run(t, "--data-dir", "small", "--wal-dir", "elsewhere")
	if r.Code != 0 || r.Stdout != want {
		t.Fatalf("code %d err %v", r.Code, r.Err)
	}
	if r := run(t, "small"); r.Code != cli.ExitUsage {
		t.Errorf("without --wal-dir: code %d", r.Code)
	}
}
