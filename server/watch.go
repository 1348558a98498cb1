package server

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/etckit/etckit/mvcc"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
)

// invalidWatchID is clientv3.InvalidWatchID; autoWatchID is
// clientv3.AutoWatchID.
const (
	invalidWatchID = -1
	autoWatchID    = 0
)

// errWatcherDuplicateID is etcd's mvcc.ErrWatcherDuplicateID (its text is
// the cancel reason clients see).
var errWatcherDuplicateID = errors.New("mvcc: duplicate watch ID provided on the WatchStream")

type watchServer struct {
	pb.UnimplementedWatchServer
	s *Server
}

// watchIDs maps the watch IDs a client sees (its own, or allocated as etcd
// does) to the IDs of the store's watch stream.
type watchIDs struct {
	mu       sync.Mutex
	next     int64           // etcd's watchStream.nextID
	toStore  map[int64]int64 // client ID -> store ID, until cancelled by the client
	toClient map[int64]int64 // store ID -> client ID
	startRev map[int64]int64 // store ID -> requested start revision
	viaAll   map[int64]int   // store ID -> progress responses to present as "all" (ID -1)
}

// Watch serves one gRPC watch stream as etcd's serverWatchStream: create,
// cancel and progress requests are answered in order on a control path,
// and events of a watcher are held back until its "created" response has
// been sent.
func (w *watchServer) Watch(stream grpc.BidiStreamingServer[pb.WatchRequest, pb.WatchResponse]) error {
	s := w.s
	// The stream stays open across a snapshot received from the leader: the
	// engine's store hands its watch streams to the next (mvcc HandOver).
	ws := s.eng.Store().NewWatchStreamOptions(mvcc.WatchStreamOptions{
		MaxResponseBytes:       s.cfg.MaxRequestBytes + grpcOverheadBytes, // etcd: MaxRequestBytesWithOverhead
		ProgressNotifyInterval: s.cfg.WatchProgressNotifyInterval,
	})
	ids := &watchIDs{toStore: map[int64]int64{}, toClient: map[int64]int64{}, startRev: map[int64]int64{}, viaAll: map[int64]int{}}
	ctrl := make(chan *pb.WatchResponse, 16)
	closec := make(chan struct{})
	var closeOnce sync.Once
	stop := func() { closeOnce.Do(func() { close(closec) }) }
	defer stop()
	defer ws.Close()

	header := func(rev int64) *pb.ResponseHeader {
		h := &pb.ResponseHeader{Revision: rev}
		s.fill(h)
		return h
	}
	sendErr := make(chan error, 1)
	go func() {
		created := map[int64]bool{}
		pending := map[int64][]*pb.WatchResponse{}
		send := func(r *pb.WatchResponse) bool {
			start := time.Now()
			if err := stream.Send(r); err != nil {
				s.metrics.streamFailures.WithLabelValues("send", "watch").Inc()
				sendErr <- err
				return false
			}
			s.metrics.observeWatchSend(r, start)
			return true
		}
		for {
			select {
			case r := <-ctrl:
				if !send(r) {
					return
				}
				if r.Canceled && r.WatchId != invalidWatchID {
					delete(created, r.WatchId)
					delete(pending, r.WatchId)
					continue
				}
				if r.Created {
					created[r.WatchId] = true
					for _, p := range pending[r.WatchId] {
						if !send(p) {
							return
						}
					}
					delete(pending, r.WatchId)
				}
			case r, ok := <-ws.Chan():
				if !ok {
					return
				}
				ids.mu.Lock()
				cid, known := ids.toClient[r.WatchId]
				all := false
				if known && len(r.Events) == 0 && !r.Canceled && ids.viaAll[r.WatchId] > 0 {
					ids.viaAll[r.WatchId]--
					all = true
				}
				if r.Canceled {
					// The store forgot this watcher (compacted); the
					// client's ID stays taken until it cancels it, as in
					// etcd.
					delete(ids.toClient, r.WatchId)
					delete(ids.viaAll, r.WatchId)
				}
				ids.mu.Unlock()
				if !known {
					continue // cancelled by the client meanwhile
				}
				r.WatchId = cid
				if all {
					r.WatchId = invalidWatchID
				}
				if r.CompactRevision != 0 {
					// etcd sends only compact_revision, with header
					// revision 0.
					r.CancelReason = ""
					r.Header = &pb.ResponseHeader{ClusterId: s.ClusterID(), MemberId: s.ID(), RaftTerm: s.Term()}
				} else {
					s.fill(r.Header)
				}
				if r.WatchId != invalidWatchID && !created[r.WatchId] {
					pending[r.WatchId] = append(pending[r.WatchId], r)
					continue
				}
				if !send(r) {
					return
				}
			case <-closec:
				return
			}
		}
	}()
	toCtrl := func(r *pb.WatchResponse) bool {
		select {
		case ctrl <- r:
			return true
		case <-closec:
			return false
		}
	}
	create := func(c *pb.WatchCreateRequest) *pb.WatchResponse {
		key := c.Key
		if len(key) == 0 {
			key = []byte{0}
		}
		if c.StartRevision < 0 {
			return &pb.WatchResponse{Header: header(s.eng.Store().Rev()), WatchId: invalidWatchID,
				Canceled: true, Created: true, CancelReason: rpctypes.ErrCompacted.Error()}
		}
		// The caller must be allowed to read the range as sent (an
		// open end still "\x00"); checked once, at creation, as etcd.
		if err := s.watchPermitted(stream.Context(), key, c.RangeEnd); err != nil {
			return &pb.WatchResponse{Header: header(s.eng.Store().Rev()), WatchId: invalidWatchID,
				Canceled: true, Created: true, CancelReason: watchDenial(err)}
		}
		o := mvcc.WatchOptions{Key: key, RangeEnd: c.RangeEnd, StartRevision: c.StartRevision, PrevKV: c.PrevKv,
			Fragment: c.Fragment, ProgressNotify: c.ProgressNotify}
		if len(o.RangeEnd) == 0 {
			o.RangeEnd = nil
		}
		for _, f := range c.Filters {
			o.Filters = append(o.Filters, mvcc.WatchFilter(f))
		}
		fail := func(err error) *pb.WatchResponse {
			return &pb.WatchResponse{Header: header(s.eng.Store().Rev()), WatchId: invalidWatchID,
				Created: true, Canceled: true, CancelReason: err.Error()}
		}
		// etcd checks the range before the ID.
		if end := o.RangeEnd; len(end) > 0 && !(len(end) == 1 && end[0] == 0) && string(key) >= string(end) {
			return fail(mvcc.ErrEmptyWatcherRange)
		}
		ids.mu.Lock()
		defer ids.mu.Unlock()
		cid := c.WatchId
		if cid == autoWatchID {
			for {
				if _, used := ids.toStore[ids.next]; !used {
					break
				}
				ids.next++
			}
			cid = ids.next
			ids.next++
		} else if _, used := ids.toStore[cid]; used {
			return fail(errWatcherDuplicateID)
		}
		// ids.mu is held while the store registers the watcher, so the
		// sender maps its first events to cid.
		sid, err := ws.Watch(o)
		if err != nil {
			return fail(err)
		}
		ids.toStore[cid] = sid
		ids.toClient[sid] = cid
		ids.startRev[sid] = c.StartRevision
		return &pb.WatchResponse{Header: header(s.eng.Store().Rev()), WatchId: cid, Created: true}
	}
	cancel := func(cid int64) *pb.WatchResponse {
		ids.mu.Lock()
		defer ids.mu.Unlock()
		sid, ok := ids.toStore[cid]
		if !ok {
			return nil // etcd answers nothing
		}
		_ = ws.Cancel(sid) // already gone if compacted
		delete(ids.toStore, cid)
		delete(ids.toClient, sid)
		delete(ids.startRev, sid)
		delete(ids.viaAll, sid)
		return &pb.WatchResponse{Header: header(s.eng.Store().Rev()), WatchId: cid, Canceled: true}
	}
	progressAll := func() {
		ids.mu.Lock()
		defer ids.mu.Unlock()
		for _, sid := range ids.toStore {
			if _, live := ids.toClient[sid]; !live {
				// etcd keeps a watcher cancelled by compaction in the
				// stream, never synced, until the client cancels it;
				// until then it answers no progress request.
				return
			}
		}
		if via, ok := ws.RequestProgressAll(ids.startRev); ok {
			ids.viaAll[via]++
		}
	}
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				// The client closed its side: as etcd, the stream goes on
				// sending until the client cancels it (the gateway and
				// curl close theirs after the create request).
				return
			}
			if err != nil {
				recvErr <- err
				return
			}
			switch {
			case req.GetCreateRequest() != nil:
				if !toCtrl(create(req.GetCreateRequest())) {
					return
				}
			case req.GetCancelRequest() != nil:
				if r := cancel(req.GetCancelRequest().WatchId); r != nil && !toCtrl(r) {
					return
				}
			case req.GetProgressRequest() != nil:
				progressAll()
			}
		}
	}()
	select {
	case err := <-recvErr:
		return err
	case err := <-sendErr:
		return err
	case <-stream.Context().Done():
		return context.Cause(stream.Context()) // "no leader" for a stream that requires one
	case <-s.stopc:
		return rpctypes.ErrGRPCStopped
	}
}
