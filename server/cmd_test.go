package server

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/vfs"
	"github.com/etckit/etckit/wal"
)

func TestCommandDefaultsAndEnv(t *testing.T) {
	cmd := NewCommand()
	env := []string{"ETCD_NAME=envname", "ETCD_SNAPSHOT_COUNT=42", "ETCD_MAX_TXN_OPS="}
	if err := cmd.ParseFlags([]string{"--max-txn-ops=9"}); err != nil {
		t.Fatal(err)
	}
	// etcd: a variable for a flag that was given is an error, even empty.
	if err := setFlagsFromEnv(cmd.Flags(), env, discardLogger); err == nil || !strings.Contains(err.Error(), `conflicting environment variable "ETCD_MAX_TXN_OPS" is shadowed`) {
		t.Fatalf("ETCD_MAX_TXN_OPS with --max-txn-ops: %v", err)
	}
	cmd = NewCommand()
	if err := cmd.ParseFlags([]string{"--max-txn-ops=9"}); err != nil {
		t.Fatal(err)
	}
	if err := setFlagsFromEnv(cmd.Flags(), env[:2], discardLogger); err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{"name": "envname", "snapshot-count": "42", "max-txn-ops": "9",
		"listen-client-urls": "http://127.0.0.1:2379", "initial-cluster-token": "etcd-cluster", "max-request-bytes": "1572864",
		"snapshot-catchup-entries": "5000", "grpc-keepalive-min-time": "5s", "grpc-keepalive-interval": "2h0m0s",
		"grpc-keepalive-timeout": "20s", "max-concurrent-streams": "4294967295"} {
		if got := cmd.Flags().Lookup(flag).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
	var f flags
	c := NewCommand()
	// Defaults as `etckit serve` alone: the flag defaults bound to f.
	f = flags{name: "default", listenClientURLs: "http://127.0.0.1:2379", initialAdvertisePeerURLs: "http://localhost:2380",
		initialClusterState: "new", clusterTok: "etcd-cluster", snapshotCount: engine.DefaultSnapshotCount,
		maxRequestBytes: DefaultMaxRequestBytes, maxTxnOps: DefaultMaxTxnOps, maxSnapshots: 5, maxWALs: 5,
		heartbeatMs: 100, electionMs: 1000, logLevel: "info", snapshotCatchUpEntries: engine.DefaultSnapshotCatchUpEntries,
		grpcKeepAliveMinTime: DefaultGRPCKeepAliveMinTime, grpcKeepAliveInterval: DefaultGRPCKeepAliveInterval,
		grpcKeepAliveTimeout: DefaultGRPCKeepAliveTimeout, maxConcurrentStreams: math.MaxUint32}
	_, defaults := newCommand()
	f.compat = defaults.compat // flags.go's, with etcd's defaults
	cfg, err := f.config(c)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Engine.DataDir != "default.etckit" || cfg.Engine.InitialCluster != "default=http://localhost:2380" ||
		cfg.ListenClientURLs[0] != "http://127.0.0.1:2379" || cfg.ElectionTicks != 10 || cfg.Engine.SnapshotCount != 10000 {
		t.Fatalf("defaults %+v", cfg)
	}
	if cfg.Engine.CatchUpEntries != 5000 || cfg.GRPCKeepAliveMinTime != 5*time.Second ||
		cfg.GRPCKeepAliveInterval != 2*time.Hour || cfg.GRPCKeepAliveTimeout != 20*time.Second {
		t.Fatalf("defaults %+v", cfg)
	}
	if err := setFlagsFromEnv(NewCommand().Flags(), []string{"ETCD_SNAPSHOT_COUNT=many"}, discardLogger); err == nil {
		t.Fatal("invalid ETCD_SNAPSHOT_COUNT accepted")
	}
}

// TestCommandRaftAndKeepaliveFlags: --snapshot-catchup-entries and its
// etcd 3.5 name, and the keepalive flags with 0 meaning disabled, as etcd
// reads them.
func TestCommandRaftAndKeepaliveFlags(t *testing.T) {
	parse := func(args ...string) (Config, error) {
		c, f := newCommand()
		if err := c.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		return f.config(c)
	}
	cfg, err := parse("--snapshot-catchup-entries=7", "--grpc-keepalive-min-time=0", "--grpc-keepalive-interval=1m", "--max-concurrent-streams=10")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Engine.CatchUpEntries != 7 || cfg.GRPCKeepAliveMinTime >= 0 || cfg.GRPCKeepAliveInterval != time.Minute ||
		cfg.GRPCKeepAliveTimeout != 20*time.Second || cfg.MaxConcurrentStreams != 10 {
		t.Fatalf("config %+v", cfg)
	}
	if cfg, err = parse("--experimental-snapshot-catchup-entries=9"); err != nil || cfg.Engine.CatchUpEntries != 9 {
		t.Fatalf("--experimental-snapshot-catchup-entries: %v %d", err, cfg.Engine.CatchUpEntries)
	}
	_, err = parse("--experimental-snapshot-catchup-entries=9", "--snapshot-catchup-entries=9")
	if err == nil || err.Error() != "cannot set --experimental-snapshot-catchup-entries and --snapshot-catchup-entries at the same time, please use --snapshot-catchup-entries only" {
		t.Fatalf("both catch-up flags: %v", err)
	}
}

// TestCommandServeAndShutdown runs `serve` until its context ends (what
// SIGINT/SIGTERM do) and checks it bootstrapped the dir and stopped cleanly.
func TestCommandServeAndShutdown(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cmd.etckit")
	cmd := NewCommand()
	stderr := &lockedBuffer{}
	cmd.SetErr(stderr)
	cmd.SetArgs([]string{"--data-dir", dir, "--listen-client-urls", "http://127.0.0.1:0", "--listen-peer-urls", "http://127.0.0.1:0", "--unsafe-no-fsync",
		"--heartbeat-interval", "10", "--election-timeout", "100", "--log-level", "debug"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	published := false
	for i := 0; i < 500 && !published; i++ {
		time.Sleep(10 * time.Millisecond)
		published = strings.Contains(stderr.String(), "cluster version is updated")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !published {
		t.Fatalf("member did not publish itself; log:\n%s", stderr.String())
	}
	if !wal.Exist(vfs.OS{}, filepath.Join(dir, "member", "wal")) {
		t.Fatal("no WAL")
	}
	if !strings.Contains(stderr.String(), "stopped member") {
		t.Fatalf("no clean stop in the log:\n%s", stderr.String())
	}
}

var discardLogger = slog.New(slog.DiscardHandler)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCommandFeatureGates: --feature-gates parsed as etcd's featuregate
// (errors word for word), 3.6's experimental lease checkpoint flags, and
// the check that LeaseCheckpointPersist needs LeaseCheckpoint.
func TestCommandFeatureGates(t *testing.T) {
	parse := func(args ...string) (Config, error) {
		c, f := newCommand()
		if err := c.ParseFlags(args); err != nil {
			return Config{}, err
		}
		return f.config(c)
	}
	for _, tc := range []struct {
		args                []string
		checkpoint, persist bool
		err                 string
	}{
		{args: nil},
		{args: []string{"--feature-gates=LeaseCheckpoint=true"}, checkpoint: true},
		{args: []string{"--feature-gates=LeaseCheckpoint=true,LeaseCheckpointPersist=true"}, checkpoint: true, persist: true},
		{args: []string{"--feature-gates=LeaseCheckpoint=true", "--feature-gates= LeaseCheckpointPersist = 1 ,"}, checkpoint: true, persist: true},
		{args: []string{"--feature-gates=AllAlpha=true"}, checkpoint: true, persist: true},
		{args: []string{"--feature-gates=AllAlpha=true,LeaseCheckpointPersist=false"}, checkpoint: true},
		{args: []string{"--feature-gates=FastLeaseKeepAlive=false,StopGRPCServiceOnDefrag=true"}},
		{args: []string{"--experimental-enable-lease-checkpoint"}, checkpoint: true},
		{args: []string{"--experimental-enable-lease-checkpoint", "--experimental-enable-lease-checkpoint-persist"}, checkpoint: true, persist: true},
		{args: []string{"--experimental-enable-lease-checkpoint=false", "--feature-gates=CompactHashCheck=true"}},
		{args: []string{"--feature-gates=Nope=true"}, err: "unrecognized feature gate: Nope"},
		{args: []string{"--feature-gates=LeaseCheckpoint"}, err: "missing bool value for LeaseCheckpoint"},
		{args: []string{"--feature-gates=LeaseCheckpoint=yes"}, err: `invalid value of LeaseCheckpoint=yes, err: strconv.ParseBool: parsing "yes": invalid syntax`},
		{args: []string{"--feature-gates=LeaseCheckpointPersist=true"}, err: "enabling feature gate LeaseCheckpointPersist requires enabling feature gate LeaseCheckpoint"},
		{args: []string{"--experimental-enable-lease-checkpoint-persist"}, err: "enabling feature gate LeaseCheckpointPersist requires enabling feature gate LeaseCheckpoint"},
		{args: []string{"--experimental-enable-lease-checkpoint", "--feature-gates=LeaseCheckpoint=false"},
			err: "cannot specify both flags: --experimental-enable-lease-checkpoint=true and --feature-gates=LeaseCheckpoint=false at the same time, please just use --feature-gates=LeaseCheckpoint=false"},
		// etcd tests the gate's name as a substring of --feature-gates.
		{args: []string{"--experimental-enable-lease-checkpoint", "--feature-gates=LeaseCheckpointPersist=true"},
			err: "cannot specify both flags: --experimental-enable-lease-checkpoint=true and --feature-gates=LeaseCheckpoint=false at the same time, please just use --feature-gates=LeaseCheckpoint=false"},
	} {
		cfg, err := parse(tc.args...)
		if tc.err != "" {
			if err == nil || !strings.HasSuffix(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if cfg.LeaseCheckpoint != tc.checkpoint || cfg.LeaseCheckpointPersist != tc.persist {
			t.Errorf("%q: checkpoint %v persist %v, want %v %v", tc.args, cfg.LeaseCheckpoint, cfg.LeaseCheckpointPersist, tc.checkpoint, tc.persist)
		}
	}
	c, _ := newCommand()
	if err := c.ParseFlags([]string{"--feature-gates=LeaseCheckpoint=true,AllBeta=false"}); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Flags().Lookup("feature-gates").Value.String(), "AllBeta=false,FastLeaseKeepAlive=false,LeaseCheckpoint=true,TxnModeWriteWithSharedBuffer=false"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if err := setFlagsFromEnv(c.Flags(), []string{"ETCD_FEATURE_GATES=Bad=true"}, discardLogger); err == nil {
		t.Errorf("ETCD_FEATURE_GATES with an explicit --feature-gates: no error (etcd refuses the pair)")
	}
	c, f := newCommand()
	if err := setFlagsFromEnv(c.Flags(), []string{"ETCD_FEATURE_GATES=LeaseCheckpoint=true"}, discardLogger); err != nil {
		t.Fatal(err)
	}
	if cfg, err := f.config(c); err != nil || !cfg.LeaseCheckpoint {
		t.Errorf("ETCD_FEATURE_GATES: %v %v", cfg.LeaseCheckpoint, err)
	}
}
