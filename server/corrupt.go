package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/transport"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Corruption detection across members, as etcd's corruptionChecker
// (server/etcdserver/corrupt.go). Every member's MVCC hash (HashKV: a
// CRC-32C over the key bucket up to a revision, etcd's hash byte for byte)
// must be equal at equal revisions and compaction revisions; each check
// asks the peers for theirs over the peer endpoint GET /members/hashkv:
//
//   - the initial check (feature gate InitialCorruptCheck), at start of a
//     member that has data, before it joins raft or serves anything: a
//     peer with the same compaction revision and another hash makes the
//     start fail ("<id> found data inconsistency with peers");
//   - the periodic check (--corrupt-check-time > 0), on the leader: the
//     leader's hash at its head, the peers' at that revision, a
//     linearizable read, then the leader's again; a follower ahead of the
//     leader, compacted past it, or with another hash at the same
//     compaction revision is alarmed (one alarm a check);
//   - the compaction hash check (feature gate CompactHashCheck, every
//     --compact-hash-check-time), on the leader: for each hash the last
//     compactions recorded, newest first, the peers' hash at that
//     revision; the members outside the quorum's hash are alarmed (member
//     0 when no hash has a quorum).
//
// An alarm is the CORRUPT alarm proposed through raft: every member then
// refuses everything but reads (engine's alarm gate), and `etcdctl alarm
// list`, /health and /readyz show it.

// peerHashKVPath is etcd's PeerHashKVPath.
const peerHashKVPath = "/members/hashkv"

// peerHashKV is one peer's answer (etcd's peerHashKVResp): resp or err.
type peerHashKV struct {
	id   uint64
	eps  []string
	resp *pb.HashKVResponse
	err  error
}

// corruptChecker holds the compaction hash check's progress.
type corruptChecker struct {
	mu                    sync.Mutex
	latestRevisionChecked int64
}

// errPeerFutureRev and errPeerCompacted are what a peer's 400 answer maps to
// (etcd's rpctypes.ErrFutureRev and ErrCompacted).
var (
	errPeerFutureRev = errors.New("etcdserver: mvcc: required revision is a future revision")
	errPeerCompacted = errors.New("etcdserver: mvcc: required revision has been compacted")
)

// hashKVByRev is etcd's HashByRev: GET url/members/hashkv with the JSON
// request as its body and the cluster ID in X-Etcd-Cluster-ID.
func hashKVByRev(ctx context.Context, cid uint64, client *http.Client, url string, rev int64) (*pb.HashKVResponse, error) {
	body, err := json.Marshal(&pb.HashKVRequest{Revision: rev})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+peerHashKVPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Etcd-Cluster-ID", fmt.Sprintf("%x", cid))
	c := *client
	c.Timeout = 0 // ctx bounds it
	status, b, err := peerDo(&c, req)
	if err != nil {
		return nil, err
	}
	switch status {
	case http.StatusBadRequest:
		if strings.Contains(string(b), mvcc.ErrCompacted.Error()) {
			return nil, errPeerCompacted
		}
		if strings.Contains(string(b), mvcc.ErrFutureRev.Error()) {
			return nil, errPeerFutureRev
		}
	case http.StatusPreconditionFailed:
		if strings.Contains(string(b), transport.ErrClusterIDMismatch.Error()) {
			return nil, transport.ErrClusterIDMismatch
		}
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("unknown error: %s", b)
	}
	var out pb.HashKVResponse
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// peerHashKVs is etcd's getPeerHashKVs: every other member's hash at rev,
// from the first of its peer URLs that answers, each within the request
// timeout; a member none of whose URLs answers is there with the last
// error.
func (s *Server) peerHashKVs(rev int64) []*peerHashKV {
	var out []*peerHashKV
	for _, m := range s.eng.Members() {
		if m.ID == s.ID() || len(m.PeerURLs) == 0 {
			continue
		}
		p := &peerHashKV{id: m.ID, eps: m.PeerURLs}
		for _, ep := range m.PeerURLs {
			ctx, cancel := context.WithTimeout(context.Background(), s.requestTimeout())
			p.resp, p.err = hashKVByRev(ctx, s.ClusterID(), s.peerClient, ep, rev)
			cancel()
			if p.err == nil {
				break
			}
			s.log.Warn("failed hash kv request", "local-member-id", fmt.Sprintf("%x", s.ID()),
				"requested-revision", rev, "remote-peer-endpoint", ep, "error", p.err)
		}
		out = append(out, p)
	}
	return out
}

// initialCorruptCheck is etcd's InitialCheck.
func (s *Server) initialCorruptCheck() error {
	id := fmt.Sprintf("%x", s.ID())
	s.log.Info("starting initial corruption check", "local-member-id", id, "timeout", s.requestTimeout().String())
	h, _, err := s.eng.Store().HashKV(0)
	if err != nil {
		return fmt.Errorf("%s failed to fetch hash (%w)", id, err)
	}
	mismatch := 0
	for _, p := range s.peerHashKVs(h.Revision) {
		fields := []any{"local-member-id", id, "local-member-revision", h.Revision,
			"local-member-compact-revision", h.CompactRevision, "local-member-hash", h.Hash,
			"remote-peer-id", fmt.Sprintf("%x", p.id), "remote-peer-endpoints", p.eps}
		if p.resp != nil {
			fields = append(fields, "remote-peer-revision", p.resp.GetHeader().GetRevision(),
				"remote-peer-compact-revision", p.resp.CompactRevision, "remote-peer-hash", p.resp.Hash)
			if h.Hash != p.resp.Hash {
				if h.CompactRevision == p.resp.CompactRevision {
					s.log.Warn("found different hash values from remote peer", fields...)
					mismatch++
				} else {
					s.log.Warn("found different compact revision values from remote peer", fields...)
				}
			}
			continue
		}
		fields = append(fields, "error", p.err)
		switch {
		case errors.Is(p.err, errPeerFutureRev):
			s.log.Warn("cannot fetch hash from slow remote peer", fields...)
		case errors.Is(p.err, errPeerCompacted):
			s.log.Warn("cannot fetch hash from remote peer; local member is behind", fields...)
		case errors.Is(p.err, transport.ErrClusterIDMismatch):
			s.log.Warn("cluster ID mismatch", fields...)
		}
	}
	if mismatch > 0 {
		return fmt.Errorf("%s found data inconsistency with peers", id)
	}
	s.log.Info("initial corruption checking passed; no corruption", "local-member-id", id)
	return nil
}

// periodicCorruptCheck is etcd's PeriodicCheck, run by the leader.
func (s *Server) periodicCorruptCheck() error {
	st := s.eng.Store()
	h, _, err := st.HashKV(0)
	if err != nil {
		return err
	}
	peers := s.peerHashKVs(h.Revision)
	ctx, cancel := context.WithTimeout(context.Background(), s.requestTimeout())
	err = s.linearizableReadNotify(ctx)
	cancel()
	if err != nil {
		return err
	}
	h2, rev2, err := st.HashKV(0)
	if err != nil {
		return err
	}
	alarmed := false
	mismatch := func(id uint64) {
		if !alarmed {
			alarmed = true
			s.triggerCorruptAlarm(id)
		}
	}
	local := fmt.Sprintf("%x", s.ID())
	if h2.Hash != h.Hash && h2.Revision == h.Revision && h.CompactRevision == h2.CompactRevision {
		s.log.Warn("found hash mismatch", "revision-1", h.Revision, "compact-revision-1", h.CompactRevision,
			"hash-1", h.Hash, "revision-2", h2.Revision, "compact-revision-2", h2.CompactRevision, "hash-2", h2.Hash)
		mismatch(s.ID())
	}
	for _, p := range peers {
		if p.resp == nil {
			continue
		}
		fields := []any{"leader-id", local, "leader-revision", rev2, "leader-compact-revision", h2.CompactRevision,
			"leader-hash", h.Hash, "follower-id", fmt.Sprintf("%x", p.id),
			"follower-revision", p.resp.GetHeader().GetRevision(), "follower-compact-revision", p.resp.CompactRevision,
			"follower-hash", p.resp.Hash}
		if p.resp.GetHeader().GetRevision() > rev2 {
			s.log.Warn("revision from follower must be less than or equal to leader's", fields...)
			mismatch(p.id)
		}
		if p.resp.CompactRevision > h2.CompactRevision {
			s.log.Warn("compact revision from follower must be less than or equal to leader's", fields...)
			mismatch(p.id)
		}
		if p.resp.CompactRevision == h.CompactRevision && p.resp.Hash != h.Hash {
			s.log.Warn("same compact revision then hashes must match", fields...)
			mismatch(p.id)
		}
	}
	return nil
}

// compactHashCheck is etcd's CompactHashCheck, run by the leader: the
// compaction hashes not checked yet, newest first, until one is settled
// (all peers agree, or a mismatch is alarmed).
func (s *Server) compactHashCheck() {
	s.log.Info("starting compact hash check", "local-member-id", fmt.Sprintf("%x", s.ID()), "timeout", s.requestTimeout().String())
	hashes := s.uncheckedCompactHashes()
	for i, h := range hashes {
		peers := s.peerHashKVs(h.Revision)
		if len(peers) == 0 {
			continue
		}
		if s.checkPeerHashes(h, peers) {
			s.log.Info("finished compaction hash check", "number-of-hashes-checked", i+1)
			return
		}
		s.log.Warn("skipped revision in compaction hash check; was not able to check all peers", "number-of-peers-checked", len(peers), "revision", h.Revision, "compact-revision", h.CompactRevision)
	}
	s.log.Info("finished compaction hash check", "number-of-hashes-checked", len(hashes))
}

// uncheckedCompactHashes are the store's compaction hashes newer than the
// last one settled, newest first.
func (s *Server) uncheckedCompactHashes() []mvcc.KeyValueHash {
	s.corrupt.mu.Lock()
	last := s.corrupt.latestRevisionChecked
	s.corrupt.mu.Unlock()
	hashes := s.eng.Store().Hashes()
	sort.Slice(hashes, func(i, j int) bool { return hashes[i].Revision > hashes[j].Revision })
	for i, h := range hashes {
		if h.Revision <= last {
			return hashes[:i]
		}
	}
	return hashes
}

// checkPeerHashes is etcd's: it groups the members by hash among those
// with the leader's compaction revision. One group: settled if every peer
// was checked. More: the members outside a quorum's group are alarmed, or
// member 0 when no group has a quorum. It says whether the revision is
// settled.
func (s *Server) checkPeerHashes(leader mvcc.KeyValueHash, peers []*peerHashKV) bool {
	groups := map[uint32][]uint64{leader.Hash: {s.ID()}}
	checked := 0
	for _, p := range peers {
		if p.resp == nil || p.resp.CompactRevision != leader.CompactRevision {
			continue
		}
		checked++
		groups[p.resp.Hash] = append(groups[p.resp.Hash], p.id)
	}
	if len(groups) == 1 {
		if checked != len(peers) {
			return false
		}
		s.log.Info("successfully checked hash on whole cluster", "number-of-peers-checked", checked,
			"revision", leader.Revision, "compactRevision", leader.CompactRevision)
		s.corrupt.mu.Lock()
		if leader.Revision > s.corrupt.latestRevisionChecked {
			s.corrupt.latestRevisionChecked = leader.Revision
		}
		s.corrupt.mu.Unlock()
		return true
	}
	quorum := (len(peers)+1)/2 + 1
	quorumExist := false
	// The groups in a fixed order: a tie in size cannot have a quorum,
	// so the order changes nothing but the log's.
	hashes := make([]uint32, 0, len(groups))
	for h := range groups {
		hashes = append(hashes, h)
	}
	sort.Slice(hashes, func(i, j int) bool { return hashes[i] < hashes[j] })
	for i, h := range hashes {
		if len(groups[h]) >= quorum {
			quorumExist = true
			hashes = append(hashes[:i], hashes[i+1:]...)
			break
		}
	}
	if !quorumExist {
		s.log.Error("Detected compaction hash mismatch but cannot identify the corrupted members, so intentionally set the memberID as 0")
		s.triggerCorruptAlarm(0)
	}
	for _, h := range hashes {
		ids := make([]string, len(groups[h]))
		for i, id := range groups[h] {
			ids[i] = fmt.Sprintf("%x", id)
			if quorumExist {
				s.triggerCorruptAlarm(id)
			}
		}
		s.log.Error("Detected compaction hash mismatch", "quorum-exist", quorumExist, "revision", leader.Revision,
			"compactRevision", leader.CompactRevision, "hash", h, "members", ids)
	}
	return true
}

// triggerCorruptAlarm proposes the CORRUPT alarm for member id, as etcd's:
// in the background, with no identity.
func (s *Server) triggerCorruptAlarm(id uint64) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// propose gives up when the member stops, and its waiter expires
		// after the request timeout.
		if _, err := s.propose(withRoot(context.Background()), &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{
			Action: pb.AlarmRequest_ACTIVATE, MemberID: id, Alarm: pb.AlarmType_CORRUPT}}); err != nil {
			s.log.Warn("failed to raise the CORRUPT alarm", "member-id", fmt.Sprintf("%x", id), "error", err)
		}
	}()
}

// monitorKVHash is etcd's: every CorruptCheckTime, the leader's periodic
// check.
func (s *Server) monitorKVHash() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.CorruptCheckTime)
	defer t.Stop()
	s.log.Info("enabled corruption checking", "local-member-id", fmt.Sprintf("%x", s.ID()), "interval", s.cfg.CorruptCheckTime.String())
	for {
		select {
		case <-s.stopc:
			s.log.Info("server has stopped; stopping kv hash's monitor")
			return
		case <-t.C:
		}
		if s.Leader() != s.ID() {
			continue
		}
		if err := s.periodicCorruptCheck(); err != nil {
			s.log.Warn("failed to check hash KV", "error", err)
		}
	}
}

// monitorCompactHash is etcd's: every CompactHashCheckTime, the leader's
// compaction hash check.
func (s *Server) monitorCompactHash() {
	defer s.wg.Done()
	for {
		select {
		case <-time.After(s.cfg.CompactHashCheckTime):
		case <-s.stopc:
			s.log.Info("server has stopped; stopping compact hash's monitor")
			return
		}
		if s.Leader() != s.ID() {
			continue
		}
		s.compactHashCheck()
	}
}
