package server

import (
	"context"
	"encoding/binary"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// notifier is shared by the readers that wait for the same ReadIndex.
type notifier struct {
	c   chan struct{}
	err error
}

func newNotifier() *notifier { return &notifier{c: make(chan struct{})} }

func (n *notifier) notify(err error) {
	n.err = err
	close(n.c)
}

// linearizableReadNotify returns once the member has applied everything
// committed when it was called (raft ReadIndex); concurrent callers share one
// ReadIndex round.
func (s *Server) linearizableReadNotify(ctx context.Context) error {
	s.readMu.RLock()
	nc := s.readNotif
	s.readMu.RUnlock()
	select {
	case s.readwaitc <- struct{}{}:
	default:
	}
	select {
	case <-nc.c:
		return nc.err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stopc:
		return rpctypes.ErrGRPCStopped
	}
}

func (s *Server) readLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.readwaitc:
		case <-s.stopc:
			return
		}
		s.readMu.Lock()
		nr := s.readNotif
		s.readNotif = newNotifier()
		s.readMu.Unlock()
		nr.notify(s.readIndexRound())
	}
}

func (s *Server) readIndexRound() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.requestTimeout())
	defer cancel()
	id := s.reqID.next()
	rctx := binary.BigEndian.AppendUint64(nil, id)
	s.readIndex(rctx)
	retry := time.NewTicker(500 * time.Millisecond)
	defer retry.Stop()
	for {
		select {
		case rs := <-s.readState:
			if string(rs.RequestCtx) != string(rctx) {
				continue // a state of an earlier, abandoned round
			}
			return s.waitApplied(ctx, rs.Index)
		case <-retry.C:
			// A ReadIndex is dropped while the leader has not committed in
			// its term; ask again (etcd counts it a slow read index).
			s.metrics.slowReadIndexes.Inc()
			s.readIndex(rctx)
		case <-ctx.Done():
			s.metrics.readIndexesFailed.Inc()
			return s.timeoutErr()
		case <-s.stopc:
			return rpctypes.ErrGRPCStopped
		}
	}
}

// readIndex asks raft, through the loop, for a ReadIndex with rctx; the
// answer comes as a ReadState of a Ready.
func (s *Server) readIndex(rctx []byte) {
	s.inMu.Lock()
	s.inReads = append(s.inReads, rctx)
	s.inMu.Unlock()
	s.wake()
}
