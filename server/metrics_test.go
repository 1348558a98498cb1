package server

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/etckit/etckit/mvcc"
)

// histCount is how many observations h has.
func histCount(h prometheus.Histogram) uint64 {
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		panic(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// counterValue is c's value.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// mixinDir is etcd's monitoring mixin (Grafana dashboard and Prometheus
// alerts), copied from etcd-io/etcd v3.7.1 contrib/mixin (testdata/README.md).
const mixinDir = "../testdata/etcd-mixin-v3.7.1"

// mixinSelector is one metric selector of a mixin expression: the metric
// and its equality matchers on fixed values (matchers on dashboard
// variables, config fields, regexes and negations are left out).
type mixinSelector struct {
	metric string
	labels map[string]string
}

func (m mixinSelector) String() string {
	return fmt.Sprintf("%s%v", m.metric, m.labels)
}

var (
	// PromQL in the libsonnet files: ||| blocks and single-quoted strings
	mixinBlock = regexp.MustCompile(`(?s)\|\|\|(.*?)\|\|\||'([^'\n]*)'`)
	// a selector: a metric name, then {matchers} or a range [..]
	mixinSel     = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^{}]*\}|\[)`)
	mixinMatcher = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"([^"]*)"\s*$`)
)

// mixinSelectors parses every selector of the mixin's expressions. "up"
// is left out: Prometheus makes it, no exporter does.
func mixinSelectors(t *testing.T) []mixinSelector {
	t.Helper()
	var files []string
	err := filepath.WalkDir(mixinDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".libsonnet") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var out []mixinSelector
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, blk := range mixinBlock.FindAllStringSubmatch(string(b), -1) {
			expr := blk[1] + blk[2]
			for _, sm := range mixinSel.FindAllStringSubmatch(expr, -1) {
				name := sm[1]
				if name == "up" {
					continue
				}
				sel := mixinSelector{metric: name, labels: map[string]string{}}
				if strings.HasPrefix(sm[2], "{") {
					for _, part := range strings.Split(strings.Trim(sm[2], "{}"), ",") {
						if mm := mixinMatcher.FindStringSubmatch(part); mm != nil && !strings.ContainsAny(mm[2], "$%") {
							sel.labels[mm[1]] = mm[2]
						}
					}
				}
				if k := sel.String(); !seen[k] {
					seen[k] = true
					out = append(out, sel)
				}
			}
		}
	}
	return out
}

// TestMetricsMixinSeries: a three-member cluster under load (with
// --metrics extensive, which the latency alert's histogram needs) exposes
// on every member every series that etcd's dashboard and alerts select,
// with their fixed label values.
func TestMetricsMixinSeries(t *testing.T) {
	sels := mixinSelectors(t)
	names := map[string]bool{}
	for _, s := range sels {
		names[s.metric] = true
	}
	// the parse found what the files use (a broken parse finds nothing)
	if len(names) < 15 || !names["etcd_server_has_leader"] || !names["grpc_server_handling_seconds_bucket"] {
		t.Fatalf("parsed %d metric names from %s: %v", len(names), mixinDir, sels)
	}
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.Metrics = "extensive" })
	lead := c.leader()
	c.ready()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 50; i++ {
		if _, err := c.kv(i%3).Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprint("k", i)), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	wc, err := pb.NewWatchClient(c.conns[lead]).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := wc.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("k")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := wc.Recv(); err != nil {
		t.Fatal(err)
	}
	for i, s := range c.srv {
		// the peers' series appear with their first traffic; the
		// followers' backend commit with their first batch (bounded wait)
		var fams map[string]*dto.MetricFamily
		var missing []string
		for try := 0; try < 300; try++ {
			fams = scrapeFamilies(t, "http://"+s.ClientAddrs()[0]+"/metrics")
			missing = missing[:0]
			for _, sel := range sels {
				if !hasSeries(fams, sel) {
					missing = append(missing, sel.String())
				}
			}
			if len(missing) == 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if len(missing) > 0 {
			t.Errorf("%s lacks %d of the mixin's %d selectors: %v", c.names[i], len(missing), len(sels), missing)
		}
	}
	t.Logf("%d selectors of %d metrics found on each of 3 members", len(sels), len(names))
}

// hasSeries: fams have a series of sel's metric (a histogram's _bucket,
// _sum, _count name the histogram) with sel's label values.
func hasSeries(fams map[string]*dto.MetricFamily, sel mixinSelector) bool {
	name := sel.metric
	f := fams[name]
	if f == nil {
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suf); ok {
				if f = fams[base]; f != nil && f.GetType() != dto.MetricType_HISTOGRAM {
					f = nil
				}
				break
			}
		}
	}
	if f == nil {
		return false
	}
	for _, m := range f.GetMetric() {
		ok := true
		for k, v := range sel.labels {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			ok = ok && found
		}
		if ok {
			return true
		}
	}
	return false
}

func scrapeFamilies(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// TestMetricsPutAllocs: what the metrics add to a put's path (the codec's
// byte counts, client_requests_total, request_duration_seconds, the apply
// observer, the WAL and backend observers, the peer byte counts)
// allocates nothing once the series exist.
func TestMetricsPutAllocs(t *testing.T) {
	m := newMetrics(false)
	po := newPeerObserver(m, 1)
	req := &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("key"), Value: []byte("value")}}
	putResp := &pb.PutResponse{}
	md := metadata.Pairs("client-api-version", "3.7")
	var err error
	put := func() {
		m.countClientRequest(md, "unary")
		m.observeRequest("Put", time.Now(), &err)
		m.observeApply(req, putResp, time.Millisecond, false)
		m.observeWALSync(100, time.Millisecond, time.Millisecond, true)
		m.observeCommit(mvcc.CommitStats{Total: time.Millisecond})
		po.SentBytes(2, 100)
		po.ReceivedBytes(2, 100)
		m.grpcSentBytes.Add(10)
	}
	put() // creates the series
	if n := testing.AllocsPerRun(1000, put); n != 0 {
		t.Fatalf("%v allocations per put in the metrics, want 0", n)
	}
	if v := counterValue(m.putTotal); v != 1002 {
		t.Fatalf("etcd_mvcc_put_total %v after 1002 observed puts", v)
	}
}

// TestMetricsExtensive: grpc_server_handling_seconds is there with
// --metrics extensive only, as in etcd; other values are refused.
func TestMetricsExtensive(t *testing.T) {
	for _, level := range []string{"basic", "extensive"} {
		m := newMetrics(level == "extensive")
		fams, err := m.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer(m.serverOptions()...)
		pb.RegisterKVServer(gs, pb.UnimplementedKVServer{})
		m.grpc.InitializeMetrics(gs)
		fams, err = m.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		has := false
		for _, f := range fams {
			if f.GetName() == "grpc_server_handling_seconds" {
				has = true
			}
		}
		if has != (level == "extensive") {
			t.Errorf("--metrics %s: grpc_server_handling_seconds present %v", level, has)
		}
	}
	if _, err := parseMetricsFlag("verbose"); err == nil {
		t.Fatal("--metrics verbose accepted")
	}
}

// TestMetricsHeartbeatDetector: a heartbeat to a peer later than the
// bound after the previous one counts a send failure, the first one and a
// new leader's first ones do not.
func TestMetricsHeartbeatDetector(t *testing.T) {
	m := newMetrics(false)
	m.heartbeatSent(2, -1) // first to 2: nothing to compare with
	m.heartbeatSent(2, time.Hour)
	if v := counterValue(m.heartbeatSendFailures); v != 0 {
		t.Fatalf("failures %v after heartbeats within the bound", v)
	}
	m.heartbeatSent(2, -1) // later than a negative bound: late
	if v := counterValue(m.heartbeatSendFailures); v != 1 {
		t.Fatalf("failures %v after a late heartbeat", v)
	}
	m.resetHeartbeats()
	m.heartbeatSent(2, -1)
	m.heartbeatSent(3, -1)
	if v := counterValue(m.heartbeatSendFailures); v != 1 {
		t.Fatalf("failures %v after a new leader's first heartbeats", v)
	}
}
