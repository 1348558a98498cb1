package engine

import (
	"flag"
	"fmt"
	"math/rand"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/vfs"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

var restartSeed = flag.Int64("restart.seed", 20261202, "seed of TestRestartAcrossSnapshots (batch sizes, crash sectors)")

// restartMember is one member of TestRestartAcrossSnapshots: the engine,
// the filesystem its WAL and .snap files are on, and what has been
// acknowledged so far (every entry SaveReady returned for, applied).
type restartMember struct {
	t    *testing.T
	r    *rand.Rand
	opts Options
	fs   *vfs.MemFS
	e    *Engine
	cc   *ConfTracker
	tmp  string
	dbs  int

	want     map[string]string // acknowledged value of every key
	rev      int64             // revision after the last acknowledged put
	reqID    uint64
	logFirst uint64 // the raft log's first index, as compaction should leave it
	snaps    int    // snapshots taken
	restarts int
	where    string // where in the snapshot cycle the last restart was
}

// open opens the member on m.fs and m.opts.DBPath, replays its committed
// log as the server does at start, and checks every acknowledged write.
func (m *restartMember) open(how string) {
	m.t.Helper()
	e, err := Open(m.opts)
	if err != nil {
		m.t.Fatalf("%s: open: %v", how, err)
	}
	m.e, m.cc = e, NewConfTracker(nil)
	if err := e.Apply(committed(m.t, e), m.cc.Apply, func(Result) {}); err != nil {
		m.t.Fatalf("%s: replay: %v", how, err)
	}
	m.logFirst, _ = e.RaftStorage().FirstIndex()
	m.check(how)
}

// check compares the store with every acknowledged write.
func (m *restartMember) check(how string) {
	m.t.Helper()
	if got := m.e.Store().Rev(); got != m.rev {
		m.t.Fatalf("%s: revision %d, acknowledged %d", how, got, m.rev)
	}
	resp, err := m.e.Store().Range(&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	if err != nil {
		m.t.Fatalf("%s: range: %v", how, err)
	}
	if len(resp.Kvs) != len(m.want) {
		m.t.Fatalf("%s: %d keys, acknowledged %d", how, len(resp.Kvs), len(m.want))
	}
	for _, kv := range resp.Kvs {
		if w := m.want[string(kv.Key)]; string(kv.Value) != w {
			m.t.Fatalf("%s: %s = %q, acknowledged %q", how, kv.Key, kv.Value, w)
		}
	}
}

// write persists and applies n puts in Ready batches of 1..64 entries,
// taking snapshots as the server does (after a batch is applied, when
// SnapshotDue), and checks the raft log the snapshot leaves in memory.
func (m *restartMember) write(n int) {
	m.t.Helper()
	for n > 0 {
		k := min(n, 1+m.r.Intn(64))
		n -= k
		last, _ := m.e.RaftStorage().LastIndex()
		typ := raftpb.EntryNormal
		ents := make([]*raftpb.Entry, k)
		vals := make(map[string]string, k)
		for i := range ents {
			m.reqID++
			key := fmt.Sprintf("k%04d", m.reqID%1000)
			val := fmt.Sprintf("v%d", m.reqID)
			vals[key] = val
			ents[i] = &raftpb.Entry{Term: proto.Uint64(2), Index: proto.Uint64(last + 1 + uint64(i)), Type: &typ,
				Data: put(m.reqID, key, val)}
		}
		hs := &raftpb.HardState{Term: proto.Uint64(2), Vote: proto.Uint64(m.e.ID()), Commit: proto.Uint64(last + uint64(k))}
		if err := m.e.SaveReady(hs, ents, nil); err != nil {
			m.t.Fatalf("restart %d: save entries %d..%d: %v", m.restarts, last+1, last+uint64(k), err)
		}
		var reqErr error
		if err := m.e.Apply(ents, m.cc.Apply, func(r Result) {
			if r.Err != nil {
				reqErr = r.Err
			}
		}); err != nil || reqErr != nil {
			m.t.Fatalf("restart %d: apply entries %d..%d: %v %v", m.restarts, last+1, last+uint64(k), err, reqErr)
		}
		for key, val := range vals {
			m.want[key] = val
		}
		m.rev += int64(k)
		if !m.e.SnapshotDue() {
			continue
		}
		index, _ := m.e.Applied()
		if err := m.e.Snapshot(); err != nil {
			m.t.Fatalf("restart %d: snapshot at %d (log in memory from %d, --snapshot-count %d, --snapshot-catchup-entries %d): %v",
				m.restarts, index, m.logFirst, m.opts.SnapshotCount, m.opts.CatchUpEntries, err)
		}
		m.snaps++
		// What etcd's compactRaftLog leaves: CatchUpEntries entries before
		// the snapshot, or everything the log still has.
		compacti := uint64(1)
		if index > m.opts.CatchUpEntries {
			compacti = index - m.opts.CatchUpEntries
		}
		m.logFirst = max(m.logFirst, compacti+1)
		if first, _ := m.e.RaftStorage().FirstIndex(); first != m.logFirst {
			m.t.Fatalf("restart %d: after the snapshot at %d the raft log starts at %d, want %d", m.restarts, index, first, m.logFirst)
		}
		if last, _ := m.e.RaftStorage().LastIndex(); last != index {
			m.t.Fatalf("restart %d: after the snapshot at %d the raft log ends at %d", m.restarts, index, last)
		}
	}
}

// untilSnapshot is how many more puts make the next snapshot due.
func (m *restartMember) untilSnapshot() int {
	applied, _ := m.e.Applied()
	return int(m.e.snapshotIndex + m.opts.SnapshotCount + 1 - applied)
}

// restart stops the member, cleanly or as a crash, and opens it again.
// A crash keeps the WAL and .snap files as a power cut would (synced data,
// a seeded random part of the rest) and the db as of its last bbolt
// commit, which lags the WAL: the replay above consistent_index makes up
// the difference. kill -9 loses less than this (the page cache survives),
// so it is covered too.
func (m *restartMember) restart(crash bool) {
	m.t.Helper()
	m.restarts++
	how := fmt.Sprintf("restart %d (clean stop, %s)", m.restarts, m.where)
	if crash {
		how = fmt.Sprintf("restart %d (crash, %s)", m.restarts, m.where)
		m.dbs++
		db := filepath.Join(m.tmp, fmt.Sprintf("db%d", m.dbs), "db")
		copyCommittedDB(m.t, m.e, db)
		crashed := m.fs.CrashWith(vfs.CrashOptions{Seed: m.r.Int63(), KeepProb: 0.5})
		m.e.Close()
		m.fs, m.opts.FS, m.opts.DBPath = crashed, crashed, db
	} else if err := m.e.Close(); err != nil {
		m.t.Fatalf("%s: close: %v", how, err)
	}
	m.open(how)
}

// TestRestartAcrossSnapshots restarts a member (clean stop and crash) at
// many points around its snapshots — mid-way, just before one is due, just
// after one — for snapshot counts from 1 to 20,000 and catch-up entries
// below, at and above them, and after each restart writes past at least
// three more snapshots. Every acknowledged write must be there after every
// restart, every snapshot must succeed, and the raft log kept in memory
// must be what etcd keeps. A member restarted from a snapshot loads its
// raft log from that snapshot on, so a snapshot count below the catch-up
// entries put the next compaction below the log's start; that stopped the
// member on every later start (issue 11).
func TestRestartAcrossSnapshots(t *testing.T) {
	counts := []uint64{1, 2, 7, 100, 499, 500, 501, 4999, 5000, 5001, 20000}
	catchUps := []uint64{1, 100, 5000, 20000}
	if testing.Short() {
		counts, catchUps = []uint64{1, 7, 500}, []uint64{1, 5000}
	}
	t.Logf("seed %d (replay: go test ./engine -run TestRestartAcrossSnapshots -restart.seed %d)", *restartSeed, *restartSeed)
	for _, sc := range counts {
		for _, cu := range catchUps {
			t.Run(fmt.Sprintf("snapshot-count=%d/catchup=%d", sc, cu), func(t *testing.T) {
				seed := *restartSeed + int64(sc)*7919 + int64(cu)
				tmp := t.TempDir()
				fs := vfs.NewCrashable()
				m := &restartMember{t: t, r: rand.New(rand.NewSource(seed)), fs: fs, tmp: tmp, want: map[string]string{}, rev: 1,
					opts: Options{Name: "m1", DataDir: "/data/m1", InitialCluster: "m1=http://127.0.0.1:2380", FS: fs,
						DBPath: filepath.Join(tmp, "db0", "db"), SnapshotCount: sc, CatchUpEntries: cu,
						MaxSnapshots: 2, MaxWALs: 2, WALSegmentSize: 64 << 10,
						MVCC: mvcc.Options{Backend: mvcc.BackendOptions{NoSync: true}}}}
				m.open("first start")
				defer func() { m.e.Close() }()
				crash := false
				step := func(n int, where string) {
					t.Helper()
					m.write(max(n, 0))
					crash = !crash
					m.where = where
					m.restart(crash)
				}
				// Restart before the first snapshot, then at each point
				// around the next ones; each kind of stop at each point.
				for round := 0; round < 2; round++ {
					step(int(sc)/2, "mid-way")
					step(m.untilSnapshot()-1, "one entry before a snapshot is due")
					step(m.untilSnapshot(), "right after a snapshot")
					step(1+m.r.Intn(int(sc)), "anywhere")
				}
				snapsBefore := m.snaps
				for i := 0; i < 3; i++ {
					m.write(m.untilSnapshot()) // the last batch makes the snapshot due
				}
				m.write(m.r.Intn(int(sc) + 1))
				if m.snaps-snapsBefore < 3 {
					t.Fatalf("%d snapshots after the last restart, want at least 3", m.snaps-snapsBefore)
				}
				m.check("end")
				names, _ := m.fs.ReadDirNames("/data/m1/member/snap")
				nsnap := 0
				for _, n := range names {
					if strings.HasSuffix(n, ".snap") {
						nsnap++
					}
				}
				if nsnap > 2 {
					t.Fatalf("%d .snap files kept, --max-snapshots 2", nsnap)
				}
				// WAL segments below the last snapshot are released and
				// purged down to --max-wals 2 at each snapshot, after
				// restarts as before: at most 2 segments are not locked
				// (those written since are).
				names, _ = m.fs.ReadDirNames("/data/m1/member/wal")
				nwal := 0
				for _, n := range names {
					if strings.HasSuffix(n, ".wal") {
						nwal++
					}
				}
				if locked := len(m.e.w.Segments()); nwal-locked > 2 {
					t.Fatalf("%d WAL segments kept, %d of them locked, --max-wals 2", nwal, locked)
				}
				t.Logf("%d restarts, %d snapshots, %d acknowledged puts, revision %d, %d WAL segments", m.restarts, m.snaps, m.reqID, m.rev, nwal)
			})
		}
	}
}
