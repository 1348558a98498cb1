package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/etckit/etckit/mvcc"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The Lock and Election services (v3lockpb, v3electionpb) are, in etcd, a
// client of the server itself: its v3client calls the KV, Lease and Watch
// handlers in process with the caller's context, and the recipes of
// client/v3/concurrency (Mutex, Election) do the rest. etckit runs the same
// recipes over its own handlers, so every step is an ordinary request —
// through raft, quotas and auth as the caller — and the keys, leases and
// revisions it leaves are those etcd's leave.

// self is the in-process client: the handlers the recipes call.
type self struct {
	s     *Server
	kv    *kvServer
	lease *leaseServer
}

func (s *Server) self() self {
	return self{s: s, kv: &kvServer{s: s}, lease: &leaseServer{s: s}}
}

// clientErr is what the recipes' client makes of a handler's error
// (client/v3 toErr): etcd's own errors become rpctypes.EtcdError, which
// the Lock and Election servers return as is, so their callers get them
// with code Unknown and etcd's text.
func clientErr(err error) error {
	if err == nil {
		return nil
	}
	return rpctypes.Error(err)
}

func (c self) txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	resp, err := c.kv.Txn(ctx, r)
	return resp, clientErr(err)
}

func (c self) get(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	resp, err := c.kv.Range(ctx, r)
	return resp, clientErr(err)
}

func (c self) del(ctx context.Context, key []byte) (*pb.DeleteRangeResponse, error) {
	resp, err := c.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: key})
	return resp, clientErr(err)
}

// sessionTTL is concurrency's defaultSessionTTL: the lease a session
// grants when the request names none.
const sessionTTL = 60

// session is concurrency.NewSession followed by Orphan, as both servers
// open it: lease 0 grants a lease of sessionTTL seconds, which nothing
// keeps alive; any other lease is used as given.
func (c self) session(ctx context.Context, lease int64) (int64, error) {
	if lease != 0 {
		return lease, nil
	}
	resp, err := c.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: sessionTTL})
	if err != nil {
		return 0, clientErr(err)
	}
	return resp.ID, nil
}

// prefixEnd is client/v3's GetPrefixRangeEnd.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

// firstCreate and lastCreate are client/v3's WithFirstCreate and
// WithLastCreate: the oldest (newest) key under prefix.
func firstCreate(prefix []byte) *pb.RangeRequest {
	return &pb.RangeRequest{Key: prefix, RangeEnd: prefixEnd(prefix), Limit: 1,
		SortTarget: pb.RangeRequest_CREATE, SortOrder: pb.RangeRequest_ASCEND}
}

func lastCreate(prefix []byte, maxCreateRev int64) *pb.RangeRequest {
	return &pb.RangeRequest{Key: prefix, RangeEnd: prefixEnd(prefix), Limit: 1,
		SortTarget: pb.RangeRequest_CREATE, SortOrder: pb.RangeRequest_DESCEND, MaxCreateRevision: maxCreateRev}
}

// ownKey is the recipes' key of a session under prefix: the lease in hex.
func ownKey(prefix string, lease int64) string { return fmt.Sprintf("%s%x", prefix, lease) }

func cmpCreate(key string, rev int64) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
		TargetUnion: &pb.Compare_CreateRevision{CreateRevision: rev}}
}

func opPut(key, val string, lease int64) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(val), Lease: lease}}}
}

func opRange(r *pb.RangeRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: r}}
}

// watch opens a watcher on [key, end) from rev for the caller, refused
// as a watch stream refuses it; the responses carry full headers.
func (c self) watch(ctx context.Context, key, end []byte, rev int64, each func(*pb.WatchResponse) (done bool, err error)) error {
	if err := c.s.watchPermitted(ctx, key, end); err != nil {
		return rpctypes.Error(status.Error(codes.FailedPrecondition, watchDenial(err)))
	}
	ws := c.s.eng.Store().NewWatchStream(0)
	defer ws.Close()
	if _, err := ws.Watch(mvccWatch(key, end, rev)); err != nil {
		return clientErr(toGRPCError(err))
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.s.stopc:
			return rpctypes.ErrStopped
		case r, ok := <-ws.Chan():
			if !ok {
				return errLostWatcher
			}
			if r.CompactRevision != 0 {
				return rpctypes.ErrCompacted
			}
			if r.Header == nil {
				r.Header = &pb.ResponseHeader{}
			}
			c.s.fill(r.Header)
			if done, err := each(r); done || err != nil {
				return err
			}
		}
	}
}

var errLostWatcher = errors.New("lost watcher waiting for delete")

// waitDelete is concurrency's waitDelete: until key is deleted at or
// after rev.
func (c self) waitDelete(ctx context.Context, key []byte, rev int64) error {
	return c.watch(ctx, key, nil, rev, func(r *pb.WatchResponse) (bool, error) {
		for _, ev := range r.Events {
			if ev.Type == mvccpb.DELETE {
				return true, nil
			}
		}
		return false, nil
	})
}

// waitDeletes is concurrency's waitDeletes: until every key under prefix
// created at or before maxCreateRev is gone, newest first.
func (c self) waitDeletes(ctx context.Context, prefix []byte, maxCreateRev int64) error {
	for {
		resp, err := c.get(ctx, lastCreate(prefix, maxCreateRev))
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		if err := c.waitDelete(ctx, resp.Kvs[0].Key, resp.Header.Revision); err != nil {
			return err
		}
	}
}

// detached is the recipes' client.Ctx(): the caller's identity, without
// its cancellation, for cleaning up after a failed wait.
func detached(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

type lockServer struct {
	v3lockpb.UnimplementedLockServer
	s *Server
}

// Lock is concurrency.Mutex.Lock on the prefix name + "/": the session's
// key joins the waiters, and the lock is held once every older waiter's
// key is gone.
func (l *lockServer) Lock(ctx context.Context, req *v3lockpb.LockRequest) (*v3lockpb.LockResponse, error) {
	c := l.s.self()
	lease, err := c.session(ctx, req.Lease)
	if err != nil {
		return nil, err
	}
	pfx := string(req.Name) + "/"
	key := ownKey(pfx, lease)
	resp, err := c.txn(ctx, &pb.TxnRequest{
		Compare: []*pb.Compare{cmpCreate(key, 0)},
		Success: []*pb.RequestOp{opPut(key, "", lease), opRange(firstCreate([]byte(pfx)))},
		Failure: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: []byte(key)}), opRange(firstCreate([]byte(pfx)))},
	})
	if err != nil {
		return nil, err
	}
	myRev := resp.Header.Revision
	if !resp.Succeeded {
		myRev = resp.Responses[0].GetResponseRange().Kvs[0].CreateRevision
	}
	if owner := resp.Responses[1].GetResponseRange().Kvs; len(owner) == 0 || owner[0].CreateRevision == myRev {
		return &v3lockpb.LockResponse{Header: resp.Header, Key: []byte(key)}, nil
	}
	if err := c.waitDeletes(ctx, []byte(pfx), myRev-1); err != nil {
		_, _ = c.del(detached(ctx), []byte(key))
		return nil, err
	}
	// The session's key must still be there: its lease may have expired
	// while waiting.
	g, err := c.get(ctx, &pb.RangeRequest{Key: []byte(key)})
	if err != nil {
		_, _ = c.del(detached(ctx), []byte(key))
		return nil, err
	}
	if len(g.Kvs) == 0 {
		return nil, errSessionExpired
	}
	return &v3lockpb.LockResponse{Header: g.Header, Key: []byte(key)}, nil
}

// errSessionExpired is concurrency's ErrSessionExpired.
var errSessionExpired = errors.New("session expired")

// Unlock deletes the lock's key.
func (l *lockServer) Unlock(ctx context.Context, req *v3lockpb.UnlockRequest) (*v3lockpb.UnlockResponse, error) {
	resp, err := l.s.self().del(ctx, req.Key)
	if err != nil {
		return nil, err
	}
	return &v3lockpb.UnlockResponse{Header: resp.Header}, nil
}

// The election errors of etcd's v3election and client/v3 concurrency.
var (
	errMissingLeaderKey  = errors.New(`"leader" field must be provided`)
	errElectionNotLeader = errors.New("election: not leader")
	errElectionNoLeader  = errors.New("election: no leader")
)

type electionServer struct {
	v3electionpb.UnimplementedElectionServer
	s *Server
}

// Campaign is concurrency.Election.Campaign: the session's key under
// name + "/" holds the value, and the campaign wins once every older
// candidate's key is gone.
func (e *electionServer) Campaign(ctx context.Context, req *v3electionpb.CampaignRequest) (*v3electionpb.CampaignResponse, error) {
	c := e.s.self()
	lease, err := c.session(ctx, req.Lease)
	if err != nil {
		return nil, err
	}
	pfx := string(req.Name) + "/"
	key, val := ownKey(pfx, lease), string(req.Value)
	resp, err := c.txn(ctx, &pb.TxnRequest{
		Compare: []*pb.Compare{cmpCreate(key, 0)},
		Success: []*pb.RequestOp{opPut(key, val, lease)},
		Failure: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: []byte(key)})},
	})
	if err != nil {
		return nil, err
	}
	rev := resp.Header.Revision
	if !resp.Succeeded {
		kv := resp.Responses[0].GetResponseRange().Kvs[0]
		rev = kv.CreateRevision
		if string(kv.Value) != val {
			if _, err := c.proclaim(ctx, key, rev, lease, val); err != nil {
				_, _ = c.resign(ctx, key, rev)
				return nil, err
			}
		}
	}
	if err := c.waitDeletes(ctx, []byte(pfx), rev-1); err != nil {
		if ctx.Err() != nil {
			_, _ = c.resign(detached(ctx), key, rev)
		}
		return nil, err
	}
	return &v3electionpb.CampaignResponse{Header: resp.Header,
		Leader: &v3electionpb.LeaderKey{Name: req.Name, Key: []byte(key), Rev: rev, Lease: lease}}, nil
}

// proclaim is Election.Proclaim: a new value on the leader's key while it
// is the same key (same create revision).
func (c self) proclaim(ctx context.Context, key string, rev, lease int64, val string) (*pb.ResponseHeader, error) {
	resp, err := c.txn(ctx, &pb.TxnRequest{
		Compare: []*pb.Compare{cmpCreate(key, rev)},
		Success: []*pb.RequestOp{opPut(key, val, lease)},
	})
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		return nil, errElectionNotLeader
	}
	return resp.Header, nil
}

// resign is Election.Resign: the leader's key deleted while it is the
// same key.
func (c self) resign(ctx context.Context, key string, rev int64) (*pb.ResponseHeader, error) {
	resp, err := c.txn(ctx, &pb.TxnRequest{
		Compare: []*pb.Compare{cmpCreate(key, rev)},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(key)}}}},
	})
	if err != nil {
		return nil, err
	}
	return resp.Header, nil
}

func (e *electionServer) Proclaim(ctx context.Context, req *v3electionpb.ProclaimRequest) (*v3electionpb.ProclaimResponse, error) {
	if req.Leader == nil {
		return nil, errMissingLeaderKey
	}
	c := e.s.self()
	lease, err := c.session(ctx, req.Leader.Lease)
	if err != nil {
		return nil, err
	}
	h, err := c.proclaim(ctx, string(req.Leader.Key), req.Leader.Rev, lease, string(req.Value))
	if err != nil {
		return nil, err
	}
	return &v3electionpb.ProclaimResponse{Header: h}, nil
}

func (e *electionServer) Resign(ctx context.Context, req *v3electionpb.ResignRequest) (*v3electionpb.ResignResponse, error) {
	if req.Leader == nil {
		return nil, errMissingLeaderKey
	}
	c := e.s.self()
	if _, err := c.session(ctx, req.Leader.Lease); err != nil {
		return nil, err
	}
	h, err := c.resign(ctx, string(req.Leader.Key), req.Leader.Rev)
	if err != nil {
		return nil, err
	}
	return &v3electionpb.ResignResponse{Header: h}, nil
}

// Leader is Election.Leader: the oldest key under name + "/".
func (e *electionServer) Leader(ctx context.Context, req *v3electionpb.LeaderRequest) (*v3electionpb.LeaderResponse, error) {
	resp, err := e.s.self().get(ctx, firstCreate([]byte(string(req.Name)+"/")))
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, errElectionNoLeader
	}
	return &v3electionpb.LeaderResponse{Header: resp.Header, Kv: resp.Kvs[0]}, nil
}

// Observe is Election.Observe: the current leader's key, each new value
// of it, and on its deletion the next leader, until the caller leaves.
func (e *electionServer) Observe(req *v3electionpb.LeaderRequest, stream v3electionpb.Election_ObserveServer) error {
	ctx := stream.Context()
	c := e.s.self()
	pfx := []byte(string(req.Name) + "/")
	for {
		resp, err := c.get(ctx, firstCreate(pfx))
		if err != nil {
			return ctx.Err()
		}
		var kv *mvccpb.KeyValue
		var hdr *pb.ResponseHeader
		if len(resp.Kvs) == 0 {
			// Wait for the first put under the prefix.
			err := c.watch(ctx, pfx, prefixEnd(pfx), resp.Header.Revision, func(r *pb.WatchResponse) (bool, error) {
				for _, ev := range r.Events {
					if ev.Type == mvccpb.PUT {
						hdr, kv = r.Header, ev.Kv
						hdr.Revision = kv.ModRevision
						return true, nil
					}
				}
				return false, nil
			})
			if err != nil {
				return ctx.Err()
			}
		} else {
			hdr, kv = resp.Header, resp.Kvs[0]
		}
		if err := stream.Send(&v3electionpb.LeaderResponse{Header: hdr, Kv: kv}); err != nil {
			return err
		}
		err = c.watch(ctx, kv.Key, nil, hdr.Revision+1, func(r *pb.WatchResponse) (bool, error) {
			for _, ev := range r.Events {
				if ev.Type == mvccpb.DELETE {
					return true, nil
				}
				if err := stream.Send(&v3electionpb.LeaderResponse{Header: r.Header, Kv: ev.Kv}); err != nil {
					return true, err
				}
			}
			return false, nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil
		}
	}
}

// mvccWatch is the watcher of [key, end) (end nil: key alone) from rev.
func mvccWatch(key, end []byte, rev int64) mvcc.WatchOptions {
	return mvcc.WatchOptions{Key: key, RangeEnd: end, StartRevision: rev}
}
