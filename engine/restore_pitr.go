package engine

// Point-in-time restore: a new member directory from a member's own data
// directory, a base db (its db, a received .snap.db, or an empty store)
// plus the committed WAL entries up to a chosen index or revision, applied
// to a copy with the engine's apply.

// PointInTimeOptions configures RestorePointInTime: the target member (as
// for Restore; SnapshotPath is unused) and the source member directory and
// point to restore.
import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"

	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/vfs"
	"github.com/etckit/etckit/wal"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

type PointInTimeOptions struct {
	RestoreOptions
	// FromDataDir is the source member's data directory; it is only read.
	FromDataDir string
	// FromWALDir is the source's WAL directory (default
	// <FromDataDir>/member/wal).
	FromWALDir string
	// ToIndex is the raft index to restore to (the state after applying
	// that entry). Exactly one of ToIndex and ToRevision is given.
	ToIndex uint64
	// ToRevision is the MVCC revision to restore to: the state right after
	// the entry that created that revision.
	ToRevision int64
	// Base limits the bases considered to one kind ("db", "snap.db" or
	// "empty"); "" takes the newest base that fits. Replaying from "empty"
	// when the db could serve proves the WAL reproduces the db.
	Base string
}

// PointInTimeResult says how a point-in-time restore was made.
type PointInTimeResult struct {
	// BaseKind is "db" (the source's member/snap/db), "snap.db" (a db
	// snapshot received from a leader) or "empty" (a new store, when the
	// WAL reaches back to index 0).
	BaseKind string
	BasePath string
	// BaseIndex is the base's consistent_index, BaseRevision its revision.
	BaseIndex    uint64
	BaseRevision int64
	// Applied is the number of WAL entries applied on top of the base,
	// through index Index; Revision and CompactRevision are the store's
	// afterwards.
	Applied                   int
	Index                     uint64
	Revision, CompactRevision int64
	// WALCommit is the source WAL's commit index (the last restorable one).
	WALCommit uint64
}

// pitrBase is one candidate starting state.
type pitrBase struct {
	kind, path string
	index      uint64
}

// RestorePointInTime restores the state a member had at a raft index (or
// MVCC revision) into a new member directory: the newest base at or below
// the target — the source db, a .snap.db, or an empty store when the WAL
// reaches back to index 0 — is copied (one bbolt read transaction, so a
// base held by a running member is still consistent), the committed WAL
// entries after it up to the target are applied to the copy with the
// engine's apply, and the copy is then turned into a new member exactly as
// Restore does (members rewritten, new WAL and .snap; --bump-revision and
// --mark-compacted work the same). The source is never modified.
func RestorePointInTime(o PointInTimeOptions) (*RestoreResult, error) {
	if (o.ToIndex == 0) == (o.ToRevision == 0) {
		return nil, errors.New("engine: point-in-time restore: give exactly one of --to-index and --to-revision")
	}
	if o.ToRevision < 0 {
		return nil, fmt.Errorf("engine: point-in-time restore: revision %d is negative", o.ToRevision)
	}
	if o.FromDataDir == "" {
		return nil, errors.New("engine: point-in-time restore: --from-data-dir is required")
	}
	switch o.Base {
	case "", "db", "snap.db", "empty":
	default:
		return nil, fmt.Errorf("engine: point-in-time restore: unknown base %q (want db, snap.db or empty)", o.Base)
	}
	p, err := planRestore(o.RestoreOptions)
	if err != nil {
		return nil, err
	}
	srcWAL := o.FromWALDir
	if srcWAL == "" {
		srcWAL = filepath.Join(o.FromDataDir, "member", "wal")
	}
	srcSnap := filepath.Join(o.FromDataDir, "member", "snap")
	if abs(srcSnap) == abs(p.snapDir) || abs(srcWAL) == abs(p.walDir) {
		return nil, errors.New("engine: point-in-time restore: the target directories must differ from the source's")
	}

	// The WAL from its oldest readable snapshot record on.
	valid, err := wal.ValidSnapshotEntries(srcWAL, wal.Options{FS: p.fs})
	if err != nil {
		return nil, fmt.Errorf("engine: point-in-time restore: read WAL %s: %w", srcWAL, err)
	}
	if len(valid) == 0 {
		return nil, fmt.Errorf("engine: point-in-time restore: WAL %s has no committed snapshot record to start reading at", srcWAL)
	}
	start := valid[0]
	w, err := wal.OpenForRead(srcWAL, start, wal.Options{FS: p.fs})
	if err != nil {
		return nil, err
	}
	_, hs, ents, err := w.ReadAll()
	_ = w.Close()
	if err != nil {
		return nil, fmt.Errorf("engine: point-in-time restore: read WAL %s: %w", srcWAL, err)
	}
	commit := hs.GetCommit()
	if o.ToIndex > 0 {
		if o.ToIndex > commit {
			return nil, fmt.Errorf("engine: point-in-time restore: index %d is not committed in %s (commit index %d); entries after the commit index may never have been applied by the cluster",
				o.ToIndex, srcWAL, commit)
		}
		if o.ToIndex < start.Index {
			return nil, fmt.Errorf("engine: point-in-time restore: index %d is older than the WAL (it starts after index %d)", o.ToIndex, start.Index)
		}
	}

	// Candidate bases, newest first.
	var bases []pitrBase
	want := func(kind string) bool { return o.Base == "" || o.Base == kind }
	if db := filepath.Join(srcSnap, "db"); want("db") && fileExists(p.fs, db) {
		ci, err := readConsistentIndex(p.fs, db)
		if err != nil {
			return nil, err
		}
		bases = append(bases, pitrBase{"db", db, ci})
	}
	if names, err := p.fs.ReadDirNames(srcSnap); err == nil && want("snap.db") {
		for _, n := range names {
			if _, ok := snap.ParseDBFileName(n); ok {
				path := filepath.Join(srcSnap, n)
				ci, err := readConsistentIndex(p.fs, path)
				if err != nil {
					return nil, err
				}
				bases = append(bases, pitrBase{"snap.db", path, ci})
			}
		}
	}
	if start.Index == 0 && want("empty") {
		bases = append(bases, pitrBase{"empty", "", 0})
	}
	slices.SortStableFunc(bases, func(a, b pitrBase) int {
		switch {
		case a.index > b.index:
			return -1
		case a.index < b.index:
			return 1
		}
		return 0
	})

	var res *RestoreResult
	err = p.withCleanup(func() error {
		if err := p.fs.MkdirAll(p.snapDir, restoreDirMode); err != nil {
			return fmt.Errorf("engine: restore: %w", err)
		}
		var tried []string
		for _, b := range bases {
			if b.index < start.Index || (o.ToIndex > 0 && b.index > o.ToIndex) || (o.Base != "" && o.Base != b.kind) {
				tried = append(tried, fmt.Sprintf("%s %s at index %d", b.kind, b.path, b.index))
				continue
			}
			pr, ok, err := replayOnto(p.fs, p.dbPath, b, ents, commit, o)
			if err != nil {
				return err
			}
			if !ok { // revision target older than this base
				tried = append(tried, fmt.Sprintf("%s %s at index %d (revision %d)", b.kind, b.path, b.index, pr.BaseRevision))
				_ = p.fs.Remove(p.dbPath)
				continue
			}
			pr.WALCommit = commit
			if res, err = p.finish(); err != nil {
				return err
			}
			res.PointInTime = pr
			return nil
		}
		target := fmt.Sprintf("index %d", o.ToIndex)
		if o.ToRevision > 0 {
			target = fmt.Sprintf("revision %d", o.ToRevision)
		}
		return fmt.Errorf("engine: point-in-time restore: no base at or below %s: the WAL in %s starts after index %d and the dbs found are %v; an older state is only in an older backup",
			target, srcWAL, start.Index, tried)
	})
	return res, err
}

// replayOnto builds the base b at dst and applies the committed entries
// after it up to the target. ok is false (and nothing applied) when the
// target revision is older than the base.
func replayOnto(fsys vfs.FS, dst string, b pitrBase, ents []*raftpb.Entry, commit uint64, o PointInTimeOptions) (*PointInTimeResult, bool, error) {
	pr := &PointInTimeResult{BaseKind: b.kind, BasePath: b.path, BaseIndex: b.index, Index: b.index}
	if b.kind != "empty" {
		if err := copyDB(fsys, b.path, dst); err != nil {
			return nil, false, err
		}
	}
	st, err := mvcc.Open(dst, mvcc.Options{})
	if err != nil {
		return nil, false, err
	}
	closeStore := func(err error) error {
		if cerr := st.Close(); err == nil && cerr != nil {
			err = cerr
		}
		return err
	}
	e := &Engine{fs: fsys, store: st, dbPath: dst, log: slog.New(slog.DiscardHandler),
		members: make(map[uint64]*Member), removed: make(map[uint64]bool), confState: &raftpb.ConfState{}}
	if b.kind == "empty" {
		// A new member's db, as bootstrap creates it.
		if err := st.Backend().Write(func(w *mvcc.WriteTx) error {
			for _, bk := range mvcc.AllBuckets() {
				w.EnsureBucket(bk)
			}
			w.Put([]byte(mvcc.BucketAuth), []byte("authRevision"), binary.BigEndian.AppendUint64(nil, 1))
			return nil
		}); err != nil {
			return nil, false, closeStore(err)
		}
	} else if err := e.loadMembership(nil); err != nil {
		return nil, false, closeStore(err)
	}
	if e.ci, _, err = st.ConsistentIndex(); err != nil {
		return nil, false, closeStore(err)
	}
	// Auth requests in the WAL replay too (users, roles, permissions);
	// BcryptCost only matters for pre-3.5 entries that carry a password.
	if err := e.openAuth(); err != nil {
		return nil, false, closeStore(err)
	}
	pr.BaseRevision = st.Rev()
	if o.ToRevision > 0 && pr.BaseRevision > o.ToRevision {
		return pr, false, closeStore(nil)
	}
	voters, learners := map[uint64]bool{}, map[uint64]bool{}
	applyConf := func(cc raftpb.ConfChangeI) *raftpb.ConfState {
		for _, c := range cc.AsV2().GetChanges() {
			id := c.GetNodeId()
			switch c.GetType() {
			case raftpb.ConfChangeAddNode:
				voters[id], learners[id] = true, false
			case raftpb.ConfChangeAddLearnerNode:
				learners[id], voters[id] = true, false
			case raftpb.ConfChangeRemoveNode:
				voters[id], learners[id] = false, false
			}
		}
		cs := &raftpb.ConfState{AutoLeave: proto.Bool(false)}
		for id, ok := range voters {
			if ok {
				cs.Voters = append(cs.Voters, id)
			}
		}
		for id, ok := range learners {
			if ok {
				cs.Learners = append(cs.Learners, id)
			}
		}
		slices.Sort(cs.Voters)
		slices.Sort(cs.Learners)
		return cs
	}
	{
		v := st.Backend().View()
		if raw, ok := v.Get([]byte(mvcc.BucketMeta), []byte(mvcc.MetaConfState)); ok {
			var cs confStateJSON
			if json.Unmarshal(raw, &cs) == nil {
				for _, id := range cs.Voters {
					voters[id] = true
				}
				for _, id := range cs.Learners {
					learners[id] = true
				}
			}
		}
		v.Release()
	}
	reached := o.ToRevision > 0 && st.Rev() == o.ToRevision
	next := b.index + 1
	for _, ent := range ents {
		if reached {
			break
		}
		idx := ent.GetIndex()
		if idx <= b.index {
			continue
		}
		if o.ToIndex > 0 && idx > o.ToIndex || idx > commit {
			break
		}
		if idx != next {
			return nil, false, closeStore(fmt.Errorf("engine: point-in-time restore: the WAL lacks index %d (next entry is %d)", next, idx))
		}
		if err := e.Apply([]*raftpb.Entry{ent}, applyConf, nil); err != nil {
			return nil, false, closeStore(err)
		}
		next++
		pr.Applied++
		pr.Index = idx
		if o.ToRevision > 0 && st.Rev() >= o.ToRevision {
			reached = true
		}
	}
	switch {
	case o.ToIndex > 0 && pr.Index != o.ToIndex:
		return nil, false, closeStore(fmt.Errorf("engine: point-in-time restore: the WAL ends at index %d before the target %d", pr.Index, o.ToIndex))
	case o.ToRevision > 0 && !reached:
		return nil, false, closeStore(fmt.Errorf("engine: point-in-time restore: revision %d is beyond the last committed entry (index %d reaches revision %d)",
			o.ToRevision, pr.Index, st.Rev()))
	}
	pr.Revision, pr.CompactRevision = st.Rev(), st.CompactRev()
	if err := st.Commit(); err != nil {
		return nil, false, closeStore(err)
	}
	return pr, true, closeStore(nil)
}
