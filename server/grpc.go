package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math"
	"time"

	"github.com/etckit/etckit/auth"
	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/mvcc"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// newGRPCServer is the client gRPC server, with extra options (the
// transport credentials, listen.go).
func newGRPCServer(s *Server, extra ...grpc.ServerOption) *grpc.Server {
	// Fixed flow-control windows, large enough that the biggest request
	// (--max-request-bytes plus gRPC's overhead) never waits for a window
	// update. Setting them also turns off grpc-go's BDP estimation, which
	// otherwise answers a client's request with a PING of its own (and the
	// client with a PING ack): for small unary calls that is one more
	// frame and write each way. Measured with BenchmarkLoad, put with 16
	// clients: about 15% more requests per second (BENCHMARKS.md).
	window := int32(min(max(s.cfg.MaxRequestBytes+grpcOverheadBytes, 1<<20), 1<<30))
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.cfg.MaxRequestBytes + grpcOverheadBytes),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(s.cfg.MaxConcurrentStreams),
		grpc.InitialWindowSize(window),
		grpc.InitialConnWindowSize(4 * window),
	}
	// the metrics' interceptors first, as etcd's grpc_prometheus ones
	opts = append(opts, s.metrics.serverOptions()...)
	opts = append(opts, grpc.ChainUnaryInterceptor(s.unaryInterceptor), grpc.ChainStreamInterceptor(s.streamInterceptor))
	// Keepalive as etcd's embed.Etcd.serveClients: without an enforcement
	// policy grpc-go allows one client ping per 5 minutes and answers more
	// with GOAWAY ENHANCE_YOUR_CALM "too_many_pings", closing every stream
	// of the connection (kube-apiserver pings every 30 s).
	if s.cfg.GRPCKeepAliveMinTime > 0 {
		opts = append(opts, grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             s.cfg.GRPCKeepAliveMinTime,
			PermitWithoutStream: false,
		}))
	}
	if s.cfg.GRPCKeepAliveInterval > 0 && s.cfg.GRPCKeepAliveTimeout > 0 {
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    s.cfg.GRPCKeepAliveInterval,
			Timeout: s.cfg.GRPCKeepAliveTimeout,
		}))
	}
	gs := grpc.NewServer(append(opts, extra...)...)
	pb.RegisterKVServer(gs, &kvServer{s: s})
	pb.RegisterClusterServer(gs, &clusterServer{s: s})
	pb.RegisterMaintenanceServer(gs, &maintenanceServer{s: s})
	pb.RegisterLeaseServer(gs, &leaseServer{s: s})
	pb.RegisterWatchServer(gs, &watchServer{s: s})
	pb.RegisterAuthServer(gs, &authServer{s: s})
	v3lockpb.RegisterLockServer(gs, &lockServer{s: s})
	v3electionpb.RegisterElectionServer(gs, &electionServer{s: s})
	// gRPC's health service (grpc.health.v1.Health), as etcd's
	// v3rpc.Server: SERVING for every service ("") from the start, since
	// the gRPC server serves only once the member is ready.
	healthpb.RegisterHealthServer(gs, s.health)
	s.setServing(true, "")
	// grpc_server_started_total etc. at zero for every method, as etcd
	s.metrics.grpc.InitializeMetrics(gs)
	return gs
}

// toGRPCError maps an error to etcd's gRPC status (v3rpc/util.go).
func toGRPCError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return rpctypes.ErrGRPCCanceled
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return rpctypes.ErrGRPCDeadlineExceeded
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for from, to := range authErrors {
		if errors.Is(err, from) {
			return to
		}
	}
	for from, to := range map[error]error{
		mvcc.ErrCompacted:         rpctypes.ErrGRPCCompacted,
		mvcc.ErrFutureRev:         rpctypes.ErrGRPCFutureRev,
		mvcc.ErrEmptyKey:          rpctypes.ErrGRPCEmptyKey,
		mvcc.ErrKeyNotFound:       rpctypes.ErrGRPCKeyNotFound,
		mvcc.ErrValueProvided:     rpctypes.ErrGRPCValueProvided,
		mvcc.ErrLeaseProvided:     rpctypes.ErrGRPCLeaseProvided,
		mvcc.ErrTooManyOps:        rpctypes.ErrGRPCTooManyOps,
		mvcc.ErrDuplicateKey:      rpctypes.ErrGRPCDuplicateKey,
		mvcc.ErrInvalidSortOption: rpctypes.ErrGRPCInvalidSortOption,
		mvcc.ErrLeaseNotFound:     rpctypes.ErrGRPCLeaseNotFound,
		mvcc.ErrLeaseExists:       rpctypes.ErrGRPCLeaseExist,
		mvcc.ErrLeaseTTLTooLarge:  rpctypes.ErrGRPCLeaseTTLTooLarge,
		engine.ErrNoSpace:         rpctypes.ErrGRPCNoSpace,
		engine.ErrCorrupt:         rpctypes.ErrGRPCCorrupt,
	} {
		if errors.Is(err, from) {
			return to
		}
	}
	return status.Error(codes.Unknown, err.Error())
}

// fill sets the header fields etcd's header.fill sets.
func (s *Server) fill(h *pb.ResponseHeader) {
	h.ClusterId = s.ClusterID()
	h.MemberId = s.ID()
	h.RaftTerm = s.Term()
	if h.Revision == 0 {
		h.Revision = s.eng.Store().Rev()
	}
}

func (s *Server) hasAlarm(t pb.AlarmType) bool {
	for _, a := range s.eng.Alarms() {
		if a.GetAlarm() == t {
			return true
		}
	}
	return false
}

// checkQuota answers ErrNoSpace (and raises the NOSPACE alarm) when a
// write of cost bytes would take the db to --quota-backend-bytes, as etcd's
// quotaAlarmer before a proposal: the db's size (bbolt's high-water mark,
// free pages included, so a fragmented db needs a defrag) plus the cost
// must stay below the quota; a request that writes nothing (cost 0) always
// passes, and a negative quota disables the check. A write that passes
// while a NOSPACE alarm is raised is refused at apply, as in etcd.
func (s *Server) checkQuota(ctx context.Context, cost int) error {
	if cost == 0 || s.cfg.QuotaBackendBytes < 0 {
		return nil
	}
	if size, _ := s.dbSize(); size+int64(cost) < s.cfg.QuotaBackendBytes {
		return nil
	}
	_, _ = s.propose(ctx, &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{
		Action: pb.AlarmRequest_ACTIVATE, MemberID: s.ID(), Alarm: pb.AlarmType_NOSPACE}})
	return rpctypes.ErrGRPCNoSpace
}

// kvOverhead and leaseOverhead are etcd's quota costs of a key's and a
// lease's metadata.
const (
	kvOverhead    = 256
	leaseOverhead = 64
)

func putCost(r *pb.PutRequest) int { return kvOverhead + len(r.Key) + len(r.Value) }

func txnCost(r *pb.TxnRequest) int {
	n := 0
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		c := 0
		for _, op := range ops {
			switch {
			case op.GetRequestPut() != nil:
				c += putCost(op.GetRequestPut())
			case op.GetRequestTxn() != nil:
				c += txnCost(op.GetRequestTxn())
			}
		}
		n = max(n, c)
	}
	return n
}

// dbSize returns the db file size and the bytes in use.
func (s *Server) dbSize() (size, inUse int64) {
	v := s.eng.Store().Backend().Snapshot()
	defer v.Release()
	tx := v.Tx()
	size = tx.Size()
	st := tx.DB().Stats()
	inUse = size - int64(st.FreePageN+st.PendingPageN)*int64(tx.DB().Info().PageSize)
	return size, inUse
}

type kvServer struct {
	pb.UnimplementedKVServer
	s *Server
}

func (k *kvServer) Range(ctx context.Context, r *pb.RangeRequest) (_ *pb.RangeResponse, err error) {
	defer k.s.metrics.observeRequest("Range", time.Now(), &err)
	if err := mvcc.ValidateRange(r); err != nil {
		return nil, toGRPCError(err)
	}
	if !r.Serializable {
		if err := k.s.linearizableReadNotify(ctx); err != nil {
			return nil, toGRPCError(err)
		}
	}
	var resp *pb.RangeResponse
	err = k.s.serialized(ctx, func(ai *auth.AuthInfo) error {
		return k.s.eng.Auth().IsRangePermitted(ai, r.Key, r.RangeEnd)
	}, func() (err error) {
		start := time.Now()
		resp, err = k.s.eng.Store().Range(r)
		k.s.metrics.observeRange(start, err == nil)
		return err
	})
	if err != nil {
		return nil, toGRPCError(err)
	}
	k.s.fill(resp.Header)
	return resp, nil
}

// RangeStream is etcd 3.7's KV.RangeStream: the range of r sent in
// chunks, all read at the revision current when the stream starts (or
// r.Revision). Only the last chunk has a header, More and Count, which is
// the range's total as in Range. Chunks start at 10 keys and double or
// halve to stay near --max-request-bytes. Custom sort orders and revision
// filters are refused, as etcd refuses them: they need the whole range
// in memory, which the stream exists to avoid.
func (k *kvServer) RangeStream(r *pb.RangeRequest, rs pb.KV_RangeStreamServer) error {
	if err := mvcc.ValidateRange(r); err != nil {
		return toGRPCError(err)
	}
	if !mvcc.IsDefaultOrdering(r.SortTarget, r.SortOrder) {
		return status.Errorf(codes.Unimplemented, "RangeStream does not support custom sort orders")
	}
	if mvcc.HasRevisionFilters(r) {
		return status.Errorf(codes.Unimplemented, "RangeStream does not support revision filters")
	}
	ctx := rs.Context()
	if !r.Serializable {
		if err := k.s.linearizableReadNotify(ctx); err != nil {
			return toGRPCError(err)
		}
	}
	err := k.s.serialized(ctx, func(ai *auth.AuthInfo) error {
		return k.s.eng.Auth().IsRangePermitted(ai, r.Key, r.RangeEnd)
	}, func() error {
		return k.rangeStream(r, rs)
	})
	return toGRPCError(err)
}

// initialStreamChunk is the key limit of RangeStream's first chunk (etcd's
// initialStreamChunkLimit).
const initialStreamChunk = 10

func (k *kvServer) rangeStream(r *pb.RangeRequest, rs pb.KV_RangeStreamServer) error {
	r = proto.Clone(r).(*pb.RangeRequest)
	store := k.s.eng.Store()
	send := func(out *pb.RangeResponse) error {
		if h := out.Header; h != nil {
			h.ClusterId, h.MemberId, h.RaftTerm = k.s.ClusterID(), k.s.ID(), k.s.Term()
		}
		return rs.Send(&pb.RangeStreamResponse{RangeResponse: out})
	}
	if r.CountOnly {
		resp, err := store.RangePage(r)
		if err != nil {
			return err
		}
		return send(&pb.RangeResponse{Header: &pb.ResponseHeader{Revision: resp.Header.Revision}, Count: resp.Count})
	}
	total := r.Limit
	if total == 0 {
		total = math.MaxInt64
	}
	r.Limit = min(initialStreamChunk, total)
	var count, headerRev int64
	for {
		resp, err := store.RangePage(r)
		if err != nil {
			return err
		}
		if headerRev == 0 {
			// Every chunk reads at the revision of the first one, so the
			// stream is one consistent view however long it takes.
			headerRev = resp.Header.Revision
			if r.Revision == 0 {
				r.Revision = headerRev
			}
		}
		count += int64(len(resp.Kvs))
		var next []byte
		if resp.More {
			last := resp.Kvs[len(resp.Kvs)-1].Key
			next = append(last[:len(last):len(last)], 0)
		}
		out := &pb.RangeResponse{Kvs: resp.Kvs}
		done := !resp.More || count == total
		if done {
			out.Header, out.More, out.Count = &pb.ResponseHeader{Revision: headerRev}, resp.More, count
			if resp.More {
				rest, err := store.RangePage(&pb.RangeRequest{Key: next, RangeEnd: r.RangeEnd, Revision: r.Revision, CountOnly: true})
				if err != nil {
					return err
				}
				out.Count += rest.Count
			}
		}
		if err := send(out); err != nil {
			return err
		}
		if done {
			return nil
		}
		r.Key = next
		r.Limit = min(nextChunkLimit(r.Limit, proto.Size(resp), k.s.cfg.MaxRequestBytes), total-count)
	}
}

// nextChunkLimit is etcd's adjustChunkLimit: double the limit when the
// last chunk was under half the target size, halve it when over twice,
// never below 1 (0 would mean no limit).
func nextChunkLimit(last int64, size, target int) int64 {
	switch {
	case size < target/2:
		last *= 2
	case size > target*2:
		last /= 2
	}
	return max(last, 1)
}

func (k *kvServer) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := mvcc.ValidatePut(r); err != nil {
		return nil, toGRPCError(err)
	}
	if err := k.s.checkQuota(ctx, putCost(r)); err != nil {
		return nil, err
	}
	m, err := k.s.propose(ctx, &pb.InternalRaftRequest{Put: r})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp := m.(*pb.PutResponse)
	k.s.fill(resp.Header)
	return resp, nil
}

func (k *kvServer) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if err := mvcc.ValidateDeleteRange(r); err != nil {
		return nil, toGRPCError(err)
	}
	m, err := k.s.propose(ctx, &pb.InternalRaftRequest{DeleteRange: r})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp := m.(*pb.DeleteRangeResponse)
	k.s.fill(resp.Header)
	return resp, nil
}

func isTxnReadonly(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, u := range ops {
			if u.GetRequestRange() == nil {
				return false
			}
		}
	}
	return true
}

func isTxnSerializable(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, u := range ops {
			if rr := u.GetRequestRange(); rr == nil || !rr.Serializable {
				return false
			}
		}
	}
	return true
}

func (k *kvServer) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := mvcc.ValidateTxn(r, k.s.cfg.MaxTxnOps); err != nil {
		return nil, toGRPCError(err)
	}
	var resp *pb.TxnResponse
	if isTxnReadonly(r) {
		start := time.Now()
		var err error
		defer func() { k.s.metrics.observeRequest("ReadonlyTxn", start, &err) }()
		if !isTxnSerializable(r) {
			if err = k.s.linearizableReadNotify(ctx); err != nil {
				return nil, toGRPCError(err)
			}
		}
		err = k.s.serialized(ctx, func(ai *auth.AuthInfo) error {
			return k.s.eng.Auth().CheckTxn(ai, k.s.eng.Store().Lessor().Keys, r)
		}, func() (err error) {
			resp, err = k.s.eng.Store().Txn(r)
			return err
		})
		if err != nil {
			return nil, toGRPCError(err)
		}
		k.s.metrics.countTxn(r, resp.Succeeded)
	} else {
		if err := k.s.checkQuota(ctx, txnCost(r)); err != nil {
			return nil, err
		}
		m, err := k.s.propose(ctx, &pb.InternalRaftRequest{Txn: r})
		if err != nil {
			return nil, toGRPCError(err)
		}
		resp = m.(*pb.TxnResponse)
	}
	k.s.fill(resp.Header)
	return resp, nil
}

func (k *kvServer) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if err := k.s.checkAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	m, err := k.s.propose(ctx, &pb.InternalRaftRequest{Compaction: r})
	if err != nil {
		return nil, toGRPCError(err)
	}
	if r.Physical {
		// As etcd: wait until the compacted revisions are deleted from
		// the db, and commit, so a crash does not bring the compaction
		// back to resume.
		st := k.s.eng.Store()
		if err := st.WaitCompacted(ctx, r.Revision); err != nil {
			return nil, toGRPCError(err)
		}
		if err := st.Commit(); err != nil {
			return nil, toGRPCError(err)
		}
	}
	resp := m.(*pb.CompactionResponse)
	k.s.fill(resp.Header)
	return resp, nil
}

type clusterServer struct {
	pb.UnimplementedClusterServer
	s *Server
}

func (c *clusterServer) header() *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: c.s.ClusterID(), MemberId: c.s.ID(), RaftTerm: c.s.Term()}
}

func (c *clusterServer) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	if r.Linearizable {
		if err := c.s.linearizableReadNotify(ctx); err != nil {
			return nil, toGRPCError(err)
		}
	}
	if err := c.s.requireAuthInfo(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	resp := &pb.MemberListResponse{Header: c.header()}
	for _, m := range c.s.eng.Members() {
		resp.Members = append(resp.Members, &pb.Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner})
	}
	return resp, nil
}

type maintenanceServer struct {
	pb.UnimplementedMaintenanceServer
	s *Server
}

func (m *maintenanceServer) Status(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	if err := m.s.requireAuthInfo(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	s := m.s
	hdr := &pb.ResponseHeader{}
	s.fill(hdr)
	applied, _ := s.eng.Applied()
	size, inUse := s.dbSize()
	resp := &pb.StatusResponse{
		Header:           hdr,
		Version:          Version,
		Leader:           s.Leader(),
		RaftIndex:        s.eng.CommitIndex(),
		RaftAppliedIndex: applied,
		RaftTerm:         s.Term(),
		DbSize:           size,
		DbSizeInUse:      inUse,
		DbSizeQuota:      s.cfg.QuotaBackendBytes,
		StorageVersion:   s.eng.StorageVersion(),
	}
	d := s.eng.DowngradeInfo()
	resp.DowngradeInfo = &pb.DowngradeInfo{Enabled: d.Enabled, TargetVersion: d.TargetVersion}
	if resp.Leader == 0 {
		resp.Errors = append(resp.Errors, "etcdserver: no leader")
	}
	for _, a := range s.eng.Alarms() {
		resp.Errors = append(resp.Errors, alarmString(a))
	}
	return resp, nil
}

// alarmString is the text form of an AlarmMember in Status errors, as
// gogoproto's compact text (etcd 3.6): `memberID:N alarm:NOSPACE `.
func alarmString(a *pb.AlarmMember) string {
	return "memberID:" + uitoa(a.GetMemberID()) + " alarm:" + a.GetAlarm().String() + " "
}

func uitoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for v > 0 {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}

func (m *maintenanceServer) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	check := m.s.checkAdmin
	if r.GetAction() == pb.AlarmRequest_GET {
		check = m.s.requireAuthInfo
	}
	if err := check(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	x, err := m.s.propose(ctx, &pb.InternalRaftRequest{Alarm: r})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp := x.(*pb.AlarmResponse)
	m.s.fill(resp.Header)
	return resp, nil
}

// Hash is CRC-32C over every bucket name and key/value pair, except the meta
// keys term, consistent_index and storageVersion (mvcc's package doc,
// "Hashes").
func (m *maintenanceServer) Hash(ctx context.Context, r *pb.HashRequest) (*pb.HashResponse, error) {
	if err := m.s.checkAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	if err := m.s.eng.Store().Commit(); err != nil {
		return nil, toGRPCError(err)
	}
	v := m.s.eng.Store().Backend().Snapshot()
	defer v.Release()
	start := time.Now()
	h, err := mvcc.DBHash(v.Tx(), true, nil)
	m.s.metrics.hashDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp := &pb.HashResponse{Header: &pb.ResponseHeader{}, Hash: h}
	m.s.fill(resp.Header)
	return resp, nil
}

func (m *maintenanceServer) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	if err := m.s.checkAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	start := time.Now()
	h, rev, err := m.s.eng.Store().HashKV(r.Revision)
	m.s.metrics.hashRevDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp := &pb.HashKVResponse{Header: &pb.ResponseHeader{Revision: rev}, Hash: h.Hash, CompactRevision: h.CompactRevision, HashRevision: h.Revision}
	m.s.fill(resp.Header)
	return resp, nil
}

// Defragment rewrites the db compactly and swaps it in while the member
// keeps serving (etcd's backend.Defrag; mvcc's package doc, "Defragment").
// Writes and reads wait while the copy runs; the store's key index, watchers
// and leases stay as they are, since the copy holds the same keys and
// values.
func (m *maintenanceServer) Defragment(ctx context.Context, r *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if err := m.s.checkAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	m.s.log.Info("starting defragment")
	m.s.metrics.defragInflight.Set(1)
	if m.s.cfg.StopGRPCServiceOnDefrag {
		m.s.setServing(false, "defrag is active")
	}
	st, err := m.s.eng.Store().Backend().Defrag()
	if m.s.cfg.StopGRPCServiceOnDefrag {
		m.s.setServing(true, "")
	}
	m.s.metrics.defragInflight.Set(0)
	if err != nil {
		m.s.log.Warn("failed to defragment", "error", err)
		return nil, toGRPCError(err)
	}
	m.s.metrics.defrag.Observe(st.Took.Seconds())
	m.s.log.Info("finished defragment", "size-before", st.SizeBefore, "size-after", st.SizeAfter, "took", st.Took)
	return &pb.DefragmentResponse{}, nil
}

// snapshotChunk is etcd's snapshotSendBufferSize.
const snapshotChunk = 32 * 1024

// Snapshot streams the db as one bbolt read transaction sees it, then the
// SHA-256 of those bytes as the last message (etcdctl checks it).
func (m *maintenanceServer) Snapshot(r *pb.SnapshotRequest, srv grpc.ServerStreamingServer[pb.SnapshotResponse]) error {
	if err := m.s.checkAdmin(srv.Context()); err != nil {
		return toGRPCError(err)
	}
	// As etcd: the responses carry no header, and Version is the db's
	// storage version (meta/storageVersion), not the server's.
	storageVersion := ""
	v := m.s.eng.Store().Backend().View()
	if sv, ok := v.Get([]byte(mvcc.BucketMeta), []byte(mvcc.MetaStorageVersion)); ok {
		storageVersion = string(sv)
	}
	v.Release()
	start := time.Now()
	ds, err := m.s.eng.DBSnapshot()
	if err != nil {
		return toGRPCError(err)
	}
	defer ds.Release()
	total := ds.Size
	pr, pw := io.Pipe()
	go func() { _, err := ds.WriteTo(pw); pw.CloseWithError(err) }()
	defer pr.Close()
	h := sha256.New()
	buf := make([]byte, snapshotChunk)
	sent := int64(0)
	for {
		n, err := io.ReadFull(pr, buf)
		if n > 0 {
			sent += int64(n)
			h.Write(buf[:n])
			resp := &pb.SnapshotResponse{RemainingBytes: uint64(total - sent), Blob: append([]byte(nil), buf[:n]...), Version: storageVersion}
			if serr := srv.Send(resp); serr != nil {
				return toGRPCError(serr)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return toGRPCError(err)
		}
	}
	// etcd_disk_backend_snapshot_duration_seconds: the db sent
	m.s.metrics.backendSnapshot.Observe(time.Since(start).Seconds())
	return toGRPCError(srv.Send(&pb.SnapshotResponse{Blob: h.Sum(nil), Version: storageVersion}))
}

type leaseServer struct {
	pb.UnimplementedLeaseServer
	s *Server
}

func (l *leaseServer) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	if err := l.s.checkQuota(ctx, leaseOverhead); err != nil {
		return nil, err
	}
	r = proto.Clone(r).(*pb.LeaseGrantRequest)
	for r.ID == 0 || r.ID < 0 {
		r.ID = int64(l.s.reqID.next() & (1<<63 - 1))
	}
	if err := l.s.requireAuthInfo(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	if r.TTL > mvcc.MaxLeaseTTL {
		return nil, rpctypes.ErrGRPCLeaseTTLTooLarge
	}
	x, err := l.s.propose(ctx, &pb.InternalRaftRequest{LeaseGrant: r})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp := x.(*pb.LeaseGrantResponse)
	l.s.fill(resp.Header)
	return resp, nil
}

func (l *leaseServer) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	if err := l.s.requireAuthInfo(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	x, err := l.s.propose(ctx, &pb.InternalRaftRequest{LeaseRevoke: r})
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp := x.(*pb.LeaseRevokeResponse)
	l.s.fill(resp.Header)
	return resp, nil
}

func (l *leaseServer) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if err := l.s.requireAuthInfo(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	// With keys, the caller must be allowed to read each of them.
	a := l.s.eng.Auth()
	rev := a.Revision()
	if r.Keys {
		if err := l.s.checkLeaseKeys(ctx, []int64{r.ID}, false); err != nil {
			return nil, toGRPCError(err)
		}
	}
	if err := l.s.linearizableReadNotify(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	// Only the leader's lessor knows how long a lease has left; a
	// follower asks it (etcd's LeaseTimeToLive).
	resp, err := l.s.leaseTimeToLive(ctx, r.ID, r.Keys)
	if err != nil {
		return nil, toGRPCError(err)
	}
	if r.Keys && a.Enabled() && rev != a.Revision() {
		return nil, toGRPCError(auth.ErrAuthOldRevision)
	}
	l.s.fill(resp.Header)
	return resp, nil
}

func (l *leaseServer) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	ids := l.s.eng.Store().Lessor().Leases()
	if err := l.s.checkLeaseKeys(ctx, ids, false); err != nil {
		return nil, toGRPCError(err)
	}
	resp := &pb.LeaseLeasesResponse{Header: &pb.ResponseHeader{}}
	for _, id := range ids {
		resp.Leases = append(resp.Leases, &pb.LeaseStatus{ID: id})
	}
	l.s.fill(resp.Header)
	return resp, nil
}

func (l *leaseServer) LeaseKeepAlive(stream grpc.BidiStreamingServer[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]) error {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		// The caller must be allowed to write every key of the lease.
		if err := l.s.checkLeaseKeys(stream.Context(), []int64{req.ID}, true); err != nil {
			return toGRPCError(err)
		}
		// A follower forwards the renewal to the leader (etcd's LeaseRenew).
		ttl, err := l.s.renewLease(stream.Context(), req.ID)
		if errors.Is(err, mvcc.ErrLeaseNotFound) {
			err, ttl = nil, 0
		}
		if err != nil {
			return toGRPCError(err)
		}
		resp := &pb.LeaseKeepAliveResponse{Header: &pb.ResponseHeader{}, ID: req.ID, TTL: ttl}
		l.s.fill(resp.Header)
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// Downgrade is etcd's Maintenance.Downgrade: VALIDATE, ENABLE and CANCEL
// of a cluster downgrade by one minor version, root only with auth on.
func (m *maintenanceServer) Downgrade(ctx context.Context, r *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	if err := m.s.checkAdmin(ctx); err != nil {
		return nil, toGRPCError(err)
	}
	resp, err := m.s.downgrade(ctx, r)
	if err != nil {
		return nil, toGRPCError(err)
	}
	resp.Header = &pb.ResponseHeader{}
	m.s.fill(resp.Header)
	return resp, nil
}
