package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/etckit/etckit/auth"
	"github.com/etckit/etckit/mvcc"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Result is the outcome of one applied normal entry, for the proposer
// waiting on its request ID.
type Result struct {
	ID    uint64        // request ID (header.ID, or the legacy ID); 0: nobody waits
	Index uint64        // raft index of the entry
	Resp  proto.Message // the *pb.XxxResponse
	Err   error         // the request's error (a client error, not a storage failure)
}

// ErrUnsupported answers requests etckit does not apply (DowngradeVersionTest,
// which only etcd's own tests send).
var ErrUnsupported = errors.New("etcdserver: request is not supported by etckit")

// ConfChanger applies a committed conf change to the raft node and returns
// the new configuration (raft.Node.ApplyConfChange).
type ConfChanger func(cc raftpb.ConfChangeI) *raftpb.ConfState

// Apply applies committed entries in order. Entries at or below the db's
// consistent_index were applied before a restart and only go to raft (conf
// changes); the others change the store, with consistent_index and term
// written in the same bbolt transaction as their data. done is called for
// every applied normal entry and every applied conf change that has an ID
// (a proposer waits for it; a refused one carries the reason). The error
// is a storage failure: the member must stop.
func (e *Engine) Apply(ents []*raftpb.Entry, applyConf ConfChanger, done func(Result)) error {
	if err := e.store.BackgroundErr(); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	for _, ent := range ents {
		idx, term := ent.GetIndex(), ent.GetTerm()
		var err error
		switch ent.GetType() {
		case raftpb.EntryNormal:
			err = e.applyNormal(ent, done)
		case raftpb.EntryConfChange:
			var cc raftpb.ConfChange
			if uerr := proto.Unmarshal(ent.GetData(), &cc); uerr != nil {
				return fmt.Errorf("engine: entry %d: decode ConfChange: %w", idx, uerr)
			}
			err = e.applyConfChange(idx, term, &cc, applyConf, done)
		case raftpb.EntryConfChangeV2:
			var cc raftpb.ConfChangeV2
			if uerr := proto.Unmarshal(ent.GetData(), &cc); uerr != nil {
				return fmt.Errorf("engine: entry %d: decode ConfChangeV2: %w", idx, uerr)
			}
			cs := applyConf(&cc)
			e.setConfState(cs)
			err = e.withIndex(idx, term, func() error { return e.saveConfState(cs) })
		}
		if err != nil {
			return err
		}
		e.mu.Lock()
		e.appliedIndex, e.appliedTerm = idx, term
		e.mu.Unlock()
	}
	return nil
}

// withIndex runs fn and records (index, term) as the db's consistent index,
// all in one bbolt transaction; entries at or below the consistent index are
// skipped.
func (e *Engine) withIndex(index, term uint64, fn func() error) error {
	if index <= e.ci {
		return nil
	}
	err := e.store.Backend().HoldCommits(func() error {
		if err := fn(); err != nil {
			return err
		}
		return e.store.SetConsistentIndex(index, term)
	})
	if err == nil {
		e.ci = index
	}
	return err
}

// applyNormal applies one EntryNormal.
func (e *Engine) applyNormal(ent *raftpb.Entry, done func(Result)) error {
	idx, term := ent.GetIndex(), ent.GetTerm()
	data := ent.GetData()
	if len(data) == 0 { // a new leader's empty entry
		return e.withIndex(idx, term, func() error { return nil })
	}
	var r pb.InternalRaftRequest
	if err := proto.Unmarshal(data, &r); err != nil {
		v2, verr := DecodeV2Request(data)
		if verr != nil {
			return fmt.Errorf("engine: entry %d: neither InternalRaftRequest nor v2 Request: %w", idx, err)
		}
		return e.withIndex(idx, term, func() error { return e.applyV2(v2) })
	}
	if r.GetHeader() == nil && len(r.ProtoReflect().GetUnknown()) > 0 {
		// Nothing but unknown fields: a v2 Request (v3.5 WALs).
		if v2, err := DecodeV2Request(data); err == nil {
			return e.withIndex(idx, term, func() error { return e.applyV2(v2) })
		}
	}
	res := Result{Index: idx, ID: r.GetHeader().GetID()}
	if res.ID == 0 {
		res.ID = r.GetID()
	}
	if idx <= e.ci {
		return nil
	}
	if e.opts.OnApply != nil {
		start := time.Now()
		defer func() { e.opts.OnApply(&r, res.Resp, time.Since(start), res.Err != nil) }()
	}
	if c := r.GetCompaction(); c != nil {
		// Compact persists its schedule and commits by itself; replaying it
		// after a crash before consistent_index is committed answers
		// ErrCompacted and changes nothing.
		if res.Err = e.alarmRefuses(&r); res.Err == nil {
			res.Resp, res.Err = e.applyCompaction(c)
			if res.Err != nil && isStorageErr(res.Err) {
				return fmt.Errorf("engine: apply entry %d: compaction: %w", idx, res.Err)
			}
		}
		if err := e.withIndex(idx, term, func() error { return nil }); err != nil {
			return err
		}
		if done != nil {
			done(res)
		}
		return nil
	}
	var fatal error
	err := e.withIndex(idx, term, func() error {
		res.Resp, res.Err, fatal = e.applyRequest(&r)
		return fatal
	})
	if err != nil {
		return fmt.Errorf("engine: apply entry %d: %w", idx, err)
	}
	if done != nil {
		done(res)
	}
	return nil
}

// applyRequest applies r; fatal is a storage error.
func (e *Engine) applyRequest(r *pb.InternalRaftRequest) (resp proto.Message, reqErr, fatal error) {
	s := e.store
	split := func(m proto.Message, err error) (proto.Message, error, error) {
		if err != nil && isStorageErr(err) {
			return nil, nil, err
		}
		return m, err, nil
	}
	if auth.IsAuthRequest(r) {
		return e.auth.Apply(r, e.ci, s.Rev())
	}
	if err := e.alarmRefuses(r); err != nil {
		return nil, err, nil
	}
	// Every member checks the proposer's identity again: a permission
	// revoked between proposal and apply is seen by all in the same way.
	if err := e.auth.CheckRequest(r, s.Lessor().Keys); err != nil {
		return nil, err, nil
	}
	switch {
	case r.GetRange() != nil:
		return split(s.Range(r.GetRange()))
	case r.GetPut() != nil:
		return split(s.Put(r.GetPut()))
	case r.GetDeleteRange() != nil:
		return split(s.DeleteRange(r.GetDeleteRange()))
	case r.GetTxn() != nil:
		return split(s.Txn(r.GetTxn()))
	case r.GetLeaseGrant() != nil:
		g := r.GetLeaseGrant()
		l, err := s.Lessor().Grant(g.GetID(), g.GetTTL())
		if err != nil {
			return split(nil, err)
		}
		return &pb.LeaseGrantResponse{Header: &pb.ResponseHeader{Revision: s.Rev()}, ID: l.ID, TTL: l.TTL}, nil, nil
	case r.GetLeaseRevoke() != nil:
		if err := s.Lessor().Revoke(r.GetLeaseRevoke().GetID()); err != nil {
			return split(nil, err)
		}
		return &pb.LeaseRevokeResponse{Header: &pb.ResponseHeader{Revision: s.Rev()}}, nil, nil
	case r.GetLeaseCheckpoint() != nil:
		// etcd's shouldPersistCheckpoints: the remaining TTL goes into the
		// lease bucket with LeaseCheckpointPersist or once the cluster
		// version is 3.6 or later; before, it lives in memory only.
		persist := e.opts.LeaseCheckpointPersist || semverAtLeast36(e.ClusterVersion())
		for _, c := range r.GetLeaseCheckpoint().GetCheckpoints() {
			if err := s.Lessor().Checkpoint(c.GetID(), c.GetRemaining_TTL(), persist); err != nil && isStorageErr(err) {
				return nil, nil, err
			}
		}
		return &pb.LeaseCheckpointResponse{Header: &pb.ResponseHeader{Revision: s.Rev()}}, nil, nil
	case r.GetAlarm() != nil:
		return e.applyAlarm(r.GetAlarm())
	case r.GetClusterVersionSet() != nil:
		return &pb.ResponseHeader{}, nil, e.setClusterVersion(r.GetClusterVersionSet().GetVer())
	case r.GetDowngradeInfoSet() != nil:
		d := r.GetDowngradeInfoSet()
		return &pb.ResponseHeader{}, nil, e.setDowngradeInfo(d.GetEnabled(), d.GetVer())
	case r.GetClusterMemberAttrSet() != nil:
		a := r.GetClusterMemberAttrSet()
		return &pb.ResponseHeader{}, nil, e.setMemberAttributes(a.GetMember_ID(), a.GetMemberAttributes())
	}
	return nil, ErrUnsupported, nil
}

// isStorageErr tells a storage failure from a request error (marked by
// mvcc where it is made).
func isStorageErr(err error) bool { return !mvcc.IsRequestError(err) }

// applyCompaction compacts the index and persists the schedule; the
// compacted revisions are deleted from the db in the background (etcd's
// order: the request is answered before the physical compaction ends, and
// a client that asked for a physical one waits for it itself).
func (e *Engine) applyCompaction(c *pb.CompactionRequest) (proto.Message, error) {
	if _, err := e.store.ScheduleCompact(c.GetRevision()); err != nil {
		return nil, err
	}
	return &pb.CompactionResponse{Header: &pb.ResponseHeader{Revision: e.store.Rev()}}, nil
}

func (e *Engine) applyAlarm(a *pb.AlarmRequest) (proto.Message, error, error) {
	resp := &pb.AlarmResponse{Header: &pb.ResponseHeader{Revision: e.store.Rev()}}
	am := &pb.AlarmMember{MemberID: a.GetMemberID(), Alarm: a.GetAlarm()}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch a.GetAction() {
	case pb.AlarmRequest_GET:
		for _, x := range e.alarms {
			if a.GetAlarm() == pb.AlarmType_NONE || x.GetAlarm() == a.GetAlarm() {
				resp.Alarms = append(resp.Alarms, proto.Clone(x).(*pb.AlarmMember))
			}
		}
	case pb.AlarmRequest_ACTIVATE:
		if a.GetAlarm() == pb.AlarmType_NONE {
			return resp, nil, nil
		}
		for _, x := range e.alarms {
			if proto.Equal(x, am) {
				return resp, nil, nil
			}
		}
		key, _ := proto.Marshal(am)
		if err := e.store.Backend().Write(func(w *mvcc.WriteTx) error {
			w.Put([]byte(mvcc.BucketAlarm), key, nil)
			return nil
		}); err != nil {
			return nil, nil, err
		}
		e.alarms = append(e.alarms, am)
		resp.Alarms = append(resp.Alarms, am)
	case pb.AlarmRequest_DEACTIVATE:
		for i, x := range e.alarms {
			if proto.Equal(x, am) {
				key, _ := proto.Marshal(am)
				if err := e.store.Backend().Write(func(w *mvcc.WriteTx) error {
					w.Delete([]byte(mvcc.BucketAlarm), key)
					return nil
				}); err != nil {
					return nil, nil, err
				}
				e.alarms = append(e.alarms[:i], e.alarms[i+1:]...)
				resp.Alarms = append(resp.Alarms, am)
				break
			}
		}
	}
	return resp, nil, nil
}

// setClusterVersion records the cluster version, as etcd's SetVersion:
// a version above this member's own stops it before anything is written
// (MustDetectDowngrade), so the entry is applied again, and fails again,
// on a restart with the same binary. meta/storageVersion follows in the
// same transaction (etcd's storage monitor, see UpdateStorageVersion).
func (e *Engine) setClusterVersion(ver string) error {
	if err := e.detectDowngrade(ver); err != nil {
		return err
	}
	e.mu.Lock()
	prev := e.clusterVersion
	e.clusterVersion = ver
	e.mu.Unlock()
	if prev == "" {
		e.log.Info("set initial cluster version", "cluster-version", clusterText(ver))
	} else if prev != ver {
		e.log.Info("updated cluster version", "from", clusterText(prev), "to", clusterText(ver))
		if p, err := ParseVersion(prev); err == nil {
			if n, err := ParseVersion(ver); err == nil && n.Less(p) {
				e.log.Info("Cluster version downgrade detected, forcing snapshot", "prev-cluster-version", p.String(), "new-cluster-version", n.String())
				e.mu.Lock()
				e.forceSnapshot = true
				e.mu.Unlock()
			}
		}
	}
	sv, del, change := storageVersionFor(ver)
	return e.store.Backend().Write(func(w *mvcc.WriteTx) error {
		w.Put([]byte(mvcc.BucketCluster), []byte("clusterVersion"), []byte(ver))
		switch {
		case change && del:
			w.Delete([]byte(mvcc.BucketMeta), []byte(mvcc.MetaStorageVersion))
		case change:
			w.Put([]byte(mvcc.BucketMeta), []byte(mvcc.MetaStorageVersion), []byte(sv))
		}
		return nil
	})
}

// clusterText is etcd's version.Cluster: major.minor.0.
func clusterText(v string) string {
	if p, err := ParseVersion(v); err == nil {
		return p.MajorMinor().String()
	}
	return v
}

func semverAtLeast36(v string) bool {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	maj, err1 := strconv.Atoi(parts[0])
	mnr, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return maj > 3 || (maj == 3 && mnr >= 6)
}

func (e *Engine) setMemberAttributes(id uint64, a *membershippb.Attributes) error {
	e.mu.Lock()
	m, ok := e.members[id]
	if !ok {
		e.mu.Unlock()
		return nil // etcd ignores attributes of an unknown (removed) member
	}
	m.Name = a.GetName()
	m.ClientURLs = append([]string(nil), a.GetClientUrls()...)
	val := marshalMember(*m)
	e.mu.Unlock()
	return e.store.Backend().Write(func(w *mvcc.WriteTx) error {
		w.Put([]byte(mvcc.BucketMembers), memberKey(id), val)
		return nil
	})
}

// applyV2 applies the two v2 requests etcd v3.6 still accepts: a PUT of a
// member's attributes or of the cluster version; others are ignored.
func (e *Engine) applyV2(r *V2Request) error {
	if r.Method != "PUT" {
		return nil
	}
	p := r.Path
	switch {
	case p == "/0/version":
		return e.setClusterVersion(r.Val)
	case strings.HasPrefix(p, "/0/members/") && path.Base(p) == "attributes":
		id, err := strconv.ParseUint(path.Base(path.Dir(p)), 16, 64)
		if err != nil {
			return nil
		}
		var attr struct {
			Name       string   `json:"name,omitempty"`
			ClientURLs []string `json:"clientURLs,omitempty"`
		}
		if err := json.Unmarshal([]byte(r.Val), &attr); err != nil {
			return nil
		}
		return e.setMemberAttributes(id, &membershippb.Attributes{Name: attr.Name, ClientUrls: attr.ClientURLs})
	}
	return nil
}

// applyConfChange changes the membership (and, above the consistent index,
// the members buckets) and the raft configuration.
func (e *Engine) applyConfChange(idx, term uint64, cc *raftpb.ConfChange, applyConf ConfChanger, done func(Result)) error {
	var ctx confChangeContext
	if len(cc.GetContext()) > 0 {
		if err := json.Unmarshal(cc.GetContext(), &ctx); err != nil {
			return fmt.Errorf("engine: entry %d: conf change context is not member JSON: %w", idx, err)
		}
	}
	// etcd checks a conf change when it applies it (entries below the
	// consistent index were checked before the restart): one that fails is
	// given to raft with node 0, which raft ignores, and its proposer gets
	// the error. Every member, etcd or etckit, must decide the same way.
	if idx > e.ci {
		if verr := e.validateConfChange(cc, &ctx); verr != nil {
			rejected := proto.Clone(cc).(*raftpb.ConfChange)
			rejected.NodeId = proto.Uint64(0)
			applyConf(rejected)
			if err := e.withIndex(idx, term, func() error { return nil }); err != nil {
				return err
			}
			if done != nil && cc.GetId() != 0 {
				done(Result{ID: cc.GetId(), Index: idx, Err: verr})
			}
			return nil
		}
		// The proposer (MemberAdd and the others) hears once it is applied.
		if done != nil && cc.GetId() != 0 {
			defer done(Result{ID: cc.GetId(), Index: idx})
		}
	}
	id := cc.GetNodeId()
	var put []byte
	var del bool
	e.mu.Lock()
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
		if ctx.IsPromote {
			if m, ok := e.members[id]; ok {
				m.IsLearner = false
				put = marshalMember(*m)
			}
		} else {
			m := ctx.Member
			m.ID = id
			m.IsLearner = cc.GetType() == raftpb.ConfChangeAddLearnerNode
			e.members[id] = &m
			put = marshalMember(m)
		}
	case raftpb.ConfChangeRemoveNode:
		delete(e.members, id)
		e.removed[id] = true
		del = true
	case raftpb.ConfChangeUpdateNode:
		if m, ok := e.members[id]; ok {
			m.PeerURLs = ctx.PeerURLs
			put = marshalMember(*m)
		}
	}
	e.mu.Unlock()
	cs := applyConf(cc)
	e.setConfState(cs)
	return e.withIndex(idx, term, func() error {
		if err := e.store.Backend().Write(func(w *mvcc.WriteTx) error {
			if put != nil {
				w.Put([]byte(mvcc.BucketMembers), memberKey(id), put)
			}
			if del {
				w.Delete([]byte(mvcc.BucketMembers), memberKey(id))
				w.Put([]byte(mvcc.BucketMembersRemoved), memberKey(id), []byte("removed"))
			}
			return nil
		}); err != nil {
			return err
		}
		return e.saveConfState(cs)
	})
}

// The errors of a conf change refused when applied, with etcd's
// membership messages.
var (
	ErrIDRemoved        = errors.New("membership: ID removed")
	ErrIDExists         = errors.New("membership: ID exists")
	ErrIDNotFound       = errors.New("membership: ID not found")
	ErrPeerURLExists    = errors.New("membership: peerURL exists")
	ErrMemberNotLearner = errors.New("membership: can only promote a learner member")
	ErrTooManyLearners  = errors.New("membership: too many learner members in cluster")
)

// validateConfChange is etcd's RaftCluster.ValidateConfigurationChange,
// against the members as applied so far.
func (e *Engine) validateConfChange(cc *raftpb.ConfChange, ctx *confChangeContext) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	id := cc.GetNodeId()
	if e.removed[id] {
		return ErrIDRemoved
	}
	urlsExcept := func(skip uint64) map[string]bool {
		urls := map[string]bool{}
		for _, m := range e.members {
			if m.ID == skip {
				continue
			}
			for _, u := range m.PeerURLs {
				urls[u] = true
			}
		}
		return urls
	}
	switch cc.GetType() {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
		if ctx.IsPromote {
			m := e.members[id]
			if m == nil {
				return ErrIDNotFound
			}
			if !m.IsLearner {
				return ErrMemberNotLearner
			}
			return nil
		}
		if e.members[id] != nil {
			return ErrIDExists
		}
		urls := urlsExcept(0)
		for _, u := range ctx.PeerURLs {
			if urls[u] {
				return ErrPeerURLExists
			}
		}
		if ctx.IsLearner && cc.GetType() == raftpb.ConfChangeAddLearnerNode {
			learners := 0
			for _, m := range e.members {
				if m.IsLearner {
					learners++
				}
			}
			if learners+1 > e.opts.MaxLearners {
				return ErrTooManyLearners
			}
		}
	case raftpb.ConfChangeRemoveNode:
		if e.members[id] == nil {
			return ErrIDNotFound
		}
	case raftpb.ConfChangeUpdateNode:
		if e.members[id] == nil {
			return ErrIDNotFound
		}
		urls := urlsExcept(id)
		for _, u := range ctx.PeerURLs {
			if urls[u] {
				return ErrPeerURLExists
			}
		}
	}
	return nil
}

type confStateJSON struct {
	Voters         []uint64 `json:"voters,omitempty"`
	Learners       []uint64 `json:"learners,omitempty"`
	VotersOutgoing []uint64 `json:"voters_outgoing,omitempty"`
	LearnersNext   []uint64 `json:"learners_next,omitempty"`
	AutoLeave      bool     `json:"auto_leave"`
}

// setConfState records the configuration raft reports after a conf
// change. It runs for every conf change, also one that a restarted member
// replays below its consistent index (the db has it already, raft's
// in-memory configuration does not): the next snapshot's ConfState comes
// from here, and an empty one would leave the member without voters.
func (e *Engine) setConfState(cs *raftpb.ConfState) {
	if cs == nil {
		return
	}
	e.mu.Lock()
	e.confState = proto.Clone(cs).(*raftpb.ConfState)
	e.mu.Unlock()
}

// saveConfState writes the configuration as meta/confState.
func (e *Engine) saveConfState(cs *raftpb.ConfState) error {
	if cs == nil {
		return nil
	}
	b, _ := json.Marshal(confStateJSON{Voters: cs.GetVoters(), Learners: cs.GetLearners(),
		VotersOutgoing: cs.GetVotersOutgoing(), LearnersNext: cs.GetLearnersNext(), AutoLeave: cs.GetAutoLeave()})
	return e.store.Backend().Write(func(w *mvcc.WriteTx) error {
		w.Put([]byte(mvcc.BucketMeta), []byte(mvcc.MetaConfState), b)
		return nil
	})
}
