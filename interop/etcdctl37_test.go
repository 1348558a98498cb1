package interop

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/server"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/embed"
)

// The auth tests (auth_*_test.go) drive etcdctl 3.7.3, the etcdctl of the
// etcd release etckit answers as, built once per cache from this module
// (tools_etcdctl.go keeps it in go.mod).
const etcdctl37Version = "3.7.3"

var etcdctl37Once struct {
	sync.Once
	path string
	err  error
}

// etcdctl37 is the path of etcdctl 3.7.3, built with `go build` from the
// interop module into os.UserCacheDir()/etckit-interop/etcdctl-3.7.3 (the
// build is skipped when a binary there reports that version).
func etcdctl37(t testing.TB) string {
	t.Helper()
	etcdctl37Once.Do(func() { etcdctl37Once.path, etcdctl37Once.err = buildEtcdctl37() })
	if etcdctl37Once.err != nil {
		t.Fatalf("etcdctl %s: %v", etcdctl37Version, etcdctl37Once.err)
	}
	return etcdctl37Once.path
}

func buildEtcdctl37() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "etckit-interop")
	bin := filepath.Join(dir, "etcdctl-"+etcdctl37Version)
	want := "etcdctl version: " + etcdctl37Version + "\n"
	if out, err := exec.Command(bin, "version").Output(); err == nil && strings.HasPrefix(string(out), want) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", err
	}
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	build := exec.Command(goBin, "build", "-o", tmp, "go.etcd.io/etcd/etcdctl/v3")
	// The test binary runs in the package directory: the interop module.
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("go build go.etcd.io/etcd/etcdctl/v3: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), want) {
		return "", fmt.Errorf("built %s reports %q (%v), want %q", bin, out, err, want)
	}
	return bin, nil
}

// authCandidate is the implementation the auth tests hold to etcd's
// answers: etckit, or etcd itself with ETCKIT_AUTH_AGAINST=etcd (a check
// that the normalization covers everything that varies from run to run).
func authCandidate() string {
	if os.Getenv("ETCKIT_AUTH_AGAINST") == "etcd" {
		return "etcd"
	}
	return "etckit"
}

// authMember is an etcd 3.7.3 (embed) or an etckit serving on 127.0.0.1
// with the auth settings of the auth tests: simple tokens, bcrypt cost 4.
// Both are named "default" with the same advertised peer URL, so they share
// member and cluster IDs and each can boot the other's data dir.
type authMember struct {
	impl     string
	endpoint string
	dir      string
	stop     func()
	err      func() error // etckit's Err after stop; nil for etcd
}

func startAuthMember(t *testing.T, impl, dir string) *authMember {
	t.Helper()
	var m *authMember
	if impl == "etcd" {
		m = startAuthEtcd(t, dir)
	} else {
		m = startAuthEtckit(t, dir)
	}
	waitAuthServing(t, m)
	return m
}

func startAuthEtcd(t *testing.T, dir string) *authMember {
	t.Helper()
	e, stop := startEmbed(t, dir, func(cfg *embed.Config) {
		cfg.AuthToken = "simple"
		cfg.BcryptCost = 4
	})
	return &authMember{impl: "etcd", endpoint: e.Clients[0].Addr().String(), dir: dir, stop: stop}
}

func startAuthEtckit(t *testing.T, dir string) *authMember {
	t.Helper()
	cfg := server.Config{
		Engine: engine.Options{Name: testName, DataDir: dir, InitialCluster: testName + "=" + testPeerURL,
			InitialAdvertisePeerURLs: []string{testPeerURL}, NoSync: true},
		ListenClientURLs: []string{"http://127.0.0.1:0"},
		TickInterval:     10 * time.Millisecond,
		AuthToken:        "simple",
		BcryptCost:       4,
	}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		s.Stop()
		t.Fatal(err)
	}
	var once sync.Once
	m := &authMember{impl: "etckit", endpoint: s.ClientAddrs()[0], dir: dir, stop: func() { once.Do(s.Stop) }, err: s.Err}
	t.Cleanup(m.stop)
	return m
}

// waitAuthServing waits (bounded) until an anonymous linearizable read is
// answered: served, or refused because auth is enabled (user name is empty).
func waitAuthServing(t *testing.T, m *authMember) {
	t.Helper()
	conn := dialTB(t, m.endpoint)
	defer conn.Close()
	kv := pb.NewKVClient(conn)
	var err error
	for i := 0; i < 300; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = kv.Range(ctx, &pb.RangeRequest{Key: []byte("\x00")})
		cancel()
		if err == nil || errors.Is(rpctypes.Error(err), rpctypes.ErrUserEmpty) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not ready: %v", m.impl, err)
}

// stopAndCheck stops m and fails if etckit reported an error while running.
func (m *authMember) stopAndCheck(t *testing.T) {
	t.Helper()
	m.stop()
	if m.err != nil {
		if err := m.err(); err != nil {
			t.Errorf("%s: %v", m.impl, err)
		}
	}
}

// ctl37 runs etcdctl 3.7.3 commands against one member and keeps a
// transcript: per step its label, the command line, stdout, stderr (without
// etcdctl's JSON log lines) and exit code, normalized (see normalize).
type ctl37 struct {
	t      *testing.T
	bin    string
	m      *authMember
	leases []string // lease IDs etcdctl printed, in order (hex)
	steps  []ctl37Step
	// checked counts the steps whose output matched their expectation.
	checked int
}

type ctl37Step struct {
	label, cmd, out string
	want            *string // expected normalized output, if the script states it
}

const ctlStepTimeout = 30 * time.Second

// exec runs one etcdctl with args (global flags first), stdin, bounded.
func (s *ctl37) invoke(stdin string, timeout time.Duration, args ...string) (string, string, int) {
	s.t.Helper()
	cmd := exec.Command(s.bin, append([]string{"--endpoints=" + s.m.endpoint, "--dial-timeout=5s", "--command-timeout=10s"}, args...)...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	killed := false
	var mu sync.Mutex
	timer := time.AfterFunc(timeout, func() { mu.Lock(); killed = true; mu.Unlock(); cmd.Process.Kill() })
	err := cmd.Run()
	timer.Stop()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("%s: etcdctl %v: %v", s.m.impl, args, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if killed {
		errb.WriteString(fmt.Sprintf("\n[killed after %v]\n", timeout))
	}
	return out.String(), errb.String(), code
}

// run records one etcdctl command. want, unless "?", is the normalized
// output the step must print (both members are held to it).
func (s *ctl37) run(label, want, stdin string, args ...string) {
	s.t.Helper()
	s.runT(label, want, stdin, ctlStepTimeout, args...)
}

func (s *ctl37) runT(label, want, stdin string, timeout time.Duration, args ...string) {
	s.t.Helper()
	args = s.withLease(args)
	out, errOut, code := s.invoke(stdin, timeout, args...)
	for _, m := range leaseGranted.FindAllStringSubmatch(out, -1) {
		if !slices.Contains(s.leases, m[1]) {
			s.leases = append(s.leases, m[1])
		}
	}
	s.record(label, want, strings.Join(args, " ")+stdinNote(stdin), out, errOut, code)
}

// withLease replaces {lease} in args by the last lease etcdctl granted.
func (s *ctl37) withLease(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if len(s.leases) > 0 {
			a = strings.ReplaceAll(a, "{lease}", s.leases[len(s.leases)-1])
		}
		out[i] = a
	}
	return out
}

var controlBytes = regexp.MustCompile("[\x00-\x08\x0b-\x1f]")

var attachedKeys37 = regexp.MustCompile(`attached keys\(\[([^\]]*)\]\)`)

var leaseGranted = regexp.MustCompile(`(?m)^lease ([0-9a-f]+) granted`)

// watchLines runs `etcdctl args...` (a watch that does not end by itself)
// and records the first n lines it prints, then kills it; a watch that
// ends earlier is recorded with its stderr and exit code.
func (s *ctl37) watchLines(label, want string, n int, args ...string) {
	s.t.Helper()
	cmd := exec.Command(s.bin, append([]string{"--endpoints=" + s.m.endpoint, "--dial-timeout=5s"}, args...)...)
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
	var lines []string
	sc := bufio.NewScanner(stdout)
	for len(lines) < n && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	out := strings.Join(lines, "\n") + "\n"
	what := strings.Join(args, " ") + fmt.Sprintf(" (first %d lines)", n)
	if len(lines) == n {
		cmd.Process.Kill()
		cmd.Wait()
		s.record(label, want, what, out, "", 0)
		return
	}
	err = cmd.Wait()
	code := -1
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	s.record(label, want, what, out, errb.String(), code)
}

func (s *ctl37) record(label, want, cmd, out, errOut string, code int) {
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
	st := ctl37Step{label: label, cmd: s.normalize(cmd), out: s.normalize(text)}
	if want != "?" {
		st.want = &want
		if st.out == want {
			s.checked++
		}
	}
	s.steps = append(s.steps, st)
}

var ctl37Volatile = []struct {
	re   *regexp.Regexp
	repl string
}{
	// raft term and index: the member's history of elections and internal
	// entries, not the client's requests.
	{regexp.MustCompile(`"raft_term":\d+`), `"raft_term":<term>`},
	{regexp.MustCompile(`"raftTerm":\d+`), `"raftTerm":<term>`},
	{regexp.MustCompile(`"raftIndex":\d+`), `"raftIndex":<index>`},
	{regexp.MustCompile(`"raftAppliedIndex":\d+`), `"raftAppliedIndex":<index>`},
	{regexp.MustCompile(`"dbSize":\d+`), `"dbSize":<size>`},
	{regexp.MustCompile(`"dbSizeInUse":\d+`), `"dbSizeInUse":<size>`},
	{regexp.MustCompile(`"version":"[0-9.]+"`), `"version":"<version>"`},
	// The storage version: 3.7.0 on both once the storage monitor ran
	// (every 4 s after the cluster version is set), none before.
	{regexp.MustCompile(`"storageVersion":"[0-9.]+"`), `"storageVersion":"<storage version>"`},
	// endpoint status (simple, 3.7 columns): endpoint, ID, version,
	// storage version, db size, db size in use, in use %, quota, is
	// leader, is learner, raft term, index, applied index, errors...: the
	// versions, sizes, term and indexes vary.
	{regexp.MustCompile(`(?m)^(<endpoint>, [0-9a-f]+), [0-9.]+, [0-9.]+, [0-9.]+ [kMG]?B, [0-9.]+ [kMG]?B, \d+%, ([0-9.]+ [kMG]?B), (true|false), (true|false), \d+, \d+, \d+, `), `$1, <version>, <storage version>, <size>, <size>, <pct>, $2, $3, $4, <term>, <index>, <index>, `},
	{regexp.MustCompile(`(took (?:= )?)[0-9.]+[µmn]?s`), `${1}<t>`},
	{regexp.MustCompile(`remaining\(\d+s\)`), `remaining(<ttl>)`},
	{regexp.MustCompile(`"ttl":\d+`), `"ttl":<ttl>`},
	// simple tokens, should one be printed (16 letters, '.', index).
	{regexp.MustCompile(`\b[a-zA-Z]{16}\.\d+\b`), `<token>`},
}

// normalize replaces what legitimately differs between the two members:
// the endpoint, lease IDs (from the member ID and the clock; by order),
// raft term and index, db sizes, versions, timings, tokens. Member and
// cluster IDs are equal (same name, peer URL and cluster token) and so are
// KV and auth revisions: they are kept.
func (s *ctl37) normalize(text string) string {
	text = strings.ReplaceAll(text, s.m.endpoint, "<endpoint>")
	for i, l := range s.leases {
		id, _ := strconv.ParseUint(l, 16, 64)
		name := fmt.Sprintf("<lease%d>", i+1)
		text = regexp.MustCompile(`\b`+l+`\b`).ReplaceAllString(text, name)
		text = regexp.MustCompile(`\b`+strconv.FormatUint(id, 10)+`\b`).ReplaceAllString(text, name)
	}
	for _, v := range ctl37Volatile {
		text = v.re.ReplaceAllString(text, v.repl)
	}
	// Control bytes (keys like "\x00") are shown escaped.
	text = controlBytes.ReplaceAllStringFunc(text, func(c string) string { return fmt.Sprintf(`\x%02x`, c[0]) })
	// etcd lists a lease's keys in Go map order: compare them sorted.
	text = attachedKeys37.ReplaceAllStringFunc(text, func(m string) string {
		keys := strings.Fields(attachedKeys37.FindStringSubmatch(m)[1])
		sort.Strings(keys)
		return "attached keys([" + strings.Join(keys, " ") + "])"
	})
	return text
}

// compareTranscripts requires the same normalized output step by step and
// prints a unified diff of every step that differs.
func compareTranscripts(t *testing.T, e, k *ctl37) {
	t.Helper()
	if len(e.steps) != len(k.steps) {
		t.Fatalf("etcd ran %d steps, etckit %d", len(e.steps), len(k.steps))
	}
	diffs := 0
	for i := range e.steps {
		es, ks := e.steps[i], k.steps[i]
		if es.out != ks.out || es.cmd != ks.cmd {
			diffs++
			t.Errorf("step %s: etcdctl %s\n%s", es.label, es.cmd, unifiedDiff("etcd", "etckit", es.out, ks.out))
		}
	}
	if dir := os.Getenv("ETCKIT_AUTH_TRANSCRIPTS"); dir != "" {
		for _, s := range []*ctl37{e, k} {
			var b strings.Builder
			for _, st := range s.steps {
				fmt.Fprintf(&b, "# %s\n$ etcdctl %s\n%s", st.label, st.cmd, st.out)
			}
			p := filepath.Join(dir, t.Name()+"."+s.m.impl+".txt")
			if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
				t.Error(err)
			}
		}
	}
	t.Logf("%d steps, %d differ; expectations met: etcd %d, etckit %d", len(e.steps), diffs, e.checked, k.checked)
}

// checkExpectations holds one member's transcript to the outputs the script
// states (etcd's observed behaviour).
func checkExpectations(t *testing.T, s *ctl37) {
	t.Helper()
	for _, st := range s.steps {
		if st.want != nil && st.out != *st.want {
			t.Errorf("%s, step %s: etcdctl %s: not the expected output\n%s", s.m.impl, st.label, st.cmd, unifiedDiff("expected", s.m.impl, *st.want, st.out))
		}
	}
}

// unifiedDiff is a line diff (LCS) of a and b, with both texts in full
// when they are short.
func unifiedDiff(na, nb, a, b string) string {
	al, bl := splitLines(a), splitLines(b)
	n, m := len(al), len(bl)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if al[i] == bl[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var d strings.Builder
	fmt.Fprintf(&d, "--- %s\n+++ %s\n", na, nb)
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && al[i] == bl[j]:
			fmt.Fprintf(&d, " %s\n", al[i])
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(&d, "+%s\n", bl[j])
			j++
		default:
			fmt.Fprintf(&d, "-%s\n", al[i])
			i++
		}
	}
	return d.String()
}

func splitLines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
