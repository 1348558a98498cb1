package server

import (
	"errors"
	"io"
	"sync"

	"github.com/etckit/etckit/mvcc"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
)

// invalidWatchID is clientv3.InvalidWatchID.
const invalidWatchID = -1

type watchServer struct {
	pb.UnimplementedWatchServer
	s *Server
}

// Watch serves one gRPC watch stream as etcd's serverWatchStream: create
// and cancel requests are answered in order on a control path, and events of
// a watcher are held back until its "created" response has been sent.
func (w *watchServer) Watch(stream grpc.BidiStreamingServer[pb.WatchRequest, pb.WatchResponse]) error {
	s := w.s
	ws := s.eng.Store().NewWatchStream(s.cfg.MaxRequestBytes)
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
			if err := stream.Send(r); err != nil {
				sendErr <- err
				return false
			}
			return true
		}
		for {
			select {
			case r := <-ctrl:
				if !send(r) {
					return
				}
				if r.Created && !r.Canceled {
					created[r.WatchId] = true
					for _, p := range pending[r.WatchId] {
						if !send(p) {
							return
						}
					}
					delete(pending, r.WatchId)
				}
				if r.Canceled {
					delete(created, r.WatchId)
				}
			case r, ok := <-ws.Chan():
				if !ok {
					return
				}
				s.fill(r.Header)
				if !created[r.WatchId] {
					pending[r.WatchId] = append(pending[r.WatchId], r)
					continue
				}
				if !send(r) {
					return
				}
				if r.Canceled {
					delete(created, r.WatchId)
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
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			switch {
			case req.GetCreateRequest() != nil:
				c := req.GetCreateRequest()
				key := c.Key
				if len(key) == 0 {
					key = []byte{0}
				}
				if c.StartRevision < 0 {
					if !toCtrl(&pb.WatchResponse{Header: header(s.eng.Store().Rev()), WatchId: invalidWatchID,
						Canceled: true, Created: true, CancelReason: rpctypes.ErrCompacted.Error()}) {
						return
					}
					continue
				}
				o := mvcc.WatchOptions{Key: key, RangeEnd: c.RangeEnd, StartRevision: c.StartRevision, PrevKV: c.PrevKv, Fragment: c.Fragment}
				if len(o.RangeEnd) == 0 {
					o.RangeEnd = nil
				}
				for _, f := range c.Filters {
					o.Filters = append(o.Filters, mvcc.WatchFilter(f))
				}
				rev := s.eng.Store().Rev()
				id, err := ws.Watch(o)
				r := &pb.WatchResponse{Header: header(rev), WatchId: id, Created: true}
				if err != nil {
					r.WatchId, r.Canceled, r.CancelReason = invalidWatchID, true, err.Error()
				}
				if !toCtrl(r) {
					return
				}
			case req.GetCancelRequest() != nil:
				id := req.GetCancelRequest().WatchId
				if err := ws.Cancel(id); err == nil {
					if !toCtrl(&pb.WatchResponse{Header: header(s.eng.Store().Rev()), WatchId: id, Canceled: true}) {
						return
					}
				}
			}
		}
	}()
	select {
	case err := <-recvErr:
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	case err := <-sendErr:
		return err
	case <-stream.Context().Done():
		return stream.Context().Err()
	case <-s.stopc:
		return rpctypes.ErrGRPCStopped
	}
}
