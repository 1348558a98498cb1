package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

func (s *Server) registerHTTP(mux *http.ServeMux) {
	mux.HandleFunc("/health", s.handleHealth)
	mux.HandleFunc("/version", s.handleVersion)
	mux.HandleFunc("/metrics", s.handleMetrics)
}

// handleVersion answers as etcd: {"etcdserver":..,"etcdcluster":..,"storage":..}.
func (s *Server) handleVersion(w http.ResponseWriter, r *http.Request) { s.writeVersion(w) }

// writeVersion writes etcd's version.Versions JSON, on the client and the
// peer port alike (the leader reads a member's server version from the
// peer one to decide the cluster version).
func (s *Server) writeVersion(w http.ResponseWriter) {
	cv := s.eng.ClusterVersion()
	if cv == "" {
		cv = "not_decided"
	} else {
		// etcd prints the cluster version as major.minor.0
		cv = majorMinor(cv) + ".0"
	}
	sv := s.eng.StorageVersion()
	if sv == "" {
		sv = "unknown"
	}
	b, _ := json.Marshal(struct {
		Server  string `json:"etcdserver"`
		Cluster string `json:"etcdcluster"`
		Storage string `json:"storage"`
	}{Version, cv, sv})
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func majorMinor(v string) string {
	dots := 0
	for i := 0; i < len(v); i++ {
		if v[i] == '.' {
			dots++
			if dots == 2 {
				return v[:i]
			}
		}
	}
	return v
}

// handleHealth answers as etcd's /health: {"health":"true","reason":""}
// when the member has a leader, no alarm and serves a linearizable read
// (serializable with ?serializable=true).
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	health, reason := true, ""
	if s.Leader() == 0 {
		health, reason = false, "RAFT NO LEADER"
	}
	if health {
		for _, a := range s.eng.Alarms() {
			if a.GetAlarm() != pb.AlarmType_NONE {
				health, reason = false, "ALARM "+a.GetAlarm().String()
				break
			}
		}
	}
	if health && r.URL.Query().Get("serializable") != "true" {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		if err := s.linearizableReadNotify(ctx); err != nil {
			health, reason = false, "QGET ERROR:"+err.Error()
		}
		cancel()
	}
	w.Header().Set("Content-Type", "application/json")
	if !health {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]string{"health": strconv.FormatBool(health), "reason": reason})
}

// histogram is a Prometheus histogram with etcd's disk buckets
// (0.001 s doubling, 14 buckets).
type histogram struct {
	mu      sync.Mutex
	name    string
	help    string
	bounds  []float64
	counts  []uint64
	sum     float64
	samples uint64
}

func newHistogram(name, help string) *histogram {
	return newHistogramBuckets(name, help, 0.001, 14)
}

// newHistogramBuckets has n buckets from start, doubling.
func newHistogramBuckets(name, help string, start float64, n int) *histogram {
	h := &histogram{name: name, help: help}
	b := start
	for i := 0; i < n; i++ {
		h.bounds = append(h.bounds, b)
		b *= 2
	}
	h.counts = make([]uint64, len(h.bounds))
	return h
}

func (h *histogram) observe(v float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, b := range h.bounds {
		if v <= b {
			h.counts[i]++
		}
	}
	h.sum += v
	h.samples++
}

func (h *histogram) count() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.samples
}

func (h *histogram) write(w http.ResponseWriter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", h.name, h.help, h.name)
	for i, b := range h.bounds {
		fmt.Fprintf(w, "%s_bucket{le=\"%s\"} %d\n", h.name, strconv.FormatFloat(b, 'g', -1, 64), h.counts[i])
	}
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n", h.name, h.samples, h.name,
		strconv.FormatFloat(h.sum, 'g', -1, 64), h.name, h.samples)
}

type metrics struct {
	walFsync      *histogram
	backendCommit *histogram
	defrag        *histogram
	leaderChanges atomic.Uint64
	// proposalsFailed: proposals that timed out, were dropped or found no
	// leader (etcd counts the same).
	proposalsFailed atomic.Uint64
	defragInflight  atomic.Int64

	// Snapshots sent to and received from each peer, successful ones
	// (etcd_network_snapshot_send_success, _receive_success).
	snapMu       sync.Mutex
	snapSent     map[uint64]uint64
	snapReceived map[uint64]uint64
}

// countSnapshot counts a snapshot sent to or received from peer.
func (m *metrics) countSnapshot(sent bool, peer uint64) {
	m.snapMu.Lock()
	defer m.snapMu.Unlock()
	if sent {
		m.snapSent[peer]++
	} else {
		m.snapReceived[peer]++
	}
}

// SnapshotsReceived is how many db snapshots this member has received and
// applied, from any peer.
func (s *Server) SnapshotsReceived() uint64 {
	s.metrics.snapMu.Lock()
	defer s.metrics.snapMu.Unlock()
	var n uint64
	for _, v := range s.metrics.snapReceived {
		n += v
	}
	return n
}

func (s *Server) pendingProposals() int64 {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	return int64(len(s.waits))
}

func newMetrics() *metrics {
	return &metrics{
		walFsync:      newHistogram("etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL."),
		backendCommit: newHistogram("etcd_disk_backend_commit_duration_seconds", "The latency distributions of commit called by backend."),
		defrag:        newHistogramBuckets("etcd_disk_backend_defrag_duration_seconds", "The latency distribution of backend defragmentation.", 0.1, 13),
		snapSent:      map[uint64]uint64{},
		snapReceived:  map[uint64]uint64{},
	}
}

// handleMetrics writes the Prometheus text format.
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	s.metrics.walFsync.write(w)
	s.metrics.backendCommit.write(w)
	s.metrics.defrag.write(w)
	applied, _ := s.eng.Applied()
	size, inUse := s.dbSize()
	isLeader := 0
	if s.Leader() == s.ID() {
		isLeader = 1
	}
	hasLeader := 0
	if s.Leader() != 0 {
		hasLeader = 1
	}
	for _, g := range []struct {
		name, help string
		v          int64
	}{
		{"etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", int64(hasLeader)},
		{"etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.", int64(isLeader)},
		{"etcd_server_proposals_committed_total", "The total number of consensus proposals committed.", int64(s.eng.CommitIndex())},
		{"etcd_server_proposals_applied_total", "The total number of consensus proposals applied.", int64(applied)},
		{"etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.", size},
		{"etcd_mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes.", inUse},
		{"etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.", s.cfg.QuotaBackendBytes},
		{"etcd_disk_defrag_inflight", "Whether or not defrag is active on the member. 1 means active, 0 means not.", s.metrics.defragInflight.Load()},
		{"etcd_server_proposals_pending", "The current number of pending proposals to commit.", s.pendingProposals()},
		{"etcd_debugging_mvcc_current_revision", "The current revision of store.", s.eng.Store().Rev()},
		{"etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store.", max(s.eng.Store().CompactRev(), 0)},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", g.name, g.help, g.name, g.name, g.v)
	}
	fmt.Fprintf(w, "# HELP etcd_server_proposals_failed_total The total number of failed proposals seen.\n# TYPE etcd_server_proposals_failed_total counter\netcd_server_proposals_failed_total %d\n", s.metrics.proposalsFailed.Load())
	fmt.Fprintf(w, "# HELP etcd_server_leader_changes_seen_total The number of leader changes seen.\n# TYPE etcd_server_leader_changes_seen_total counter\netcd_server_leader_changes_seen_total %d\n", s.metrics.leaderChanges.Load())
	s.metrics.snapMu.Lock()
	for _, c := range []struct {
		name, help, label string
		m                 map[uint64]uint64
	}{
		{"etcd_network_snapshot_send_success", "Total number of successful snapshot sends", "To", s.metrics.snapSent},
		{"etcd_network_snapshot_receive_success", "Total number of successful snapshot receives", "From", s.metrics.snapReceived},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", c.name, c.help, c.name)
		ids := make([]uint64, 0, len(c.m))
		for id := range c.m {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			fmt.Fprintf(w, "%s{%s=%q} %d\n", c.name, c.label, fmt.Sprintf("%x", id), c.m[id])
		}
	}
	s.metrics.snapMu.Unlock()
	fmt.Fprintf(w, "# HELP etcd_server_version Which version is running. 1 for 'server_version' label with current version.\n# TYPE etcd_server_version gauge\netcd_server_version{server_version=%q} 1\n", Version)
}
