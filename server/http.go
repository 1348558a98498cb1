package server

import (
	"encoding/json"
	"net/http"
)

func (s *Server) registerHTTP(mux *http.ServeMux) {
	s.registerHealth(mux)
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
