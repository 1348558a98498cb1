package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/internal/etcdflag"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// etcdFlagList reads server/testdata/etcd-flags-<version>.txt (written
// from etcd's own code and checked against it by the interop tests):
// name -> etcd's default value.
func etcdFlagList(t *testing.T, version string) map[string]string {
	t.Helper()
	out, err := etcdflag.ReadList(filepath.Join("testdata", "etcd-flags-"+version+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 100 {
		t.Fatalf("only %d flags in %s", len(out), version)
	}
	return out
}

// acceptValue is the value a flag is given in the acceptance tests:
// etcd's default, or etckit's where etcd's flag has none (etcdmain's own
// flags, whose defaults the flag list does not record).
func acceptValue(fl *pflag.Flag, etcdDefault string) string {
	if etcdDefault == "" && fl.DefValue != "" && fl.DefValue != "[]" {
		return fl.DefValue
	}
	return etcdDefault
}

// TestEveryEtcdFlagAccepted: each flag of etcd 3.7.3 and 3.6.8, given
// alone with etcd's default value, is taken by `etckit serve` (parsed and
// turned into a Config); the flags without effect log why.
func TestEveryEtcdFlagAccepted(t *testing.T) {
	for _, version := range []string{"v3.7.3", "v3.6.8"} {
		implemented, noEffect, refused := 0, 0, 0
		for name, def := range etcdFlagList(t, version) {
			cmd, _ := newCommand()
			fl := cmd.Flags().Lookup(name)
			if fl == nil {
				t.Errorf("%s: etcd's --%s is not a flag of etckit serve", version, name)
				continue
			}
			var log bytes.Buffer
			arg := "--" + name + "=" + acceptValue(fl, def)
			if _, err := ConfigFromArgs([]string{arg}, nil, &log); err != nil {
				t.Errorf("%s: %s: %v", version, arg, err)
				continue
			}
			switch s, _ := flagStatus(name); s {
			case "implemented":
				implemented++
			case "no effect":
				noEffect++
				if !strings.Contains(log.String(), `"flag-name":"`+name+`"`) {
					t.Errorf("%s: no warning for %s; log:\n%s", version, arg, log.String())
				}
			case "refused when set":
				refused++
			}
		}
		t.Logf("etcd %s: %d flags implemented, %d accepted with no effect, %d refused when set (discovery)", version, implemented, noEffect, refused)
	}
}

// TestREADMEFlagTable: README's flag table has one row per flag of
// `etckit serve`, with the status and reason the code has.
func TestREADMEFlagTable(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `--([a-z0-9.-]+)` \\| ([0-9., ]+) \\| ([a-z ]+) \\| (.*) \\|$")
	rows := map[string][2]string{}
	v36, v37 := etcdFlagList(t, "v3.6.8"), etcdFlagList(t, "v3.7.3")
	for _, line := range strings.Split(string(b), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			if _, dup := rows[m[1]]; dup {
				t.Errorf("README: --%s listed twice", m[1])
			}
			rows[m[1]] = [2]string{m[3], m[4]}
			var vers []string
			if _, ok := v36[m[1]]; ok {
				vers = append(vers, "3.6")
			}
			if _, ok := v37[m[1]]; ok {
				vers = append(vers, "3.7")
			}
			if got := strings.Join(vers, ", "); got != m[2] {
				t.Errorf("README: --%s is in etcd %q, not %q", m[1], got, m[2])
			}
		}
	}
	cmd, _ := newCommand()
	cmd.Flags().VisitAll(func(fl *pflag.Flag) {
		r, ok := rows[fl.Name]
		if !ok {
			t.Errorf("README: no row for --%s", fl.Name)
			return
		}
		delete(rows, fl.Name)
		status, why := flagStatus(fl.Name)
		if r[0] != status {
			t.Errorf("README: --%s is %q, the code says %q", fl.Name, r[0], status)
		}
		if status != "implemented" && r[1] != why {
			t.Errorf("README: --%s's reason is %q, the code says %q", fl.Name, r[1], why)
		}
	})
	for name := range rows {
		t.Errorf("README: --%s is no flag of etckit serve", name)
	}
	for _, name := range []string{"force-new-cluster", "downgrade-check-time", "experimental-downgrade-check-time"} {
		if s, _ := flagStatus(name); s != "implemented" {
			t.Errorf("--%s is %s", name, s)
		}
	}
}

// TestExperimentalRenames: etcd 3.6's experimental names set the new
// flags, with etcd's warnings, and both names at once is etcd's error.
func TestExperimentalRenames(t *testing.T) {
	var log bytes.Buffer
	cfg, err := ConfigFromArgs([]string{"--experimental-compaction-batch-limit=7", "--experimental-compaction-sleep-interval=3ms",
		"--experimental-watch-progress-notify-interval=3s", "--experimental-downgrade-check-time=2s",
		"--experimental-peer-skip-client-san-verification"}, nil, &log)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Engine.MVCC.CompactionBatchLimit != 7 || cfg.Engine.MVCC.CompactionSleepInterval != 3*time.Millisecond ||
		cfg.WatchProgressNotifyInterval != 3*time.Second || cfg.DowngradeCheckTime != 2*time.Second || !cfg.PeerTLS.SkipClientSANVerify {
		t.Fatalf("config %+v", cfg)
	}
	for _, w := range []string{"--experimental-compaction-batch-limit is deprecated in v3.6 and will be decommissioned in v3.7. Use '--compaction-batch-limit' instead.",
		"--experimental-downgrade-check-time is deprecated in v3.6"} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("no warning %q in\n%s", w, log.String())
		}
	}
	for old, r := range experimentalRenames {
		cmd, _ := newCommand()
		v := cmd.Flags().Lookup(r.to).DefValue
		_, err := ConfigFromArgs([]string{"--" + old + "=" + v, "--" + r.to + "=" + v}, nil, io.Discard)
		if want := fmt.Sprintf("cannot set --%s and --%s at the same time, please use --%s only", old, r.to, r.to); err == nil || err.Error() != want {
			t.Errorf("--%s with --%s: %v", old, r.to, err)
		}
	}
	_, err = ConfigFromArgs([]string{"--experimental-warning-unary-request-duration=1s", "--warning-unary-request-duration=2s"}, nil, io.Discard)
	if err == nil || !strings.HasPrefix(err.Error(), "both --experimental-warning-unary-request-duration and --warning-unary-request-duration flags are set") {
		t.Errorf("both unary durations: %v", err)
	}
	// The experimental gates' flags set the gates, as etcd 3.6's.
	cmd, f := newCommand()
	cmd.SetErr(io.Discard)
	if err := cmd.ParseFlags([]string{"--experimental-initial-corrupt-check", "--experimental-txn-mode-write-with-shared-buffer=false"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.config(cmd); err != nil {
		t.Fatal(err)
	}
	if !f.featureGates.Enabled("InitialCorruptCheck") || f.featureGates.Enabled("TxnModeWriteWithSharedBuffer") {
		t.Errorf("gates %s", f.featureGates.String())
	}
}

// TestRefusedAndInvalidFlags: discovery is refused rather than ignored,
// and etcd's value checks give etcd's errors.
func TestRefusedAndInvalidFlags(t *testing.T) {
	for _, tc := range []struct{ arg, err string }{
		{"--discovery-srv=example.com", "--discovery-srv=example.com: DNS discovery is not supported by etckit"},
		{"--discovery-endpoints=http://127.0.0.1:1", "v3 discovery is not supported"},
		{"--discovery=http://x", "v2 discovery is not supported"},
		{"--discovery-fallback=proxy", `v2 proxy is deprecated, and --discovery-fallback can't be configured as "proxy"`},
		{"--auto-compaction-mode=daily", `unknown auto-compaction-mode "daily"`},
		{"--auto-compaction-retention=soon", "error parsing CompactionRetention"},
		{"--compact-hash-check-time=0s", "--compact-hash-check-time must be >0 (set to 0s)"},
		{"--election-timeout=60000", "--election-timeout[60000ms] is too long, and should be set less than 50000ms"},
		{"--election-timeout=400", "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]"},
		{"--logger=capnslog", `unknown logger option "capnslog"`},
		{"--log-format=xml", "unsupported log format: xml"},
		{"--v2-deprecation=never", `invalid value "never" for --v2-deprecation`},
	} {
		_, err := ConfigFromArgs([]string{tc.arg}, nil, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want %q", tc.arg, err, tc.err)
		}
	}
	// The legacy flags etcd ignores, with a value or none.
	var log bytes.Buffer
	if _, err := ConfigFromArgs([]string{"--v", "--peer-heartbeat-interval=5", "--snapshot=x"}, nil, &log); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log.String(), "flag is no longer supported - ignoring"); n != 3 {
		t.Errorf("%d warnings:\n%s", n, log.String())
	}
}

func TestAutoCompactionRetention(t *testing.T) {
	for _, tc := range []struct {
		mode, retention string
		want            AutoCompaction
	}{
		{"periodic", "0", AutoCompaction{Mode: "periodic"}},
		{"periodic", "2", AutoCompaction{Mode: "periodic", Period: 2 * time.Hour}},
		{"periodic", "90m", AutoCompaction{Mode: "periodic", Period: 90 * time.Minute}},
		{"revision", "1000", AutoCompaction{Mode: "revision", Revisions: 1000}},
	} {
		got, err := parseAutoCompactionRetention(tc.mode, tc.retention)
		if err != nil || got != tc.want {
			t.Errorf("%s %s: %+v %v", tc.mode, tc.retention, got, err)
		}
	}
}

// TestEnvRules: etcd's flags.SetFlagsFromEnv rules.
func TestEnvRules(t *testing.T) {
	var log bytes.Buffer
	cfg, err := ConfigFromArgs([]string{"--max-txn-ops=9"}, []string{"ETCD_NAME=env", "ETCD_SNAPSHOT_COUNT=", "ETCD_VERSION=true",
		"ETCD_NO_SUCH_FLAG=1", "ETCD_AUTO_COMPACTION_RETENTION=1h", "HOME=/x", "ETCD_STRICT_RECONFIG_CHECK=false"}, &log)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Engine.Name != "env" || cfg.Engine.SnapshotCount != 10000 || cfg.MaxTxnOps != 9 || cfg.AutoCompaction.Period != time.Hour || !cfg.DisableStrictReconfigCheck {
		t.Fatalf("config %+v", cfg)
	}
	for _, w := range []string{
		`"msg":"cannot set special environment variable","key":"ETCD_VERSION","value":"true"`,
		`"msg":"unrecognized environment variable","environment-variable":"ETCD_NO_SUCH_FLAG=1"`,
		`"msg":"recognized and used environment variable","variable-name":"ETCD_NAME","variable-value":"env"`,
	} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("no %s in\n%s", w, log.String())
		}
	}
	if strings.Contains(log.String(), "HOME") {
		t.Errorf("warned about a variable that is not ETCD_:\n%s", log.String())
	}
	_, err = ConfigFromArgs([]string{"--name=flag"}, []string{"ETCD_NAME=env"}, io.Discard)
	if err == nil || err.Error() != `conflicting environment variable "ETCD_NAME" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)` {
		t.Errorf("ETCD_NAME with --name: %v", err)
	}
	if _, err := ConfigFromArgs(nil, []string{"ETCD_MAX_TXN_OPS=many"}, io.Discard); err == nil || !strings.HasPrefix(err.Error(), `invalid value "many" for ETCD_MAX_TXN_OPS`) {
		t.Errorf("bad ETCD_MAX_TXN_OPS: %v", err)
	}
}

const testConfigYAML = `name: yml
data-dir: %s
listen-client-urls: http://127.0.0.1:0
advertise-client-urls: http://127.0.0.1:12379
listen-peer-urls: http://127.0.0.1:0
initial-advertise-peer-urls: http://127.0.0.1:12380
initial-cluster: yml=http://127.0.0.1:12380
initial-cluster-token: tok
initial-cluster-state: new
snapshot-count: 123
snapshot-catchup-entries: 77
heartbeat-interval: 20
election-timeout: 200
quota-backend-bytes: 1048576
max-txn-ops: 64
max-request-bytes: 4096
grpc-keepalive-min-time: 3000000000
grpc-keepalive-interval: 0
watch-progress-notify-interval: 4000000000
downgrade-check-time: 2000000000
auto-compaction-mode: revision
auto-compaction-retention: 10
strict-reconfig-check: false
pre-vote: false
max-learners: 2
auth-token: simple
auth-token-ttl: 30
bcrypt-cost: 4
feature-gates: LeaseCheckpoint=true
cors: http://a.example:80,http://b.example:8080
host-whitelist: localhost,127.0.0.1
cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
log-level: debug
log-outputs: [stderr]
unsafe-no-fsync: true
compaction-batch-limit: 11
socket-options:
  reuse-address: true
peer-transport-security:
  skip-client-san-verification: true
  allowed-cn: [peer]
unknown-key: ignored
`

var testConfigFlags = []string{"--name=yml", "--listen-client-urls=http://127.0.0.1:0", "--advertise-client-urls=http://127.0.0.1:12379",
	"--listen-peer-urls=http://127.0.0.1:0", "--initial-advertise-peer-urls=http://127.0.0.1:12380", "--initial-cluster=yml=http://127.0.0.1:12380",
	"--initial-cluster-token=tok", "--initial-cluster-state=new", "--snapshot-count=123", "--snapshot-catchup-entries=77",
	"--heartbeat-interval=20", "--election-timeout=200", "--quota-backend-bytes=1048576", "--max-txn-ops=64", "--max-request-bytes=4096",
	"--grpc-keepalive-min-time=3s", "--grpc-keepalive-interval=0", "--watch-progress-notify-interval=4s", "--downgrade-check-time=2s",
	"--auto-compaction-mode=revision", "--auto-compaction-retention=10", "--strict-reconfig-check=false", "--pre-vote=false",
	"--max-learners=2", "--auth-token=simple", "--auth-token-ttl=30", "--bcrypt-cost=4", "--feature-gates=LeaseCheckpoint=true",
	"--cors=http://a.example:80,http://b.example:8080", "--host-whitelist=localhost,127.0.0.1", "--cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"--log-level=debug", "--log-outputs=stderr", "--unsafe-no-fsync", "--compaction-batch-limit=11", "--socket-reuse-address",
	"--peer-skip-client-san-verification", "--peer-cert-allowed-cn=peer"}

// TestConfigFile: a member configured from etcd's YAML file is the one
// the same settings as flags give; flags and ETCD_* variables are then
// ignored, as etcd ignores them, with etcd's log line.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "etcd.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, testConfigYAML, filepath.Join(dir, "data")), 0o600); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	fromFile, err := ConfigFromArgs([]string{"--config-file=" + path, "--name=ignored", "--max-txn-ops=1"}, []string{"ETCD_SNAPSHOT_COUNT=5"}, &log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), `"msg":"loaded server configuration, other configuration command line flags and environment variables will be ignored if provided","path":"`+path+`"`) {
		t.Errorf("no 'loaded server configuration' line:\n%s", log.String())
	}
	fromFlags, err := ConfigFromArgs(append([]string{"--data-dir=" + filepath.Join(dir, "data")}, testConfigFlags...), nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	viaEnv, err := ConfigFromArgs(nil, []string{"ETCD_CONFIG_FILE=" + path, "ETCD_NAME=ignored"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Config{&fromFile, &fromFlags, &viaEnv} {
		c.Logger, c.Engine.Logger = nil, nil
	}
	if !reflect.DeepEqual(fromFile, fromFlags) {
		t.Errorf("from the file:\n%+v\nfrom flags:\n%+v", fromFile, fromFlags)
	}
	if !reflect.DeepEqual(fromFile, viaEnv) {
		t.Errorf("ETCD_CONFIG_FILE:\n%+v\n--config-file:\n%+v", viaEnv, fromFile)
	}
	if fromFile.Engine.Name != "yml" || fromFile.MaxTxnOps != 64 || fromFile.Engine.SnapshotCount != 123 || !fromFile.LeaseCheckpoint ||
		fromFile.AutoCompaction.Revisions != 10 || !fromFile.SocketReuseAddress || fromFile.GRPCKeepAliveMinTime != 3*time.Second ||
		!slices.Equal(fromFile.PeerTLS.AllowedCNs, []string{"peer"}) {
		t.Errorf("from the file: %+v", fromFile)
	}

	// etcd's file mode defaults and type checks.
	for _, tc := range []struct{ yaml, err string }{
		{"heartbeat-interval: 100\nelection-timeout: 1000\nwatch-progress-notify-interval: 10m\n", "watch-progress-notify-interval: want a duration in integer nanoseconds"},
		{"pre-vote: 1\n", "pre-vote: want a boolean"},
		{"max-txn-ops: many\n", "max-txn-ops: want a number"},
		{"peer-transport-security: 3\n", "invalid peer-transport-security"},
		{"election-timeout: 10\n", "should be at least as 5 times"},
		{": [\n", "yaml"},
	} {
		p := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ConfigFromArgs([]string{"--config-file=" + p}, nil, io.Discard); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.err)
		}
	}
	if _, err := ConfigFromArgs([]string{"--config-file=" + filepath.Join(dir, "none.yaml")}, nil, io.Discard); err == nil {
		t.Error("a missing config file accepted")
	}
	p := filepath.Join(dir, "min.yaml")
	if err := os.WriteFile(p, []byte("name: m\nself-signed-cert-validity: 0\nauto-compaction-retention: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := ConfigFromArgs([]string{"--config-file=" + p}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.AdvertiseClientURLs, []string{"http://localhost:2379"}) || c.InitialClusterState != "new" ||
		c.ClientTLS.SelfSignedCertValidity != 1 || c.AutoCompaction.Period != time.Hour || c.Engine.InitialCluster != "m=http://localhost:2380" {
		t.Errorf("file defaults: %+v", c)
	}
}

// TestVersionOutput: `serve --version` prints etcd's four lines, which
// etcd's e2e framework parses ("etcd Version: X.Y.Z").
func TestVersionOutput(t *testing.T) {
	cmd := NewCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("etcd Version: 3.7.3\nGit SHA: etckit\nGo Version: %s\nGo OS/Arch: %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if out.String() != want {
		t.Fatalf("--version:\n%s\nwant\n%s", out.String(), want)
	}
}

// TestLogOutputs: --log-outputs to a file and stdout-free stderr; the
// console format.
func TestLogOutputs(t *testing.T) {
	p := filepath.Join(t.TempDir(), "etcd.log")
	var stderr bytes.Buffer
	lg, err := newLogger("zap", "warn", "json", []string{p, "stderr"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	lg.Info("hidden")
	lg.Warn("shown", "k", 1)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"msg":"shown","k":1`) || strings.Contains(string(b), "hidden") || string(b) != stderr.String() {
		t.Fatalf("file %q stderr %q", b, stderr.String())
	}
	stderr.Reset()
	lg, err = newLogger("zap", "info", "console", nil, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	lg.Info("hello")
	if !strings.Contains(stderr.String(), "level=INFO msg=hello") {
		t.Fatalf("console: %q", stderr.String())
	}
}

// TestSocketReuse: with --socket-reuse-port a second listener binds the
// port the first holds; without, it cannot.
func TestSocketReuse(t *testing.T) {
	c := Config{SocketReusePort: true, SocketReuseAddress: true}
	l1, err := c.listenOn("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	l2, err := c.listenOn("tcp", l1.Addr().String())
	if err != nil {
		t.Fatalf("second SO_REUSEPORT listener: %v", err)
	}
	l2.Close()
	if l3, err := (&Config{}).listenOn("tcp", l1.Addr().String()); err == nil {
		l3.Close()
		t.Fatal("a plain listener bound a port in use")
	}
}

// TestHTTPAccessAndAutoCompaction runs a member from the command line
// with --host-whitelist, --cors, --enable-pprof and a periodic
// --auto-compaction-retention of 1s, and checks each as etcd behaves.
func TestHTTPAccessAndAutoCompaction(t *testing.T) {
	s := serveArgs(t, []string{"--data-dir=" + filepath.Join(t.TempDir(), "d"), "--listen-client-urls=http://127.0.0.1:0",
		"--listen-peer-urls=", "--initial-advertise-peer-urls=http://127.0.0.1:2380", "--unsafe-no-fsync",
		"--heartbeat-interval=10", "--election-timeout=100", "--host-whitelist=localhost", "--cors=http://ok.example:80",
		"--enable-pprof", "--auto-compaction-mode=periodic", "--auto-compaction-retention=1s"}, io.Discard)
	addr := s.ClientAddrs()[0]
	_, port, _ := net.SplitHostPort(addr)
	get := func(host, path, origin string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		req.Host = host
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, body := get("127.0.0.1:"+port, "/health", ""); resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(body, "CVE-2018-5702") {
		t.Errorf("Host 127.0.0.1 outside --host-whitelist: %d %q", resp.StatusCode, body)
	}
	resp, _ := get("localhost:"+port, "/health", "http://ok.example:80")
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "http://ok.example:80" {
		t.Errorf("allowed origin: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, _ := get("localhost:"+port, "/health", "http://evil.example"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("other origin got CORS headers: %v", resp.Header)
	}
	if resp, body := get("localhost:"+port, "/debug/pprof/cmdline", ""); resp.StatusCode != 200 || body == "" {
		t.Errorf("pprof: %d %q", resp.StatusCode, body)
	}

	// Auto compaction: writes, then the compactor (sampling every 100ms,
	// first compaction after 1s) compacts to a revision of a second ago.
	kv := etcdserverpbKV(t, addr)
	for i := 0; i < 5; i++ {
		if _, err := kv.Put(context.Background(), &etcdserverpb.PutRequest{Key: []byte("k"), Value: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for s.eng.Store().CompactRev() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no auto compaction in a minute; compact revision %d, revision %d", s.eng.Store().CompactRev(), s.eng.Store().Rev())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func etcdserverpbKV(t *testing.T, addr string) etcdserverpb.KVClient {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return etcdserverpb.NewKVClient(conn)
}

// TestBootstrapDefrag: --bootstrap-defrag-threshold-megabytes, as etcd:
// at start the db is defragmented when that frees at least the
// threshold, else "Skipping defragmentation" is logged; and `serve` logs
// etcd's "starting an etcd server" line with the fields etcd's e2e tests
// read.
func TestBootstrapDefrag(t *testing.T) {
	data := filepath.Join(t.TempDir(), "d")
	start := func(threshold string) (*Server, *lockedBuffer) {
		log := &lockedBuffer{}
		cfg, err := ConfigFromArgs([]string{"--data-dir=" + data, "--listen-client-urls=http://127.0.0.1:0", "--listen-peer-urls=",
			"--initial-advertise-peer-urls=http://127.0.0.1:2380", "--unsafe-no-fsync", "--heartbeat-interval=10", "--election-timeout=100",
			"--bootstrap-defrag-threshold-megabytes=" + threshold, "--snapshot-catchup-entries=1000"}, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		logStarting(cfg)
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Serve(); err != nil {
			s.Stop()
			t.Fatal(err)
		}
		<-s.Ready()
		return s, log
	}
	s, log := start("1000")
	for _, w := range []string{`"msg":"Skipping defragmentation"`, `"msg":"starting an etcd server"`, `"snapshot-catchup-entries":1000`, `"v2-deprecation":"write-only"`} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("no %s in the log:\n%s", w, log.String())
		}
	}
	kv := etcdserverpbKV(t, s.ClientAddrs()[0])
	ctx := context.Background()
	big := bytes.Repeat([]byte("x"), 100*1024)
	for i := range 30 {
		if _, err := kv.Put(ctx, &etcdserverpb.PutRequest{Key: fmt.Appendf(nil, "k%d", i), Value: big}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := kv.DeleteRange(ctx, &etcdserverpb.DeleteRangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Compact(ctx, &etcdserverpb.CompactionRequest{Revision: resp.Header.Revision, Physical: true}); err != nil {
		t.Fatal(err)
	}
	before, inUse := s.dbSize()
	s.Stop()
	if before-inUse < 1024*1024 {
		t.Fatalf("only %d bytes to free", before-inUse)
	}
	s, log = start("1")
	defer s.Stop()
	after, _ := s.dbSize()
	if !strings.Contains(log.String(), `"msg":"finished defragment"`) || after >= before-1024*1024 {
		t.Fatalf("db %d bytes before, %d after; log:\n%s", before, after, log.String())
	}
}

// TestUnixPeerURL: a member listens on a unix peer URL, as etcd's
// TestEtcdUnixPeers starts one (the socket path is the URL's host).
func TestUnixPeerURL(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "peer.sock")
	peer := "unix://" + sock
	serveArgs(t, []string{"--data-dir=" + filepath.Join(dir, "d"), "--name=e1", "--listen-client-urls=http://127.0.0.1:0",
		"--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer, "--initial-cluster=e1=" + peer,
		"--unsafe-no-fsync", "--heartbeat-interval=10", "--election-timeout=100"}, io.Discard)
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Get("http://peer/version")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"etcdserver":"3.7.3"`) {
		t.Fatalf("peer /version over the unix socket: %d %s", resp.StatusCode, b)
	}
}

// TestSlowRequestWarning: --warning-unary-request-duration, as etcd's
// log interceptor: a unary request slower than it is logged as a warning
// "request stats" with etcd's fields; faster ones are not (at info level).
func TestSlowRequestWarning(t *testing.T) {
	for _, tc := range []struct {
		threshold string
		warned    bool
	}{{"1ns", true}, {"1h", false}} {
		log := &lockedBuffer{}
		s := serveArgs(t, []string{"--data-dir=" + filepath.Join(t.TempDir(), "d"), "--listen-client-urls=http://127.0.0.1:0", "--listen-peer-urls=",
			"--initial-advertise-peer-urls=http://127.0.0.1:2380", "--unsafe-no-fsync", "--heartbeat-interval=10", "--election-timeout=100",
			"--warning-unary-request-duration=" + tc.threshold}, log)
		kv := etcdserverpbKV(t, s.ClientAddrs()[0])
		if _, err := kv.Put(context.Background(), &etcdserverpb.PutRequest{Key: []byte("k"), Value: []byte("secret")}); err != nil {
			t.Fatal(err)
		}
		s.Stop()
		got := strings.Contains(log.String(), `"level":"WARN","msg":"request stats"`)
		if got != tc.warned {
			t.Errorf("threshold %s: warned %v; log:\n%s", tc.threshold, got, log.String())
		}
		if got && (!strings.Contains(log.String(), `"response type":"/etcdserverpb.KV/Put"`) || !strings.Contains(log.String(), `"request count":1`) ||
			strings.Contains(log.String(), "secret")) {
			t.Errorf("request stats fields (the value must be left out, as etcd's loggable request):\n%s", log.String())
		}
	}
}

// TestSetMemberLocalAddr: the feature gate SetMemberLocalAddr, as etcd's
// InferLocalAddr: peers are dialed from the first advertised peer IP that
// is neither loopback nor unspecified.
func TestSetMemberLocalAddr(t *testing.T) {
	cfg, err := ConfigFromArgs([]string{"--feature-gates=SetMemberLocalAddr=true",
		"--initial-advertise-peer-urls=https://127.0.0.1:2380,https://[::]:2380,https://10.1.2.3:2380,https://10.9.9.9:2380",
		"--initial-cluster=default=https://127.0.0.1:2380,default=https://[::]:2380,default=https://10.1.2.3:2380,default=https://10.9.9.9:2380"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.inferLocalAddr(); got != "10.1.2.3" {
		t.Errorf("local address %q", got)
	}
	cfg.SetMemberLocalAddr = false
	if got := cfg.inferLocalAddr(); got != "" {
		t.Errorf("without the gate: %q", got)
	}
	// The peer client dials from the local address.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	remote := make(chan string, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { remote <- r.RemoteAddr })}
	go srv.Serve(l)
	defer srv.Close()
	c := &http.Client{Transport: newPeerRoundTripper(nil, time.Second, "127.0.0.2")}
	resp, err := c.Get("http://" + l.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if host, _, _ := net.SplitHostPort(<-remote); host != "127.0.0.2" {
		t.Errorf("dialed from %s, want 127.0.0.2", host)
	}
}

// TestSingleDashFlags: etcd's flags with one dash, as Go's flag package
// (etcd's) takes them.
func TestSingleDashFlags(t *testing.T) {
	got := NormalizeArgs([]string{"-name", "x", "-snapshot-count=5", "-v", "-h", "--max-txn-ops=3", "-nope", "--", "-name"})
	want := []string{"--name", "x", "--snapshot-count=5", "--v", "-h", "--max-txn-ops=3", "-nope", "--", "-name"}
	if !slices.Equal(got, want) {
		t.Fatalf("%q, want %q", got, want)
	}
	cfg, err := ConfigFromArgs([]string{"-name", "one", "-snapshot-count=5"}, nil, io.Discard)
	if err != nil || cfg.Engine.Name != "one" || cfg.Engine.SnapshotCount != 5 {
		t.Fatalf("%+v %v", cfg.Engine, err)
	}
}

// serveArgs starts a member from an `etckit serve` command line (no
// environment, its log to log), waits until it is ready and stops it at
// the end of the test.
func serveArgs(t *testing.T, args []string, log io.Writer) *Server {
	t.Helper()
	cfg, err := ConfigFromArgs(args, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	s := serveConfig(t, cfg)
	<-s.Ready()
	return s
}
