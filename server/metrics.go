package server

import (
	"fmt"
	"net/http"
	"os"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/etckit/etckit/mvcc"
)

// The metrics are etcd 3.7.3's: the same names, help strings, types, label
// names and buckets (server/etcdserver/metrics.go, storage/mvcc/metrics.go,
// storage/backend/metrics.go, storage/wal/metrics.go,
// etcdserver/api/rafthttp/metrics.go, lease/metrics.go, ...), exposed
// through prometheus/client_golang and, for grpc_server_*, the gRPC
// interceptors etcd uses (go-grpc-middleware/providers/prometheus). Unlike
// etcd, whose metrics are process globals, each Server has its own
// registry, so members started in one process (tests) count apart.
//
// Values that the server can read when scraped (leader, db size, revisions,
// watchers, ...) are gauges computed at scrape time; events are counted
// where etckit does the work: the raft loop, the apply observer of the
// engine, the WAL and backend observers, the transport observer. The
// format packages know no metrics library.

// etcd's bucket layouts.
var (
	bucketsDisk    = prometheus.ExponentialBuckets(0.001, 2, 14) // 1 ms .. 8.192 s
	bucketsApply   = prometheus.ExponentialBuckets(0.0001, 2, 20)
	bucketsSnapDB  = prometheus.ExponentialBuckets(0.1, 2, 10)
	bucketsRTT     = prometheus.ExponentialBuckets(0.0001, 2, 16)
	bucketsHash    = prometheus.ExponentialBuckets(.01, 2, 15)
	bucketsDefrag  = prometheus.ExponentialBuckets(.1, 2, 13)
	bucketsBackSnp = prometheus.ExponentialBuckets(.01, 2, 17)
)

func newCounter(ns, sub, name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
}

func newGauge(ns, sub, name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
}

func newHist(ns, sub, name, help string, buckets []float64) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help, Buckets: buckets})
}

func newCounterVec(ns, sub, name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, labels)
}

func newGaugeVec(ns, sub, name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, labels)
}

func newHistVec(ns, sub, name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help, Buckets: buckets}, labels)
}

type metrics struct {
	reg     *prometheus.Registry
	handler http.Handler
	grpc    *grpcprom.ServerMetrics

	// server
	leaderChanges         prometheus.Counter
	heartbeatSendFailures prometheus.Counter
	proposalsFailed       prometheus.Counter
	slowApplies           prometheus.Counter
	slowReadIndexes       prometheus.Counter
	readIndexesFailed     prometheus.Counter
	leaseExpired          prometheus.Counter
	learnerPromoteOK      prometheus.Counter
	learnerPromoteFailed  *prometheus.CounterVec
	snapshotApplying      prometheus.Gauge
	healthSuccess         prometheus.Counter
	healthFailures        prometheus.Counter
	healthCheck           *prometheus.GaugeVec
	healthChecks          *prometheus.CounterVec
	alarms                *prometheus.GaugeVec
	requestDuration       *prometheus.HistogramVec
	applyDuration         *prometheus.HistogramVec
	rangeDuration         *prometheus.HistogramVec
	rangeOK, rangeFailed  prometheus.Observer
	clientRequests        *prometheus.CounterVec
	grpcSentBytes         prometheus.Counter
	grpcReceivedBytes     prometheus.Counter
	streamFailures        *prometheus.CounterVec

	// apply: the (op, success) histograms resolved once, so the apply
	// path does not look labels up.
	applyMu  sync.Mutex
	applyObs map[applyKey]prometheus.Observer
	// the last heartbeat sent to each peer (heartbeatSent)
	hbMu   sync.Mutex
	hbLast map[uint64]time.Time
	// request_duration_seconds by (type, success), resolved once
	reqMu  sync.RWMutex
	reqObs map[applyKey]prometheus.Observer
	// client_requests_total by (type, client_api_version), resolved once
	clientMu   sync.RWMutex
	clientReqs map[[2]string]prometheus.Counter

	watchSendLoopWatchStream, watchSendLoopPerEvent   prometheus.Histogram
	watchSendLoopControlStream, watchSendLoopProgress prometheus.Histogram

	// mvcc
	rangeTotal, putTotal, deleteTotal, txnTotal prometheus.Counter
	putSize                                     prometheus.Gauge
	eventsTotal                                 prometheus.Counter
	pendingEvents                               prometheus.Gauge
	indexCompactionPause                        prometheus.Histogram
	dbCompactionPause                           prometheus.Histogram
	dbCompactionTotal                           prometheus.Histogram
	dbCompactionLast                            prometheus.Gauge
	dbCompactionKeys                            prometheus.Counter
	hashDuration, hashRevDuration               prometheus.Histogram

	// lease
	leaseGranted, leaseRevoked, leaseRenewed prometheus.Counter
	leaseTTL                                 prometheus.Histogram

	// disk
	walFsync, walWrite                       prometheus.Histogram
	walWriteBytes                            prometheus.Gauge
	backendCommit                            prometheus.Histogram
	commitRebalance, commitSpill, commitWrit prometheus.Histogram
	defrag                                   prometheus.Histogram
	backendSnapshot                          prometheus.Histogram
	defragInflight                           prometheus.Gauge

	// snap
	snapMarshalling, snapSave, snapFsync prometheus.Histogram
	snapDBSave, snapDBFsync              prometheus.Histogram

	// network (rafthttp)
	activePeers                                     *prometheus.GaugeVec
	disconnectedPeers                               *prometheus.CounterVec
	peerSentBytes, peerReceivedBytes                *prometheus.CounterVec
	peerSentFailures, peerReceivedFailures          *prometheus.CounterVec
	snapshotSend, snapshotSendFailures              *prometheus.CounterVec
	snapshotSendInflights, snapshotReceiveInflights *prometheus.GaugeVec
	snapshotSendSeconds, snapshotReceiveSeconds     *prometheus.HistogramVec
	snapshotReceive, snapshotReceiveFailures        *prometheus.CounterVec
	rtt                                             *prometheus.HistogramVec

	// v2 store: etcd 3.7 registers these and counts nothing on a v3
	// cluster; so does etckit.
	storeWatchRequests, storeExpires prometheus.Counter
	storeWatchers                    prometheus.Gauge

	// Snapshots received from any peer (SnapshotsReceived; tests).
	snapMu       sync.Mutex
	snapReceived uint64
}

type applyKey struct {
	op string
	ok bool
}

// newMetrics makes the registry; s's scrape-time gauges are registered by
// registerScrape once s exists, extensive adds the gRPC handling-time
// histograms (--metrics extensive).
func newMetrics(extensive bool) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), applyObs: map[applyKey]prometheus.Observer{}, clientReqs: map[[2]string]prometheus.Counter{}, reqObs: map[applyKey]prometheus.Observer{}, hbLast: map[uint64]time.Time{}}
	var gopts []grpcprom.ServerMetricsOption
	if extensive {
		gopts = append(gopts, grpcprom.WithServerHandlingTimeHistogram())
	}
	m.grpc = grpcprom.NewServerMetrics(gopts...)

	m.leaderChanges = newCounter("etcd", "server", "leader_changes_seen_total", "The number of leader changes seen.")
	m.heartbeatSendFailures = newCounter("etcd", "server", "heartbeat_send_failures_total", "The total number of leader heartbeat send failures (likely overloaded from slow disk).")
	m.proposalsFailed = newCounter("etcd", "server", "proposals_failed_total", "The total number of failed proposals seen.")
	m.slowApplies = newCounter("etcd", "server", "slow_apply_total", "The total number of slow apply requests (likely overloaded from slow disk).")
	m.slowReadIndexes = newCounter("etcd", "server", "slow_read_indexes_total", "The total number of pending read indexes not in sync with leader's or timed out read index requests.")
	m.readIndexesFailed = newCounter("etcd", "server", "read_indexes_failed_total", "The total number of failed read indexes seen.")
	m.leaseExpired = newCounter("etcd_debugging", "server", "lease_expired_total", "The total number of expired leases.")
	m.learnerPromoteOK = newCounter("etcd", "server", "learner_promote_successes", "The total number of successful learner promotions while this member is leader.")
	m.learnerPromoteFailed = newCounterVec("etcd", "server", "learner_promote_failures", "The total number of failed learner promotions (likely learner not ready) while this member is leader.", "Reason")
	m.snapshotApplying = newGauge("etcd", "server", "snapshot_apply_in_progress_total", "1 if the server is applying the incoming snapshot. 0 if none.")
	m.healthSuccess = newCounter("etcd", "server", "health_success", "The total number of successful health checks")
	m.healthFailures = newCounter("etcd", "server", "health_failures", "The total number of failed health checks")
	m.healthCheck = newGaugeVec("etcd", "server", "healthcheck", "The result of each kind of healthcheck.", "type", "name")
	m.healthChecks = newCounterVec("etcd", "server", "healthchecks_total", "The total number of each kind of healthcheck.", "type", "name", "status")
	// etcd's apply counts the alarms it applies: +1 for an activation that
	// was new, -1 for a deactivation of one that was there, so a series
	// stays (at 0) once its alarm is gone, and alarms loaded at start are
	// not counted.
	m.alarms = newGaugeVec("etcd_debugging", "server", "alarms", "Alarms for every member in cluster. 1 for 'server_id' label with current ID. 2 for 'alarm_type' label with type of this alarm", "server_id", "alarm_type")
	m.requestDuration = newHistVec("etcd", "server", "request_duration_seconds", "Response latency distribution in seconds for each type.", bucketsDisk, "type", "success")
	m.applyDuration = newHistVec("etcd", "server", "apply_duration_seconds", "The latency distributions of v2 apply called by backend.", bucketsApply, "version", "op", "success")
	m.rangeDuration = newHistVec("etcd", "server", "range_duration_seconds", "The latency distributions of txn.Range", bucketsApply, "success")
	m.rangeOK, m.rangeFailed = m.rangeDuration.WithLabelValues("true"), m.rangeDuration.WithLabelValues("false")
	m.clientRequests = newCounterVec("etcd", "server", "client_requests_total", "The total number of client requests per client version.", "type", "client_api_version")
	m.grpcSentBytes = newCounter("etcd", "network", "client_grpc_sent_bytes_total", "The total number of bytes sent to grpc clients.")
	m.grpcReceivedBytes = newCounter("etcd", "network", "client_grpc_received_bytes_total", "The total number of bytes received from grpc clients.")
	m.streamFailures = newCounterVec("etcd", "network", "server_stream_failures_total", "The total number of stream failures from the local server.", "Type", "API")

	m.watchSendLoopWatchStream = newHist("etcd_debugging", "server", "watch_send_loop_watch_stream_duration_seconds", "The total duration in seconds of running through the send loop watch stream response all events.", bucketsDisk)
	m.watchSendLoopPerEvent = newHist("etcd_debugging", "server", "watch_send_loop_watch_stream_duration_per_event_seconds", "The average duration in seconds of running through the send loop watch stream response, per event.", bucketsDisk)
	m.watchSendLoopControlStream = newHist("etcd_debugging", "server", "watch_send_loop_control_stream_duration_seconds", "The total duration in seconds of running through the send loop control stream response.", bucketsDisk)
	m.watchSendLoopProgress = newHist("etcd_debugging", "server", "watch_send_loop_progress_duration_seconds", "The total duration in seconds of running through the progress loop control stream response.", bucketsDisk)

	m.rangeTotal = newCounter("etcd", "mvcc", "range_total", "Total number of ranges seen by this member.")
	m.putTotal = newCounter("etcd", "mvcc", "put_total", "Total number of puts seen by this member.")
	m.deleteTotal = newCounter("etcd", "mvcc", "delete_total", "Total number of deletes seen by this member.")
	m.txnTotal = newCounter("etcd", "mvcc", "txn_total", "Total number of txns seen by this member.")
	m.putSize = newGauge("etcd_debugging", "mvcc", "total_put_size_in_bytes", "The total size of put kv pairs seen by this member.")
	m.eventsTotal = newCounter("etcd_debugging", "mvcc", "events_total", "Total number of events sent by this member.")
	m.pendingEvents = newGauge("etcd_debugging", "mvcc", "pending_events_total", "Total number of pending events to be sent.")
	m.indexCompactionPause = newHist("etcd_debugging", "mvcc", "index_compaction_pause_duration_milliseconds", "Bucketed histogram of index compaction pause duration.", prometheus.ExponentialBuckets(0.5, 2, 14))
	m.dbCompactionPause = newHist("etcd_debugging", "mvcc", "db_compaction_pause_duration_milliseconds", "Bucketed histogram of db compaction pause duration.", prometheus.ExponentialBuckets(1, 2, 13))
	m.dbCompactionTotal = newHist("etcd_debugging", "mvcc", "db_compaction_total_duration_milliseconds", "Bucketed histogram of db compaction total duration.", prometheus.ExponentialBuckets(100, 2, 14))
	m.dbCompactionLast = newGauge("etcd_debugging", "mvcc", "db_compaction_last", "The unix time of the last db compaction. Resets to 0 on start.")
	m.dbCompactionKeys = newCounter("etcd_debugging", "mvcc", "db_compaction_keys_total", "Total number of db keys compacted.")
	m.hashDuration = newHist("etcd", "mvcc", "hash_duration_seconds", "The latency distribution of storage hash operation.", bucketsHash)
	m.hashRevDuration = newHist("etcd", "mvcc", "hash_rev_duration_seconds", "The latency distribution of storage hash by revision operation.", bucketsHash)

	m.leaseGranted = newCounter("etcd_debugging", "lease", "granted_total", "The total number of granted leases.")
	m.leaseRevoked = newCounter("etcd_debugging", "lease", "revoked_total", "The total number of revoked leases.")
	m.leaseRenewed = newCounter("etcd_debugging", "lease", "renewed_total", "The number of renewed leases seen by the leader.")
	m.leaseTTL = newHist("etcd_debugging", "lease", "ttl_total", "Bucketed histogram of lease TTLs.", prometheus.ExponentialBuckets(1, 2, 24))

	m.walFsync = newHist("etcd", "disk", "wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL.", bucketsDisk)
	m.walWrite = newHist("etcd", "disk", "wal_write_duration_seconds", "The latency distributions of write called by WAL.", bucketsDisk)
	m.walWriteBytes = newGauge("etcd", "disk", "wal_write_bytes_total", "Total number of bytes written in WAL.")
	m.backendCommit = newHist("etcd", "disk", "backend_commit_duration_seconds", "The latency distributions of commit called by backend.", bucketsDisk)
	m.commitRebalance = newHist("etcd_debugging", "disk", "backend_commit_rebalance_duration_seconds", "The latency distributions of commit.rebalance called by bboltdb backend.", bucketsDisk)
	m.commitSpill = newHist("etcd_debugging", "disk", "backend_commit_spill_duration_seconds", "The latency distributions of commit.spill called by bboltdb backend.", bucketsDisk)
	m.commitWrit = newHist("etcd_debugging", "disk", "backend_commit_write_duration_seconds", "The latency distributions of commit.write called by bboltdb backend.", bucketsDisk)
	m.defrag = newHist("etcd", "disk", "backend_defrag_duration_seconds", "The latency distribution of backend defragmentation.", bucketsDefrag)
	m.backendSnapshot = newHist("etcd", "disk", "backend_snapshot_duration_seconds", "The latency distribution of backend snapshots.", bucketsBackSnp)
	m.defragInflight = newGauge("etcd", "disk", "defrag_inflight", "Whether or not defrag is active on the member. 1 means active, 0 means not.")

	m.snapMarshalling = newHist("etcd_debugging", "snap", "save_marshalling_duration_seconds", "The marshalling cost distributions of save called by snapshot.", bucketsDisk)
	m.snapSave = newHist("etcd_debugging", "snap", "save_total_duration_seconds", "The total latency distributions of save called by snapshot.", bucketsDisk)
	m.snapFsync = newHist("etcd", "snap", "fsync_duration_seconds", "The latency distributions of fsync called by snap.", bucketsDisk)
	m.snapDBSave = newHist("etcd", "snap_db", "save_total_duration_seconds", "The total latency distributions of v3 snapshot save", bucketsSnapDB)
	m.snapDBFsync = newHist("etcd", "snap_db", "fsync_duration_seconds", "The latency distributions of fsyncing .snap.db file", bucketsDisk)

	m.activePeers = newGaugeVec("etcd", "network", "active_peers", "The current number of active peer connections.", "Local", "Remote")
	m.disconnectedPeers = newCounterVec("etcd", "network", "disconnected_peers_total", "The total number of disconnected peers.", "Local", "Remote")
	m.peerSentBytes = newCounterVec("etcd", "network", "peer_sent_bytes_total", "The total number of bytes sent to peers.", "To")
	m.peerReceivedBytes = newCounterVec("etcd", "network", "peer_received_bytes_total", "The total number of bytes received from peers.", "From")
	m.peerSentFailures = newCounterVec("etcd", "network", "peer_sent_failures_total", "The total number of send failures from peers.", "To")
	m.peerReceivedFailures = newCounterVec("etcd", "network", "peer_received_failures_total", "The total number of receive failures from peers.", "From")
	m.snapshotSend = newCounterVec("etcd", "network", "snapshot_send_success", "Total number of successful snapshot sends", "To")
	m.snapshotSendInflights = newGaugeVec("etcd", "network", "snapshot_send_inflights_total", "Total number of inflight snapshot sends", "To")
	m.snapshotSendFailures = newCounterVec("etcd", "network", "snapshot_send_failures", "Total number of snapshot send failures", "To")
	m.snapshotSendSeconds = newHistVec("etcd", "network", "snapshot_send_total_duration_seconds", "Total latency distributions of v3 snapshot sends", bucketsSnapDB, "To")
	m.snapshotReceive = newCounterVec("etcd", "network", "snapshot_receive_success", "Total number of successful snapshot receives", "From")
	m.snapshotReceiveInflights = newGaugeVec("etcd", "network", "snapshot_receive_inflights_total", "Total number of inflight snapshot receives", "From")
	m.snapshotReceiveFailures = newCounterVec("etcd", "network", "snapshot_receive_failures", "Total number of snapshot receive failures", "From")
	m.snapshotReceiveSeconds = newHistVec("etcd", "network", "snapshot_receive_total_duration_seconds", "Total latency distributions of v3 snapshot receives", bucketsSnapDB, "From")
	m.rtt = newHistVec("etcd", "network", "peer_round_trip_time_seconds", "Round-Trip-Time histogram between peers", bucketsRTT, "To")

	// The etcd binary links its gRPC proxy, whose package registers
	// these in the default registry: every member exposes them, at zero
	// (etcd's TestNoMetricsMissing expects them). etckit has no proxy.
	proxy := []prometheus.Collector{
		newGauge("etcd", "grpc_proxy", "watchers_coalescing_total", "Total number of current watchers coalescing"),
		newCounter("etcd", "grpc_proxy", "events_coalescing_total", "Total number of events coalescing"),
		newGauge("etcd", "grpc_proxy", "cache_keys_total", "Total number of keys/ranges cached"),
		newGauge("etcd", "grpc_proxy", "cache_hits_total", "Total number of cache hits"),
		newGauge("etcd", "grpc_proxy", "cache_misses_total", "Total number of cache misses"),
	}
	m.reg.MustRegister(proxy...)

	m.storeWatchRequests = newCounter("etcd_debugging", "store", "watch_requests_total", "Total number of incoming watch requests (new or reestablished).")
	m.storeExpires = newCounter("etcd_debugging", "store", "expires_total", "Total number of expired keys.")
	m.storeWatchers = newGauge("etcd_debugging", "store", "watchers", "Count of currently active watchers.")

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.grpc,
		m.leaderChanges, m.heartbeatSendFailures, m.proposalsFailed, m.slowApplies, m.slowReadIndexes,
		m.readIndexesFailed, m.leaseExpired, m.learnerPromoteOK, m.learnerPromoteFailed, m.snapshotApplying,
		m.healthSuccess, m.healthFailures, m.healthCheck, m.healthChecks, m.alarms, m.requestDuration, m.applyDuration,
		m.rangeDuration, m.clientRequests, m.grpcSentBytes, m.grpcReceivedBytes, m.streamFailures,
		m.watchSendLoopWatchStream, m.watchSendLoopPerEvent, m.watchSendLoopControlStream, m.watchSendLoopProgress,
		m.rangeTotal, m.putTotal, m.deleteTotal, m.txnTotal, m.putSize, m.eventsTotal, m.pendingEvents,
		m.indexCompactionPause, m.dbCompactionPause, m.dbCompactionTotal, m.dbCompactionLast, m.dbCompactionKeys,
		m.hashDuration, m.hashRevDuration,
		m.leaseGranted, m.leaseRevoked, m.leaseRenewed, m.leaseTTL,
		m.walFsync, m.walWrite, m.walWriteBytes, m.backendCommit, m.commitRebalance, m.commitSpill, m.commitWrit,
		m.defrag, m.backendSnapshot, m.defragInflight,
		m.snapMarshalling, m.snapSave, m.snapFsync, m.snapDBSave, m.snapDBFsync,
		m.activePeers, m.disconnectedPeers, m.peerSentBytes, m.peerReceivedBytes, m.peerSentFailures,
		m.peerReceivedFailures, m.snapshotSend, m.snapshotSendInflights, m.snapshotSendFailures,
		m.snapshotSendSeconds, m.snapshotReceive, m.snapshotReceiveInflights, m.snapshotReceiveFailures,
		m.snapshotReceiveSeconds, m.rtt,
		m.storeWatchRequests, m.storeExpires, m.storeWatchers,
	)
	// etcd serves promhttp.Handler(): the default registry, instrumented
	// (promhttp_metric_handler_requests_total, _in_flight).
	m.handler = promhttp.InstrumentMetricHandler(m.reg, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return m
}

// registerScrape registers the gauges read from s when scraped.
func (m *metrics) registerScrape(s *Server) {
	m.reg.MustRegister(&scrapeCollector{s: s})
}

// observeApply is the engine's apply observer (engine.Options.OnApply): op
// is etcd's apply op name ("Put", "Txn", ...).
func (m *metrics) observeApply(r *pb.InternalRaftRequest, resp proto.Message, took time.Duration, failed bool) {
	op := applyOp(r)
	k := applyKey{op, !failed}
	m.applyMu.Lock()
	o := m.applyObs[k]
	if o == nil {
		o = m.applyDuration.WithLabelValues("v3", op, strconv.FormatBool(!failed))
		m.applyObs[k] = o
	}
	m.applyMu.Unlock()
	// etcd observes microseconds / 1e6
	o.Observe(float64(took.Microseconds()) / 1e6)
	if r.GetCompaction() != nil {
		// the index is compacted while the entry is applied
		m.indexCompactionPause.Observe(float64(took.Microseconds()) / 1e3)
	}
	if took > 100*time.Millisecond { // etcd's warnApplyDuration
		m.slowApplies.Inc()
	}
	if failed {
		return
	}
	switch {
	case r.GetPut() != nil:
		var c txnCounts
		c.put(r.GetPut())
		c.end(m)
	case r.GetDeleteRange() != nil:
		var c txnCounts
		c.del(r.GetDeleteRange())
		c.end(m)
	case r.GetRange() != nil:
		m.rangeTotal.Inc()
	case r.GetTxn() != nil:
		tr, _ := resp.(*pb.TxnResponse)
		m.countTxn(r.GetTxn(), tr.GetSucceeded())
	case r.GetCompaction() != nil:
		m.rangeTotal.Inc() // etcd reads the revision for the response
	case r.GetLeaseGrant() != nil:
		m.leaseGranted.Inc()
		m.leaseTTL.Observe(float64(r.GetLeaseGrant().GetTTL()))
	case r.GetLeaseRevoke() != nil:
		m.leaseRevoked.Inc()
	case r.GetAlarm() != nil:
		ar, _ := resp.(*pb.AlarmResponse)
		for _, a := range ar.GetAlarms() {
			g := m.alarms.WithLabelValues(idLabel(a.GetMemberID()), a.GetAlarm().String())
			switch r.GetAlarm().GetAction() {
			case pb.AlarmRequest_ACTIVATE:
				g.Inc()
			case pb.AlarmRequest_DEACTIVATE:
				g.Dec()
			}
		}
	}
}

// txnCounts are the operations of one of etcd's mvcc transactions, counted
// at its end as etcd's metricsTxnWrite does: each range, put and delete,
// the put bytes, and the transaction itself when it holds more than one
// operation.
type txnCounts struct {
	ranges, puts, deletes int
	putSize               int
}

// put is a put request: with prev_kv, ignore_value or ignore_lease etcd
// reads the key first, in the same transaction.
func (c *txnCounts) put(p *pb.PutRequest) {
	if p.GetPrevKv() || p.GetIgnoreValue() || p.GetIgnoreLease() {
		c.ranges++
	}
	c.puts++
	c.putSize += len(p.GetKey()) + len(p.GetValue())
}

// del is a delete request: with prev_kv etcd reads the keys first.
func (c *txnCounts) del(d *pb.DeleteRangeRequest) {
	if d.GetPrevKv() {
		c.ranges++
	}
	c.deletes++
}

func (c *txnCounts) ops(ops []*pb.RequestOp) {
	for _, op := range ops {
		switch {
		case op.GetRequestPut() != nil:
			c.put(op.GetRequestPut())
		case op.GetRequestRange() != nil:
			c.ranges++
		case op.GetRequestDeleteRange() != nil:
			c.del(op.GetRequestDeleteRange())
		case op.GetRequestTxn() != nil:
			// a nested txn runs in the same transaction; its branch is
			// not known here: its success ops are counted
			t := op.GetRequestTxn()
			c.ranges += len(t.GetCompare())
			c.ops(t.GetSuccess())
		}
	}
}

func (c *txnCounts) end(m *metrics) {
	if c.ranges+c.puts+c.deletes > 1 {
		m.txnTotal.Inc()
	}
	m.rangeTotal.Add(float64(c.ranges))
	m.putTotal.Add(float64(c.puts))
	m.deleteTotal.Add(float64(c.deletes))
	m.putSize.Add(float64(c.putSize))
}

// countTxn counts a txn as etcd's mvcc transactions do (txn.Txn): the
// compares are ranges of a read transaction; a txn that writes then runs
// the branch taken in a write transaction, a read-only txn in the same
// one. A failed compare ends the compares in etcd; here every compare of
// a failed txn is counted (exact for one compare).
func (m *metrics) countTxn(t *pb.TxnRequest, succeeded bool) {
	ops := t.GetFailure()
	if succeeded {
		ops = t.GetSuccess()
	}
	var c txnCounts
	c.ranges = len(t.GetCompare())
	// etcd's checkTxn reads the previous value of the branch's puts with
	// prev_kv, ignore_value or ignore_lease in the read transaction too
	for _, op := range ops {
		if p := op.GetRequestPut(); p != nil && (p.GetPrevKv() || p.GetIgnoreValue() || p.GetIgnoreLease()) {
			c.ranges++
		}
	}
	if !isTxnReadonly(t) {
		c.end(m)
		c = txnCounts{}
	}
	c.ops(ops)
	c.end(m)
}

// observeRequest observes etcd_server_request_duration_seconds for a
// request of type typ started at start; *errp is its outcome (read when
// deferred).
func (m *metrics) observeRequest(typ string, start time.Time, errp *error) {
	k := applyKey{typ, *errp == nil}
	m.reqMu.RLock()
	o := m.reqObs[k]
	m.reqMu.RUnlock()
	if o == nil {
		m.reqMu.Lock()
		if o = m.reqObs[k]; o == nil {
			o = m.requestDuration.WithLabelValues(typ, strconv.FormatBool(k.ok))
			m.reqObs[k] = o
		}
		m.reqMu.Unlock()
	}
	o.Observe(time.Since(start).Seconds())
}

// observeRange is etcd's txn.RangeSecObserve, the store's range read, and
// its count (a read-only transaction of one range).
func (m *metrics) observeRange(start time.Time, ok bool) {
	m.rangeTotal.Inc()
	o := m.rangeFailed
	if ok {
		o = m.rangeOK
	}
	o.Observe(float64(time.Since(start).Microseconds()) / 1e6)
}

// heartbeatSent is etcd's timeout detector on the leader's heartbeats: a
// heartbeat to a peer more than max after the previous one counts as a
// failure to send on time (etcd_server_heartbeat_send_failures_total;
// etcd's max is twice the heartbeat interval).
func (m *metrics) heartbeatSent(to uint64, max time.Duration) {
	now := time.Now()
	m.hbMu.Lock()
	last, ok := m.hbLast[to]
	m.hbLast[to] = now
	m.hbMu.Unlock()
	if ok && now.Sub(last) > max {
		m.heartbeatSendFailures.Inc()
	}
}

// resetHeartbeats forgets the last heartbeats (a new leader).
func (m *metrics) resetHeartbeats() {
	m.hbMu.Lock()
	clear(m.hbLast)
	m.hbMu.Unlock()
}

// observeWatchSend observes etcd's watch send loop histograms for one
// response sent and counts its events (etcd_debugging_mvcc_events_total).
func (m *metrics) observeWatchSend(r *pb.WatchResponse, start time.Time) {
	d := time.Since(start).Seconds()
	switch {
	case len(r.Events) > 0:
		m.eventsTotal.Add(float64(len(r.Events)))
		m.watchSendLoopWatchStream.Observe(d)
		m.watchSendLoopPerEvent.Observe(d / float64(len(r.Events)))
	case r.Created || r.Canceled:
		m.watchSendLoopControlStream.Observe(d)
	default:
		m.watchSendLoopProgress.Observe(d)
	}
}

// applyOp is etcd's op label of apply_duration_seconds (uber_applier.go).
func applyOp(r *pb.InternalRaftRequest) string {
	switch {
	case r.GetClusterVersionSet() != nil:
		return "ClusterVersionSet"
	case r.GetClusterMemberAttrSet() != nil:
		return "ClusterMemberAttrSet"
	case r.GetDowngradeInfoSet() != nil:
		return "DowngradeInfoSet"
	case r.GetRange() != nil:
		return "Range"
	case r.GetPut() != nil:
		return "Put"
	case r.GetDeleteRange() != nil:
		return "DeleteRange"
	case r.GetTxn() != nil:
		return "Txn"
	case r.GetCompaction() != nil:
		return "Compaction"
	case r.GetLeaseGrant() != nil:
		return "LeaseGrant"
	case r.GetLeaseRevoke() != nil:
		return "LeaseRevoke"
	case r.GetLeaseCheckpoint() != nil:
		return "LeaseCheckpoint"
	case r.GetAlarm() != nil:
		return "Alarm"
	case r.GetAuthenticate() != nil:
		return "Authenticate"
	case r.GetAuthEnable() != nil:
		return "AuthEnable"
	case r.GetAuthDisable() != nil:
		return "AuthDisable"
	case r.GetAuthStatus() != nil:
		return "AuthStatus"
	case r.GetAuthUserAdd() != nil:
		return "AuthUserAdd"
	case r.GetAuthUserDelete() != nil:
		return "AuthUserDelete"
	case r.GetAuthUserChangePassword() != nil:
		return "AuthUserChangePassword"
	case r.GetAuthUserGrantRole() != nil:
		return "AuthUserGrantRole"
	case r.GetAuthUserGet() != nil:
		return "AuthUserGet"
	case r.GetAuthUserRevokeRole() != nil:
		return "AuthUserRevokeRole"
	case r.GetAuthRoleAdd() != nil:
		return "AuthRoleAdd"
	case r.GetAuthRoleGrantPermission() != nil:
		return "AuthRoleGrantPermission"
	case r.GetAuthRoleGet() != nil:
		return "AuthRoleGet"
	case r.GetAuthRoleRevokePermission() != nil:
		return "AuthRoleRevokePermission"
	case r.GetAuthRoleDelete() != nil:
		return "AuthRoleDelete"
	case r.GetAuthUserList() != nil:
		return "AuthUserList"
	case r.GetAuthRoleList() != nil:
		return "AuthRoleList"
	}
	return "unknown"
}

// observeCompact is the store's physical compaction observer (etcd's
// db_compaction_* families, in milliseconds).
func (m *metrics) observeCompact(c mvcc.CompactStats) {
	m.dbCompactionKeys.Add(float64(c.Keys))
	for _, p := range c.Pauses {
		m.dbCompactionPause.Observe(float64(p.Milliseconds()))
	}
	m.dbCompactionTotal.Observe(float64(c.Total.Milliseconds()))
	m.dbCompactionLast.Set(float64(time.Now().Unix()))
}

// observeCommit is the backend's commit observer.
func (m *metrics) observeCommit(c mvcc.CommitStats) {
	m.backendCommit.Observe(c.Total.Seconds())
	m.commitRebalance.Observe(c.Rebalance.Seconds())
	m.commitSpill.Observe(c.Spill.Seconds())
	m.commitWrit.Observe(c.Write.Seconds())
}

// observeWALSync is the WAL's sync observer: the write of the buffered
// records, then the fdatasync (zero with --unsafe-no-fsync: etcd observes
// no fsync then either).
func (m *metrics) observeWALSync(n int64, write, fsync time.Duration, synced bool) {
	m.walWriteBytes.Add(float64(n))
	m.walWrite.Observe(write.Seconds())
	if synced {
		m.walFsync.Observe(fsync.Seconds())
	}
}

// countSnapshot counts a snapshot sent to or received from peer.
func (m *metrics) countSnapshot(sent bool, peer uint64) {
	if sent {
		m.snapshotSend.WithLabelValues(idLabel(peer)).Inc()
		return
	}
	m.snapshotReceive.WithLabelValues(idLabel(peer)).Inc()
	m.snapMu.Lock()
	m.snapReceived++
	m.snapMu.Unlock()
}

func idLabel(id uint64) string { return fmt.Sprintf("%x", id) }

// SnapshotsReceived is how many db snapshots this member has received and
// applied, from any peer.
func (s *Server) SnapshotsReceived() uint64 {
	s.metrics.snapMu.Lock()
	defer s.metrics.snapMu.Unlock()
	return s.metrics.snapReceived
}

func (s *Server) pendingProposals() int64 {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	return int64(len(s.waits))
}

// handleMetrics serves the registry in Prometheus' formats.
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	s.metrics.handler.ServeHTTP(w, r)
}

// scrapeCollector reads the gauges etcd computes from the server's state.
type scrapeCollector struct{ s *Server }

var (
	descHasLeader      = prometheus.NewDesc("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", nil, nil)
	descIsLeader       = prometheus.NewDesc("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.", nil, nil)
	descIsLearner      = prometheus.NewDesc("etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.", nil, nil)
	descCommitted      = prometheus.NewDesc("etcd_server_proposals_committed_total", "The total number of consensus proposals committed.", nil, nil)
	descApplied        = prometheus.NewDesc("etcd_server_proposals_applied_total", "The total number of consensus proposals applied.", nil, nil)
	descPending        = prometheus.NewDesc("etcd_server_proposals_pending", "The current number of pending proposals to commit.", nil, nil)
	descQuota          = prometheus.NewDesc("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.", nil, nil)
	descVersion        = prometheus.NewDesc("etcd_server_version", "Which version is running. 1 for 'server_version' label with current version.", []string{"server_version"}, nil)
	descGoVersion      = prometheus.NewDesc("etcd_server_go_version", "Which Go version server is running with. 1 for 'server_go_version' label with current version.", []string{"server_go_version"}, nil)
	descServerID       = prometheus.NewDesc("etcd_server_id", "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.", []string{"server_id"}, nil)
	descFeature        = prometheus.NewDesc("etcd_server_feature_enabled", "Whether or not a feature is enabled. 1 is enabled, 0 is not.", []string{"name", "stage"}, nil)
	descClusterVersion = prometheus.NewDesc("etcd_cluster_version", "Which version is running. 1 for 'cluster_version' label with current cluster version", []string{"cluster_version"}, nil)
	descKnownPeers     = prometheus.NewDesc("etcd_network_known_peers", "The current number of known peers.", []string{"Local", "Remote"}, nil)
	descDBSize         = prometheus.NewDesc("etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.", nil, nil)
	descDBInUse        = prometheus.NewDesc("etcd_mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes.", nil, nil)
	descOpenReadTxns   = prometheus.NewDesc("etcd_mvcc_db_open_read_transactions", "The number of currently open read transactions", nil, nil)
	descCurrentRev     = prometheus.NewDesc("etcd_debugging_mvcc_current_revision", "The current revision of store.", nil, nil)
	descCompactRev     = prometheus.NewDesc("etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store.", nil, nil)
	descKeys           = prometheus.NewDesc("etcd_debugging_mvcc_keys_total", "Total number of keys.", nil, nil)
	descWatchStreams   = prometheus.NewDesc("etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams.", nil, nil)
	descWatchers       = prometheus.NewDesc("etcd_debugging_mvcc_watcher_total", "Total number of watchers.", nil, nil)
	descSlowWatchers   = prometheus.NewDesc("etcd_debugging_mvcc_slow_watcher_total", "Total number of unsynced slow watchers.", nil, nil)
	descAuthRevision   = prometheus.NewDesc("etcd_debugging_auth_revision", "The current revision of auth store.", nil, nil)
	descFDUsed         = prometheus.NewDesc("os_fd_used", "The number of used file descriptors.", nil, nil)
	descFDLimit        = prometheus.NewDesc("os_fd_limit", "The file descriptor limit.", nil, nil)
)

func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHasLeader, descIsLeader, descIsLearner, descCommitted, descApplied,
		descPending, descQuota, descVersion, descGoVersion, descServerID, descFeature, descClusterVersion,
		descKnownPeers, descDBSize, descDBInUse, descOpenReadTxns, descCurrentRev, descCompactRev, descKeys,
		descWatchStreams, descWatchers, descSlowWatchers, descAuthRevision, descFDUsed, descFDLimit} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	lead := s.Leader()
	g(descHasLeader, b2f(lead != 0))
	g(descIsLeader, b2f(lead != 0 && lead == s.ID()))
	g(descIsLearner, b2f(s.isLearner()))
	applied, _ := s.eng.Applied()
	g(descCommitted, float64(s.eng.CommitIndex()))
	g(descApplied, float64(applied))
	g(descPending, float64(s.pendingProposals()))
	g(descQuota, float64(s.cfg.QuotaBackendBytes))
	g(descVersion, 1, Version)
	g(descGoVersion, 1, goruntime.Version())
	g(descServerID, 1, idLabel(s.ID()))
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range knownFeatures {
			if !yield(k) {
				return
			}
		}
	}) {
		spec := knownFeatures[name]
		on := spec.def
		switch name {
		case featureLeaseCheckpoint:
			on = s.cfg.LeaseCheckpoint
		case featureLeaseCheckpointPersist:
			on = s.cfg.LeaseCheckpointPersist
		}
		g(descFeature, b2f(on), name, spec.preRelease)
	}
	if cv := s.eng.ClusterVersion(); cv != "" {
		g(descClusterVersion, 1, majorMinor(cv))
	}
	local := idLabel(s.ID())
	for _, mem := range s.eng.Members() {
		g(descKnownPeers, 1, local, idLabel(mem.ID))
	}
	size, inUse := s.dbSize()
	g(descDBSize, float64(size))
	g(descDBInUse, float64(inUse))
	g(descOpenReadTxns, float64(s.eng.Store().Backend().DB().Stats().OpenTxN))
	st := s.eng.Store()
	g(descCurrentRev, float64(st.Rev()))
	g(descCompactRev, float64(max(st.CompactRev(), 0)))
	stats := st.Stats()
	g(descKeys, float64(stats.Keys))
	g(descWatchStreams, float64(stats.WatchStreams))
	g(descWatchers, float64(stats.Watchers))
	g(descSlowWatchers, float64(stats.SlowWatchers))
	g(descAuthRevision, float64(s.eng.Auth().Revision()))
	if used, limit, ok := fdUsage(); ok {
		g(descFDUsed, float64(used))
		g(descFDLimit, float64(limit))
	}
}

// fdUsage is etcd's runtime.FDUsage and FDLimit: the entries of
// /proc/self/fd and the soft RLIMIT_NOFILE.
func fdUsage() (used, limit uint64, ok bool) {
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, 0, false
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return 0, 0, false
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, false
	}
	return uint64(len(names)), rl.Cur, true
}

// parseMetricsFlag checks --metrics: basic or extensive.
func parseMetricsFlag(v string) (extensive bool, err error) {
	switch strings.ToLower(v) {
	case "", "basic":
		return false, nil
	case "extensive":
		return true, nil
	}
	return false, fmt.Errorf("--metrics %q: want basic or extensive", v)
}

// countingCodec is grpc's proto codec counting the bytes of the messages
// (etcd's v3rpc codec: etcd_network_client_grpc_sent_bytes_total and
// _received_bytes_total).
type countingCodec struct {
	inner encoding.CodecV2
	m     *metrics
}

func (c countingCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := c.inner.Marshal(v)
	c.m.grpcSentBytes.Add(float64(b.Len()))
	return b, err
}

func (c countingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	c.m.grpcReceivedBytes.Add(float64(data.Len()))
	return c.inner.Unmarshal(data, v)
}

func (c countingCodec) Name() string { return c.inner.Name() }

// serverOptions are the gRPC options of the metrics: the counting codec
// and go-grpc-middleware's interceptors (grpc_server_*, as etcd), first
// in the chain; etcd_server_client_requests_total is counted by the
// server's interceptors (interceptor.go), which read the metadata anyway.
func (m *metrics) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(countingCodec{inner: encoding.GetCodecV2(protoenc.Name), m: m}),
		grpc.ChainUnaryInterceptor(m.grpc.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(m.grpc.StreamServerInterceptor()),
	}
}

// countClientRequest counts a request by its client-api-version metadata
// ("unknown" without one), as etcd's interceptors; false: the version is
// not UTF-8, which etcd refuses.
func (m *metrics) countClientRequest(md metadata.MD, typ string) bool {
	ver := "unknown"
	if vs := md[rpctypes.MetadataClientAPIVersionKey]; len(vs) > 0 {
		ver = vs[0]
	}
	if !utf8.ValidString(ver) {
		return false
	}
	k := [2]string{typ, ver}
	m.clientMu.RLock()
	c := m.clientReqs[k]
	m.clientMu.RUnlock()
	if c == nil {
		m.clientMu.Lock()
		if c = m.clientReqs[k]; c == nil {
			c = m.clientRequests.WithLabelValues(typ, ver)
			m.clientReqs[k] = c
		}
		m.clientMu.Unlock()
	}
	c.Inc()
	return true
}

// peerObserver is the transport's observer: etcd_network_* by peer, the
// per-peer series resolved once.
type peerObserver struct {
	m     *metrics
	local string
	mu    sync.RWMutex
	peers map[uint64]*peerSeries
}

type peerSeries struct {
	sent, received, sendFailed, recvFailed prometheus.Counter
	active                                 prometheus.Gauge
	disconnected                           prometheus.Counter
	rtt                                    prometheus.Observer
}

func newPeerObserver(m *metrics, local uint64) *peerObserver {
	return &peerObserver{m: m, local: idLabel(local), peers: map[uint64]*peerSeries{}}
}

func (o *peerObserver) series(id uint64) *peerSeries {
	o.mu.RLock()
	p := o.peers[id]
	o.mu.RUnlock()
	if p != nil {
		return p
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if p = o.peers[id]; p == nil {
		l := idLabel(id)
		m := o.m
		p = &peerSeries{
			sent: m.peerSentBytes.WithLabelValues(l), received: m.peerReceivedBytes.WithLabelValues(l),
			sendFailed: m.peerSentFailures.WithLabelValues(l), recvFailed: m.peerReceivedFailures.WithLabelValues(l),
			active: m.activePeers.WithLabelValues(o.local, l), disconnected: m.disconnectedPeers.WithLabelValues(o.local, l),
			rtt: m.rtt.WithLabelValues(l),
		}
		o.peers[id] = p
	}
	return p
}

func (o *peerObserver) SentBytes(to uint64, n int)       { o.series(to).sent.Add(float64(n)) }
func (o *peerObserver) ReceivedBytes(from uint64, n int) { o.series(from).received.Add(float64(n)) }
func (o *peerObserver) SendFailed(to uint64)             { o.series(to).sendFailed.Inc() }
func (o *peerObserver) ReceiveFailed(from uint64)        { o.series(from).recvFailed.Inc() }
func (o *peerObserver) RoundTrip(to uint64, d time.Duration) {
	o.series(to).rtt.Observe(d.Seconds())
}

func (o *peerObserver) PeerActive(remote uint64, active bool) {
	p := o.series(remote)
	if active {
		p.active.Inc()
		return
	}
	p.active.Dec()
	p.disconnected.Inc()
}
