package interop

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	etcdwal "go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"

	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/wal"
)

// etcdSegmentSize guards etcd's package-level segment size, which the tests
// that need small segments must set (etcd has no per-WAL option).
var etcdSegmentSize sync.Mutex

func withEtcdSegmentSize(t testing.TB, size int64) {
	etcdSegmentSize.Lock()
	old := etcdwal.SegmentSizeBytes
	etcdwal.SegmentSizeBytes = size
	t.Cleanup(func() {
		etcdwal.SegmentSizeBytes = old
		etcdSegmentSize.Unlock()
	})
}

// walOp is one call in a workload applied identically to both WALs.
type walOp struct {
	kind  string // "save", "snapshot", "reopen", "cut"
	state *raftpb.HardState
	ents  []*raftpb.Entry
	snap  wal.Snapshot
}

func u64p(v uint64) *uint64 { return &v }

// walWorkload generates a raft-like sequence: appends in batches, terms that
// grow, commits that trail, occasional overwrites of uncommitted entries,
// snapshots of committed indexes and reopenings.
func walWorkload(seed uint64, n int, maxData int) []walOp {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var ops []walOp
	term, commit, last, vote := uint64(1), uint64(0), uint64(0), uint64(0)
	lastSnap := uint64(0)
	for len(ops) < n {
		switch p := r.IntN(100); {
		case p < 3 && commit > lastSnap:
			idx := lastSnap + 1 + r.Uint64N(commit-lastSnap)
			lastSnap = idx
			ops = append(ops, walOp{kind: "snapshot", snap: wal.Snapshot{Index: idx, Term: term, ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}, AutoLeave: proto.Bool(false)}}})
		case p < 5:
			ops = append(ops, walOp{kind: "reopen", snap: wal.Snapshot{Index: lastSnap, Term: 0}})
		case p < 7 && last > commit+1:
			// A new leader overwrites uncommitted entries.
			term++
			last = commit + 1 + r.Uint64N(last-commit-1)
			fallthrough
		default:
			k := 1 + r.IntN(8)
			ents := make([]*raftpb.Entry, k)
			for i := range ents {
				last++
				typ := raftpb.EntryNormal
				if r.IntN(50) == 0 {
					typ = raftpb.EntryConfChange
				}
				var data []byte
				if r.IntN(10) != 0 {
					data = make([]byte, r.IntN(maxData+1))
					for j := range data {
						data[j] = byte(r.IntN(256))
					}
				}
				ents[i] = &raftpb.Entry{Type: &typ, Term: u64p(term), Index: u64p(last), Data: data}
			}
			if r.IntN(4) == 0 {
				vote = uint64(1 + r.IntN(3))
			}
			if commit < last && r.IntN(2) == 0 {
				commit += 1 + r.Uint64N(last-commit)
			}
			ops = append(ops, walOp{kind: "save", ents: ents, state: &raftpb.HardState{Term: u64p(term), Vote: u64p(vote), Commit: u64p(commit)}})
		}
	}
	return ops
}

func toWalpb(s wal.Snapshot) *walpb.Snapshot {
	return &walpb.Snapshot{Index: u64p(s.Index), Term: u64p(s.Term), ConfState: s.ConfState}
}

// snapTerms remembers the term of each snapshot so a reopen can name it.
type walDriver interface {
	save(st *raftpb.HardState, ents []*raftpb.Entry) error
	saveSnapshot(s wal.Snapshot) error
	reopen(s wal.Snapshot) error
	close() error
}

type etckitDriver struct {
	dir  string
	opts wal.Options
	w    *wal.WAL
}

func (d *etckitDriver) save(st *raftpb.HardState, ents []*raftpb.Entry) error {
	return d.w.Save(st, ents)
}
func (d *etckitDriver) saveSnapshot(s wal.Snapshot) error { return d.w.SaveSnapshot(s) }
func (d *etckitDriver) close() error                      { return d.w.Close() }
func (d *etckitDriver) reopen(s wal.Snapshot) error {
	if err := d.w.Close(); err != nil {
		return err
	}
	w, err := wal.Open(d.dir, s, d.opts)
	if err != nil {
		return err
	}
	if _, _, _, err := w.ReadAll(); err != nil {
		return err
	}
	d.w = w
	return nil
}

type etcdDriver struct {
	dir string
	w   *etcdwal.WAL
}

func (d *etcdDriver) save(st *raftpb.HardState, ents []*raftpb.Entry) error {
	return d.w.Save(st, ents)
}
func (d *etcdDriver) saveSnapshot(s wal.Snapshot) error { return d.w.SaveSnapshot(toWalpb(s)) }
func (d *etcdDriver) close() error                      { return d.w.Close() }
func (d *etcdDriver) reopen(s wal.Snapshot) error {
	if err := d.w.Close(); err != nil {
		return err
	}
	w, err := etcdwal.Open(zap.NewNop(), d.dir, toWalpb(s))
	if err != nil {
		return err
	}
	if _, _, _, err := w.ReadAll(); err != nil {
		return err
	}
	d.w = w
	return nil
}

func runWorkload(t *testing.T, d walDriver, ops []walOp) {
	t.Helper()
	terms := map[uint64]uint64{0: 0}
	for i, op := range ops {
		var err error
		switch op.kind {
		case "save":
			err = d.save(op.state, op.ents)
		case "snapshot":
			terms[op.snap.Index] = op.snap.Term
			err = d.saveSnapshot(op.snap)
		case "reopen":
			s := op.snap
			s.Term = terms[s.Index]
			err = d.reopen(s)
		}
		if err != nil {
			t.Fatalf("op %d (%s): %v", i, op.kind, err)
		}
	}
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
}

func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func sortedKeys(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

const walTestSegment = 32 * 1024

// TestWALSameBytesAsEtcd applies one workload to etcd's wal and to etckit's
// and requires the same files with the same bytes: segment names (cut
// points), records, padding, CRCs and preallocated tails.
func TestWALSameBytesAsEtcd(t *testing.T) {
	withEtcdSegmentSize(t, walTestSegment)
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("seed %d", seed)
			ops := walWorkload(seed, 600, 3000)
			md := []byte(fmt.Sprintf("metadata-%d", seed))

			ourDir := filepath.Join(t.TempDir(), "wal")
			opts := wal.Options{SegmentSize: walTestSegment}
			ow, err := wal.Create(ourDir, md, opts)
			if err != nil {
				t.Fatal(err)
			}
			runWorkload(t, &etckitDriver{dir: ourDir, opts: opts, w: ow}, ops)

			theirDir := filepath.Join(t.TempDir(), "wal")
			ew, err := etcdwal.Create(zap.NewNop(), theirDir, md)
			if err != nil {
				t.Fatal(err)
			}
			runWorkload(t, &etcdDriver{dir: theirDir, w: ew}, ops)

			ours, theirs := dirFiles(t, ourDir), dirFiles(t, theirDir)
			if a, b := strings.Join(sortedKeys(ours), " "), strings.Join(sortedKeys(theirs), " "); a != b {
				t.Fatalf("files differ:\n etckit %s\n   etcd %s", a, b)
			}
			if len(ours) < 3 {
				t.Fatalf("workload made only %d segments; the test wants cuts", len(ours))
			}
			for name, b := range theirs {
				if !bytes.Equal(ours[name], b) {
					at := 0
					for at < len(b) && at < len(ours[name]) && ours[name][at] == b[at] {
						at++
					}
					t.Fatalf("%s differs at byte %d (sizes %d vs %d)", name, at, len(ours[name]), len(b))
				}
			}
		})
	}
}

type readResult struct {
	md    []byte
	state *raftpb.HardState
	ents  []*raftpb.Entry
}

func sameRead(t *testing.T, who string, a, b readResult) {
	t.Helper()
	if !bytes.Equal(a.md, b.md) {
		t.Fatalf("%s: metadata %q vs %q", who, a.md, b.md)
	}
	if !proto.Equal(a.state, b.state) {
		t.Fatalf("%s: state %v vs %v", who, a.state, b.state)
	}
	if len(a.ents) != len(b.ents) {
		t.Fatalf("%s: %d vs %d entries", who, len(a.ents), len(b.ents))
	}
	for i := range a.ents {
		if !proto.Equal(a.ents[i], b.ents[i]) {
			t.Fatalf("%s: entry %d: %v vs %v", who, i, a.ents[i], b.ents[i])
		}
	}
}

// TestWALEtckitWritesEtcdReads: etckit's multi-segment WAL read by etcd's
// ReadAll, Verify and ValidSnapshotEntries, at every snapshot.
func TestWALEtckitWritesEtcdReads(t *testing.T) {
	const seed = 11
	t.Logf("seed %d", seed)
	dir := filepath.Join(t.TempDir(), "wal")
	opts := wal.Options{SegmentSize: walTestSegment}
	w, err := wal.Create(dir, []byte("etckit"), opts)
	if err != nil {
		t.Fatal(err)
	}
	ops := walWorkload(seed, 800, 2000)
	runWorkload(t, &etckitDriver{dir: dir, opts: opts, w: w}, ops)
	snaps := []wal.Snapshot{{}}
	for _, op := range ops {
		if op.kind == "snapshot" {
			snaps = append(snaps, op.snap)
		}
	}
	for _, s := range snaps {
		ours := readEtckit(t, dir, s)
		theirs := readEtcd(t, dir, s)
		sameRead(t, fmt.Sprintf("snapshot %d", s.Index), ours, theirs)
		if _, err := etcdwal.Verify(zap.NewNop(), dir, toWalpb(s)); err != nil {
			t.Fatalf("etcd Verify at %d: %v", s.Index, err)
		}
	}
	theirSnaps, err := etcdwal.ValidSnapshotEntries(zap.NewNop(), dir)
	if err != nil {
		t.Fatal(err)
	}
	ourSnaps, err := wal.ValidSnapshotEntries(dir, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(theirSnaps) != len(ourSnaps) {
		t.Fatalf("valid snapshots: etcd %d, etckit %d", len(theirSnaps), len(ourSnaps))
	}
	for i := range ourSnaps {
		if !proto.Equal(toWalpb(ourSnaps[i]), theirSnaps[i]) {
			t.Fatalf("snapshot %d: %v vs %v", i, ourSnaps[i], theirSnaps[i])
		}
	}
}

// TestWALEtcdWritesEtckitReads: etcd's WAL read by etckit's ReadAll, and
// Scan sees every record etcd's decoder sees.
func TestWALEtcdWritesEtckitReads(t *testing.T) {
	withEtcdSegmentSize(t, walTestSegment)
	const seed = 12
	t.Logf("seed %d", seed)
	dir := filepath.Join(t.TempDir(), "wal")
	ew, err := etcdwal.Create(zap.NewNop(), dir, []byte("etcd"))
	if err != nil {
		t.Fatal(err)
	}
	ops := walWorkload(seed, 800, 2000)
	runWorkload(t, &etcdDriver{dir: dir, w: ew}, ops)
	snaps := []wal.Snapshot{{}}
	for _, op := range ops {
		if op.kind == "snapshot" {
			snaps = append(snaps, op.snap)
		}
	}
	for _, s := range snaps {
		sameRead(t, fmt.Sprintf("snapshot %d", s.Index), readEtckit(t, dir, s), readEtcd(t, dir, s))
	}
	// Scan: every record, in order, with the CRC etcd's writer stored.
	var recs []wal.Record
	err = wal.Scan(dir, wal.ScanOptions{}, func(p wal.Position, r wal.Record) error {
		r.Data = bytes.Clone(r.Data)
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	names, _ := os.ReadDir(dir)
	var files []*os.File
	for _, n := range names {
		if strings.HasSuffix(n.Name(), ".wal") {
			f, err := os.Open(filepath.Join(dir, n.Name()))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			files = append(files, f)
		}
	}
	var theirs []*walpb.Record
	dec := etcdwal.NewDecoder(fileReaders(files)...)
	for {
		rec := &walpb.Record{}
		if err := dec.Decode(rec); err != nil {
			break
		}
		if rec.GetType() == etcdwal.CrcType {
			dec.UpdateCRC(rec.GetCrc())
		}
		theirs = append(theirs, rec)
	}
	if len(recs) != len(theirs) {
		t.Fatalf("scan %d records, etcd decoder %d", len(recs), len(theirs))
	}
	for i := range recs {
		if int64(recs[i].Type) != theirs[i].GetType() || recs[i].CRC != theirs[i].GetCrc() || !bytes.Equal(recs[i].Data, theirs[i].Data) || (recs[i].Data == nil) != (theirs[i].Data == nil) {
			t.Fatalf("record %d differs: %v vs %v", i, recs[i], theirs[i])
		}
	}
}

func readEtckit(t *testing.T, dir string, s wal.Snapshot) readResult {
	t.Helper()
	w, err := wal.OpenForRead(dir, s, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	md, st, ents, err := w.ReadAll()
	if err != nil {
		t.Fatalf("etckit ReadAll at %d: %v", s.Index, err)
	}
	return readResult{md, st, ents}
}

func readEtcd(t *testing.T, dir string, s wal.Snapshot) readResult {
	t.Helper()
	w, err := etcdwal.OpenForRead(zap.NewNop(), dir, toWalpb(s))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	md, st, ents, err := w.ReadAll()
	if err != nil {
		t.Fatalf("etcd ReadAll at %d: %v", s.Index, err)
	}
	return readResult{md, st, ents}
}

// TestWALFixturesEtcdAndEtckitAgree reads the real etcd 3.6.16 WALs with
// both implementations.
func TestWALFixturesEtcdAndEtckitAgree(t *testing.T) {
	for _, c := range []struct {
		tarball, top string
		snaps        []wal.Snapshot
		entries      []int
	}{
		{"etcd-3.6.16/small.tar.gz", "small", []wal.Snapshot{{}}, []int{113}},
		{"etcd-3.6.16/snapshot.tar.gz", "snapshot", []wal.Snapshot{{}, {Index: 1001, Term: 2}, {Index: 6006, Term: 2}}, []int{6008, 5007, 2}},
	} {
		dir := filepath.Join(fixture.Extract(t, c.tarball), c.top, "member", "wal")
		for i, s := range c.snaps {
			ours := readEtckit(t, dir, s)
			sameRead(t, c.top, ours, readEtcd(t, dir, s))
			if len(ours.ents) != c.entries[i] {
				t.Fatalf("%s at %d: %d entries, etcd-dump-logs shows %d", c.top, s.Index, len(ours.ents), c.entries[i])
			}
		}
	}
}
