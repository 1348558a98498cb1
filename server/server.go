package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/vfs"
	"github.com/etckit/etckit/wal"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Version is the etcd version etckit answers as (Status, /version).
const Version = "3.6.0"

// Limits and timings, as etcd's defaults.
const (
	DefaultMaxRequestBytes   = 1.5 * 1024 * 1024
	DefaultMaxTxnOps         = 128
	DefaultQuotaBackendBytes = 2 * 1024 * 1024 * 1024
	// gRPC keepalive, as etcd's embed defaults.
	DefaultGRPCKeepAliveMinTime  = 5 * time.Second
	DefaultGRPCKeepAliveInterval = 2 * time.Hour
	DefaultGRPCKeepAliveTimeout  = 20 * time.Second
	// grpcOverheadBytes is what etcd adds to --max-request-bytes for the
	// gRPC receive limit.
	grpcOverheadBytes = 512 * 1024
)

// Transport carries raft messages to the other members. The multi-member
// transport comes later; with a nil Transport messages to other members are
// dropped (a single member sends none).
type Transport interface {
	Send(msgs []*raftpb.Message)
}

// Config configures a Server; see NewCommand for the flags that fill it.
type Config struct {
	Engine engine.Options

	// ListenClientURLs are the client listeners (http://host:port; port 0
	// picks a free port). AdvertiseClientURLs are published in the members
	// bucket; default: the listeners' actual addresses.
	ListenClientURLs    []string
	AdvertiseClientURLs []string

	MaxRequestBytes   int   // default 1.5 MiB
	MaxTxnOps         int   // default 128
	QuotaBackendBytes int64 // default 2 GiB

	// TickInterval is raft's tick (etcd --heartbeat-interval, 100ms);
	// ElectionTicks is --election-timeout / --heartbeat-interval (10).
	TickInterval  time.Duration
	ElectionTicks int

	// GRPCKeepAliveMinTime is --grpc-keepalive-min-time: clients pinging
	// more often are sent GOAWAY "too_many_pings", and so are clients
	// pinging a connection with no stream open (default 5 s).
	// GRPCKeepAliveInterval and GRPCKeepAliveTimeout are
	// --grpc-keepalive-interval and --grpc-keepalive-timeout: the server
	// pings a connection idle that long and closes it if the ping is not
	// answered within the timeout (defaults 2 h and 20 s). Zero means
	// etcd's default, negative disables (the flags' 0).
	GRPCKeepAliveMinTime  time.Duration
	GRPCKeepAliveInterval time.Duration
	GRPCKeepAliveTimeout  time.Duration
	// MaxConcurrentStreams is --max-concurrent-streams: the HTTP/2 streams
	// one client connection may have open (default: no limit, math.MaxUint32).
	MaxConcurrentStreams uint32

	// InitialClusterState is --initial-cluster-state: "new" (default) or
	// "existing". Joining an existing cluster needs the peer transport, so a
	// member without a WAL refuses "existing" for now.
	InitialClusterState string

	// WatchProgressNotifyInterval is the period of the progress
	// notifications of watchers created with progress_notify (etcd
	// --watch-progress-notify-interval, 10 minutes).
	WatchProgressNotifyInterval time.Duration

	Transport Transport
	Logger    *slog.Logger

	// reqTimeout replaces etcd's request timeout (tests).
	reqTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxTxnOps == 0 {
		c.MaxTxnOps = DefaultMaxTxnOps
	}
	if c.QuotaBackendBytes == 0 {
		c.QuotaBackendBytes = DefaultQuotaBackendBytes
	}
	if c.GRPCKeepAliveMinTime == 0 {
		c.GRPCKeepAliveMinTime = DefaultGRPCKeepAliveMinTime
	}
	if c.GRPCKeepAliveInterval == 0 {
		c.GRPCKeepAliveInterval = DefaultGRPCKeepAliveInterval
	}
	if c.GRPCKeepAliveTimeout == 0 {
		c.GRPCKeepAliveTimeout = DefaultGRPCKeepAliveTimeout
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = math.MaxUint32
	}
	if c.TickInterval == 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 10
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.WatchProgressNotifyInterval <= 0 {
		c.WatchProgressNotifyInterval = 10 * time.Minute
	}
	c.Engine.MVCC.MaxTxnOps = c.MaxTxnOps
	if c.Engine.MVCC.MinLeaseTTL == 0 {
		// etcd: ceil(3/2 election timeout) seconds.
		minTTL := time.Duration(3*c.ElectionTicks/2) * c.TickInterval
		c.Engine.MVCC.MinLeaseTTL = int64(math.Ceil(minTTL.Seconds()))
	}
	if c.Engine.Logger == nil {
		c.Engine.Logger = c.Logger
	}
}

// Server is one etcd member: the raft node loop over an engine.Engine and
// the v3 API on the client listeners.
type Server struct {
	cfg Config
	log *slog.Logger
	eng *engine.Engine

	// rn is the raft state machine. Only the raft loop (run) touches it;
	// other goroutines hand it work through the inbox and wake it.
	rn *raft.RawNode

	inMu       sync.Mutex
	inProps    []proposal // proposals not yet stepped into raft
	inReads    [][]byte   // ReadIndex request contexts
	spareProps []proposal // the loop's drained buffers, reused
	spareReads [][]byte
	wakec      chan struct{}  // the inbox has work (capacity 1)
	confc      chan confApply // conf changes from the apply goroutine

	reqID *idGenerator

	waitMu sync.Mutex
	waits  map[uint64]waiter // proposals in flight, by request ID

	appliedMu      sync.Mutex
	applied        uint64
	appliedWaiters []appliedWaiter

	lead      atomic.Uint64
	term      atomic.Uint64
	readwaitc chan struct{}
	readMu    sync.RWMutex
	readNotif *notifier
	readState chan raft.ReadState

	metrics *metrics

	// commitInterval: the server commits the backend itself (etcd's
	// batch interval) so that every commit's duration is observed; the
	// backend's own timer is pushed out of the way.
	commitInterval time.Duration

	listeners []net.Listener
	grpc      *grpc.Server
	httpSrv   *http.Server

	applyc chan applyJob // committed entries, from the raft loop to applyLoop

	boundc chan struct{} // closed once the client listeners are bound
	readyc chan struct{} // closed once this member's attributes are published

	stopOnce sync.Once
	stopc    chan struct{}
	wg       sync.WaitGroup
	errMu    sync.Mutex
	err      error // first fatal error of the raft loop
	donec    chan struct{}
}

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

// New opens (or bootstraps) the member and starts its raft node loop. Call
// Serve to listen for clients and Stop to shut down.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	var commitInterval time.Duration
	if bo := &cfg.Engine.MVCC.Backend; !bo.ReadOnly && bo.BatchInterval == 0 {
		commitInterval, bo.BatchInterval = 100*time.Millisecond, 24*time.Hour
	}
	names, _, err := engine.ParseInitialCluster(cfg.Engine.InitialCluster)
	if err == nil && len(names) > 1 && cfg.Transport == nil {
		return nil, fmt.Errorf("server: --initial-cluster names %d members, but the peer transport is not implemented yet; only single-member clusters can run", len(names))
	}
	if cfg.InitialClusterState == "existing" {
		walDir := cfg.Engine.WALDir
		if walDir == "" {
			walDir = filepath.Join(cfg.Engine.DataDir, "member", "wal")
		}
		fsys := cfg.Engine.FS
		if fsys == nil {
			fsys = vfs.OS{}
		}
		if !wal.Exist(fsys, walDir) {
			return nil, fmt.Errorf("server: --initial-cluster-state=existing with no WAL in %s: joining a running cluster needs the peer transport, which is not implemented yet", walDir)
		}
	}
	eng, err := engine.Open(cfg.Engine)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:            cfg,
		log:            cfg.Logger,
		eng:            eng,
		reqID:          newIDGenerator(eng.ID(), time.Now()),
		waits:          make(map[uint64]waiter),
		readwaitc:      make(chan struct{}, 1),
		readNotif:      newNotifier(),
		readState:      make(chan raft.ReadState, 1),
		metrics:        newMetrics(),
		commitInterval: commitInterval,
		applyc:         make(chan applyJob),
		wakec:          make(chan struct{}, 1),
		confc:          make(chan confApply),
		boundc:         make(chan struct{}),
		readyc:         make(chan struct{}),
		stopc:          make(chan struct{}),
		donec:          make(chan struct{}),
	}
	s.applied, _ = eng.Applied()
	s.term.Store(eng.Term())
	rc := &raft.Config{
		ID:                        eng.ID(),
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             1,
		Storage:                   eng.RaftStorage(),
		MaxSizePerMsg:             1024 * 1024,
		MaxInflightMsgs:           512,
		MaxUncommittedEntriesSize: 1 << 30,
		CheckQuorum:               true,
		PreVote:                   true,
		Logger:                    &raftLogger{l: s.log},
	}
	// The engine wrote the bootstrap entries into the WAL already, so a
	// new member restarts from its log like an existing one.
	if s.rn, err = raft.NewRawNode(rc); err != nil {
		_ = eng.Close()
		return nil, fmt.Errorf("server: start raft: %w", err)
	}
	s.wg.Add(5)
	go s.timeoutLoop()
	go s.applyLoop()
	go s.run()
	go s.readLoop()
	go s.leaderLoop()
	if s.commitInterval > 0 {
		s.wg.Add(1)
		go s.commitLoop()
	}
	return s, nil
}

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
		n := b.Commits()
		start := time.Now()
		if err := b.ForceCommit(); err != nil {
			s.fail(err)
			return
		}
		if b.Commits() != n {
			s.metrics.backendCommit.observe(time.Since(start).Seconds())
		}
	}
}

// Engine is the member's storage engine.
func (s *Server) Engine() *engine.Engine { return s.eng }

// ID and ClusterID identify the member and its cluster.
func (s *Server) ID() uint64        { return s.eng.ID() }
func (s *Server) ClusterID() uint64 { return s.eng.ClusterID() }

// Leader is the current leader's ID (0: none known).
func (s *Server) Leader() uint64 { return s.lead.Load() }

// Term is the current raft term.
func (s *Server) Term() uint64 { return s.term.Load() }

// Ready is closed when the member has published itself to the cluster and
// serves clients (etcd's ReadyNotify).
func (s *Server) Ready() <-chan struct{} { return s.readyc }

// Stopped is closed when the server has stopped.
func (s *Server) Stopped() <-chan struct{} { return s.donec }

// Err is the fatal error that stopped the raft loop, if any.
func (s *Server) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

func (s *Server) fail(err error) {
	s.errMu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.errMu.Unlock()
	s.log.Error("member stops on a storage error", "error", err)
	go s.Stop()
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
	for i := 0; i < s.cfg.ElectionTicks-1; i++ {
		s.rn.Tick()
	}
	var held []proposal // proposals waiting for a leader
	for {
		select {
		case <-ticker.C:
			s.rn.Tick()
		case <-s.wakec:
		case c := <-s.confc:
			s.serveConf(c)
		case <-s.stopc:
			return
		}
		for {
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
				s.metrics.leaderChanges.Add(1)
			}
			s.log.Info("leader changed", "leader", fmt.Sprintf("%x", rd.SoftState.Lead), "term", s.rn.BasicStatus().Term)
			if rd.SoftState.Lead == s.ID() {
				s.eng.Store().Lessor().Promote(time.Duration(s.cfg.ElectionTicks) * s.cfg.TickInterval)
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
	if len(rd.CommittedEntries) > 0 {
		job = &applyJob{ents: rd.CommittedEntries}
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
	start := time.Now()
	if err := s.eng.SaveReady(rd.HardState, rd.Entries, rd.Snapshot); err != nil {
		return err
	}
	if rd.MustSync {
		s.metrics.walFsync.observe(time.Since(start).Seconds())
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

// applyJob is one Ready's committed entries for the apply goroutine.
type applyJob struct {
	ents []*raftpb.Entry
	done chan struct{} // closed once applied, when the raft loop waits
}

func hasConfChange(ents []*raftpb.Entry) bool {
	for _, e := range ents {
		if t := e.GetType(); t == raftpb.EntryConfChange || t == raftpb.EntryConfChangeV2 {
			return true
		}
	}
	return false
}

// applyLoop applies committed entries in order, wakes the requests waiting
// for them, and takes a snapshot when one is due. It ends when the raft
// loop closes applyc.
func (s *Server) applyLoop() {
	defer s.wg.Done()
	for job := range s.applyc {
		err := s.eng.Apply(job.ents, s.applyConfChange, s.trigger)
		if err == nil {
			idx, _ := s.eng.Applied()
			s.notifyApplied(idx)
			if s.eng.SnapshotDue() {
				err = s.eng.Snapshot()
			}
		}
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

func (s *Server) send(msgs []*raftpb.Message) {
	if len(msgs) == 0 || s.cfg.Transport == nil {
		return
	}
	s.cfg.Transport.Send(msgs)
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
func (s *Server) requestTimeout() time.Duration {
	if s.cfg.reqTimeout > 0 {
		return s.cfg.reqTimeout
	}
	return 5*time.Second + 2*time.Duration(s.cfg.ElectionTicks)*s.cfg.TickInterval
}

// propose sends r through raft and waits for its result. Concurrent
// proposals reach raft between two Readys and share one WAL write and
// fdatasync.
func (s *Server) propose(ctx context.Context, r *pb.InternalRaftRequest) (proto.Message, error) {
	id := s.reqID.next()
	r.Header = &pb.RequestHeader{ID: id}
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
			s.metrics.proposalsFailed.Add(1)
			return nil, s.timeoutErr()
		case errors.Is(res.Err, raft.ErrProposalDropped):
			s.metrics.proposalsFailed.Add(1)
		}
		return res.Resp, res.Err
	case <-ctx.Done():
		unregister()
		s.metrics.proposalsFailed.Add(1)
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
			// its term; ask again.
			s.readIndex(rctx)
		case <-ctx.Done():
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

// leaderLoop publishes this member's attributes once a leader is known,
// sets the cluster version when this member leads a cluster without one,
// and, while leading, revokes expired leases.
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
			if published && s.eng.ClusterVersion() == "" {
				if _, err := s.propose(ctx, &pb.InternalRaftRequest{ClusterVersionSet: &membershippb.ClusterVersionSetRequest{Ver: engine.ClusterVersion}}); err == nil {
					s.log.Info("set cluster version", "version", engine.ClusterVersion)
				}
			}
			for _, id := range s.eng.Store().Lessor().Expired() {
				if _, err := s.propose(ctx, &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}}); err != nil {
					s.log.Warn("could not revoke expired lease", "lease", fmt.Sprintf("%016x", id), "error", err)
				}
			}
		}
		cancel()
	}
}

// clientURLsKnown: the advertised client URLs are configured, or derived
// from listeners that are bound.
func (s *Server) clientURLsKnown() bool {
	if len(s.cfg.AdvertiseClientURLs) > 0 {
		return true
	}
	select {
	case <-s.boundc:
		return true
	default:
		return false
	}
}

// clientURLs are the advertised client URLs.
func (s *Server) clientURLs() []string {
	if len(s.cfg.AdvertiseClientURLs) > 0 {
		return s.cfg.AdvertiseClientURLs
	}
	var out []string
	for _, l := range s.listeners {
		out = append(out, "http://"+l.Addr().String())
	}
	return out
}

// Serve listens on the client URLs and serves gRPC and HTTP on them until
// Stop. It returns once the listeners are open.
func (s *Server) Serve() error {
	urls := s.cfg.ListenClientURLs
	if len(urls) == 0 {
		urls = []string{"http://127.0.0.1:2379"}
	}
	for _, u := range urls {
		pu, err := url.Parse(u)
		if err != nil {
			return fmt.Errorf("server: --listen-client-urls %q: %w", u, err)
		}
		if pu.Scheme != "http" {
			return fmt.Errorf("server: --listen-client-urls %q: only http is supported yet", u)
		}
		l, err := net.Listen("tcp", pu.Host)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("server: listen %s: %w", u, err)
		}
		s.listeners = append(s.listeners, l)
	}
	s.grpc = newGRPCServer(s)
	mux := http.NewServeMux()
	s.registerHTTP(mux)
	// etcd's client HTTP server: 5 minutes to send a request's header, no
	// idle timeout on keep-alive connections.
	s.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Minute}
	close(s.boundc)
	// As etcd, accept client requests only once the member has published
	// itself (before that, MemberList would show it without client URLs).
	// Connections made meanwhile wait in the listen backlog.
	go func() {
		select {
		case <-s.readyc:
		case <-s.stopc:
			return
		}
		for _, l := range s.listeners {
			sl := newSplitListener(l)
			go sl.run()
			go func() { _ = s.grpc.Serve(sl.grpc) }()
			go func() { _ = s.httpSrv.Serve(sl.http) }()
			s.log.Info("serving client traffic", "address", l.Addr().String())
		}
	}()
	return nil
}

// ClientAddrs are the addresses the client listeners are bound to.
func (s *Server) ClientAddrs() []string {
	var out []string
	for _, l := range s.listeners {
		out = append(out, l.Addr().String())
	}
	return out
}

func (s *Server) closeListeners() {
	for _, l := range s.listeners {
		_ = l.Close()
	}
}

// Stop shuts the server down: listeners, raft node, then storage (the WAL
// is synced and the db committed). It is safe to call more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = s.httpSrv.Shutdown(ctx)
			cancel()
			_ = s.httpSrv.Close()
		}
		if s.grpc != nil {
			s.grpc.Stop()
		}
		s.closeListeners() // those not yet handed to the HTTP server
		close(s.stopc)
		s.wg.Wait()
		if err := s.eng.Close(); err != nil {
			s.errMu.Lock()
			if s.err == nil {
				s.err = err
			}
			s.errMu.Unlock()
		}
		s.log.Info("stopped member", "member-id", fmt.Sprintf("%x", s.ID()))
		close(s.donec)
	})
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

func (r *raftLogger) Debug(v ...any)            { r.l.Debug(fmt.Sprint(v...), "component", "raft") }
func (r *raftLogger) Debugf(f string, v ...any) { r.l.Debug(fmt.Sprintf(f, v...), "component", "raft") }
func (r *raftLogger) Info(v ...any)             { r.l.Info(fmt.Sprint(v...), "component", "raft") }
func (r *raftLogger) Infof(f string, v ...any)  { r.l.Info(fmt.Sprintf(f, v...), "component", "raft") }
func (r *raftLogger) Warning(v ...any)          { r.l.Warn(fmt.Sprint(v...), "component", "raft") }
func (r *raftLogger) Warningf(f string, v ...any) {
	r.l.Warn(fmt.Sprintf(f, v...), "component", "raft")
}
func (r *raftLogger) Error(v ...any)            { r.l.Error(fmt.Sprint(v...), "component", "raft") }
func (r *raftLogger) Errorf(f string, v ...any) { r.l.Error(fmt.Sprintf(f, v...), "component", "raft") }
func (r *raftLogger) Fatal(v ...any)            { r.Panic(v...) }
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
