package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/transport"
	"github.com/etckit/etckit/vfs"
	"github.com/etckit/etckit/wal"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
)

// Version is the etcd version etckit answers as (Status, /version,
// X-Server-Version, etcd_server_version).
const Version = engine.EtcdVersion

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

// Config configures a Server; see NewCommand for the flags that fill it.
type Config struct {
	Engine engine.Options

	// ListenClientURLs are the client listeners (--listen-client-urls:
	// http, https, unix or unixs; port 0 picks a free port).
	// AdvertiseClientURLs are published in the members bucket; default:
	// the listen URLs with the listeners' actual addresses.
	ListenClientURLs    []string
	AdvertiseClientURLs []string
	// ListenClientHTTPURLs is --listen-client-http-urls: listeners for
	// /health, /metrics and /version only. With any, ListenClientURLs
	// serve gRPC only.
	ListenClientHTTPURLs []string
	// ListenMetricsURLs is --listen-metrics-urls: more listeners for
	// /metrics and /health (http plain, https with ClientTLS).
	ListenMetricsURLs []string
	// ClientTLS is the client listeners' TLS (--cert-file, --key-file,
	// --trusted-ca-file, --client-cert-auth, ...), used on https and
	// unixs URLs; PeerTLS is the peer side's (--peer-cert-file, ...), used
	// on https peer URLs and to dial peers (tls.go).
	ClientTLS TLSInfo
	PeerTLS   TLSInfo
	// ListenPeerURLs are the peer listeners (--listen-peer-urls): etcd's
	// peer protocol and peer endpoints. None: the member listens for no
	// peers (a single member, or tests with their own Transport).
	ListenPeerURLs []string

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
	// "existing": a member without a WAL then joins a running cluster,
	// reading /members from the peers in --initial-cluster (join.go).
	InitialClusterState string

	// ForceNewCluster is --force-new-cluster: a member with a WAL restarts
	// as the only member of its cluster (the others are removed by conf
	// changes committed at start, engine.Options.ForceNewCluster); its data
	// and the cluster ID stay. For disaster recovery after a quorum loss.
	ForceNewCluster bool

	// WatchProgressNotifyInterval is the period of the progress
	// notifications of watchers created with progress_notify (etcd
	// --watch-progress-notify-interval, 10 minutes).
	WatchProgressNotifyInterval time.Duration

	// Transport replaces the peer transport (tests); default etcd's
	// protocol over ListenPeerURLs and the members' peer URLs.
	Transport Transport
	Logger    *slog.Logger

	// PreVote and CheckQuorum are raft's (etcd --pre-vote, default true;
	// etcd always checks quorum). InitialElectionTickAdvance is etcd's
	// --initial-election-tick-advance (default true).
	DisablePreVote                    bool
	DisableInitialElectionTickAdvance bool
	// DisableStrictReconfigCheck is --strict-reconfig-check=false: member
	// changes skip etcd's quorum and connectivity checks.
	DisableStrictReconfigCheck bool

	// AuthToken is --auth-token: "simple" (also when empty),
	// "jwt,sign-method=...,pub-key=...,priv-key=...,ttl=..." or "-" for
	// etcd's --auth-token="" (no tokens: Authenticate fails). AuthTokenTTL is
	// --auth-token-ttl, a simple token's idle lifetime (default 300 s).
	// BcryptCost is --bcrypt-cost (default 10; out of 4..31 falls back to 10).
	AuthToken    string
	AuthTokenTTL time.Duration
	BcryptCost   int

	// DisableGRPCGateway is --enable-grpc-gateway=false: no JSON API
	// under /v3/ on the client HTTP listeners.
	DisableGRPCGateway bool

	// LeaseCheckpoint is etcd's feature gate LeaseCheckpoint
	// (--feature-gates=LeaseCheckpoint=true; 3.6's
	// --experimental-enable-lease-checkpoint): the leader proposes
	// LeaseCheckpoint entries so that a new leader starts each long lease
	// from its remaining TTL instead of the full one.
	// LeaseCheckpointPersist is the gate LeaseCheckpointPersist: the
	// remaining TTL is stored in the lease bucket even below cluster
	// version 3.6; it requires LeaseCheckpoint. LeaseCheckpointInterval is
	// etcd's ServerConfig.LeaseCheckpointInterval (default 5 minutes; etcd
	// has no flag for it, nor has etckit).
	LeaseCheckpoint         bool
	LeaseCheckpointPersist  bool
	LeaseCheckpointInterval time.Duration

	// Metrics is etcd's --metrics: "basic" (default) or "extensive", which
	// adds the gRPC handling-time histograms (grpc_server_handling_seconds).
	Metrics string

	// DowngradeCheckTime is etcd's --downgrade-check-time: how often the
	// leader looks whether every member runs the downgrade target
	// (default 5 s; negative: never).
	DowngradeCheckTime time.Duration

	// RaftReadTimeout and RaftWriteTimeout are --raft-read-timeout and
	// --raft-write-timeout: the peer connections' I/O deadlines (etcd's
	// rafthttp globals; below the 5 s default they are raised to it, as
	// etcd does). Process-wide, as in etcd; set by Run.
	RaftReadTimeout, RaftWriteTimeout time.Duration
	// SocketReusePort and SocketReuseAddress are --socket-reuse-port and
	// --socket-reuse-address: SO_REUSEPORT / SO_REUSEADDR on the client
	// and peer listeners.
	SocketReusePort, SocketReuseAddress bool
	// EnablePprof is --enable-pprof: Go's profiles under /debug/pprof/ on
	// the client HTTP listeners.
	EnablePprof bool
	// CORS and HostWhitelist are --cors and --host-whitelist for the
	// client HTTP endpoints (empty or "*": any).
	CORS, HostWhitelist []string
	// AutoCompaction is --auto-compaction-mode/--auto-compaction-retention.
	AutoCompaction AutoCompaction
	// WarningUnaryRequestDuration is --warning-unary-request-duration: a
	// unary request slower than that is logged ("request stats"; default
	// 300ms).
	WarningUnaryRequestDuration time.Duration
	// SetMemberLocalAddr is etcd's feature gate SetMemberLocalAddr: peers
	// are dialed from the advertised peer IP (inferLocalAddr).
	SetMemberLocalAddr bool

	// StopGRPCServiceOnDefrag is etcd's feature gate of that name (3.6's
	// --experimental-stop-grpc-service-on-defrag): the gRPC health service
	// answers NOT_SERVING while a Defragment runs, so that clients that
	// check health move to another member.
	StopGRPCServiceOnDefrag bool
	// BootstrapDefragThresholdMegabytes is
	// --bootstrap-defrag-threshold-megabytes: at start, the db is
	// defragmented when that much space or more would be freed (0: never).
	BootstrapDefragThresholdMegabytes uint

	// InitialCorruptCheck is etcd's feature gate of that name: a member
	// that has data compares its hash with its peers' before it starts
	// (corrupt.go). CorruptCheckTime is --corrupt-check-time: how often
	// the leader compares the members' hashes (0: never).
	// CompactHashCheck is the feature gate of that name, and
	// CompactHashCheckTime (--compact-hash-check-time, default 1 minute)
	// how often the leader compares the hashes of the last compactions.
	InitialCorruptCheck  bool
	CorruptCheckTime     time.Duration
	CompactHashCheck     bool
	CompactHashCheckTime time.Duration

	// reqTimeout replaces etcd's request timeout (tests).
	reqTimeout time.Duration
	// serviceRegister adds gRPC services to the client server (tests).
	serviceRegister func(*grpc.Server)
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
	if c.DowngradeCheckTime == 0 {
		c.DowngradeCheckTime = DefaultDowngradeCheckTime
	}
	if c.CompactHashCheckTime <= 0 {
		c.CompactHashCheckTime = time.Minute
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
	if c.WarningUnaryRequestDuration <= 0 {
		c.WarningUnaryRequestDuration = 300 * time.Millisecond
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
	if c.LeaseCheckpointInterval > 0 {
		c.Engine.MVCC.LeaseCheckpointInterval = c.LeaseCheckpointInterval
	}
	if c.LeaseCheckpointPersist {
		c.Engine.LeaseCheckpointPersist = true
	}
	if c.ForceNewCluster {
		c.Engine.ForceNewCluster = true
	}
}

// errCheckpointPersistAlone is etcd's embed.Config.Validate error.
var errCheckpointPersistAlone = errors.New("enabling feature gate LeaseCheckpointPersist requires enabling feature gate LeaseCheckpoint")

// Server is one etcd member: the raft node loop over an engine.Engine and
// the v3 API on the client listeners.
type Server struct {
	cfg Config
	log *slog.Logger
	eng *engine.Engine

	// health is the gRPC health service (see newGRPCServer).
	health *health.Server

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

	// localAddr is the IP peers are dialed from (SetMemberLocalAddr).
	localAddr string

	// commitInterval: the server commits the backend itself (etcd's
	// batch interval) so that every commit's duration is observed; the
	// backend's own timer is pushed out of the way.
	commitInterval time.Duration

	gateway   *gatewayConn // the gRPC gateway's in-process connection
	listeners []net.Listener
	grpc      *grpc.Server
	httpSrv   *http.Server
	// The TLS side of the client listeners, the --listen-metrics-urls
	// server, and the advertised client URLs once bound (listen.go).
	httpsSrv        *http.Server
	httpsLnCfg      *tls.Config // the https listeners' own copy
	metricsSrv      *http.Server
	metricsLns      []net.Listener
	boundClientURLs []string
	// peerDial is the TLS config for dialling peers (PeerTLS).
	peerDial *tls.Config

	// The peer side: etcd's transport (nil with Config.Transport), the
	// peer listeners, and the peers the transport has (syncPeers).
	tr            *transport.Transport
	peerListeners []net.Listener
	peerSrv       *http.Server
	peerClient    *http.Client
	peersMu       sync.Mutex
	peers         map[uint64][]string
	msgc          chan *raftpb.Message // messages from peers, for the raft loop
	reportc       chan func()          // transport reports, run on the raft loop
	snapc         chan *raftpb.Message // MsgSnaps for the apply goroutine to send
	leaderStreams leaderStreams

	corrupt corruptChecker // the compaction hash check's progress

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

// New opens (or bootstraps) the member and starts its raft node loop. Call
// Serve to listen for clients and Stop to shut down.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if cfg.LeaseCheckpointPersist && !cfg.LeaseCheckpoint {
		return nil, errCheckpointPersistAlone
	}
	if cfg.LeaseCheckpoint && !cfg.LeaseCheckpointPersist {
		cfg.Logger.Warn("Detected that checkpointing is enabled without persistence. Consider enabling feature gate LeaseCheckpointPersist")
	}
	var commitInterval time.Duration
	if bo := &cfg.Engine.MVCC.Backend; !bo.ReadOnly && bo.BatchInterval == 0 {
		commitInterval, bo.BatchInterval = 100*time.Millisecond, 24*time.Hour
	}
	if err := cfg.prepareTLS(); err != nil {
		return nil, err
	}
	peerDial, err := cfg.PeerTLS.clientConfig(cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("server: peer TLS: %w", err)
	}
	localAddr := cfg.inferLocalAddr()
	var joined *joinInfo
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
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			join, err := discoverCluster(ctx, cfg, &http.Client{Timeout: 2 * time.Second, Transport: newPeerRoundTripper(peerDial, cfg.peerDialTimeout(), localAddr)})
			cancel()
			if err != nil {
				return nil, fmt.Errorf("server: joining a running cluster (--initial-cluster-state=existing): %w", err)
			}
			ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
			ok := checkClusterCompatible(ctx, cfg.Logger, &http.Client{Timeout: cfg.reqTimeoutOrDefault(), Transport: newPeerRoundTripper(peerDial, cfg.peerDialTimeout(), localAddr)}, join.members, join.memberID)
			cancel()
			if !ok {
				return nil, fmt.Errorf("server: joining a running cluster (--initial-cluster-state=existing): %w", errIncompatibleCluster)
			}
			cfg.Engine.Join = &engine.Join{ClusterID: join.clusterID, MemberID: join.memberID}
			joined = join
		}
	}
	// The token provider needs the server (a simple token waits for the
	// index it was made at), which needs the engine: bound late.
	var srv *Server
	tokens, err := newTokenProvider(cfg, func(ctx context.Context, index uint64) error { return srv.waitApplied(ctx, index) })
	if err != nil {
		return nil, err
	}
	cfg.Engine.Auth.Tokens = tokens
	if cfg.LeaseCheckpoint {
		// etcd: "setting checkpointer enables lease checkpoint feature".
		cfg.Engine.MVCC.LeaseCheckpointer = func(ctx context.Context, cps []mvcc.LeaseCheckpoint) error {
			return srv.checkpointLeases(ctx, cps)
		}
	}
	if cfg.Engine.Auth.BcryptCost == 0 {
		cfg.Engine.Auth.BcryptCost = cfg.BcryptCost
	}
	extensive, err := parseMetricsFlag(cfg.Metrics)
	if err != nil {
		tokens.Disable()
		return nil, err
	}
	met := newMetrics(extensive)
	cfg.Engine.OnApply = met.observeApply
	cfg.Engine.OnWALSync = met.observeWALSync
	cfg.Engine.MVCC.Backend.OnCommit = met.observeCommit
	logger := cfg.Logger
	cfg.Engine.MVCC.OnCompact = func(c mvcc.CompactStats) {
		met.observeCompact(c)
		logger.Info("finished scheduled compaction", "compact-revision", c.Revision, "took", c.Total.String(),
			"number-of-keys-compacted", c.Keys, "hash", c.Hash)
	}
	cfg.Engine.OnSnapSave = func(d time.Duration) { met.snapSave.Observe(d.Seconds()) }
	eng, err := engine.Open(cfg.Engine)
	if err != nil {
		tokens.Disable()
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
		metrics:        met,
		health:         health.NewServer(),
		commitInterval: commitInterval,
		applyc:         make(chan applyJob),
		wakec:          make(chan struct{}, 1),
		confc:          make(chan confApply),
		boundc:         make(chan struct{}),
		readyc:         make(chan struct{}),
		stopc:          make(chan struct{}),
		donec:          make(chan struct{}),
		peers:          make(map[uint64][]string),
		msgc:           make(chan *raftpb.Message, 1024),
		reportc:        make(chan func(), 256),
		snapc:          make(chan *raftpb.Message, 16),
		peerClient:     &http.Client{Timeout: 10 * time.Second, Transport: newPeerRoundTripper(peerDial, cfg.peerDialTimeout(), localAddr)},
		peerDial:       peerDial,
		localAddr:      localAddr,
		leaderStreams:  leaderStreams{cancels: map[*cancelStream]struct{}{}},
	}
	srv = s
	met.registerScrape(s)
	s.applied, _ = eng.Applied()
	s.term.Store(eng.Term())
	if cfg.BootstrapDefragThresholdMegabytes > 0 {
		if err := s.maybeDefragBackend(); err != nil {
			_ = eng.Close()
			return nil, err
		}
	}
	// etcd's embed runs the initial check after the server is made and
	// before it starts raft or serves peers and clients; a new member has
	// nothing to compare.
	if cfg.InitialCorruptCheck && !eng.Bootstrapped() {
		if err := s.initialCorruptCheck(); err != nil {
			s.log.Error("checkInitialHashKV failed", "error", err)
			tokens.Disable()
			_ = eng.Close()
			return nil, err
		}
	}
	rc := &raft.Config{
		ID:                        eng.ID(),
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             1,
		Storage:                   eng.RaftStorage(),
		MaxSizePerMsg:             1024 * 1024,
		MaxInflightMsgs:           512,
		MaxUncommittedEntriesSize: 1 << 30,
		CheckQuorum:               true,
		PreVote:                   !cfg.DisablePreVote,
		Logger:                    &raftLogger{l: s.log},
	}
	// The engine wrote the bootstrap entries into the WAL already, so a
	// new member restarts from its log like an existing one.
	if s.rn, err = raft.NewRawNode(rc); err != nil {
		_ = eng.Close()
		return nil, fmt.Errorf("server: start raft: %w", err)
	}
	if err := s.startPeer(); err != nil {
		for _, l := range s.peerListeners {
			_ = l.Close()
		}
		_ = eng.Close()
		return nil, err
	}
	s.syncPeers()
	if joined != nil && s.tr != nil {
		// Until the membership reaches this member through raft, it
		// answers the members it read from /members (etcd's remotes).
		for _, m := range joined.members {
			if m.ID != s.ID() {
				s.tr.AddRemote(m.ID, m.PeerURLs)
			}
		}
		s.log.Info("joining a running cluster", "cluster-id", fmt.Sprintf("%x", s.ClusterID()), "member-id", fmt.Sprintf("%x", s.ID()), "members", len(joined.members))
	}
	if cfg.LeaseCheckpoint {
		s.wg.Add(1)
		go s.checkpointLoop()
	}
	if cfg.AutoCompaction.enabled() {
		s.wg.Add(1)
		go s.compactorLoop()
	}
	if cfg.CorruptCheckTime > 0 {
		s.wg.Add(1)
		go s.monitorKVHash()
	}
	if cfg.CompactHashCheck {
		s.wg.Add(1)
		go s.monitorCompactHash()
	}
	s.wg.Add(7)
	go s.versionLoop()
	go s.monitorLeader()
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

// Engine is the member's storage engine.
func (s *Server) Engine() *engine.Engine { return s.eng }

// ID and ClusterID identify the member and its cluster.
func (s *Server) ID() uint64 { return s.eng.ID() }

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

// failWith stops the member for a reason other than storage (removed from
// the cluster).
func (s *Server) failWith(err error) {
	s.errMu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.errMu.Unlock()
	s.log.Error("member stops", "error", err)
	go s.Stop()
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
		for _, srv := range []*http.Server{s.httpsSrv, s.metricsSrv} {
			if srv != nil {
				_ = srv.Close()
			}
		}
		s.closeGateway()
		if s.grpc != nil {
			s.grpc.Stop()
		}
		s.closeListeners() // those not yet handed to the HTTP server
		close(s.stopc)
		if s.peerSrv != nil {
			_ = s.peerSrv.Close()
		}
		for _, l := range s.peerListeners {
			_ = l.Close()
		}
		if s.cfg.Transport != nil {
			s.cfg.Transport.Stop()
		}
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
