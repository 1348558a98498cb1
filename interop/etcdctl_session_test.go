package interop

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/mvcc"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// etcdctlBin is Debian's etcdctl 3.4 (etcd-client, installed by .ci/run).
// Outside CI a machine without it skips; in CI its absence fails.
func etcdctlBin(t *testing.T) string {
	p, err := exec.LookPath("etcdctl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("etcdctl not found; .ci/run installs Debian's etcd-client")
		}
		t.Skip("etcdctl not installed (apt-get install etcd-client)")
	}
	return p
}

// ctlSession runs etcdctl commands against one member and records a
// transcript: for every command its arguments, stdout, stderr (without
// etcdctl's own JSON log lines) and exit status, normalized for what
// legitimately differs between two members (see normalize).
type ctlSession struct {
	t        *testing.T
	bin      string
	m        *launched
	leases   []string // lease IDs granted, in order (hex)
	steps    []ctlStep
	snapFile string
}

type ctlStep struct {
	cmd, out string
}

func (s *ctlSession) command(stdin string, args ...string) (string, string, int) {
	s.t.Helper()
	cmd := exec.Command(s.bin, append([]string{"--endpoints", s.m.endpoint, "--command-timeout", "20s", "--dial-timeout", "5s"}, args...)...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	err := cmd.Run()
	timer.Stop()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("%s: etcdctl %v: %v", s.m.impl, args, err)
	}
	return out.String(), errb.String(), code
}

// run records one command; {lease} in an argument is the last granted lease.
func (s *ctlSession) run(stdin string, args ...string) string {
	s.t.Helper()
	for i, a := range args {
		if len(s.leases) > 0 {
			args[i] = strings.ReplaceAll(a, "{lease}", s.leases[len(s.leases)-1])
		}
	}
	out, errOut, code := s.command(stdin, args...)
	if m := regexp.MustCompile(`^lease ([0-9a-f]+) granted`).FindStringSubmatch(out); m != nil && args[0] == "lease" && args[1] == "grant" {
		s.leases = append(s.leases, m[1])
	}
	s.record(strings.Join(args, " ")+stdinNote(stdin), out, errOut, code)
	return out
}

func stdinNote(stdin string) string {
	if stdin == "" {
		return ""
	}
	return " <<< " + strconv.Quote(stdin)
}

func (s *ctlSession) record(cmd, out, errOut string, code int) {
	var kept []string
	for _, l := range strings.Split(errOut, "\n") {
		if !strings.HasPrefix(l, "{\"level\"") && l != "" {
			kept = append(kept, l)
		}
	}
	text := out
	if len(kept) > 0 {
		text += "[stderr]\n" + strings.Join(kept, "\n") + "\n"
	}
	if code != 0 {
		text += fmt.Sprintf("[exit %d]\n", code)
	}
	s.steps = append(s.steps, ctlStep{cmd: s.normalize(cmd), out: s.normalize(text)})
}

// watch runs `etcdctl watch args...` (a stream that never ends), puts the
// sentinel key with another etcdctl, and records what the watch printed up
// to and including the sentinel's event.
func (s *ctlSession) watch(sentinel string, args ...string) {
	s.t.Helper()
	cmd := exec.Command(s.bin, append([]string{"--endpoints", s.m.endpoint, "watch"}, args...)...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	timer := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	if _, e, code := s.command("", "put", sentinel, "end"); code != 0 {
		s.t.Fatalf("%s: sentinel put: %s", s.m.impl, e)
	}
	var lines []string
	sc := bufio.NewScanner(stdout)
	seen := false
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if seen && sc.Text() == "end" {
			break
		}
		seen = sc.Text() == sentinel
	}
	what := "watch " + strings.Join(args, " ") + " (until " + sentinel + ")"
	out := strings.Join(lines, "\n") + "\n"
	if seen {
		cmd.Process.Kill()
		cmd.Wait()
		s.record(what, out, "", 0)
		return
	}
	// The watch ended by itself (e.g. canceled by the server): record how.
	err = cmd.Wait()
	code := -1
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	s.record(what, out, errb.String(), code)
}

// grantLease grants a lease with a chosen ID over gRPC.
func (s *ctlSession) grantLease(id, ttl int64) {
	s.t.Helper()
	conn := dialTB(s.t, s.m.endpoint)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := pb.NewLeaseClient(conn).LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: ttl})
	if err != nil || r.Error != "" {
		s.t.Fatalf("%s: LeaseGrant %x: %v %v", s.m.impl, id, err, r)
	}
	s.record(fmt.Sprintf("(gRPC LeaseGrant ID %x TTL %d)", id, ttl), fmt.Sprintf("ID %x TTL %d\n", r.ID, r.TTL), "", 0)
}

var ctlVolatile = []struct {
	re   *regexp.Regexp
	repl string
}{
	// raft term and index depend on the member's history of elections and
	// internal entries, not on the client's requests.
	{regexp.MustCompile(`"raft_term":\d+`), `"raft_term":<term>`},
	{regexp.MustCompile(`"raftTerm":\d+`), `"raftTerm":<term>`},
	{regexp.MustCompile(`"raftIndex":\d+`), `"raftIndex":<index>`},
	{regexp.MustCompile(`"raftAppliedIndex":\d+`), `"raftAppliedIndex":<index>`},
	{regexp.MustCompile(`"RaftTerm" : \d+`), `"RaftTerm" : <term>`},
	// db sizes depend on the bbolt page allocation of each implementation.
	{regexp.MustCompile(`"dbSize":\d+`), `"dbSize":<size>`},
	{regexp.MustCompile(`"dbSizeInUse":\d+`), `"dbSizeInUse":<size>`},
	// the version each member reports.
	{regexp.MustCompile(`"version":"[0-9.]+"`), `"version":"<version>"`},
	// endpoint status: version and db size
	// endpoint status (simple): version, db size, raft term, index and
	// applied index
	{regexp.MustCompile(`(?m)^(<endpoint>, [0-9a-f]+), [0-9.]+, [0-9.]+ [kMG]?B, (true|false), (true|false), \d+, \d+, \d+, `), `$1, <version>, <size>, $2, $3, <term>, <index>, <index>, `},
	// timings
	{regexp.MustCompile(`took = [0-9.]+[µmn]?s`), `took = <t>`},
	{regexp.MustCompile(`remaining\(\d+s\)`), `remaining(<ttl>)`},
	{regexp.MustCompile(`"ttl":\d+`), `"ttl":<ttl>`},
}

// normalize replaces what legitimately differs: the endpoint, lease IDs
// (assigned from the member ID and the clock), raft term and index, db
// sizes, the reported version and timings. Member and cluster IDs are equal
// (same name, peer URL and token), so they stay.
func (s *ctlSession) normalize(text string) string {
	text = strings.ReplaceAll(text, s.m.endpoint, "<endpoint>")
	text = strings.ReplaceAll(text, s.snapFile, "<snapshot file>")
	for i, l := range s.leases {
		id, _ := strconv.ParseUint(l, 16, 64)
		name := fmt.Sprintf("<lease%d>", i+1)
		text = strings.ReplaceAll(text, l, name)
		text = regexp.MustCompile(`\b`+strconv.FormatUint(id, 10)+`\b`).ReplaceAllString(text, name)
	}
	for _, v := range ctlVolatile {
		text = v.re.ReplaceAllString(text, v.repl)
	}
	// etcd lists a lease's attached keys in Go map order (lease.Keys walks
	// a map), so the order differs from run to run; compare them sorted.
	text = attachedKeys.ReplaceAllStringFunc(text, func(m string) string {
		keys := strings.Fields(attachedKeys.FindStringSubmatch(m)[1])
		sort.Strings(keys)
		return "attached keys([" + strings.Join(keys, " ") + "])"
	})
	return text
}

var attachedKeys = regexp.MustCompile(`attached keys\(\[([^\]]*)\]\)`)

// etcdctlScript is the session: every command the issue names, run the
// same way against both members.
func etcdctlScript(s *ctlSession) {
	// put
	s.run("", "put", "/a", "1")
	s.run("", "put", "/a", "2", "--prev-kv")
	s.run("", "put", "/b", "3")
	s.run("", "put", "/c/x", "4")
	s.run("", "put", "/c/y", "5")
	s.run("", "put", "/d", "6")
	s.run("", "put", "/a", "7", "-w", "json")
	s.run("", "put", "/e", "8", "--prev-kv", "-w", "fields")
	// get: prefix, rev, limit, sort, output formats
	s.run("", "get", "/a")
	s.run("", "get", "/a", "--rev=2")
	s.run("", "get", "/a", "--rev=3", "-w", "json")
	s.run("", "get", "/", "--prefix")
	s.run("", "get", "/", "--prefix", "--limit=2")
	s.run("", "get", "/", "--prefix", "--limit=2", "-w", "json")
	s.run("", "get", "/", "--prefix", "--rev=4")
	for _, by := range []string{"KEY", "CREATE", "MODIFY", "VERSION", "VALUE"} {
		for _, order := range []string{"ASCEND", "DESCEND"} {
			s.run("", "get", "/", "--prefix", "--sort-by="+by, "--order="+order)
		}
	}
	s.run("", "get", "/", "--prefix", "--sort-by=MODIFY", "--order=DESCEND", "--limit=3", "-w", "json")
	s.run("", "get", "/", "--prefix", "-w", "json")
	s.run("", "get", "/", "--prefix", "-w", "fields")
	s.run("", "get", "/", "--prefix", "-w", "simple")
	s.run("", "get", "/", "--prefix", "--keys-only")
	s.run("", "get", "/", "--prefix", "--print-value-only")
	s.run("", "get", "/b", "--from-key")
	s.run("", "get", "/a", "/c")
	s.run("", "get", "/a", "--consistency=s")
	s.run("", "get", "/nope")
	s.run("", "get", "/a", "--rev=100")
	// del
	s.run("", "del", "/d")
	s.run("", "del", "/c", "--prefix", "--prev-kv")
	s.run("", "del", "/nope")
	s.run("", "del", "/e", "--prev-kv", "-w", "json")
	// txn from stdin: compares, success requests, failure requests
	s.run("mod(\"/a\") > \"0\"\nvalue(\"/b\") = \"3\"\n\nput /t success\nget /a\n\nput /t failure\n\n", "txn")
	s.run("version(\"/a\") = \"10\"\n\nput /t success\n\nput /t failure\ndel /b\nget /t\n\n", "txn", "-w", "json")
	s.run("create(\"/nope\") = \"0\"\n\nget /t\n\n\n", "txn", "-w", "fields")
	// watch from a past revision, with previous values
	s.watch("/zz-watch-1", "--rev=2", "--prefix", "/")
	s.watch("/zz-watch-2", "--rev=5", "--prefix", "--prev-kv", "/")
	s.watch("/b-watch-3", "--rev=1", "/a", "/d")
	// lease grant / keep-alive / timetolive / revoke of a lease etcdctl
	// grants (its ID comes from the member and the clock: normalized)
	s.run("", "lease", "grant", "600")
	s.run("", "lease", "timetolive", "{lease}", "--keys")
	s.run("", "lease", "timetolive", "{lease}", "-w", "json")
	s.run("", "lease", "keep-alive", "--once", "{lease}")
	s.run("", "lease", "list")
	s.run("", "lease", "revoke", "{lease}")
	s.run("", "lease", "timetolive", "{lease}")
	s.run("", "lease", "revoke", "{lease}")
	s.run("", "lease", "keep-alive", "--once", "{lease}")
	// Keys are attached to a lease granted with a fixed ID (etcdctl cannot
	// choose one), so that the key bucket, hence HashKV, is comparable.
	s.grantLease(0x1234abcd, 600)
	s.run("", "put", "/leased", "v", "--lease=1234abcd")
	s.run("", "put", "/leased2", "v", "--lease=1234abcd")
	s.run("", "lease", "timetolive", "1234abcd", "--keys")
	s.run("", "lease", "list")
	s.run("", "lease", "keep-alive", "--once", "1234abcd")
	s.run("", "get", "/leased", "-w", "json")
	s.run("", "lease", "revoke", "1234abcd")
	s.run("", "get", "/", "--prefix", "--keys-only")
	s.run("", "put", "/bad", "v", "--lease=5678")
	// compaction
	s.run("", "compaction", "5")
	s.run("", "get", "/a", "--rev=4")
	s.run("", "get", "/a", "--rev=5")
	s.run("", "compaction", "3")
	s.run("", "compaction", "8", "--physical")
	s.run("", "compaction", "1000")
	s.watch("/zz-watch-4", "--rev=2", "/a")
	// maintenance
	s.run("", "endpoint", "status")
	s.run("", "endpoint", "status", "-w", "json")
	s.run("", "endpoint", "hashkv")
	s.run("", "endpoint", "hashkv", "-w", "json")
	s.run("", "endpoint", "health")
	s.run("", "member", "list")
	s.run("", "member", "list", "-w", "json")
	s.run("", "alarm", "list")
	s.run("", "snapshot", "save", s.snapFile)
	s.run("", "defrag")
	s.run("", "endpoint", "hashkv", "-w", "json")
	s.run("", "get", "", "--from-key", "-w", "json")
	s.run("", "put", "/after-defrag", "x")
	s.run("", "get", "", "--prefix", "--keys-only")
}

// TestEtcdctlSessionDifferential runs one scripted etcdctl 3.4 session
// (put, get with prefix/rev/limit/sort and every output format, del, txn
// from stdin, watch from past revisions, lease grant/keep-alive/timetolive/
// revoke, compaction, endpoint status/hashkv/health, snapshot save, member
// list, alarm list, defrag) against etcd 3.7.3 and against etckit, and
// requires the same normalized output, command by command; the two saved
// snapshots hold the same keys and HashKV.
func TestEtcdctlSessionDifferential(t *testing.T) {
	bin := etcdctlBin(t)
	sessions := map[string]*ctlSession{}
	for _, impl := range []string{"etcd", "etckit"} {
		m := launch(t, impl, dataDir(t, impl))
		s := &ctlSession{t: t, bin: bin, m: m, snapFile: filepath.Join(t.TempDir(), impl+"-snapshot.db")}
		etcdctlScript(s)
		m.stop()
		sessions[impl] = s
		t.Logf("%s: %d etcdctl commands", impl, len(s.steps))
	}
	e, k := sessions["etcd"], sessions["etckit"]
	if len(e.steps) != len(k.steps) {
		t.Fatalf("etcd ran %d commands, etckit %d", len(e.steps), len(k.steps))
	}
	diffs := 0
	for i := range e.steps {
		if e.steps[i] != k.steps[i] {
			diffs++
			t.Errorf("etcdctl %s (after %s)\n--- etcd:\n%s--- etckit:\n%s", e.steps[i].cmd, e.steps[max(i-1, 0)].cmd, e.steps[i].out, k.steps[i].out)
		}
	}
	if path := os.Getenv("ETCKIT_CTL_TRANSCRIPT"); path != "" {
		var b strings.Builder
		for i := range k.steps {
			fmt.Fprintf(&b, "$ etcdctl %s\n%s", k.steps[i].cmd, k.steps[i].out)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if diffs == 0 {
		t.Logf("%d commands, same normalized output", len(e.steps))
	}

	// The snapshots etcdctl saved: same revision and HashKV (etckit's mvcc
	// reads both files).
	var hashes []mvcc.KeyValueHash
	for _, s := range []*ctlSession{e, k} {
		st, err := mvcc.Open(s.snapFile, mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true}})
		if err != nil {
			t.Fatalf("%s snapshot: %v", s.m.impl, err)
		}
		h, rev, err := st.HashKV(0)
		st.Close()
		if err != nil {
			t.Fatalf("%s snapshot: %v", s.m.impl, err)
		}
		t.Logf("%s snapshot: revision %d, HashKV %d (compact revision %d)", s.m.impl, rev, h.Hash, h.CompactRevision)
		hashes = append(hashes, h)
	}
	if hashes[0] != hashes[1] {
		t.Errorf("snapshot HashKV: etcd %+v, etckit %+v", hashes[0], hashes[1])
	}
}
