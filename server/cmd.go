package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/transport"
	"github.com/spf13/cobra"
)

// flags holds the values of the serve command's flags (etcd's names).
type flags struct {
	name, dataDir, walDir                           string
	listenClientURLs, advertiseClientURLs           string
	listenPeerURLs, initialAdvertisePeerURLs        string
	initialCluster, initialClusterState, clusterTok string
	snapshotCount, snapshotCatchUpEntries           uint64
	experimentalSnapshotCatchUpEntries              uint64
	grpcKeepAliveMinTime, grpcKeepAliveInterval     time.Duration
	grpcKeepAliveTimeout                            time.Duration
	maxConcurrentStreams                            uint32
	preVote, initialElectionTickAdvance             bool
	strictReconfigCheck                             bool
	maxLearners                                     int
	featureGates                                    featureGates
	metrics                                         string
	expLeaseCheckpoint, expLeaseCheckpointPersist   bool
	downgradeCheckTime, expDowngradeCheckTime       time.Duration
	version                                         bool
	quotaBackendBytes                               int64
	maxRequestBytes                                 uint
	maxTxnOps                                       uint
	maxSnapshots, maxWALs                           uint
	heartbeatMs, electionMs                         uint
	logLevel                                        string
	unsafeNoFsync, forceNewCluster                  bool
	watchProgressNotifyInterval                     time.Duration
	authToken                                       string
	authTokenTTL, bcryptCost                        uint

	// TLS (tls.go): the client side, the peer side, and what they share.
	listenClientHTTPURLs, listenMetricsURLs       string
	certFile, keyFile, clientCertFile             string
	clientKeyFile, trustedCAFile, clientCRLFile   string
	clientCertAllowedHostname                     []string
	clientCertAuth, autoTLS                       bool
	enableGRPCGateway                             bool
	peerCertFile, peerKeyFile, peerClientCertFile string
	peerClientKeyFile, peerTrustedCAFile, peerCRL string
	peerCertAllowedCN, peerCertAllowedHostname    []string
	peerClientCertAuth, peerAutoTLS, peerSkipSAN  bool
	experimentalPeerSkipSAN                       bool
	selfSignedCertValidity                        uint
	cipherSuites                                  []string
	tlsMinVersion, tlsMaxVersion                  string

	// The rest of etcd's flags (flags.go).
	compat compatFlags
}

// NewCommand returns the `serve` command: run one etcd member on a data
// directory with etcd's flags (also read from ETCD_<FLAG> environment
// variables, dashes as underscores), until SIGINT or SIGTERM.
func NewCommand() *cobra.Command {
	cmd, _ := newCommand()
	return cmd
}

// newCommand is NewCommand and the flag values it binds.
func newCommand() (*cobra.Command, *flags) {
	var f flags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run an etcd member (v3 API) on an etcd data directory",
		Long: `Run an etcd member serving the etcd v3 gRPC API (KV, Lease, Cluster,
Maintenance) and /health, /version, /metrics on the client URLs, over a data
directory laid out byte for byte as etcd v3.6 does. Flags are etcd's; each can
also be set as ETCD_<FLAG_NAME> (e.g. ETCD_DATA_DIR).

With no flags it starts one member named "default" with its data in
./default.etckit and the client API on 127.0.0.1:2379.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.version {
				printVersion(cmd.OutOrStdout())
				return nil
			}
			cfg, err := f.load(cmd, os.Environ())
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return Run(ctx, cfg)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.name, "name", "default", "Human-readable name for this member.")
	fs.StringVar(&f.dataDir, "data-dir", "", "Path to the data directory (default ${name}.etckit).")
	fs.StringVar(&f.walDir, "wal-dir", "", "Path to the dedicated WAL directory (default ${data-dir}/member/wal).")
	fs.StringVar(&f.listenClientURLs, "listen-client-urls", "http://127.0.0.1:2379", "List of URLs to listen on for client traffic.")
	fs.StringVar(&f.advertiseClientURLs, "advertise-client-urls", "", "List of this member's client URLs to advertise to the cluster (default: the listen URLs).")
	fs.StringVar(&f.listenPeerURLs, "listen-peer-urls", "http://localhost:2380", "List of URLs to listen on for peer traffic.")
	fs.StringVar(&f.initialAdvertisePeerURLs, "initial-advertise-peer-urls", "http://localhost:2380", "List of this member's peer URLs to advertise to the rest of the cluster.")
	fs.StringVar(&f.initialCluster, "initial-cluster", "", "Initial cluster configuration for bootstrapping (default ${name}=${initial-advertise-peer-urls}).")
	fs.StringVar(&f.initialClusterState, "initial-cluster-state", "new", "Initial cluster state ('new' or 'existing').")
	fs.StringVar(&f.clusterTok, "initial-cluster-token", "etcd-cluster", "Initial cluster token for the etcd cluster during bootstrap.")
	fs.Uint64Var(&f.snapshotCount, "snapshot-count", engine.DefaultSnapshotCount, "Number of committed transactions to trigger a snapshot to disk.")
	fs.Uint64Var(&f.snapshotCatchUpEntries, "snapshot-catchup-entries", engine.DefaultSnapshotCatchUpEntries, "Number of entries for a slow follower to catch up after compacting the raft storage entries.")
	fs.Uint64Var(&f.experimentalSnapshotCatchUpEntries, "experimental-snapshot-catchup-entries", engine.DefaultSnapshotCatchUpEntries, "Deprecated in etcd v3.6; use --snapshot-catchup-entries instead.")
	fs.Int64Var(&f.quotaBackendBytes, "quota-backend-bytes", 0, "Raise alarms when backend size exceeds the given quota. 0 means use the default quota (2 GiB).")
	fs.UintVar(&f.maxRequestBytes, "max-request-bytes", DefaultMaxRequestBytes, "Maximum client request size in bytes the server will accept.")
	fs.UintVar(&f.maxTxnOps, "max-txn-ops", DefaultMaxTxnOps, "Maximum number of operations permitted in a transaction.")
	fs.UintVar(&f.maxSnapshots, "max-snapshots", engine.DefaultMaxSnapshots, "Maximum number of snapshot files to retain (0 is unlimited).")
	fs.UintVar(&f.maxWALs, "max-wals", engine.DefaultMaxWALs, "Maximum number of wal files to retain (0 is unlimited).")
	fs.DurationVar(&f.grpcKeepAliveMinTime, "grpc-keepalive-min-time", DefaultGRPCKeepAliveMinTime, "Minimum interval duration that a client should wait before pinging server.")
	fs.DurationVar(&f.grpcKeepAliveInterval, "grpc-keepalive-interval", DefaultGRPCKeepAliveInterval, "Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).")
	fs.DurationVar(&f.grpcKeepAliveTimeout, "grpc-keepalive-timeout", DefaultGRPCKeepAliveTimeout, "Additional duration of wait before closing a non-responsive connection (0 to disable).")
	fs.Uint32Var(&f.maxConcurrentStreams, "max-concurrent-streams", math.MaxUint32, "Maximum concurrent streams that each client can open at a time.")
	fs.BoolVar(&f.preVote, "pre-vote", true, "Enable the raft Pre-Vote algorithm to prevent disruption when a node that has been partitioned away rejoins the cluster.")
	fs.BoolVar(&f.initialElectionTickAdvance, "initial-election-tick-advance", true, "Whether to fast-forward initial election ticks on boot for faster election.")
	fs.BoolVar(&f.strictReconfigCheck, "strict-reconfig-check", true, "Reject reconfiguration requests that would cause quorum loss.")
	fs.IntVar(&f.maxLearners, "max-learners", 1, "Sets the maximum number of learners that can be available in the cluster membership.")
	fs.Var(&f.featureGates, "feature-gates", f.featureGates.usage())
	fs.BoolVar(&f.expLeaseCheckpoint, "experimental-enable-lease-checkpoint", false, "Enable leader to send regular checkpoints to other members to prevent reset of remaining TTL on leader change. Deprecated in v3.6 and will be decommissioned in v3.7. Use '--feature-gates=LeaseCheckpoint=true' instead.")
	fs.BoolVar(&f.expLeaseCheckpointPersist, "experimental-enable-lease-checkpoint-persist", false, "Enable persisting remainingTTL to prevent indefinite auto-renewal of long lived leases. Always enabled in v3.6. Should be used to ensure smooth upgrade from v3.5 clusters with this feature enabled. Requires experimental-enable-lease-checkpoint to be enabled. Deprecated in v3.6 and will be decommissioned in v3.7. Use '--feature-gates=LeaseCheckpointPersist=true' instead.")
	fs.DurationVar(&f.downgradeCheckTime, "downgrade-check-time", DefaultDowngradeCheckTime, "Duration of time between two downgrade status checks.")
	fs.DurationVar(&f.expDowngradeCheckTime, "experimental-downgrade-check-time", DefaultDowngradeCheckTime, "Duration of time between two downgrade status checks. Deprecated in v3.6 and will be decommissioned in v3.7. Use --downgrade-check-time instead.")
	fs.BoolVar(&f.version, "version", false, "Print the version and exit.")
	fs.UintVar(&f.heartbeatMs, "heartbeat-interval", 100, "Time (in milliseconds) of a heartbeat interval.")
	fs.UintVar(&f.electionMs, "election-timeout", 1000, "Time (in milliseconds) for an election to timeout.")
	fs.StringVar(&f.logLevel, "log-level", "info", "Configures log level. Only supports debug, info, warn, error.")
	fs.DurationVar(&f.watchProgressNotifyInterval, "watch-progress-notify-interval", 10*time.Minute, "Duration of periodic watch progress notifications.")
	fs.BoolVar(&f.unsafeNoFsync, "unsafe-no-fsync", false, "Disables fsync, unsafe, will cause data loss.")
	fs.BoolVar(&f.forceNewCluster, "force-new-cluster", false, "Force to create a new one member cluster.")
	fs.StringVar(&f.authToken, "auth-token", "simple", "Specify auth token specific options.")
	fs.UintVar(&f.authTokenTTL, "auth-token-ttl", 300, "The lifetime in seconds of the auth token.")
	fs.UintVar(&f.bcryptCost, "bcrypt-cost", 10, "Specify bcrypt algorithm cost factor for auth password hashing.")

	fs.StringVar(&f.listenClientHTTPURLs, "listen-client-http-urls", "", "List of URLs to listen on for http only client traffic. Enabling this flag removes http services from --listen-client-urls.")
	fs.StringVar(&f.listenMetricsURLs, "listen-metrics-urls", "", "List of URLs to listen on for the metrics and health endpoints.")
	fs.StringVar(&f.metrics, "metrics", "basic", "Set level of detail for exported metrics, specify 'extensive' to include server side grpc histogram metrics")
	fs.StringVar(&f.certFile, "cert-file", "", "Path to the client server TLS cert file.")
	fs.StringVar(&f.keyFile, "key-file", "", "Path to the client server TLS key file.")
	fs.StringVar(&f.clientCertFile, "client-cert-file", "", "Path to an explicit peer client TLS cert file otherwise cert file will be used when client auth is required.")
	fs.StringVar(&f.clientKeyFile, "client-key-file", "", "Path to an explicit peer client TLS key file otherwise key file will be used when client auth is required.")
	fs.BoolVar(&f.clientCertAuth, "client-cert-auth", false, "Enable client cert authentication.")
	fs.BoolVar(&f.enableGRPCGateway, "enable-grpc-gateway", true, "Enable GRPC gateway.")
	fs.StringVar(&f.clientCRLFile, "client-crl-file", "", "Path to the client certificate revocation list file.")
	fs.StringSliceVar(&f.clientCertAllowedHostname, "client-cert-allowed-hostname", nil, "Comma-separated list of allowed SAN hostnames for client cert authentication.")
	fs.StringVar(&f.trustedCAFile, "trusted-ca-file", "", "Path to the client server TLS trusted CA cert file.")
	fs.BoolVar(&f.autoTLS, "auto-tls", false, "Client TLS using generated certificates")
	fs.StringVar(&f.peerCertFile, "peer-cert-file", "", "Path to the peer server TLS cert file.")
	fs.StringVar(&f.peerKeyFile, "peer-key-file", "", "Path to the peer server TLS key file.")
	fs.StringVar(&f.peerClientCertFile, "peer-client-cert-file", "", "Path to an explicit peer client TLS cert file otherwise peer cert file will be used when client auth is required.")
	fs.StringVar(&f.peerClientKeyFile, "peer-client-key-file", "", "Path to an explicit peer client TLS key file otherwise peer key file will be used when client auth is required.")
	fs.BoolVar(&f.peerClientCertAuth, "peer-client-cert-auth", false, "Enable peer client cert authentication.")
	fs.StringVar(&f.peerTrustedCAFile, "peer-trusted-ca-file", "", "Path to the peer server TLS trusted CA file.")
	fs.BoolVar(&f.peerAutoTLS, "peer-auto-tls", false, "Peer TLS using generated certificates")
	fs.UintVar(&f.selfSignedCertValidity, "self-signed-cert-validity", 1, "The validity period of the client and peer certificates, unit is year")
	fs.StringVar(&f.peerCRL, "peer-crl-file", "", "Path to the peer certificate revocation list file.")
	fs.StringSliceVar(&f.peerCertAllowedCN, "peer-cert-allowed-cn", nil, "Comma-separated list of allowed CNs for inter-peer TLS authentication.")
	fs.StringSliceVar(&f.peerCertAllowedHostname, "peer-cert-allowed-hostname", nil, "Comma-separated list of allowed SAN hostnames for inter-peer TLS authentication.")
	fs.StringSliceVar(&f.cipherSuites, "cipher-suites", nil, "Comma-separated list of supported TLS cipher suites between client/server and peers (empty will be auto-populated by Go).")
	fs.BoolVar(&f.peerSkipSAN, "peer-skip-client-san-verification", false, "Skip verification of SAN field in client certificate for peer connections.")
	fs.BoolVar(&f.experimentalPeerSkipSAN, "experimental-peer-skip-client-san-verification", false, "Skip verification of SAN field in client certificate for peer connections.Deprecated in v3.6 and will be decommissioned in v3.7. Use peer-skip-client-san-verification instead")
	fs.StringVar(&f.tlsMinVersion, "tls-min-version", TLSVersion12, "Minimum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3.")
	fs.StringVar(&f.tlsMaxVersion, "tls-max-version", "", "Maximum TLS version supported by etcd. Possible values: TLS1.2, TLS1.3 (empty defers to Go).")
	addCompatFlags(fs, &f.compat)
	return cmd, &f
}

func splitURLs(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

func (f *flags) config(cmd *cobra.Command) (Config, error) {
	logger, err := newLogger(f.compat.logger, f.logLevel, f.compat.logFormat, f.compat.logOutputs, cmd.ErrOrStderr())
	if err != nil {
		return Config{}, err
	}
	if err := applyCompat(cmd.Flags(), logger); err != nil {
		return Config{}, err
	}
	if f.dataDir == "" {
		f.dataDir = f.name + ".etckit"
	}
	if f.initialCluster == "" {
		var parts []string
		for _, u := range splitURLs(f.initialAdvertisePeerURLs) {
			parts = append(parts, f.name+"="+u)
		}
		f.initialCluster = strings.Join(parts, ",")
	}
	if f.initialClusterState != "new" && f.initialClusterState != "existing" {
		return Config{}, fmt.Errorf("--initial-cluster-state %q: want new or existing", f.initialClusterState)
	}
	switch {
	case f.heartbeatMs == 0:
		return Config{}, fmt.Errorf("--heartbeat-interval must be >0 (set to %dms)", f.heartbeatMs)
	case f.electionMs == 0:
		return Config{}, fmt.Errorf("--election-timeout must be >0 (set to %dms)", f.electionMs)
	case 5*f.heartbeatMs > f.electionMs:
		return Config{}, fmt.Errorf("--election-timeout[%vms] should be at least as 5 times as --heartbeat-interval[%vms]", f.electionMs, f.heartbeatMs)
	case f.electionMs > 50000:
		return Config{}, fmt.Errorf("--election-timeout[%vms] is too long, and should be set less than %vms", f.electionMs, 50000)
	}
	switch f.compat.autoCompactionMode {
	case "periodic", "revision":
	case "":
		return Config{}, errors.New("undefined auto-compaction-mode")
	default:
		return Config{}, fmt.Errorf("unknown auto-compaction-mode %q", f.compat.autoCompactionMode)
	}
	autoCompact, err := parseAutoCompactionRetention(f.compat.autoCompactionMode, f.compat.autoCompactionRetention)
	if err != nil {
		return Config{}, err
	}
	catchUp := f.snapshotCatchUpEntries
	downgradeCheck := f.downgradeCheckTime
	if downgradeCheck == 0 {
		downgradeCheck = -1 // etcd: 0 turns the downgrade monitor off
	}
	authToken := f.authToken
	if authToken == "" {
		authToken = "-" // etcd's --auth-token="": no tokens
	}
	err = f.featureGates.setFromExperimentalFlags(func(name string) *bool {
		if !cmd.Flags().Changed(name) {
			return nil
		}
		v, _ := cmd.Flags().GetBool(name)
		return &v
	})
	if err != nil {
		return Config{}, err
	}
	if f.featureGates.Enabled(featureLeaseCheckpointPersist) && !f.featureGates.Enabled(featureLeaseCheckpoint) {
		return Config{}, errCheckpointPersistAlone
	}
	clientTLS, peerTLS, err := f.tlsInfos()
	if err != nil {
		return Config{}, err
	}
	var mvccOpts mvcc.Options
	maxSnaps, maxWALs := int(f.maxSnapshots), int(f.maxWALs)
	if maxSnaps == 0 {
		maxSnaps = -1
	}
	if maxWALs == 0 {
		maxWALs = -1
	}
	if f.compat.backendBatchInterval > 0 {
		mvccOpts.Backend.BatchInterval = f.compat.backendBatchInterval
	}
	if f.compat.backendBatchLimit > 0 {
		mvccOpts.Backend.BatchLimit = f.compat.backendBatchLimit
	}
	if f.compat.compactionBatchLimit > 0 {
		mvccOpts.CompactionBatchLimit = f.compat.compactionBatchLimit
	}
	if f.compat.compactionSleepInterval > 0 {
		mvccOpts.CompactionSleepInterval = f.compat.compactionSleepInterval
	}
	return Config{
		Engine: engine.Options{
			MVCC:                     mvccOpts,
			Name:                     f.name,
			DataDir:                  f.dataDir,
			WALDir:                   f.walDir,
			InitialCluster:           f.initialCluster,
			InitialClusterToken:      f.clusterTok,
			InitialAdvertisePeerURLs: splitURLs(f.initialAdvertisePeerURLs),
			SnapshotCount:            f.snapshotCount,
			CatchUpEntries:           catchUp,
			MaxLearners:              f.maxLearners,
			MaxSnapshots:             maxSnaps,
			MaxWALs:                  maxWALs,
			NoSync:                   f.unsafeNoFsync,
		},
		InitialClusterState:  f.initialClusterState,
		ForceNewCluster:      f.forceNewCluster,
		ListenClientURLs:     splitURLs(f.listenClientURLs),
		ListenPeerURLs:       splitURLs(f.listenPeerURLs),
		AdvertiseClientURLs:  splitURLs(f.advertiseClientURLs),
		ListenClientHTTPURLs: splitURLs(f.listenClientHTTPURLs),
		ListenMetricsURLs:    splitURLs(f.listenMetricsURLs),
		ClientTLS:            clientTLS,
		PeerTLS:              peerTLS,
		MaxRequestBytes:      int(f.maxRequestBytes),
		MaxTxnOps:            int(f.maxTxnOps),
		QuotaBackendBytes:    f.quotaBackendBytes,
		TickInterval:         time.Duration(f.heartbeatMs) * time.Millisecond,
		ElectionTicks:        int(f.electionMs / f.heartbeatMs),
		Logger:               logger,

		GRPCKeepAliveMinTime:  disabledIfZero(f.grpcKeepAliveMinTime),
		GRPCKeepAliveInterval: disabledIfZero(f.grpcKeepAliveInterval),
		GRPCKeepAliveTimeout:  disabledIfZero(f.grpcKeepAliveTimeout),
		MaxConcurrentStreams:  f.maxConcurrentStreams,

		DisablePreVote:                    !f.preVote,
		DisableInitialElectionTickAdvance: !f.initialElectionTickAdvance,
		DisableStrictReconfigCheck:        !f.strictReconfigCheck,

		WatchProgressNotifyInterval: f.watchProgressNotifyInterval,

		DisableGRPCGateway: !f.enableGRPCGateway,
		AuthToken:          authToken,
		AuthTokenTTL:       time.Duration(f.authTokenTTL) * time.Second,
		BcryptCost:         int(f.bcryptCost),

		LeaseCheckpoint:        f.featureGates.Enabled(featureLeaseCheckpoint),
		LeaseCheckpointPersist: f.featureGates.Enabled(featureLeaseCheckpointPersist),
		DowngradeCheckTime:     downgradeCheck,

		RaftReadTimeout:    f.compat.raftReadTimeout,
		RaftWriteTimeout:   f.compat.raftWriteTimeout,
		SocketReusePort:    f.compat.socketReusePort,
		SocketReuseAddress: f.compat.socketReuseAddr,
		EnablePprof:        f.compat.enablePprof,
		CORS:               f.compat.cors,
		HostWhitelist:      f.compat.hostWhitelist,
		AutoCompaction:     autoCompact,

		BootstrapDefragThresholdMegabytes: f.compat.bootstrapDefragThresholdMB,
		WarningUnaryRequestDuration:       f.compat.warningUnaryRequestDuration,
		SetMemberLocalAddr:                f.featureGates.Enabled("SetMemberLocalAddr"),
		StopGRPCServiceOnDefrag:           f.featureGates.Enabled("StopGRPCServiceOnDefrag"),
		InitialCorruptCheck:               f.featureGates.Enabled("InitialCorruptCheck"),
		CorruptCheckTime:                  f.compat.corruptCheckTime,
		CompactHashCheck:                  f.featureGates.Enabled("CompactHashCheck"),
		CompactHashCheckTime:              f.compat.compactHashCheckTime,
		Metrics:                           f.metrics,
	}, nil
}

// tlsInfos are the client and the peer TLS settings of the flags, with
// etcd's checks of the shared ones (--tls-min-version, --tls-max-version,
// --cipher-suites) and its error texts.
func (f *flags) tlsInfos() (client, peer TLSInfo, err error) {
	minV, err := ParseTLSVersion(f.tlsMinVersion)
	if err != nil {
		return client, peer, err
	}
	maxV, err := ParseTLSVersion(f.tlsMaxVersion)
	if err != nil {
		return client, peer, err
	}
	if maxV != 0 && minV > maxV {
		return client, peer, fmt.Errorf("min version (%s) is greater than max version (%s)", f.tlsMinVersion, f.tlsMaxVersion)
	}
	if minV == tls.VersionTLS13 && len(f.cipherSuites) > 0 {
		return client, peer, fmt.Errorf("cipher suites cannot be configured when only TLS1.3 is enabled")
	}
	var suites []uint16
	if len(f.cipherSuites) > 0 {
		if suites, err = ParseCipherSuites(f.cipherSuites); err != nil {
			return client, peer, err
		}
	}
	client = TLSInfo{
		CertFile: f.certFile, KeyFile: f.keyFile, ClientCertFile: f.clientCertFile, ClientKeyFile: f.clientKeyFile,
		TrustedCAFile: f.trustedCAFile, ClientCertAuth: f.clientCertAuth, CRLFile: f.clientCRLFile,
		AllowedHostnames: f.clientCertAllowedHostname, AutoTLS: f.autoTLS, SelfSignedCertValidity: f.selfSignedCertValidity,
		CipherSuites: suites, MinVersion: minV, MaxVersion: maxV,
	}
	peer = TLSInfo{
		CertFile: f.peerCertFile, KeyFile: f.peerKeyFile, ClientCertFile: f.peerClientCertFile, ClientKeyFile: f.peerClientKeyFile,
		TrustedCAFile: f.peerTrustedCAFile, ClientCertAuth: f.peerClientCertAuth, CRLFile: f.peerCRL,
		AllowedCNs: f.peerCertAllowedCN, AllowedHostnames: f.peerCertAllowedHostname, SkipClientSANVerify: f.peerSkipSAN,
		AutoTLS: f.peerAutoTLS, SelfSignedCertValidity: f.selfSignedCertValidity,
		CipherSuites: slices.Clone(suites), MinVersion: minV, MaxVersion: maxV,
	}
	if f.selfSignedCertValidity == 0 && ((f.autoTLS && client.Empty()) || (f.peerAutoTLS && peer.Empty())) {
		return client, peer, errors.New("selfSignedCertValidity is invalid,it should be greater than 0 (--self-signed-cert-validity)")
	}
	return client, peer, nil
}

// disabledIfZero maps a flag's 0 ("disabled", as etcd reads it) to the
// negative value Config takes for disabled (its zero is etcd's default).
func disabledIfZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// Run starts a member with cfg and serves until ctx is done (a signal) or
// the member stops on an error; then it shuts down cleanly.
func Run(ctx context.Context, cfg Config) error {
	setRaftTimeouts(cfg)
	logStarting(cfg)
	s, err := New(cfg)
	if err != nil {
		return err
	}
	if err := s.Serve(); err != nil {
		s.Stop()
		return err
	}
	select {
	case <-ctx.Done():
		s.log.Info("received signal; shutting down")
	case <-s.Stopped():
	}
	s.Stop()
	return s.Err()
}

// setRaftTimeouts applies --raft-read-timeout and --raft-write-timeout to
// the peer transport, raised to etcd's 5 s minimum as etcd does.
func setRaftTimeouts(cfg Config) {
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if cfg.RaftReadTimeout != 0 {
		if cfg.RaftReadTimeout < transport.DefaultConnReadTimeout {
			lg.Info(fmt.Sprintf("raft-read-timeout increased to minimum value: %v", transport.DefaultConnReadTimeout))
			cfg.RaftReadTimeout = transport.DefaultConnReadTimeout
		}
		if transport.ConnReadTimeout != cfg.RaftReadTimeout {
			transport.ConnReadTimeout = cfg.RaftReadTimeout
		}
	}
	if cfg.RaftWriteTimeout != 0 {
		if cfg.RaftWriteTimeout < transport.DefaultConnWriteTimeout {
			lg.Info(fmt.Sprintf("raft-write-timeout increased to minimum value: %v", transport.DefaultConnWriteTimeout))
			cfg.RaftWriteTimeout = transport.DefaultConnWriteTimeout
		}
		if transport.ConnWriteTimeout != cfg.RaftWriteTimeout {
			transport.ConnWriteTimeout = cfg.RaftWriteTimeout
		}
	}
}

// logStarting is etcd's "starting an etcd server" line (embed.print),
// which etcd's e2e tests read (e.g. "snapshot-catchup-entries":1000 and
// "v2-deprecation":"write-only"), with the fields etckit has.
func logStarting(cfg Config) {
	if cfg.Logger == nil {
		return
	}
	walDir := cfg.Engine.WALDir
	memberDir := filepath.Join(cfg.Engine.DataDir, "member")
	hb := cfg.TickInterval
	cors, hosts := cfg.CORS, cfg.HostWhitelist
	cfg.Logger.Info("starting an etcd server",
		"etcd-version", Version, "git-sha", "etckit", "go-version", runtime.Version(), "go-os", runtime.GOOS, "go-arch", runtime.GOARCH,
		"max-cpu-set", runtime.GOMAXPROCS(0), "max-cpu-available", runtime.NumCPU(),
		"name", cfg.Engine.Name, "data-dir", cfg.Engine.DataDir, "wal-dir", walDir, "member-dir", memberDir,
		"force-new-cluster", cfg.ForceNewCluster,
		"heartbeat-interval", hb.String(), "election-timeout", (time.Duration(cfg.ElectionTicks) * hb).String(),
		"initial-election-tick-advance", !cfg.DisableInitialElectionTickAdvance,
		"snapshot-count", cfg.Engine.SnapshotCount, "max-wals", cfg.Engine.MaxWALs, "max-snapshots", cfg.Engine.MaxSnapshots,
		"snapshot-catchup-entries", cfg.Engine.CatchUpEntries,
		"initial-advertise-peer-urls", cfg.Engine.InitialAdvertisePeerURLs, "listen-peer-urls", cfg.ListenPeerURLs,
		"advertise-client-urls", cfg.AdvertiseClientURLs, "listen-client-urls", cfg.ListenClientURLs,
		"listen-metrics-urls", cfg.ListenMetricsURLs, "cors", cors, "host-whitelist", hosts,
		"initial-cluster", cfg.Engine.InitialCluster, "initial-cluster-state", cfg.InitialClusterState,
		"initial-cluster-token", cfg.Engine.InitialClusterToken, "quota-backend-bytes", cfg.QuotaBackendBytes,
		"max-request-bytes", cfg.MaxRequestBytes, "max-concurrent-streams", cfg.MaxConcurrentStreams,
		"pre-vote", !cfg.DisablePreVote,
		"auto-compaction-mode", cfg.AutoCompaction.Mode, "auto-compaction-retention", cfg.AutoCompaction.Period.String(),
		"downgrade-check-interval", cfg.DowngradeCheckTime.String(), "max-learners", cfg.Engine.MaxLearners,
		"v2-deprecation", "write-only")
}
