package engine

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/wal"
	"go.etcd.io/raft/v3/raftpb"
)

// SnapshotDue reports whether SnapshotCount entries were applied since the
// last snapshot, or the cluster version was lowered since: as etcd, a
// downgrade is followed by a snapshot at once, so that the older binary
// that restarts on this data dir does not replay, from the WAL, the
// ClusterVersionSet of the newer version (etcd 3.6 would stop on it).
func (e *Engine) SnapshotDue() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return (e.forceSnapshot && e.appliedIndex != e.snapshotIndex) || e.appliedIndex-e.snapshotIndex > e.opts.SnapshotCount
}

// Snapshot writes a snapshot at the applied index, as etcd's
// EtcdServer.snapshot: commit the db (so consistent_index >= the snapshot
// index), write the .snap with the v2 membership JSON, append the WAL
// snapshot record, release WAL locks below it, compact the in-memory raft
// log keeping CatchUpEntries, and purge old files.
func (e *Engine) Snapshot() error {
	e.mu.RLock()
	index, cs := e.appliedIndex, cloneConfState(e.confState)
	e.mu.RUnlock()
	if index == 0 || index <= e.snapshotIndex {
		return nil
	}
	if err := e.store.Commit(); err != nil {
		return err
	}
	data, err := snap.EncodeV2Membership(e.v2Membership())
	if err != nil {
		return err
	}
	s, err := e.rs.CreateSnapshot(index, cs, data)
	if err != nil {
		return fmt.Errorf("engine: create raft snapshot at %d: %w", index, err)
	}
	if err := e.saveSnap(s); err != nil {
		return err
	}
	md := s.GetMetadata()
	if err := e.w.SaveSnapshot(wal.Snapshot{Index: md.GetIndex(), Term: md.GetTerm(), ConfState: md.GetConfState()}); err != nil {
		return err
	}
	if err := e.w.ReleaseLockTo(index); err != nil {
		return err
	}
	e.mu.Lock()
	e.snapshotIndex = index
	e.forceSnapshot = false
	e.mu.Unlock()
	if err := e.compactRaftLog(index); err != nil {
		return err
	}
	e.log.Info("saved snapshot", "index", index, "term", md.GetTerm())
	_, err = e.Purge()
	return err
}

// compactRaftLog drops the in-memory raft log up to snapi-CatchUpEntries,
// keeping CatchUpEntries entries for slow followers, as etcd's
// compactRaftLog.
//
// The log in memory does not always reach that far back: a member that
// restarts loads it from its newest snapshot, so it starts at that
// snapshot's index. When the next snapshot comes fewer than CatchUpEntries
// entries later (--snapshot-count below --snapshot-catchup-entries), the
// compaction point is at or below the log's start and there is nothing to
// drop. etcd gets raft.ErrCompacted from MemoryStorage.Compact there and
// returns; here the bound is checked first, so any error Compact returns is
// a real one.
func (e *Engine) compactRaftLog(snapi uint64) error {
	if e.inflightSnapshots.Load() != 0 {
		e.log.Info("skip compaction since there is an inflight snapshot")
		return nil
	}
	compacti := uint64(1)
	if snapi > e.opts.CatchUpEntries {
		compacti = snapi - e.opts.CatchUpEntries
	}
	first, err := e.rs.FirstIndex()
	if err != nil {
		return fmt.Errorf("engine: raft log first index: %w", err)
	}
	if compacti < first {
		return nil // already compacted up to first-1 (the snapshot the log was loaded from)
	}
	if err := e.rs.Compact(compacti); err != nil {
		return fmt.Errorf("engine: compact raft log at %d (log starts at %d): %w", compacti, first, err)
	}
	return nil
}

func cloneConfState(cs *raftpb.ConfState) *raftpb.ConfState {
	c := &raftpb.ConfState{}
	if cs != nil {
		c.Voters = slices.Clone(cs.Voters)
		c.Learners = slices.Clone(cs.Learners)
		c.VotersOutgoing = slices.Clone(cs.VotersOutgoing)
		c.LearnersNext = slices.Clone(cs.LearnersNext)
		c.AutoLeave = cs.AutoLeave
	}
	return c
}

// v2Membership is the membership as the v2 store of a .snap records it.
func (e *Engine) v2Membership() *snap.Membership {
	m := &snap.Membership{Version: e.ClusterVersion()}
	for _, x := range e.Members() {
		sm := snap.Member{ID: x.ID, PeerURLs: x.PeerURLs, IsLearner: x.IsLearner, Name: x.Name, ClientURLs: x.ClientURLs}
		if x.Name != "" && sm.ClientURLs == nil {
			sm.ClientURLs = []string{}
		}
		m.Members = append(m.Members, sm)
	}
	e.mu.RLock()
	for id := range e.removed {
		m.Removed = append(m.Removed, id)
	}
	e.mu.RUnlock()
	slices.Sort(m.Removed)
	return m
}

// Purge deletes old .snap, .snap.db and WAL segment files beyond the
// retention limits: WAL segments only when this member no longer holds their
// lock (they are below the last snapshot), oldest first, as etcd's purge
// loop. It returns the paths removed.
func (e *Engine) Purge() ([]string, error) {
	var removed []string
	if e.opts.MaxSnapshots > 0 {
		r, err := snap.Purge(e.fs, e.snapDir, e.opts.MaxSnapshots)
		removed = append(removed, r...)
		if err != nil {
			return removed, err
		}
		r, err = snap.PurgeDB(e.fs, e.snapDir, e.opts.MaxSnapshots)
		removed = append(removed, r...)
		if err != nil {
			return removed, err
		}
	}
	if e.opts.MaxWALs > 0 && e.w != nil {
		names, err := e.fs.ReadDirNames(e.opts.WALDir)
		if err != nil {
			return removed, fmt.Errorf("engine: list %s: %w", e.opts.WALDir, err)
		}
		var segs []string
		for _, n := range names {
			if strings.HasSuffix(n, ".wal") {
				segs = append(segs, n)
			}
		}
		locked := e.w.Segments()
		for len(segs) > e.opts.MaxWALs {
			if slices.Contains(locked, segs[0]) {
				break // etcd stops at the first segment it cannot lock
			}
			p := filepath.Join(e.opts.WALDir, segs[0])
			if err := e.fs.Remove(p); err != nil {
				return removed, fmt.Errorf("engine: purge %s: %w", p, err)
			}
			removed = append(removed, p)
			segs = segs[1:]
		}
		if len(removed) > 0 {
			if err := e.fs.SyncDir(e.opts.WALDir); err != nil {
				return removed, fmt.Errorf("engine: sync %s: %w", e.opts.WALDir, err)
			}
		}
	}
	return removed, nil
}
