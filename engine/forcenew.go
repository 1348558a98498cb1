package engine

// --force-new-cluster: an existing member restarted as the only member of
// its cluster, as etcd's bootstrapWALFromSnapshot does with
// ServerConfig.ForceNewCluster (v3.5.22+, v3.6.1+, v3.7).

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/wal"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// ForceNewPeerURL is the peer URL etcd gives the member it adds for itself
// when the log does not know it (a member whose own add was never
// committed).
const ForceNewPeerURL = "http://localhost:2380"

// ErrForceNewCluster is matched by the refusals of --force-new-cluster
// (nothing is written when one is returned).
var ErrForceNewCluster = errors.New("engine: --force-new-cluster refused")

// EffectiveMemberIDs is etcd's GetEffectiveNodeIDsFromWALEntries (v3.5's
// getIDs): the voters and learners of cs, then each EntryConfChange of
// ents in order (AddNode and AddLearnerNode add the node, RemoveNode
// removes it, UpdateNode changes nothing), in ascending order. As etcd,
// EntryConfChangeV2 entries are not looked at (etcd proposes none).
func EffectiveMemberIDs(cs *raftpb.ConfState, ents []*raftpb.Entry) ([]uint64, error) {
	ids := map[uint64]bool{}
	for _, id := range cs.GetVoters() {
		ids[id] = true
	}
	for _, id := range cs.GetLearners() {
		ids[id] = true
	}
	for _, ent := range ents {
		if ent.GetType() != raftpb.EntryConfChange {
			continue
		}
		var cc raftpb.ConfChange
		if err := proto.Unmarshal(ent.GetData(), &cc); err != nil {
			return nil, &entryError{index: ent.GetIndex(), reason: "conf change entry is not a raftpb.ConfChange", err: err}
		}
		switch cc.GetType() {
		case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
			ids[cc.GetNodeId()] = true
		case raftpb.ConfChangeRemoveNode:
			delete(ids, cc.GetNodeId())
		case raftpb.ConfChangeUpdateNode:
		default:
			return nil, &entryError{index: ent.GetIndex(), reason: fmt.Sprintf("unknown ConfChange type %d", int32(cc.GetType()))}
		}
	}
	out := make([]uint64, 0, len(ids))
	for id := range ids {
		out = append(out, id)
	}
	slices.Sort(out)
	return out, nil
}

// entryError is a WAL entry that cannot be read; the engine turns it into
// a corrupt.Error naming the segment and offset.
type entryError struct {
	index  uint64
	reason string
	err    error
}

func (e *entryError) Error() string {
	s := fmt.Sprintf("entry %d: %s", e.index, e.reason)
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

func (e *entryError) Unwrap() error { return e.err }

// ForceNewClusterEntries is etcd's CreateConfigChangeEnts: the
// EntryConfChange entries, at term and from index+1 on, that leave self
// the only member of ids. If self is not among ids it is added first
// (AddNode, context {"id":self,"peerURLs":["http://localhost:2380"]}: raft
// must never be left without voters), then every other ID is removed
// (RemoveNode, no context) in ascending order. etcd sets no ConfChange ID
// on these, so the encoded entries are the same on every run.
func ForceNewClusterEntries(ids []uint64, self, term, index uint64) ([]*raftpb.Entry, error) {
	var ents []*raftpb.Entry
	next := index + 1
	add := func(cc *raftpb.ConfChange) error {
		data, err := proto.Marshal(cc)
		if err != nil {
			return fmt.Errorf("engine: marshal conf change: %w", err)
		}
		ents = append(ents, &raftpb.Entry{Type: raftpb.EntryConfChange.Enum(), Data: data,
			Term: proto.Uint64(term), Index: proto.Uint64(next)})
		next++
		return nil
	}
	if !slices.Contains(ids, self) {
		m := Member{ID: self, PeerURLs: []string{ForceNewPeerURL}}
		if err := add(&raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(self), Context: marshalMember(m)}); err != nil {
			return nil, err
		}
	}
	for _, id := range ids {
		if id == self {
			continue
		}
		if err := add(&raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: proto.Uint64(id)}); err != nil {
			return nil, err
		}
	}
	return ents, nil
}

// ForceNewResult is what Open did for Options.ForceNewCluster.
type ForceNewResult struct {
	// WALCommit is the HardState's commit index in the WAL, Commit the
	// index kept (max of WALCommit and the db's consistent_index: an entry
	// applied after the last HardState was written is committed).
	WALCommit, Commit uint64
	// Discarded is how many entries above Commit were dropped.
	Discarded int
	// Members are the IDs the log knew (EffectiveMemberIDs).
	Members []uint64
	// Appended are the entries written to the WAL; the raft log is
	// committed through the last of them.
	Appended []*raftpb.Entry
}

// ForceNew reports what --force-new-cluster did at Open (nil when it was
// not asked for or the member was new).
func (e *Engine) ForceNew() *ForceNewResult { return e.forceNew }

// forceNewCluster rewrites the raft state read from the WAL as etcd does
// for --force-new-cluster: the commit index becomes max(HardState.Commit,
// consistent_index); the entries above it are dropped; the conf changes
// that leave this member alone are appended at the HardState's term and
// saved (entries only: like etcd, no HardState record is written, raft
// writes one once it has a new term); the returned HardState commits
// through them, so they are applied like any committed entry and the
// members buckets end up as etcd's. snapCS is the configuration of the
// WAL snapshot record the log was read from, snapIndex its index.
func (e *Engine) forceNewCluster(snapCS *raftpb.ConfState, snapIndex uint64, hs *raftpb.HardState, ents []*raftpb.Entry) (*raftpb.HardState, []*raftpb.Entry, error) {
	st := &raftpb.HardState{}
	if hs != nil {
		st = proto.Clone(hs).(*raftpb.HardState)
	}
	res := &ForceNewResult{WALCommit: st.GetCommit()}
	commit := max(st.GetCommit(), e.ci)
	last := snapIndex
	if len(ents) > 0 {
		last = ents[len(ents)-1].GetIndex()
	}
	if commit > last {
		// etcd would append after a gap in the log and crash in raft.
		return nil, nil, fmt.Errorf("%w: the db %s has applied index %d but the WAL in %s ends at index %d (HardState commit %d): the WAL lost entries the db holds; restore the member from a snapshot instead",
			ErrForceNewCluster, e.dbPath, e.ci, e.opts.WALDir, last, st.GetCommit())
	}
	for i, ent := range ents {
		if ent.GetIndex() > commit {
			res.Discarded = len(ents) - i
			e.log.Info("discarding uncommitted WAL entries", "entry-index", ent.GetIndex(),
				"commit-index-from-wal", commit, "number-of-discarded-entries", res.Discarded)
			ents = ents[:i]
			break
		}
	}
	ids, err := EffectiveMemberIDs(snapCS, ents)
	if err != nil {
		return nil, nil, e.entryCorruption(snapIndex, err)
	}
	// A learner left alone would leave raft without voters (etcd crashes
	// applying the last removal); refuse before writing anything.
	tr := NewConfTracker(snapCS)
	for _, ent := range ents {
		if ent.GetType() == raftpb.EntryConfChange {
			var cc raftpb.ConfChange
			if err := proto.Unmarshal(ent.GetData(), &cc); err == nil {
				tr.Apply(&cc)
			}
		}
	}
	if slices.Contains(tr.cs.Learners, e.id) {
		return nil, nil, fmt.Errorf("%w: member %x is a learner in the configuration of the WAL in %s; a learner cannot be the only member of a cluster: promote it first, or force the new cluster on a voting member",
			ErrForceNewCluster, e.id, e.opts.WALDir)
	}
	add, err := ForceNewClusterEntries(ids, e.id, st.GetTerm(), commit)
	if err != nil {
		return nil, nil, err
	}
	if err := e.w.Save(&raftpb.HardState{}, add); err != nil {
		return nil, nil, fmt.Errorf("engine: --force-new-cluster: save conf changes: %w", err)
	}
	ents = append(ents, add...)
	st.Commit = proto.Uint64(commit)
	if len(ents) > 0 {
		st.Commit = proto.Uint64(ents[len(ents)-1].GetIndex())
	}
	res.Commit, res.Members, res.Appended = commit, ids, add
	e.forceNew = res
	e.log.Info("forcing restart member", "cluster-id", fmt.Sprintf("%x", e.clusterID), "local-member-id", fmt.Sprintf("%x", e.id),
		"wal-commit-index", res.WALCommit, "commit-index", st.GetCommit())
	return st, ents, nil
}

// entryCorruption turns an entryError into a corrupt.Error at the entry's
// record in the WAL (found by scanning from the snapshot's segment on).
func (e *Engine) entryCorruption(from uint64, err error) error {
	var ee *entryError
	if !errors.As(err, &ee) {
		return err
	}
	path, off := e.opts.WALDir, int64(-1)
	sc, serr := wal.NewScanner(e.opts.WALDir, wal.ScanOptions{FS: e.fs, FromIndex: from})
	if serr == nil {
		for sc.Next() {
			r := sc.Record()
			if r.Type != wal.EntryType {
				continue
			}
			if ent, uerr := wal.UnmarshalEntry(r.Data); uerr == nil && ent.GetIndex() == ee.index {
				path, off = sc.Position().Segment, sc.Position().Offset // the last record of that index wins, as in ReadAll
			}
		}
		_ = sc.Close()
		if off >= 0 {
			path = filepath.Join(e.opts.WALDir, path)
		}
	}
	return corrupt.New(path, off, corrupt.Damaged, fmt.Sprintf("--force-new-cluster: entry %d: %s", ee.index, ee.reason), ee.err)
}
