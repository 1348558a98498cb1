package engine

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/vfs"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// DBSnapshot is a consistent copy of the db being read, with the raft
// position it holds: what Maintenance.Snapshot streams to a client and
// what a leader sends a follower that is too far behind (etcd's merged
// snapshot: the db as it is when sent, at the applied index).
type DBSnapshot struct {
	// Index and Term are the db's consistent_index and term: the entries
	// it has applied.
	Index, Term uint64
	// ConfState is the raft configuration at Index, and Membership the v2
	// membership JSON a raft snapshot of it carries.
	ConfState  *raftpb.ConfState
	Membership []byte
	// Size is the number of bytes WriteTo writes.
	Size int64

	view *mvcc.View
}

// WriteTo writes the bbolt file.
func (d *DBSnapshot) WriteTo(w io.Writer) (int64, error) { return d.view.Tx().WriteTo(w) }

// Release ends the read transaction; call it once the copy is written.
func (d *DBSnapshot) Release() { d.view.Release() }

// RaftSnapshot is the raft snapshot describing d.
func (d *DBSnapshot) RaftSnapshot() *raftpb.Snapshot {
	return &raftpb.Snapshot{Data: d.Membership, Metadata: &raftpb.SnapshotMetadata{
		Index: proto.Uint64(d.Index), Term: proto.Uint64(d.Term), ConfState: proto.Clone(d.ConfState).(*raftpb.ConfState)}}
}

// DBSnapshot commits the db and opens a read transaction on it. For a raft
// snapshot call it where entries are applied, so that the configuration
// and membership are those of the db's index.
func (e *Engine) DBSnapshot() (*DBSnapshot, error) {
	if err := e.store.Commit(); err != nil {
		return nil, err
	}
	data, err := snap.EncodeV2Membership(e.v2Membership())
	if err != nil {
		return nil, err
	}
	e.mu.RLock()
	cs := cloneConfState(e.confState)
	e.mu.RUnlock()
	v := e.store.Backend().Snapshot()
	index, term, err := mvcc.ReadConsistentIndex(v.Tx())
	if err != nil {
		v.Release()
		return nil, err
	}
	return &DBSnapshot{Index: index, Term: term, ConfState: cs, Membership: data, Size: v.Tx().Size(), view: v}, nil
}

// SaveSnapshotDB stores the db of a snapshot a leader sends for (index,
// term) as member/snap/%016x.snap.db, read from r to its end, and checks
// it: a bbolt file whose pages walk cleanly and whose consistent_index and
// term are the snapshot's. A db that fails is deleted and never applied.
func (e *Engine) SaveSnapshotDB(r io.Reader, index, term uint64) (int64, error) {
	path, n, err := snap.SaveDB(e.fs, e.snapDir, index, r)
	if err != nil {
		return n, err
	}
	if err := checkSnapshotDB(e.fs, path, index, term); err != nil {
		_ = e.fs.Remove(path)
		return n, err
	}
	return n, nil
}

func checkSnapshotDB(fsys vfs.FS, path string, index, term uint64) error {
	if err := checkDBFile(fsys, path); err != nil {
		return err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("engine: snapshot db %s: %w", path, err)
	}
	defer db.Close()
	var ci, ct uint64
	if err := db.View(func(tx *bolt.Tx) error {
		var err error
		ci, ct, err = mvcc.ReadConsistentIndex(tx)
		return err
	}); err != nil {
		return fmt.Errorf("engine: snapshot db %s: %w", path, err)
	}
	if ci != index || (ct != 0 && ct != term) {
		return fmt.Errorf("engine: snapshot db %s holds index %d term %d, the snapshot is at index %d term %d", path, ci, ct, index, term)
	}
	return nil
}

// ApplySnapshot makes a received snapshot the member's state, as etcd's
// applySnapshot: the db saved for it by SaveSnapshotDB replaces the db,
// and the store, membership and configuration are reloaded from it. The
// snapshot itself (.snap, WAL record, raft log) was persisted by
// SaveReady. Requests still running on the old store fail with its close.
func (e *Engine) ApplySnapshot(s *raftpb.Snapshot) error {
	md := s.GetMetadata()
	index := md.GetIndex()
	e.mu.RLock()
	applied := e.appliedIndex
	e.mu.RUnlock()
	if index <= applied {
		return fmt.Errorf("engine: snapshot at index %d is not above the applied index %d", index, applied)
	}
	src := filepath.Join(e.snapDir, snap.DBFileName(index))
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("engine: apply snapshot at %d: its db: %w", index, err)
	}
	// As etcd's OpenSnapshotBackend: the snapshot's db replaces member/snap/db
	// while the old store is still open on the file it had; the old store
	// then hands its watch streams to the new one and closes.
	if err := os.Rename(src, e.dbPath); err != nil {
		return fmt.Errorf("engine: apply snapshot at %d: %w", index, err)
	}
	if !e.opts.NoSync {
		if err := e.fs.SyncDir(filepath.Dir(e.dbPath)); err != nil {
			return fmt.Errorf("engine: apply snapshot at %d: %w", index, err)
		}
	}
	st, err := mvcc.Open(e.dbPath, e.opts.MVCC)
	if err != nil {
		return fmt.Errorf("engine: apply snapshot at %d: %w", index, err)
	}
	if err := e.store.HandOver(st); err != nil {
		_ = st.Close()
		return fmt.Errorf("engine: apply snapshot at %d: close the old db: %w", index, err)
	}
	e.setStore(st)
	if e.ci, _, err = st.ConsistentIndex(); err != nil {
		return err
	}
	if err := e.auth.Recover(st.Backend()); err != nil {
		return fmt.Errorf("engine: apply snapshot at %d: %w", index, err)
	}
	e.mu.Lock()
	e.members = map[uint64]*Member{}
	e.removed = map[uint64]bool{}
	e.alarms = nil
	e.clusterVersion = ""
	e.downgrade = DowngradeInfo{}
	e.confState = cloneConfState(md.GetConfState())
	e.appliedIndex, e.appliedTerm = index, md.GetTerm()
	e.snapshotIndex = index
	e.mu.Unlock()
	if err := e.loadMembership(s); err != nil {
		return err
	}
	if err := e.detectDowngrade(e.ClusterVersion()); err != nil {
		return err
	}
	e.log.Info("applied snapshot", "index", index, "term", md.GetTerm(), "revision", st.Rev(), "members", len(e.Members()))
	return nil
}

// HoldRaftLog keeps the in-memory raft log from being compacted while a
// snapshot is being sent (etcd pauses compaction then, so the follower
// finds the entries after the snapshot); release undoes it.
func (e *Engine) HoldRaftLog() (release func()) {
	e.inflightSnapshots.Add(1)
	var done bool
	return func() {
		if !done {
			done = true
			e.inflightSnapshots.Add(-1)
		}
	}
}
