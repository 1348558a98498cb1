package server

import (
	"context"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// snapshotMethod is the one stream a learner serves.
const snapshotMethod = "/etcdserverpb.Maintenance/Snapshot"

// isLearner reports whether this member is a learner of its cluster.
func (s *Server) isLearner() bool { return s.eng.IsLearner(s.ID()) }

// requireLeader reports whether the client asked, with etcd's
// "hasleader" metadata, to be refused while there is no leader.
func requireLeader(md metadata.MD) bool {
	ks := md[rpctypes.MetadataRequireLeaderKey]
	return len(ks) > 0 && ks[0] == rpctypes.MetadataHasLeader
}

// unaryInterceptor is etcd's: a learner answers only Status and
// serializable Range; a client that requires a leader is refused without
// one.
func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	if s.isLearner() && !learnerServes(req) {
		return nil, rpctypes.ErrGRPCNotSupportedForLearner
	}
	// one copy of the metadata for both uses (FromIncomingContext copies)
	md, ok := metadata.FromIncomingContext(ctx)
	if ok && !s.metrics.countClientRequest(md, "unary") {
		return nil, rpctypes.ErrGRPCInvalidClientAPIVersion
	}
	if requireLeader(md) && s.Leader() == 0 {
		return nil, rpctypes.ErrGRPCNoLeader
	}
	resp, err := handler(ctx, req)
	s.logUnaryRequestStats(ctx, info, start, req, resp)
	return resp, err
}

func learnerServes(req any) bool {
	switch r := req.(type) {
	case *pb.StatusRequest:
		return true
	case *pb.RangeRequest:
		return r.Serializable
	}
	return false
}

// leaderStreams are the streams opened with "hasleader": etcd ends them
// with "no leader" once the member has been without a leader for an
// election timeout.
type leaderStreams struct {
	mu      sync.Mutex
	cancels map[*cancelStream]struct{}
}

type cancelStream struct {
	grpc.ServerStream
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func (c *cancelStream) Context() context.Context { return c.ctx }

// streamInterceptor is etcd's: a learner serves only Snapshot; a stream
// that requires a leader is refused without one, and ended when the leader
// is lost.
func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if s.isLearner() && info.FullMethod != snapshotMethod {
		return rpctypes.ErrGRPCNotSupportedForLearner
	}
	md, ok := metadata.FromIncomingContext(ss.Context())
	if ok && !s.metrics.countClientRequest(md, "stream") {
		return rpctypes.ErrGRPCInvalidClientAPIVersion
	}
	if !requireLeader(md) {
		return handler(srv, ss)
	}
	if s.Leader() == 0 {
		return rpctypes.ErrGRPCNoLeader
	}
	ctx, cancel := context.WithCancelCause(ss.Context())
	cs := &cancelStream{ServerStream: ss, ctx: ctx, cancel: cancel}
	s.leaderStreams.mu.Lock()
	s.leaderStreams.cancels[cs] = struct{}{}
	s.leaderStreams.mu.Unlock()
	defer func() {
		s.leaderStreams.mu.Lock()
		delete(s.leaderStreams.cancels, cs)
		s.leaderStreams.mu.Unlock()
		cancel(nil)
	}()
	return handler(srv, cs)
}

// monitorLeader ends the "hasleader" streams when no leader has been known
// for an election timeout (etcd's monitorLeader).
func (s *Server) monitorLeader() {
	defer s.wg.Done()
	election := time.Duration(s.cfg.ElectionTicks) * s.cfg.TickInterval
	for {
		select {
		case <-time.After(election):
		case <-s.stopc:
			return
		}
		if s.Leader() != 0 {
			continue
		}
		s.leaderStreams.mu.Lock()
		for cs := range s.leaderStreams.cancels {
			cs.cancel(rpctypes.ErrGRPCNoLeader)
		}
		s.leaderStreams.cancels = map[*cancelStream]struct{}{}
		s.leaderStreams.mu.Unlock()
	}
}
