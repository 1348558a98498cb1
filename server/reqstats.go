package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"
)

// logUnaryRequestStats is etcd's (v3rpc newLogUnaryInterceptor): a unary
// request slower than --warning-unary-request-duration is logged as a
// warning "request stats"; at debug level every request is, at debug.
func (s *Server) logUnaryRequestStats(ctx context.Context, info *grpc.UnaryServerInfo, start time.Time, req, resp any) {
	d := time.Since(start)
	debug := s.log.Enabled(ctx, slog.LevelDebug)
	expensive := d > s.cfg.WarningUnaryRequestDuration
	if !debug && !expensive {
		return
	}
	remote := "No remote client info."
	if p, ok := peer.FromContext(ctx); ok {
		remote = p.Addr.String()
	}
	var reqCount, respCount int64
	var reqSize, respSize int
	var reqContent string
	switch r := resp.(type) {
	case *pb.RangeResponse:
		if q, ok := req.(*pb.RangeRequest); ok {
			reqSize, reqContent = proto.Size(q), fmt.Sprint(q)
		}
		if r != nil {
			respCount, respSize = r.GetCount(), proto.Size(r)
		}
	case *pb.PutResponse:
		if q, ok := req.(*pb.PutRequest); ok {
			reqCount, reqSize, reqContent = 1, proto.Size(q), fmt.Sprint(pb.NewLoggablePutRequest(q))
		}
		if r != nil {
			respSize = proto.Size(r)
		}
	case *pb.DeleteRangeResponse:
		if q, ok := req.(*pb.DeleteRangeRequest); ok {
			reqSize, reqContent = proto.Size(q), fmt.Sprint(q)
		}
		if r != nil {
			respCount, respSize = r.GetDeleted(), proto.Size(r)
		}
	case *pb.TxnResponse:
		if q, ok := req.(*pb.TxnRequest); ok && r != nil {
			ops := q.GetFailure()
			if r.GetSucceeded() {
				ops = q.GetSuccess()
			}
			reqCount = int64(len(ops))
			for _, op := range ops {
				reqSize += proto.Size(op)
			}
			reqContent = fmt.Sprint(pb.NewLoggableTxnRequest(q))
		}
		if r != nil {
			respSize = proto.Size(r)
		}
	default:
		reqCount, reqSize, respCount, respSize = -1, -1, -1, -1
	}
	args := []any{"start time", start, "time spent", d.String(), "remote", remote, "response type", info.FullMethod,
		"request count", reqCount, "request size", reqSize, "response count", respCount, "response size", respSize,
		"request content", reqContent}
	if debug {
		s.log.Debug("request stats", args...)
	} else {
		s.log.Warn("request stats", args...)
	}
}
