package interop

import (
	"flag"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/internal/etcdflag"
	"github.com/etckit/etckit/server"
	"go.etcd.io/etcd/client/pkg/v3/tlsutil"
	etcdflags "go.etcd.io/etcd/pkg/v3/flags"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/features"
)

// etcdFlags is every flag of etcd 3.7.3's command line, read from etcd's
// own code (internal/etcdflag): embed.Config.AddFlags, plus etcdmain's own
// and ignored legacy flags from the etcd server module this module
// requires. name -> etcd's default value ("" for etcdmain's).
func etcdFlags(t testing.TB) map[string]string {
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "go.etcd.io/etcd/server/v3").Output()
	if err != nil {
		t.Fatalf("go list -m go.etcd.io/etcd/server/v3: %v", err)
	}
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	embed.NewConfig().AddFlags(fs)
	out, err := etcdflag.Etcd(fs, filepath.Join(strings.TrimSpace(string(dir)), "etcdmain", "config.go"))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// readFlagList reads ../server/testdata/etcd-flags-<version>.txt.
func readFlagList(t testing.TB, path string) map[string]string {
	out, err := etcdflag.ReadList(path)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEtcdFlagsTestdata: server/testdata/etcd-flags-v3.7.3.txt (what
// etckit's own tests and README check against) is etcd 3.7.3's flag set,
// read from etcd's code here; it fails when etcd's flags change.
func TestEtcdFlagsTestdata(t *testing.T) {
	got := etcdFlags(t)
	want := readFlagList(t, filepath.Join("..", "server", "testdata", "etcd-flags-v3.7.3.txt"))
	if !maps.Equal(got, want) {
		for _, k := range slices.Sorted(maps.Keys(got)) {
			if w, ok := want[k]; !ok || w != got[k] {
				t.Errorf("etcd has --%s (default %q), testdata %q (listed: %v)", k, got[k], w, ok)
			}
		}
		for k := range want {
			if _, ok := got[k]; !ok {
				t.Errorf("testdata has --%s, etcd does not", k)
			}
		}
	}
	t.Logf("etcd 3.7.3 has %d flags", len(got))
}

// TestEveryEtcdFlagAccepted: each flag of etcd 3.7.3's command line (read
// from etcd's code), given alone with etcd's default value, is taken by
// `etckit serve`.
func TestEveryEtcdFlagAccepted(t *testing.T) {
	cmd := server.NewCommand()
	for name, def := range etcdFlags(t) {
		fl := cmd.Flags().Lookup(name)
		if fl == nil {
			t.Errorf("--%s: not a flag of etckit serve", name)
			continue
		}
		v := def
		if v == "" && fl.DefValue != "" && fl.DefValue != "[]" {
			v = fl.DefValue // etcdmain's own flags, whose defaults are not read
		}
		if _, err := server.ConfigFromArgs([]string{"--" + name + "=" + v}, nil, io.Discard); err != nil {
			t.Errorf("--%s=%s: %v", name, v, err)
		}
	}
}

// TestConfigFileKeysVsEtcd: every key of etcd 3.7.3's configuration file
// (embed.Config's JSON tags) is one etckit reads.
func TestConfigFileKeysVsEtcd(t *testing.T) {
	keys := server.ConfigFileKeys()
	ty := reflect.TypeOf(embed.Config{})
	for i := range ty.NumField() {
		tag, _, _ := strings.Cut(ty.Field(i).Tag.Get("json"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		if !slices.Contains(keys, tag) {
			t.Errorf("etcd's config file key %q (Config.%s) is not read by etckit", tag, ty.Field(i).Name)
		}
	}
}

const interopConfigYAML = `name: m1
data-dir: %[1]s/data
wal-dir: %[1]s/wal
listen-client-urls: http://127.0.0.1:12379,http://127.0.0.1:12479
advertise-client-urls: http://127.0.0.1:12379
listen-client-http-urls: http://127.0.0.1:12579
listen-peer-urls: http://127.0.0.1:12380
initial-advertise-peer-urls: http://127.0.0.1:12380
listen-metrics-urls: http://127.0.0.1:12381
initial-cluster: m1=http://127.0.0.1:12380,m2=http://127.0.0.1:22380
initial-cluster-token: tok
initial-cluster-state: existing
snapshot-count: 123
snapshot-catchup-entries: 77
max-snapshots: 3
max-wals: 4
heartbeat-interval: 20
election-timeout: 200
initial-election-tick-advance: false
quota-backend-bytes: 1048576
max-txn-ops: 64
max-request-bytes: 4096
max-concurrent-streams: 100
grpc-keepalive-min-time: 3000000000
grpc-keepalive-interval: 60000000000
grpc-keepalive-timeout: 7000000000
watch-progress-notify-interval: 4000000000
downgrade-check-time: 2000000000
auto-compaction-mode: periodic
auto-compaction-retention: 90m
strict-reconfig-check: false
pre-vote: false
max-learners: 2
auth-token: simple
auth-token-ttl: 30
bcrypt-cost: 4
feature-gates: LeaseCheckpoint=true,LeaseCheckpointPersist=true
cors: http://a.example:80,http://b.example:8080
host-whitelist: localhost,127.0.0.1
cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]
tls-min-version: TLS1.2
tls-max-version: TLS1.3
self-signed-cert-validity: 3
log-level: warn
log-outputs: [stderr]
unsafe-no-fsync: true
force-new-cluster: true
enable-grpc-gateway: false
enable-pprof: true
compaction-batch-limit: 11
compaction-sleep-interval: 5000000
backend-batch-interval: 50000000
backend-batch-limit: 99
socket-options:
  reuse-address: true
  reuse-port: true
client-transport-security:
  cert-file: %[1]s/c.crt
  key-file: %[1]s/c.key
  client-cert-file: %[1]s/cc.crt
  client-key-file: %[1]s/cc.key
  trusted-ca-file: %[1]s/ca.crt
  client-cert-auth: true
  allowed-hostname: [client.example]
peer-transport-security:
  cert-file: %[1]s/p.crt
  key-file: %[1]s/p.key
  trusted-ca-file: %[1]s/pca.crt
  client-cert-auth: true
  auto-tls: true
  allowed-cn: [peer]
  skip-client-san-verification: true
discovery-srv:
metrics: extensive
unknown-key: ignored
`

// TestConfigFileVsEtcd: one YAML file, read by etcd 3.7.3's
// embed.ConfigFromFile and by `etckit serve --config-file`, gives the
// same settings.
func TestConfigFileVsEtcd(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "etcd.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, interopConfigYAML, dir), 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := embed.ConfigFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := server.ConfigFromArgs([]string{"--config-file=" + path}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	urls := func(us []url.URL) []string {
		var out []string
		for _, u := range us {
			out = append(out, u.String())
		}
		return out
	}
	keys := func(m map[string]struct{}) []string { return slices.Sorted(maps.Keys(m)) }
	suites, err := tlsutil.GetCipherSuites(e.CipherSuites)
	if err != nil {
		t.Fatal(err)
	}
	retention, _ := time.ParseDuration(e.AutoCompactionRetention)
	minV, _ := tlsutil.GetTLSVersion(e.TlsMinVersion)
	maxV, _ := tlsutil.GetTLSVersion(e.TlsMaxVersion)
	for _, c := range []struct {
		what         string
		etcd, etckit any
	}{
		{"name", e.Name, k.Engine.Name},
		{"data-dir", e.Dir, k.Engine.DataDir},
		{"wal-dir", e.WalDir, k.Engine.WALDir},
		{"listen-client-urls", urls(e.ListenClientUrls), k.ListenClientURLs},
		{"advertise-client-urls", urls(e.AdvertiseClientUrls), k.AdvertiseClientURLs},
		{"listen-client-http-urls", urls(e.ListenClientHttpUrls), k.ListenClientHTTPURLs},
		{"listen-peer-urls", urls(e.ListenPeerUrls), k.ListenPeerURLs},
		{"initial-advertise-peer-urls", urls(e.AdvertisePeerUrls), k.Engine.InitialAdvertisePeerURLs},
		{"listen-metrics-urls", urls(e.ListenMetricsUrls), k.ListenMetricsURLs},
		{"initial-cluster", e.InitialCluster, k.Engine.InitialCluster},
		{"initial-cluster-token", e.InitialClusterToken, k.Engine.InitialClusterToken},
		{"initial-cluster-state", e.ClusterState, k.InitialClusterState},
		{"snapshot-count", e.SnapshotCount, k.Engine.SnapshotCount},
		{"snapshot-catchup-entries", e.SnapshotCatchUpEntries, k.Engine.CatchUpEntries},
		{"max-snapshots", int(e.MaxSnapFiles), k.Engine.MaxSnapshots},
		{"max-wals", int(e.MaxWalFiles), k.Engine.MaxWALs},
		{"heartbeat-interval", time.Duration(e.TickMs) * time.Millisecond, k.TickInterval},
		{"election ticks", e.ElectionTicks(), k.ElectionTicks},
		{"initial-election-tick-advance", e.InitialElectionTickAdvance, !k.DisableInitialElectionTickAdvance},
		{"quota-backend-bytes", e.QuotaBackendBytes, k.QuotaBackendBytes},
		{"max-txn-ops", int(e.MaxTxnOps), k.MaxTxnOps},
		{"max-request-bytes", int(e.MaxRequestBytes), k.MaxRequestBytes},
		{"max-concurrent-streams", e.MaxConcurrentStreams, k.MaxConcurrentStreams},
		{"grpc-keepalive-min-time", e.GRPCKeepAliveMinTime, k.GRPCKeepAliveMinTime},
		{"grpc-keepalive-interval", e.GRPCKeepAliveInterval, k.GRPCKeepAliveInterval},
		{"grpc-keepalive-timeout", e.GRPCKeepAliveTimeout, k.GRPCKeepAliveTimeout},
		{"watch-progress-notify-interval", e.WatchProgressNotifyInterval, k.WatchProgressNotifyInterval},
		{"downgrade-check-time", e.DowngradeCheckTime, k.DowngradeCheckTime},
		{"auto-compaction-mode", e.AutoCompactionMode, k.AutoCompaction.Mode},
		{"auto-compaction-retention", retention, k.AutoCompaction.Period},
		{"strict-reconfig-check", e.StrictReconfigCheck, !k.DisableStrictReconfigCheck},
		{"pre-vote", e.PreVote, !k.DisablePreVote},
		{"max-learners", e.MaxLearners, k.Engine.MaxLearners},
		{"auth-token", e.AuthToken, k.AuthToken},
		{"auth-token-ttl", time.Duration(e.AuthTokenTTL) * time.Second, k.AuthTokenTTL},
		{"bcrypt-cost", int(e.BcryptCost), k.BcryptCost},
		{"LeaseCheckpoint", e.ServerFeatureGate.Enabled(features.LeaseCheckpoint), k.LeaseCheckpoint},
		{"LeaseCheckpointPersist", e.ServerFeatureGate.Enabled(features.LeaseCheckpointPersist), k.LeaseCheckpointPersist},
		{"cors", keys(e.CORS), slices.Sorted(slices.Values(k.CORS))},
		{"host-whitelist", keys(e.HostWhitelist), slices.Sorted(slices.Values(k.HostWhitelist))},
		{"cipher-suites", suites, k.ClientTLS.CipherSuites},
		{"peer cipher-suites", suites, k.PeerTLS.CipherSuites},
		{"tls-min-version", minV, k.ClientTLS.MinVersion},
		{"tls-max-version", maxV, k.PeerTLS.MaxVersion},
		{"self-signed-cert-validity", e.SelfSignedCertValidity, k.PeerTLS.SelfSignedCertValidity},
		{"log-level", e.LogLevel, "warn"},
		{"unsafe-no-fsync", e.UnsafeNoFsync, k.Engine.NoSync},
		{"force-new-cluster", e.ForceNewCluster, k.ForceNewCluster},
		{"enable-grpc-gateway", e.EnableGRPCGateway, !k.DisableGRPCGateway},
		{"enable-pprof", e.EnablePprof, k.EnablePprof},
		{"compaction-batch-limit", e.CompactionBatchLimit, k.Engine.MVCC.CompactionBatchLimit},
		{"compaction-sleep-interval", e.CompactionSleepInterval, k.Engine.MVCC.CompactionSleepInterval},
		{"backend-batch-interval", e.BackendBatchInterval, k.Engine.MVCC.Backend.BatchInterval},
		{"backend-batch-limit", e.BackendBatchLimit, k.Engine.MVCC.Backend.BatchLimit},
		{"socket reuse-address", e.SocketOpts.ReuseAddress, k.SocketReuseAddress},
		{"socket reuse-port", e.SocketOpts.ReusePort, k.SocketReusePort},
		{"client cert-file", e.ClientTLSInfo.CertFile, k.ClientTLS.CertFile},
		{"client key-file", e.ClientTLSInfo.KeyFile, k.ClientTLS.KeyFile},
		{"client client-cert-file", e.ClientTLSInfo.ClientCertFile, k.ClientTLS.ClientCertFile},
		{"client client-key-file", e.ClientTLSInfo.ClientKeyFile, k.ClientTLS.ClientKeyFile},
		{"client trusted-ca-file", e.ClientTLSInfo.TrustedCAFile, k.ClientTLS.TrustedCAFile},
		{"client client-cert-auth", e.ClientTLSInfo.ClientCertAuth, k.ClientTLS.ClientCertAuth},
		{"client allowed-hostname", e.ClientTLSInfo.AllowedHostnames, k.ClientTLS.AllowedHostnames},
		{"client auto-tls", e.ClientAutoTLS, k.ClientTLS.AutoTLS},
		{"peer cert-file", e.PeerTLSInfo.CertFile, k.PeerTLS.CertFile},
		{"peer key-file", e.PeerTLSInfo.KeyFile, k.PeerTLS.KeyFile},
		{"peer trusted-ca-file", e.PeerTLSInfo.TrustedCAFile, k.PeerTLS.TrustedCAFile},
		{"peer client-cert-auth", e.PeerTLSInfo.ClientCertAuth, k.PeerTLS.ClientCertAuth},
		{"peer auto-tls", e.PeerAutoTLS, k.PeerTLS.AutoTLS},
		{"peer allowed-cn", e.PeerTLSInfo.AllowedCNs, k.PeerTLS.AllowedCNs},
		{"peer skip-client-san-verification", e.PeerTLSInfo.SkipClientSANVerify, k.PeerTLS.SkipClientSANVerify},
	} {
		if !reflect.DeepEqual(c.etcd, c.etckit) {
			t.Errorf("%s: etcd %#v, etckit %#v", c.what, c.etcd, c.etckit)
		}
	}

	// A file etcd refuses, etckit refuses.
	for _, bad := range []string{"watch-progress-notify-interval: 10m\n", "max-txn-ops: many\n", "pre-vote: 3\n",
		"election-timeout: 10\n", "auto-compaction-mode: hourly\n", "peer-transport-security: 3\n"} {
		p := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(p, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		_, eerr := embed.ConfigFromFile(p)
		_, kerr := server.ConfigFromArgs([]string{"--config-file=" + p}, nil, io.Discard)
		if (eerr == nil) != (kerr == nil) {
			t.Errorf("%q: etcd %v, etckit %v", bad, eerr, kerr)
		}
	}
}

// TestEnvVsEtcd: ETCD_* variables set the same flags to the same values
// in etcd's flag set (flags.SetFlagsFromEnv over embed.Config's flags)
// and in etckit's.
func TestEnvVsEtcd(t *testing.T) {
	env := map[string]string{"ETCD_NAME": "envname", "ETCD_SNAPSHOT_COUNT": "42", "ETCD_MAX_TXN_OPS": "7",
		"ETCD_AUTO_COMPACTION_RETENTION": "1h", "ETCD_PRE_VOTE": "false", "ETCD_GRPC_KEEPALIVE_TIMEOUT": "3s",
		"ETCD_FEATURE_GATES":      "LeaseCheckpoint=true",
		"ETCD_LISTEN_CLIENT_URLS": "http://127.0.0.1:0", "ETCD_ADVERTISE_CLIENT_URLS": "http://127.0.0.1:2379"}
	var environ []string
	for k, v := range env {
		t.Setenv(k, v)
		environ = append(environ, k+"="+v)
	}
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	embed.NewConfig().AddFlags(fs)
	if err := etcdflags.SetFlagsFromEnv(nil, "ETCD", fs); err != nil {
		t.Fatal(err)
	}
	k, err := server.ConfigFromArgs(nil, environ, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string) string { return fs.Lookup(name).Value.String() }
	for _, c := range []struct{ what, etcd, etckit string }{
		{"name", get("name"), k.Engine.Name},
		{"snapshot-count", get("snapshot-count"), fmt.Sprint(k.Engine.SnapshotCount)},
		{"max-txn-ops", get("max-txn-ops"), fmt.Sprint(k.MaxTxnOps)},
		{"auto-compaction-retention", get("auto-compaction-retention"), k.AutoCompaction.Period.String()[:2]},
		{"pre-vote", get("pre-vote"), fmt.Sprint(!k.DisablePreVote)},
		{"grpc-keepalive-timeout", get("grpc-keepalive-timeout"), k.GRPCKeepAliveTimeout.String()},
		{"feature-gates", get("feature-gates"), fmt.Sprintf("LeaseCheckpoint=%v", k.LeaseCheckpoint)},
		{"listen-client-urls", get("listen-client-urls"), strings.Join(k.ListenClientURLs, ",")},
		{"advertise-client-urls", get("advertise-client-urls"), strings.Join(k.AdvertiseClientURLs, ",")},
	} {
		if c.etcd != c.etckit {
			t.Errorf("%s: etcd %q, etckit %q", c.what, c.etcd, c.etckit)
		}
	}
}

// TestEveryFeatureGateKnown: every server feature gate of etcd 3.7.3
// (features.DefaultEtcdServerFeatureGates) is one `--feature-gates` of
// etckit takes, with etcd's default (an explicit default changes nothing
// of what the gates print).
func TestEveryFeatureGateKnown(t *testing.T) {
	for name, spec := range features.DefaultEtcdServerFeatureGates {
		v := fmt.Sprintf("%s=%v", name, spec.Default)
		if name == features.LeaseCheckpointPersist {
			v += ",LeaseCheckpoint=true"
		}
		if _, err := server.ConfigFromArgs([]string{"--feature-gates=" + v}, nil, io.Discard); err != nil {
			t.Errorf("--feature-gates=%s: %v", v, err)
		}
		cmd := server.NewCommand()
		if !strings.Contains(cmd.Flags().Lookup("feature-gates").Usage, fmt.Sprintf("%s=true|false (%s - default=%v)", name, spec.PreRelease, spec.Default)) {
			t.Errorf("--feature-gates' help lacks %s (%s - default=%v)", name, spec.PreRelease, spec.Default)
		}
	}
}
