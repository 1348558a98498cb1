package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
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
	if health {
		// etcd's check reads one key (a range)
		s.metrics.rangeTotal.Inc()
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
	if health {
		s.metrics.healthSuccess.Inc()
	} else {
		s.metrics.healthFailures.Inc()
	}
	_ = json.NewEncoder(w).Encode(map[string]string{"health": strconv.FormatBool(health), "reason": reason})
}
