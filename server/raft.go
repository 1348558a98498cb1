package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/transport"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// waiter is a proposer waiting for its entry to be applied. expiry
// (time.Now().UnixNano()) is when timeoutLoop gives up on it: one sweep
// instead of a timer per request.
type waiter struct {
	ch     chan engine.Result
	expiry int64
}

// errProposalTimeout is what timeoutLoop answers an expired proposal with.
var errProposalTimeout = errors.New("server: proposal timed out")

// resultChans recycles the proposers' result channels (capacity 1).
var resultChans = sync.Pool{New: func() any { return make(chan engine.Result, 1) }}

// proposal is a marshaled InternalRaftRequest on its way into raft; id is
// its header ID, under which its proposer waits in Server.waits.
type proposal struct {
	id   uint64
	data []byte
}

// confApply asks the raft loop to apply a committed conf change to raft.
type confApply struct {
	cc raftpb.ConfChangeI
	cs chan *raftpb.ConfState
}

type appliedWaiter struct {
	index uint64
	ch    chan struct{}
}

// run is the raft loop, the only goroutine that touches the RawNode: tick;
// step the proposals and read requests waiting in the inbox; for each Ready
// hand committed entries to the apply goroutine, persist (leader: after
// sending), send, advance.
//
// Driving a RawNode directly, rather than raft.Node's goroutine and
// channels, saves the hand-offs of every proposal (etcd's Propose waits for
// raft's goroutine to step it) and of every Ready and Advance: after an
// fdatasync the loop steps everything proposed meanwhile, in one MsgProp,
// and writes the next batch at once.
func (s *Server) run() {
	defer s.wg.Done()
	defer close(s.applyc)
	ticker := time.NewTicker(s.cfg.TickInterval)
	defer ticker.Stop()
	// Fast-forward the election clock as etcd does at start, so a member
	// that finds no leader campaigns after one tick rather than a full
	// election timeout.
	if !s.cfg.DisableInitialElectionTickAdvance {
		for i := 0; i < s.cfg.ElectionTicks-1; i++ {
			s.rn.Tick()
		}
	}
	var held []proposal // proposals waiting for a leader
	for {
		select {
		case <-ticker.C:
			s.rn.Tick()
		case <-s.wakec:
		case m := <-s.msgc:
			s.step(m)
		case fn := <-s.reportc:
			fn()
		case c := <-s.confc:
			s.serveConf(c)
		case <-s.stopc:
			return
		}
		for {
			s.stepPeers()
			held = s.stepInbox(held)
			if !s.rn.HasReady() {
				break
			}
			rd := s.rn.Ready()
			if err := s.handleReady(rd); err != nil {
				s.fail(err)
				return
			}
			s.rn.Advance(rd)
			// Under a steady load there is always a next Ready; keep
			// raft's clock going and notice Stop between them.
			select {
			case <-ticker.C:
				s.rn.Tick()
			case <-s.stopc:
				return
			default:
			}
		}
	}
}

// step steps a message from a peer; raft refuses local message types and
// responses from members it does not know, which only needs a log line.
func (s *Server) step(m *raftpb.Message) {
	if err := s.rn.Step(m); err != nil {
		s.log.Debug("raft refused a peer message", "type", m.GetType().String(), "from", fmt.Sprintf("%x", m.GetFrom()), "error", err)
	}
}

// stepPeers steps what arrived from peers and runs the transport's reports,
// without waiting (bounded, so a busy peer does not hold the loop).
func (s *Server) stepPeers() {
	for i := 0; i < 4096; i++ {
		select {
		case m := <-s.msgc:
			s.step(m)
		case fn := <-s.reportc:
			fn()
		default:
			return
		}
	}
}

// wake tells the raft loop that the inbox has work.
func (s *Server) wake() {
	select {
	case s.wakec <- struct{}{}:
	default:
	}
}

// stepInbox steps the waiting read requests and proposals into raft. All
// proposals go in one MsgProp, so they become one append. As raft.Node,
// proposals wait while no leader is known (their proposers' deadlines bound
// the wait); held are those, returned with the new ones while there is
// still no leader. A proposal whose proposer gave up is not proposed.
func (s *Server) stepInbox(held []proposal) []proposal {
	s.inMu.Lock()
	props, reads := s.inProps, s.inReads
	s.inProps, s.inReads = s.spareProps, s.spareReads
	s.inMu.Unlock()
	for _, rctx := range reads {
		s.rn.ReadIndex(rctx)
	}
	clear(reads)
	s.spareReads = reads[:0]
	if len(props) == 0 && len(held) == 0 {
		s.spareProps = props[:0]
		return held
	}
	all := append(held, props...)
	clear(props)
	s.spareProps = props[:0]
	live := all[:0]
	s.waitMu.Lock()
	for _, p := range all {
		if _, ok := s.waits[p.id]; ok {
			live = append(live, p)
		}
	}
	s.waitMu.Unlock()
	clear(all[len(live):])
	if len(live) == 0 || s.lead.Load() == raft.None {
		return live
	}
	ents := make([]*raftpb.Entry, len(live))
	for i, p := range live {
		ents[i] = &raftpb.Entry{Data: p.data}
	}
	m := &raftpb.Message{Type: raftpb.MsgProp.Enum(), From: proto.Uint64(s.ID()), Entries: ents}
	if err := s.rn.Step(m); err != nil {
		// Dropped (a leader transfer, the uncommitted-size limit): all of
		// the message's entries were refused.
		for _, p := range live {
			s.trigger(engine.Result{ID: p.id, Err: err})
		}
	}
	clear(live)
	return live[:0]
}

func (s *Server) handleReady(rd raft.Ready) error {
	if rd.SoftState != nil {
		old := s.lead.Swap(rd.SoftState.Lead)
		if old != rd.SoftState.Lead {
			if rd.SoftState.Lead != raft.None {
				s.metrics.leaderChanges.Inc()
			}
			s.log.Info("leader changed", "leader", fmt.Sprintf("%x", rd.SoftState.Lead), "term", s.rn.BasicStatus().Term)
			if rd.SoftState.Lead == s.ID() {
				s.metrics.resetHeartbeats() // etcd: td.Reset() for a new leader
				s.eng.Store().Lessor().Promote(time.Duration(s.cfg.ElectionTicks) * s.cfg.TickInterval)
			} else if old == s.ID() {
				s.eng.Store().Lessor().Demote()
			}
		}
	}
	if hs := rd.HardState; hs != nil && hs.GetTerm() > 0 {
		s.term.Store(hs.GetTerm())
	}
	for _, rs := range rd.ReadStates {
		select {
		case s.readState <- rs:
		default:
			// a reader gave up; the next ReadIndex will deliver a new state
		}
	}
	// Committed entries are durable in a quorum of logs already (this
	// member's included: raft commits only what it has persisted), so, as
	// etcd's raftNode does, they go to the apply goroutine before this
	// Ready's entries are written: applying batch N overlaps the fsync of
	// batch N+1 instead of waiting for it. A Ready that carries a snapshot
	// is persisted first, so entries are never applied on top of a
	// snapshot that is not on disk.
	hasSnap := rd.Snapshot != nil && !raft.IsEmptySnap(rd.Snapshot)
	var job *applyJob
	if len(rd.CommittedEntries) > 0 || hasSnap {
		job = &applyJob{ents: rd.CommittedEntries, persisted: make(chan struct{})}
		if hasSnap {
			// Applied after it is persisted (below); raft waits for it
			// like for a conf change, as the membership may change.
			job.snap, job.done = rd.Snapshot, make(chan struct{})
		}
		if hasConfChange(rd.CommittedEntries) {
			job.done = make(chan struct{})
		}
		if !hasSnap && !s.startApply(job) {
			return nil
		}
	}
	isLeader := s.lead.Load() == s.ID()
	if isLeader {
		s.send(rd.Messages)
	}
	if err := s.eng.SaveReady(rd.HardState, rd.Entries, rd.Snapshot); err != nil {
		return err
	}
	if job != nil {
		close(job.persisted)
	}
	if !isLeader {
		s.send(rd.Messages)
	}
	if job != nil {
		if hasSnap && !s.startApply(job) {
			return nil
		}
		// A batch with a conf change is waited for before raft goes on,
		// so raft's configuration and the member list never run ahead of
		// each other (etcd waits the same way).
		for job.done != nil {
			select {
			case <-job.done:
				job.done = nil
			case c := <-s.confc:
				s.serveConf(c)
			case fn := <-s.reportc:
				fn()
			case <-s.stopc:
				return nil
			}
		}
	}
	return nil
}

// startApply hands job to the apply goroutine; false if the server stops.
func (s *Server) startApply(job *applyJob) bool {
	for {
		select {
		case s.applyc <- *job:
			return true
		case c := <-s.confc:
			s.serveConf(c)
		case <-s.stopc:
			return false
		}
	}
}

// serveConf applies c's conf change to raft and answers c; raft loop only.
func (s *Server) serveConf(c confApply) { c.cs <- s.rn.ApplyConfChange(c.cc) }

// applyConfChange applies a committed conf change to raft, on the raft
// loop (the apply goroutine's engine.ConfChanger). The loop serves it while
// it waits for the batch that holds the conf change.
func (s *Server) applyConfChange(cc raftpb.ConfChangeI) *raftpb.ConfState {
	c := confApply{cc: cc, cs: make(chan *raftpb.ConfState, 1)}
	select {
	case s.confc <- c:
	case <-s.stopc:
		return nil
	}
	select {
	case cs := <-c.cs:
		return cs
	case <-s.stopc:
		return nil
	}
}

// applyJob is one Ready's snapshot and committed entries for the apply
// goroutine.
type applyJob struct {
	snap *raftpb.Snapshot // a snapshot received from the leader, or nil
	ents []*raftpb.Entry
	done chan struct{} // closed once applied, when the raft loop waits
	// persisted is closed once the raft loop has saved this Ready (WAL
	// and raft storage): etcd's notifyc. The entries may be applied
	// before that, but a snapshot of them must wait for it, or its index
	// would lie beyond the raft log's last one.
	persisted chan struct{}
}

func hasConfChange(ents []*raftpb.Entry) bool {
	for _, e := range ents {
		if t := e.GetType(); t == raftpb.EntryConfChange || t == raftpb.EntryConfChangeV2 {
			return true
		}
	}
	return false
}

// applyLoop applies committed entries (and received snapshots) in order,
// wakes the requests waiting for them, takes a snapshot when one is due,
// and sends the snapshots raft asks for. It ends when the raft loop closes
// applyc.
func (s *Server) applyLoop() {
	defer s.wg.Done()
	for {
		var job applyJob
		select {
		case j, ok := <-s.applyc:
			if !ok {
				return
			}
			job = j
		case m := <-s.snapc:
			s.sendSnapshot(m)
			continue
		}
		err := s.applyOne(job)
		if job.done != nil {
			close(job.done)
		}
		if err != nil {
			s.fail(err)
			for range s.applyc { // drain until the raft loop stops
			}
			return
		}
	}
}

func (s *Server) applyOne(job applyJob) error {
	if job.snap != nil {
		s.metrics.snapshotApplying.Set(1)
		err := s.eng.ApplySnapshot(job.snap)
		s.metrics.snapshotApplying.Set(0)
		if err != nil {
			return err
		}
		s.metrics.countSnapshot(false, s.Leader())
		s.syncPeers()
		s.notifyApplied(job.snap.GetMetadata().GetIndex())
	}
	if err := s.eng.Apply(job.ents, s.applyConfChange, s.trigger); err != nil {
		return err
	}
	if hasConfChange(job.ents) {
		s.syncPeers()
		if s.eng.IsRemoved(s.ID()) {
			// etcd stops a removed member after a short delay, so that
			// the conf change's response can still go out.
			go func() {
				select {
				case <-time.After(time.Second):
				case <-s.stopc:
				}
				s.failWith(errRemoved)
			}()
		}
	}
	idx, _ := s.eng.Applied()
	s.notifyApplied(idx)
	if s.eng.SnapshotDue() {
		if job.persisted != nil {
			select {
			case <-job.persisted:
			case <-s.stopc:
				return nil
			}
		}
		return s.eng.Snapshot()
	}
	return nil
}

// errRemoved stops a member that the cluster removed.
var errRemoved = errors.New("the member has been permanently removed from the cluster")

// sendSnapshot sends a follower the db as it is now, at the applied index
// (etcd's merged snapshot), in place of raft's MsgSnap m. The raft log is
// not compacted while it is sent and for 30 s after, as etcd holds it, so
// that the follower finds the entries that follow the snapshot.
func (s *Server) sendSnapshot(m *raftpb.Message) {
	ds, err := s.eng.DBSnapshot()
	if err != nil {
		s.log.Warn("cannot take a db snapshot for a follower", "to", fmt.Sprintf("%x", m.GetTo()), "error", err)
		s.ReportSnapshot(m.GetTo(), raft.SnapshotFailure)
		return
	}
	msg := proto.Clone(m).(*raftpb.Message)
	msg.Snapshot = ds.RaftSnapshot()
	release := s.eng.HoldRaftLog()
	pr, pw := io.Pipe()
	go func() {
		_, err := ds.WriteTo(pw)
		pw.CloseWithError(err)
	}()
	s.log.Info("sending database snapshot", "to", fmt.Sprintf("%x", m.GetTo()), "index", ds.Index, "term", ds.Term, "db-bytes", ds.Size)
	to := idLabel(m.GetTo())
	s.metrics.snapshotSendInflights.WithLabelValues(to).Inc()
	start := time.Now()
	s.cfg.Transport.SendSnapshot(&transport.SnapshotMessage{Message: msg, DB: pr, Size: ds.Size, Done: func(sent bool) {
		s.metrics.snapshotSendInflights.WithLabelValues(to).Dec()
		if sent {
			s.metrics.countSnapshot(true, m.GetTo())
			s.metrics.snapshotSendSeconds.WithLabelValues(to).Observe(time.Since(start).Seconds())
		} else {
			s.metrics.snapshotSendFailures.WithLabelValues(to).Inc()
		}
		pr.Close()
		ds.Release()
		go func() {
			select {
			case <-time.After(30 * time.Second):
			case <-s.stopc:
			}
			release()
		}()
	}})
}

// SaveDB keeps the db of a snapshot a leader sends (transport.SnapshotStore).
func (s *Server) SaveDB(r io.Reader, m *raftpb.Message) (int64, error) {
	md := m.GetSnapshot().GetMetadata()
	from := idLabel(m.GetFrom())
	s.metrics.snapshotReceiveInflights.WithLabelValues(from).Inc()
	defer s.metrics.snapshotReceiveInflights.WithLabelValues(from).Dec()
	start := time.Now()
	n, err := s.eng.SaveSnapshotDB(r, md.GetIndex(), md.GetTerm())
	if err != nil {
		s.metrics.snapshotReceiveFailures.WithLabelValues(from).Inc()
		return n, err
	}
	s.metrics.snapshotReceiveSeconds.WithLabelValues(from).Observe(time.Since(start).Seconds())
	s.metrics.snapDBSave.Observe(time.Since(start).Seconds())
	return n, nil
}

// send hands raft's messages to the transport. A MsgSnap is not sent as
// raft made it: the apply goroutine sends a snapshot of the db as it is
// then, with the applied index (etcd's merged snapshot).
func (s *Server) send(msgs []*raftpb.Message) {
	if len(msgs) == 0 || s.cfg.Transport == nil {
		return
	}
	var out []*raftpb.Message
	for i, m := range msgs {
		if m.GetType() == raftpb.MsgHeartbeat {
			s.metrics.heartbeatSent(m.GetTo(), 2*s.cfg.TickInterval)
		}
		if m.GetType() != raftpb.MsgSnap {
			if out != nil {
				out = append(out, m)
			}
			continue
		}
		if out == nil {
			out = append(make([]*raftpb.Message, 0, len(msgs)), msgs[:i]...)
		}
		select {
		case s.snapc <- m:
		default:
			// etcd keeps at most 16 waiting; raft retries.
			s.rn.ReportSnapshot(m.GetTo(), raft.SnapshotFailure)
		}
	}
	if out == nil {
		out = msgs
	}
	if len(out) > 0 {
		s.cfg.Transport.Send(out)
	}
}

// trigger hands an applied entry's result to the proposer waiting on it.
func (s *Server) trigger(r engine.Result) {
	if r.ID == 0 {
		return
	}
	s.waitMu.Lock()
	w, ok := s.waits[r.ID]
	delete(s.waits, r.ID)
	s.waitMu.Unlock()
	if ok {
		w.ch <- r
	}
}

// timeoutLoop answers the proposals that waited longer than the request
// timeout (etcd's ReqTimeout), sweeping the waiters every tenth of it.
func (s *Server) timeoutLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.requestTimeout() / 10)
	defer t.Stop()
	var expired []uint64
	for {
		select {
		case <-t.C:
		case <-s.stopc:
			return
		}
		now := time.Now().UnixNano()
		expired = expired[:0]
		s.waitMu.Lock()
		for id, w := range s.waits {
			if now >= w.expiry {
				expired = append(expired, id)
			}
		}
		s.waitMu.Unlock()
		for _, id := range expired {
			s.trigger(engine.Result{ID: id, Err: errProposalTimeout})
		}
	}
}

func (s *Server) notifyApplied(idx uint64) {
	s.appliedMu.Lock()
	s.applied = idx
	keep := s.appliedWaiters[:0]
	for _, w := range s.appliedWaiters {
		if w.index <= idx {
			close(w.ch)
		} else {
			keep = append(keep, w)
		}
	}
	s.appliedWaiters = keep
	s.appliedMu.Unlock()
}

func (s *Server) waitApplied(ctx context.Context, idx uint64) error {
	s.appliedMu.Lock()
	if s.applied >= idx {
		s.appliedMu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	s.appliedWaiters = append(s.appliedWaiters, appliedWaiter{idx, ch})
	s.appliedMu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stopc:
		return rpctypes.ErrGRPCStopped
	}
}

// requestTimeout is etcd's ReqTimeout: 5s plus two election timeouts.
func (s *Server) requestTimeout() time.Duration { return s.cfg.reqTimeoutOrDefault() }

// reqTimeoutOrDefault is etcd's ReqTimeout: 5 s plus two election
// timeouts.
func (c *Config) reqTimeoutOrDefault() time.Duration {
	if c.reqTimeout > 0 {
		return c.reqTimeout
	}
	return 5*time.Second + 2*time.Duration(c.ElectionTicks)*c.TickInterval
}

// propose sends r through raft and waits for its result. Concurrent
// proposals reach raft between two Readys and share one WAL write and
// fdatasync.
func (s *Server) propose(ctx context.Context, r *pb.InternalRaftRequest) (resp proto.Message, err error) {
	defer s.metrics.observeRequest(applyOp(r), time.Now(), &err)
	id := s.reqID.next()
	r.Header = &pb.RequestHeader{ID: id}
	// The caller's identity travels with the request: every member checks
	// it when it applies the entry. Authenticate carries none.
	if r.Authenticate == nil {
		ai, err := s.authInfo(ctx)
		if err != nil {
			return nil, err
		}
		if ai != nil {
			r.Header.Username, r.Header.AuthRevision = ai.Username, ai.Revision
		}
	}
	data, err := proto.Marshal(r)
	if err != nil {
		return nil, err
	}
	if len(data) > s.cfg.MaxRequestBytes {
		return nil, rpctypes.ErrGRPCRequestTooLarge
	}
	ch := resultChans.Get().(chan engine.Result)
	s.waitMu.Lock()
	s.waits[id] = waiter{ch: ch, expiry: time.Now().Add(s.requestTimeout()).UnixNano()}
	s.waitMu.Unlock()
	unregister := func() {
		s.waitMu.Lock()
		delete(s.waits, id)
		s.waitMu.Unlock()
	}
	s.inMu.Lock()
	s.inProps = append(s.inProps, proposal{id: id, data: data})
	s.inMu.Unlock()
	s.wake()
	select {
	case res := <-ch:
		// Only trigger sent on ch, once, after removing the waiter: no
		// one else holds it now.
		resultChans.Put(ch)
		switch {
		case res.Err == errProposalTimeout:
			s.metrics.proposalsFailed.Inc()
			return nil, s.timeoutErr()
		case errors.Is(res.Err, raft.ErrProposalDropped):
			s.metrics.proposalsFailed.Inc()
		}
		return res.Resp, res.Err
	case <-ctx.Done():
		unregister()
		s.metrics.proposalsFailed.Inc()
		return nil, ctx.Err()
	case <-s.stopc:
		unregister()
		return nil, rpctypes.ErrGRPCStopped
	}
}

// timeoutErr is the error of a request that ran out of the request
// timeout, as etcd's parseProposeCtxErr maps it.
func (s *Server) timeoutErr() error {
	if s.Leader() == 0 {
		return rpctypes.ErrGRPCNoLeader
	}
	return rpctypes.ErrGRPCTimeout
}

// idGenerator makes request IDs as etcd's idutil.Generator: the low 16 bits
// of the member ID, then 40 bits of the start time in ms and an 8-bit
// counter, incremented per request.
type idGenerator struct {
	prefix uint64
	suffix atomic.Uint64
}

func newIDGenerator(memberID uint64, now time.Time) *idGenerator {
	g := &idGenerator{prefix: memberID << 48}
	ms := uint64(now.UnixNano()/int64(time.Millisecond)) & (1<<40 - 1)
	g.suffix.Store(ms << 8)
	return g
}

func (g *idGenerator) next() uint64 {
	return g.prefix | (g.suffix.Add(1) & (1<<48 - 1))
}

// raftLogger routes raft's logs to slog. raft requires Fatal and Panic not
// to return; they panic with raft's message, the only panics in this
// package, and only on a raft invariant violation.
type raftLogger struct{ l *slog.Logger }

func (r *raftLogger) Debug(v ...any) { r.l.Debug(fmt.Sprint(v...), "component", "raft") }

func (r *raftLogger) Debugf(f string, v ...any) { r.l.Debug(fmt.Sprintf(f, v...), "component", "raft") }

func (r *raftLogger) Info(v ...any) { r.l.Info(fmt.Sprint(v...), "component", "raft") }

func (r *raftLogger) Infof(f string, v ...any) { r.l.Info(fmt.Sprintf(f, v...), "component", "raft") }

func (r *raftLogger) Warning(v ...any) { r.l.Warn(fmt.Sprint(v...), "component", "raft") }

func (r *raftLogger) Warningf(f string, v ...any) {
	r.l.Warn(fmt.Sprintf(f, v...), "component", "raft")
}

func (r *raftLogger) Error(v ...any) { r.l.Error(fmt.Sprint(v...), "component", "raft") }

func (r *raftLogger) Errorf(f string, v ...any) { r.l.Error(fmt.Sprintf(f, v...), "component", "raft") }

func (r *raftLogger) Fatal(v ...any) { r.Panic(v...) }

func (r *raftLogger) Fatalf(f string, v ...any) { r.Panicf(f, v...) }

func (r *raftLogger) Panic(v ...any) {
	r.l.Error(fmt.Sprint(v...), "component", "raft")
	panic(fmt.Sprint(v...))
}

func (r *raftLogger) Panicf(f string, v ...any) {
	msg := fmt.Sprintf(f, v...)
	r.l.Error(msg, "component", "raft")
	panic(msg)
}
