package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/etckit/etckit/mvcc"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
)

// commitLoop commits the backend's pending writes every commitInterval, as
// etcd's batch committer, and records each commit's duration
// (etcd_disk_backend_commit_duration_seconds). Commits forced elsewhere
// (compaction, hashes, snapshots, the 10,000-write limit) are not timed.
func (s *Server) commitLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.commitInterval)
	defer t.Stop()
	b := s.eng.Store().Backend()
	for {
		select {
		case <-t.C:
		case <-s.stopc:
			return
		}
		// the backend's OnCommit observes the commit (metrics.go)
		if err := b.ForceCommit(); err != nil {
			s.fail(err)
			return
		}
	}
}

// leaderLoop publishes this member's attributes once a leader is known
// and, while leading, revokes expired leases (the cluster version is
// versionLoop's).
func (s *Server) leaderLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	published := false
	for {
		select {
		case <-t.C:
		case <-s.stopc:
			return
		}
		if s.Leader() == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.requestTimeout())
		if !published && s.clientURLsKnown() {
			attr := &membershippb.Attributes{Name: s.cfg.Engine.Name, ClientUrls: s.clientURLs()}
			_, err := s.propose(ctx, &pb.InternalRaftRequest{ClusterMemberAttrSet: &membershippb.ClusterMemberAttrSetRequest{
				Member_ID: s.ID(), MemberAttributes: attr}})
			if err == nil {
				published = true
				close(s.readyc)
				s.log.Info("published local member to cluster", "name", attr.Name, "client-urls", strings.Join(attr.ClientUrls, ","))
			}
		}
		if s.Leader() == s.ID() {
			for _, id := range s.eng.Store().Lessor().Expired() {
				s.metrics.leaseExpired.Inc()
				if _, err := s.propose(withRoot(ctx), &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}}); err != nil {
					s.log.Warn("could not revoke expired lease", "lease", fmt.Sprintf("%016x", id), "error", err)
				}
			}
		}
		cancel()
	}
}

// checkpointLoop is the checkpoint half of etcd's lessor runLoop: every
// 500ms the leader's lessor hands the checkpoints that are due to
// checkpointLeases (Config.LeaseCheckpoint only).
func (s *Server) checkpointLoop() {
	defer s.wg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.stopc:
			return
		}
		if s.Leader() == s.ID() {
			s.eng.Store().Lessor().CheckpointScheduled()
		}
	}
}

// checkpointLeases is etcd's checkpointer: a member that is still the
// leader (ensureLeadership) proposes one LeaseCheckpointRequest and waits
// for it to be applied, within the request timeout. As in etcd, the
// proposal carries no identity and its failure is not reported: the
// lessor learns only that this member is not the leader.
func (s *Server) checkpointLeases(_ context.Context, cps []mvcc.LeaseCheckpoint) error {
	if !s.ensureLeadership() {
		s.log.Warn("Ignore the checkpoint request because current member isn't a leader", "local-member-id", fmt.Sprintf("%x", s.ID()))
		return mvcc.ErrNotPrimary
	}
	req := &pb.LeaseCheckpointRequest{Checkpoints: make([]*pb.LeaseCheckpoint, len(cps))}
	for i, c := range cps {
		req.Checkpoints[i] = &pb.LeaseCheckpoint{ID: c.ID, Remaining_TTL: c.RemainingTTL}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.requestTimeout())
	defer cancel()
	if _, err := s.propose(ctx, &pb.InternalRaftRequest{LeaseCheckpoint: req}); err != nil {
		s.log.Debug("lease checkpoint not applied", "checkpoints", len(cps), "error", err)
	}
	return nil
}

// ensureLeadership is etcd's: a ReadIndex round confirms that this member
// still leads (a quorum answered its heartbeat) and the leader is itself.
func (s *Server) ensureLeadership() bool {
	ctx, cancel := context.WithTimeout(context.Background(), s.requestTimeout())
	defer cancel()
	if err := s.linearizableReadNotify(ctx); err != nil {
		return false
	}
	return s.Leader() == s.ID()
}
