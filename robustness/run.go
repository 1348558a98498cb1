package robustness

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// scenario is one fault on a cluster of a given size.
type scenario struct {
	name    string
	members int
	inject  func(ctx context.Context, f *faultEnv) error
}

// faultEnv is what a fault acts on.
type faultEnv struct {
	c   *cluster
	r   *rand.Rand
	cli *clientv3.Client // to every member
	log func(format string, args ...any)
	// watched is the lowest revision every watcher has caught up with:
	// compaction stays at or below it, so that a watcher resuming after a
	// kill is not canceled (a harness choice, not a guarantee tested).
	watched func() int64
}

func pause(r *rand.Rand, min, spread time.Duration) {
	time.Sleep(min + time.Duration(r.Int64N(int64(spread))))
}

func (f *faultEnv) killRestart(idx ...int) error {
	for _, i := range idx {
		f.log("kill -9 %s", f.c.members[i].name)
		f.c.members[i].kill()
	}
	pause(f.r, 200*time.Millisecond, 500*time.Millisecond)
	for _, i := range idx {
		f.log("restart %s", f.c.members[i].name)
		if err := f.c.members[i].start(); err != nil {
			return err
		}
	}
	return nil
}

// tornWAL restarts member i with a torn WAL tail, as a power cut leaves
// it: the unsynced end of the last segment gone. Only bytes the member
// wrote while its peer proxy blackholed its messages are torn, so no peer
// counted an acknowledgement of what is lost (raft allows a member to lose
// only what it never acknowledged); the member meanwhile still received
// and applied entries, so its db may be ahead of its WAL, as after a real
// power cut. etcd (and etckit) repair such a tail at restart.
func (f *faultEnv) tornWAL(i int) error {
	m := f.c.members[i]
	// Blackhole first, then measure: a member writes entries before it
	// acknowledges them, so whatever it wrote after this point was
	// acknowledged (if at all) after the blackhole began. (Measured first,
	// the 64 MiB read let entries be written and acknowledged before the
	// blackhole; the tear then took acknowledged entries and the member
	// rightly panicked: "tocommit(225) is out of range [lastIndex(198)]".)
	m.proxy.setBlackhole(true)
	seg, err := lastWALSegment(m.dataDir)
	if err != nil {
		return err
	}
	before, err := writtenEnd(seg)
	if err != nil {
		return err
	}
	f.log("blackhole %s's peer proxy, WAL %s written to %d", m.name, filepath.Base(seg), before)
	pause(f.r, 300*time.Millisecond, 300*time.Millisecond)
	f.log("kill -9 %s", m.name)
	m.kill()
	seg2, err := lastWALSegment(m.dataDir)
	if err != nil {
		return err
	}
	after, err := writtenEnd(seg2)
	if err != nil {
		return err
	}
	if seg2 == seg && after > before+1 {
		cut := before + 1 + f.r.Int64N(after-before-1)
		f.log("tear %s's WAL %s: written to %d, truncated to %d", m.name, filepath.Base(seg), after, cut)
		if err := os.Truncate(seg, cut); err != nil {
			return err
		}
	} else {
		f.log("not torn: %s's WAL %s written to %d, %s to %d", m.name, filepath.Base(seg), before, filepath.Base(seg2), after)
	}
	m.proxy.setBlackhole(false)
	f.log("restart %s", m.name)
	return m.start()
}

func lastWALSegment(dataDir string) (string, error) {
	segs, err := filepath.Glob(filepath.Join(dataDir, "member", "wal", "*.wal"))
	if err != nil || len(segs) == 0 {
		return "", fmt.Errorf("no WAL segment in %s: %v", dataDir, err)
	}
	sort.Strings(segs)
	return segs[len(segs)-1], nil
}

// writtenEnd is the offset after a WAL segment's last non-zero byte (the
// segment is preallocated with zeros).
func writtenEnd(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	end := len(b)
	for end > 0 && b[end-1] == 0 {
		end--
	}
	return int64(end), nil
}

func (f *faultEnv) compact(ctx context.Context) (int64, error) {
	gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := f.cli.Get(gctx, "health")
	if err != nil {
		return 0, err
	}
	rev := resp.Header.Revision - int64(f.r.IntN(20))
	if w := f.watched(); rev > w {
		rev = w
	}
	if rev < 2 {
		rev = 2
	}
	f.log("compact at revision %d", rev)
	_, err = f.cli.Compact(gctx, rev)
	return rev, err
}

var scenarios = []scenario{
	{"none", 3, func(ctx context.Context, f *faultEnv) error { return nil }},
	{"kill-follower", 3, func(ctx context.Context, f *faultEnv) error {
		l, err := f.c.leader(ctx)
		if err != nil {
			return err
		}
		return f.killRestart((l + 1 + f.r.IntN(2)) % 3)
	}},
	{"kill-leader", 3, func(ctx context.Context, f *faultEnv) error {
		l, err := f.c.leader(ctx)
		if err != nil {
			return err
		}
		return f.killRestart(l)
	}},
	{"kill-all", 3, func(ctx context.Context, f *faultEnv) error { return f.killRestart(0, 1, 2) }},
	{"blackhole", 3, func(ctx context.Context, f *faultEnv) error {
		p := f.c.members[f.r.IntN(3)].proxy
		f.log("blackhole %s's peer proxy", p.addr())
		p.setBlackhole(true)
		pause(f.r, 800*time.Millisecond, 400*time.Millisecond)
		p.setBlackhole(false)
		return nil
	}},
	{"delay-peers", 3, func(ctx context.Context, f *faultEnv) error {
		for _, m := range f.c.members {
			m.proxy.setDelay(time.Duration(5+f.r.IntN(40)) * time.Millisecond)
		}
		pause(f.r, 800*time.Millisecond, 400*time.Millisecond)
		for _, m := range f.c.members {
			m.proxy.setDelay(0)
		}
		return nil
	}},
	{"compact-defrag", 3, func(ctx context.Context, f *faultEnv) error {
		for round := 0; round < 2; round++ {
			if _, err := f.compact(ctx); err != nil {
				return err
			}
			for _, m := range f.c.members {
				dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := f.cli.Defragment(dctx, m.clientURL)
				cancel()
				if err != nil {
					return fmt.Errorf("defragment %s: %v", m.name, err)
				}
			}
			pause(f.r, 200*time.Millisecond, 300*time.Millisecond)
		}
		return nil
	}},
	{"kill-compacting", 3, func(ctx context.Context, f *faultEnv) error {
		if _, err := f.compact(ctx); err != nil {
			return err
		}
		return f.killRestart(f.r.IntN(3))
	}},
	{"torn-wal", 3, func(ctx context.Context, f *faultEnv) error {
		l, err := f.c.leader(ctx)
		if err != nil {
			return err
		}
		i := (l + 1 + f.r.IntN(2)) % 3
		return f.tornWAL(i)
	}},
	{"single-none", 1, func(ctx context.Context, f *faultEnv) error { return nil }},
	{"single-kill", 1, func(ctx context.Context, f *faultEnv) error { return f.killRestart(0) }},
}

// runStats are one run's numbers, for the table TestRobustness prints.
type runStats struct {
	requests, unknown, patched, watchEvents, serializable, leases int
}

const (
	numClients   = 6
	workloadTime = 2500 * time.Millisecond
)

// runOnce is one seeded run: start the cluster and its watchers, run the
// workload, inject the fault in its middle, heal, stop, and check the
// history (porcupine), the watch streams and HashKV. It fails t on any
// violation. With etcdPath, member 0 is a real etcd.
func runOnce(t *testing.T, seed uint64, sc scenario, dir, etcdPath string) runStats {
	var st runStats
	c := startCluster(t, sc.members, dir, fmt.Sprintf("robustness-%d", seed), etcdPath)
	var watchers []*watcher
	for _, m := range c.members {
		w, err := startWatcher(m.name, m.clientURL)
		if err != nil {
			t.Fatal(err)
		}
		watchers = append(watchers, w)
	}
	stopped := false
	var streams map[string][]watchResp
	stopWatchers := func() {
		if stopped {
			return
		}
		stopped = true
		streams = map[string][]watchResp{}
		for _, w := range watchers {
			streams[w.member] = w.stop()
		}
	}
	t.Cleanup(stopWatchers)

	all, err := newClient(c.endpoints()...)
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{start: time.Now()}
	var wstats workloadStats
	var wg sync.WaitGroup
	until := time.Now().Add(workloadTime)
	for i := 0; i < numClients; i++ {
		cli, err := newClient(c.members[i%len(c.members)].clientURL)
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		wg.Add(1)
		go func(i int, cli *clientv3.Client) {
			defer wg.Done()
			workloadClient(ctx, rec, cli, i, seed, until, &wstats)
		}(i, cli)
	}
	faultErr := make(chan error, 1)
	go func() {
		fr := rand.New(rand.NewPCG(seed, 1))
		time.Sleep(workloadTime / 4)
		env := &faultEnv{c: c, r: fr, cli: all, log: func(format string, args ...any) { t.Logf("fault: "+format, args...) },
			watched: func() int64 {
				low := int64(-1)
				for _, w := range watchers {
					w.mu.Lock()
					if low == -1 || w.last < low {
						low = w.last
					}
					w.mu.Unlock()
				}
				return low
			}}
		faultErr <- sc.inject(ctx, env)
	}()
	wg.Wait()
	if err := <-faultErr; err != nil {
		t.Fatalf("fault %s: %v", sc.name, err)
	}

	// Healed: every member up and answering, then settled on one revision.
	if err := c.waitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	finalRev, err := c.settle(ctx, all, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The end state, read linearizably from every member.
	for i, m := range c.members {
		cli, err := newClient(m.clientURL)
		if err != nil {
			t.Fatal(err)
		}
		for k := 0; k < numKeys; k++ {
			if _, err := rec.do(ctx, cli, numClients+i, request{Kind: opGet, Key: k}, 5*time.Second); err != nil {
				t.Fatalf("final read of %s on %s: %v", keyName(k), m.name, err)
			}
		}
		cli.Close()
	}
	// HashKV equal on every member at the final revision.
	var hashes []string
	var first uint32
	for i, m := range c.members {
		hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
		h, err := all.HashKV(hctx, m.clientURL, finalRev)
		hcancel()
		if err != nil {
			t.Fatalf("HashKV %s at %d: %v", m.name, finalRev, err)
		}
		hashes = append(hashes, fmt.Sprintf("%s=%d(compact %d)", m.name, h.Hash, h.CompactRevision))
		if i == 0 {
			first = h.Hash
		} else if h.Hash != first {
			t.Errorf("HashKV differs at revision %d: %v", finalRev, hashes)
		}
	}
	t.Logf("final revision %d, HashKV %v", finalRev, hashes)
	for _, w := range watchers {
		if err := w.waitRev(finalRev, 20*time.Second); err != nil {
			t.Error(err)
		}
	}
	stopWatchers()
	// Resumable: a watch started now from a random revision past the
	// compaction, on each member, gets exactly the union's events.
	var compactRev int64 = 1
	hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
	if h, err := all.HashKV(hctx, c.members[0].clientURL, finalRev); err == nil && h.CompactRevision > compactRev {
		compactRev = h.CompactRevision
	}
	hcancel()
	resumed := map[string][]watchEvent{}
	resumeRev := map[string]int64{}
	rr := rand.New(rand.NewPCG(seed, 2))
	for _, m := range c.members {
		from := compactRev + 1 + rr.Int64N(finalRev-compactRev)
		evs, err := watchRange(ctx, m.clientURL, from, finalRev)
		if err != nil {
			t.Errorf("watch %s from revision %d: %v", m.name, from, err)
			continue
		}
		resumed[m.name], resumeRev[m.name] = evs, from
	}
	if err := c.exitErr(); err != nil {
		t.Error(err)
	}

	history := rec.history()
	st.requests = len(history)
	for _, op := range history {
		out := op.Output.(response)
		if out.Unknown {
			st.unknown++
		}
		if req := op.Input.(request); req.Lease != 0 && !out.Unknown && out.Err == "" {
			st.leases++
		}
	}
	wr := validateWatches(streams, finalRev, history)
	for name, evs := range resumed {
		wr.checkResumed(name, resumeRev[name], finalRev, evs)
	}
	rec.mu.Lock()
	serial := rec.serial
	rec.mu.Unlock()
	wr.checkSerializable(serial, finalRev)
	st.serializable = len(serial)
	st.watchEvents = wr.events
	for _, v := range wr.violations {
		t.Errorf("watch: %s", v)
	}
	patched := patchHistory(history, wr.putRev)
	for _, op := range patched {
		if out := op.Output.(response); out.Unknown && out.Rev != 0 {
			st.patched++
		}
	}
	model := kvModel(1)
	res, info := porcupine.CheckOperationsVerbose(model, patched, 2*time.Minute)
	switch res {
	case porcupine.Ok:
		t.Logf("linearizable: %d requests (%d unknown outcomes: %d settled by the watch, %d dropped), %d watch events, %d serializable reads, %d lease grants, revokes and puts with a lease that succeeded",
			st.requests, st.unknown, st.patched, len(history)-len(patched), st.watchEvents, st.serializable, st.leases)
	default:
		out := failureDir(t, dir)
		path := filepath.Join(out, "history.html")
		var buf bytes.Buffer
		if err := porcupine.Visualize(model, info, &buf); err == nil {
			_ = os.WriteFile(path, buf.Bytes(), 0o644)
		}
		t.Errorf("porcupine: %s (%d requests); visualization: %s", res, len(patched), path)
	}
	if t.Failed() {
		out := failureDir(t, dir)
		path := filepath.Join(out, "history.txt")
		if err := os.WriteFile(path, []byte(historyText(history, serial, streams)), 0o644); err == nil {
			t.Logf("history and watch streams: %s", path)
		}
	}
	return st
}

// keptRuns: the runs' dirs are kept (-robustness.keep).
var keptRuns bool

// failureDir is where a failing run's history goes: the run's dir when
// kept (-robustness.keep), else a directory that outlives the test.
func failureDir(t *testing.T, dir string) string {
	if keptRuns {
		return dir
	}
	out := filepath.Join(os.TempDir(), "robustness-failure-"+strings.NewReplacer("/", "_", "=", "-").Replace(t.Name()))
	if err := os.MkdirAll(out, 0o755); err != nil {
		return dir
	}
	return out
}

// historyText is the recorded history in call order, then the serializable
// reads and every watch stream, for a failure's report.
func historyText(history []porcupine.Operation, serial []serialRead, streams map[string][]watchResp) string {
	ops := slices.Clone(history)
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	var b strings.Builder
	ts := func(v int64) string {
		if v == infinity {
			return "never"
		}
		return time.Duration(v).String()
	}
	for _, op := range ops {
		fmt.Fprintf(&b, "client %d [%s, %s] %s\n", op.ClientId, ts(op.Call), ts(op.Return), describe(op.Input.(request), op.Output.(response)))
	}
	for _, rd := range serial {
		fmt.Fprintf(&b, "serializable, client %d: %s\n", rd.client, describe(request{Kind: opGet, Key: rd.key}, rd.out))
	}
	names := make([]string, 0, len(streams))
	for name := range streams {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, resp := range streams[name] {
			fmt.Fprintf(&b, "watch %s: %+v\n", name, resp)
		}
	}
	return b.String()
}

// settle waits until every member reports the same revision and raft
// applied index twice in a row, and returns that revision.
func (c *cluster) settle(ctx context.Context, cli *clientv3.Client, timeout time.Duration) (int64, error) {
	deadline := time.Now().Add(timeout)
	var prev string
	var last error
	for time.Now().Before(deadline) {
		var rev, applied int64 = -1, -1
		same := true
		for _, m := range c.members {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			s, err := cli.Status(sctx, m.clientURL)
			cancel()
			if err != nil {
				same, last = false, err
				break
			}
			if rev == -1 {
				rev, applied = s.Header.Revision, int64(s.RaftAppliedIndex)
			} else if s.Header.Revision != rev || int64(s.RaftAppliedIndex) != applied {
				same = false
			}
		}
		if same {
			key := fmt.Sprint(rev, applied)
			if key == prev {
				return rev, nil
			}
			prev = key
		} else {
			prev = ""
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0, fmt.Errorf("members did not settle on one revision within %v (%v)", timeout, last)
}
