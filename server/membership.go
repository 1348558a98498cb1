package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/transport"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// healthInterval is etcd's HealthInterval: a peer counts as connected
// when it has been active at least this long.
const healthInterval = 5 * time.Second

// readyPercent is etcd's readyPercentThreshold for promoting a learner.
const readyPercent = 0.9

// Errors of the membership checks, as etcd's.
var (
	errNotEnoughStartedMembers = errors.New("etcdserver: re-configuration failed due to not enough started members")
	errUnhealthy               = errors.New("etcdserver: unhealthy cluster")
	errLearnerNotReady         = errors.New("etcdserver: can only promote a learner member which is in sync with leader")
	errNotLeader               = errors.New("etcdserver: not leader")
)

// onLoop runs fn on the raft loop and waits for it.
func (s *Server) onLoop(ctx context.Context, fn func()) error {
	done := make(chan struct{})
	select {
	case s.reportc <- func() { fn(); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stopc:
		return rpctypes.ErrGRPCStopped
	}
	select {
	case <-done:
		return nil
	case <-s.stopc:
		return rpctypes.ErrGRPCStopped
	}
}

// waitLeader waits until a leader is known.
func (s *Server) waitLeader(ctx context.Context) (uint64, error) {
	for {
		if l := s.Leader(); l != raft.None {
			return l, nil
		}
		select {
		case <-time.After(s.cfg.TickInterval):
		case <-ctx.Done():
			return 0, s.timeoutErr()
		case <-s.stopc:
			return 0, rpctypes.ErrGRPCStopped
		}
	}
}

// raftStatus is raft's status, read on the raft loop.
func (s *Server) raftStatus(ctx context.Context) (raft.Status, error) {
	var st raft.Status
	err := s.onLoop(ctx, func() { st = s.rn.Status() })
	return st, err
}

// configure proposes a conf change and waits until it is applied (etcd's
// EtcdServer.configure); the result is the members after it.
func (s *Server) configure(ctx context.Context, cc *raftpb.ConfChange) ([]engine.Member, error) {
	ctx, cancel := context.WithTimeout(ctx, s.requestTimeout())
	defer cancel()
	if _, err := s.waitLeader(ctx); err != nil {
		return nil, err
	}
	id := s.reqID.next()
	cc.Id = proto.Uint64(id)
	ch := make(chan engine.Result, 1)
	s.waitMu.Lock()
	s.waits[id] = waiter{ch: ch, expiry: time.Now().Add(s.requestTimeout()).UnixNano()}
	s.waitMu.Unlock()
	unregister := func() {
		s.waitMu.Lock()
		delete(s.waits, id)
		s.waitMu.Unlock()
	}
	var perr error
	if err := s.onLoop(ctx, func() { perr = s.rn.ProposeConfChange(cc) }); err != nil {
		unregister()
		return nil, err
	}
	if perr != nil {
		unregister()
		return nil, perr
	}
	select {
	case res := <-ch:
		if res.Err == errProposalTimeout {
			return nil, s.timeoutErr()
		}
		if res.Err != nil {
			return nil, res.Err
		}
		return s.eng.Members(), nil
	case <-ctx.Done():
		unregister()
		return nil, s.timeoutErr()
	case <-s.stopc:
		unregister()
		return nil, rpctypes.ErrGRPCStopped
	}
}

// started counts the voting members that have published their attributes
// (etcd's Member.IsStarted), and all voting members, leaving out skip.
func (s *Server) votingMembers(skip uint64) (started, all int, ids []uint64) {
	for _, m := range s.eng.Members() {
		if m.IsLearner || m.ID == skip {
			continue
		}
		all++
		ids = append(ids, m.ID)
		if m.Name != "" {
			started++
		}
	}
	return started, all, ids
}

// connectedSince counts the members of ids this member has been connected
// to since t (itself included), as etcd's numConnectedSince.
func (s *Server) connectedSince(t time.Time, ids []uint64) int {
	n := 0
	for _, id := range ids {
		if id == s.ID() {
			n++
			continue
		}
		if s.tr == nil {
			continue
		}
		if since := s.tr.ActiveSince(id); !since.IsZero() && !since.After(t) {
			n++
		}
	}
	return n
}

// mayAddMember is etcd's strict reconfiguration check for MemberAdd.
func (s *Server) mayAddMember(learner bool) error {
	if s.cfg.DisableStrictReconfigCheck {
		return nil
	}
	started, all, ids := s.votingMembers(0)
	if !learner {
		n := all + 1
		if !(started == 1 && n == 2) && started < n/2+1 {
			return errNotEnoughStartedMembers
		}
	}
	// Connected to what will be a quorum after the add (etcd's
	// isConnectedToQuorumAfterAddingNewMemberSince); a single member may
	// always grow.
	if len(ids) > 1 && s.connectedSince(time.Now().Add(-healthInterval), ids) < (len(ids)+1)/2+1 {
		return errUnhealthy
	}
	return nil
}

// mayRemoveMember is etcd's strict reconfiguration check for MemberRemove.
func (s *Server) mayRemoveMember(id uint64) error {
	if s.cfg.DisableStrictReconfigCheck {
		return nil
	}
	if m, ok := s.eng.Member(id); ok && m.IsLearner {
		return nil
	}
	started, all, _ := s.votingMembers(id)
	if started < all/2+1 {
		return errNotEnoughStartedMembers
	}
	if id != s.ID() && (s.tr == nil || s.tr.ActiveSince(id).IsZero()) {
		return nil // removing a member that is down keeps the quorum as it is
	}
	_, _, ids := s.votingMembers(0)
	if s.connectedSince(time.Now().Add(-healthInterval), ids)-1 < 1+(len(ids)-1)/2 {
		return errUnhealthy
	}
	return nil
}

// mayPromoteMember is etcd's check for MemberPromote, on the leader.
func (s *Server) mayPromoteMember(ctx context.Context, id uint64) error {
	if err := s.waitAppliedCommit(ctx); err != nil {
		return rpctypes.ErrGRPCTimeoutWaitAppliedIndex
	}
	st, err := s.raftStatus(ctx)
	if err != nil {
		return err
	}
	if st.Progress == nil {
		return errNotLeader
	}
	pr, ok := st.Progress[id]
	if !ok {
		return engine.ErrIDNotFound
	}
	if lead, ok := st.Progress[st.ID]; !ok || float64(pr.Match)/float64(lead.Match) < readyPercent {
		return errLearnerNotReady
	}
	if s.cfg.DisableStrictReconfigCheck {
		return nil
	}
	started, all, _ := s.votingMembers(0)
	if started+1 < (all+1)/2+1 {
		return errNotEnoughStartedMembers
	}
	return nil
}

func memberContext(m engine.Member) []byte {
	b, _ := json.Marshal(m)
	return b
}

func toPBMembers(ms []engine.Member) []*pb.Member {
	out := make([]*pb.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, &pb.Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner})
	}
	return out
}

// membershipErr maps the membership errors to etcd's gRPC ones.
func membershipErr(err error) error {
	switch {
	case errors.Is(err, engine.ErrIDRemoved), errors.Is(err, engine.ErrIDNotFound):
		return rpctypes.ErrGRPCMemberNotFound
	case errors.Is(err, engine.ErrIDExists):
		return rpctypes.ErrGRPCMemberExist
	case errors.Is(err, engine.ErrPeerURLExists):
		return rpctypes.ErrGRPCPeerURLExist
	case errors.Is(err, engine.ErrMemberNotLearner):
		return rpctypes.ErrGRPCMemberNotLearner
	case errors.Is(err, engine.ErrTooManyLearners):
		return rpctypes.ErrGRPCTooManyLearners
	case errors.Is(err, errNotEnoughStartedMembers):
		return rpctypes.ErrGRPCMemberNotEnoughStarted
	case errors.Is(err, errLearnerNotReady):
		return rpctypes.ErrGRPCLearnerNotReady
	case errors.Is(err, errUnhealthy):
		return rpctypes.ErrGRPCUnhealthy
	case errors.Is(err, errNotLeader):
		return rpctypes.ErrGRPCNotLeader
	}
	return toGRPCError(err)
}

// parsePeerURLs checks a member's peer URLs as etcd's types.NewURLs and
// returns them sorted, or etcd's "given member URLs are invalid".
func parsePeerURLs(in []string) ([]string, error) {
	urls, err := transport.ParseURLs(in)
	if err != nil || len(urls) == 0 {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = u.String()
	}
	return out, nil
}

func (c *clusterServer) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	peerURLs, err := parsePeerURLs(r.PeerURLs)
	if err != nil {
		return nil, err
	}
	if err := c.s.checkAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	now := time.Now().Unix()
	m := engine.Member{ID: engine.MemberID(peerURLs, "", &now), PeerURLs: peerURLs, IsLearner: r.IsLearner}
	if err := c.s.mayAddMember(r.IsLearner); err != nil {
		return nil, membershipErr(err)
	}
	cc := &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(m.ID), Context: memberContext(m)}
	if r.IsLearner {
		cc.Type = raftpb.ConfChangeAddLearnerNode.Enum()
	}
	ms, err := c.s.configure(ctx, cc)
	if err != nil {
		return nil, membershipErr(err)
	}
	return &pb.MemberAddResponse{Header: c.header(), Member: &pb.Member{ID: m.ID, PeerURLs: m.PeerURLs, IsLearner: m.IsLearner},
		Members: toPBMembers(ms)}, nil
}

func (c *clusterServer) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	if err := c.s.checkAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	if err := c.s.mayRemoveMember(r.ID); err != nil {
		return nil, membershipErr(err)
	}
	ms, err := c.s.configure(ctx, &raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: proto.Uint64(r.ID)})
	if err != nil {
		return nil, membershipErr(err)
	}
	return &pb.MemberRemoveResponse{Header: c.header(), Members: toPBMembers(ms)}, nil
}

func (c *clusterServer) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	peerURLs, err := parsePeerURLs(r.PeerURLs)
	if err != nil {
		return nil, err
	}
	if err := c.s.checkAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	m := engine.Member{ID: r.ID, PeerURLs: peerURLs}
	ms, err := c.s.configure(ctx, &raftpb.ConfChange{Type: raftpb.ConfChangeUpdateNode.Enum(), NodeId: proto.Uint64(r.ID), Context: memberContext(m)})
	if err != nil {
		return nil, membershipErr(err)
	}
	return &pb.MemberUpdateResponse{Header: c.header(), Members: toPBMembers(ms)}, nil
}

func (c *clusterServer) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	if err := c.s.checkAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	ms, err := c.s.promoteMember(ctx, r.ID)
	if err != nil {
		if c.s.Leader() == c.s.ID() {
			c.s.metrics.learnerPromoteFailed.WithLabelValues(err.Error()).Inc()
		}
		return nil, membershipErr(err)
	}
	if c.s.Leader() == c.s.ID() {
		c.s.metrics.learnerPromoteOK.Inc()
	}
	return &pb.MemberPromoteResponse{Header: c.header(), Members: toPBMembers(ms)}, nil
}

// promoteMember promotes a learner on the leader, or asks the leader to
// over its peer URL /members/promote/<id> (etcd's PromoteMember).
func (s *Server) promoteMember(ctx context.Context, id uint64) ([]engine.Member, error) {
	if s.Leader() == s.ID() {
		return s.promoteOnLeader(ctx, id)
	}
	cctx, cancel := context.WithTimeout(ctx, s.requestTimeout())
	defer cancel()
	for cctx.Err() == nil {
		if _, err := s.waitLeader(cctx); err != nil {
			return nil, err
		}
		if s.Leader() == s.ID() {
			return s.promoteOnLeader(ctx, id)
		}
		urls, err := s.leaderPeerURLs()
		if err != nil {
			continue
		}
		for _, u := range urls {
			ms, err := s.promoteHTTP(cctx, u, id)
			if err == nil {
				return ms, nil
			}
			if errors.Is(err, errLearnerNotReady) || errors.Is(err, engine.ErrIDNotFound) || errors.Is(err, engine.ErrMemberNotLearner) {
				return nil, err
			}
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-cctx.Done():
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, rpctypes.ErrGRPCTimeout
}

func (s *Server) promoteOnLeader(ctx context.Context, id uint64) ([]engine.Member, error) {
	if err := s.mayPromoteMember(ctx, id); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(confChangePromote{ID: id, PeerURLs: nil, IsPromote: true})
	return s.configure(ctx, &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(id), Context: b})
}

// confChangePromote is etcd's ConfigChangeContext of a promotion: the
// member's ID and isPromote (its peerURLs empty).
type confChangePromote struct {
	ID        uint64   `json:"id"`
	PeerURLs  []string `json:"peerURLs"`
	IsPromote bool     `json:"isPromote"`
}

func (s *Server) promoteHTTP(ctx context.Context, peerURL string, id uint64) ([]engine.Member, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, peerURL+"/members/promote/"+strconv.FormatUint(id, 10), nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.peerClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	body := string(b)
	switch resp.StatusCode {
	case http.StatusOK:
		var ms []engine.Member
		if err := json.Unmarshal(b, &ms); err != nil {
			return nil, err
		}
		return ms, nil
	case http.StatusRequestTimeout:
		return nil, rpctypes.ErrGRPCTimeout
	case http.StatusPreconditionFailed:
		switch {
		case strings.Contains(body, errLearnerNotReady.Error()):
			return nil, errLearnerNotReady
		case strings.Contains(body, engine.ErrMemberNotLearner.Error()):
			return nil, engine.ErrMemberNotLearner
		}
		return nil, fmt.Errorf("promote: %s", strings.TrimSpace(body))
	case http.StatusNotFound:
		return nil, engine.ErrIDNotFound
	}
	return nil, fmt.Errorf("promote: leader answered %d %s", resp.StatusCode, strings.TrimSpace(body))
}

// servePromote is the peer endpoint POST /members/promote/<decimal id>.
func (s *Server) servePromote(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	idStr := strings.TrimPrefix(r.URL.Path, "/members/promote/")
	id, err := strconv.ParseUint(idStr, 10, 64)
	if err != nil {
		http.Error(w, fmt.Sprintf("member %s not found in cluster", idStr), http.StatusNotFound)
		return
	}
	ms, err := s.promoteMember(r.Context(), id)
	switch {
	case err == nil:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Etcd-Cluster-ID", fmt.Sprintf("%x", s.ClusterID()))
		_ = json.NewEncoder(w).Encode(ms)
	case errors.Is(err, engine.ErrIDNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
	case errors.Is(err, engine.ErrMemberNotLearner), errors.Is(err, errLearnerNotReady):
		http.Error(w, err.Error(), http.StatusPreconditionFailed)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"message":"Internal Server Error"}`))
	}
}

// MoveLeader hands leadership to another voting member (etcd's
// MoveLeader): only the leader does it, and it answers once the
// transferee leads or the request times out.
func (m *maintenanceServer) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	if err := m.s.checkAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	s := m.s
	if s.Leader() != s.ID() {
		return nil, rpctypes.ErrGRPCNotLeader
	}
	var voter bool
	for _, mb := range s.eng.Members() {
		if mb.ID == r.TargetID && !mb.IsLearner {
			voter = true
		}
	}
	if !voter || r.TargetID == 0 {
		return nil, rpctypes.ErrGRPCBadLeaderTransferee
	}
	ctx, cancel := context.WithTimeout(ctx, s.requestTimeout())
	defer cancel()
	if err := s.onLoop(ctx, func() { s.rn.TransferLeader(r.TargetID) }); err != nil {
		return nil, toGRPCError(err)
	}
	for s.Leader() != r.TargetID {
		select {
		case <-time.After(s.cfg.TickInterval):
		case <-ctx.Done():
			return nil, status.Error(codes.Unknown, "etcdserver: request timed out, leader transfer took too long")
		case <-s.stopc:
			return nil, rpctypes.ErrGRPCStopped
		}
	}
	hdr := &pb.ResponseHeader{}
	s.fill(hdr)
	return &pb.MoveLeaderResponse{Header: hdr}, nil
}
