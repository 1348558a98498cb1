package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// etcd's HTTP health endpoints (etcdhttp/health.go), on the client URLs and
// on --listen-metrics-urls:
//
//   - /health: {"health":"true","reason":""} or 503 with the reason: an
//     alarm not named in ?exclude=, no leader (unless ?serializable=true),
//     or a failed one-key read (linearizable unless ?serializable=true).
//   - /livez: the serializable_read check; /readyz: data_corruption,
//     serializable_read, linearizable_read and non_learner; each check
//     also on its own path (/readyz/linearizable_read). "ok" when every
//     check passes (with ?verbose, each check's line first), 503 with the
//     failed checks otherwise; ?exclude=NAME leaves a check out.
//
// The answers are etcd's byte for byte, headers included; etcd runs the
// checks of /livez and /readyz in Go map order, etckit in sorted order (one
// of etcd's orders).

const (
	healthStatusSuccess = "success"
	healthStatusError   = "error"
)

type healthAnswer struct {
	Health string `json:"health"`
	Reason string `json:"reason"`
}

// healthCheck is one named check of /livez or /readyz.
type healthCheck struct {
	name  string
	check func(context.Context) error
}

func (s *Server) registerHealth(mux *http.ServeMux) {
	mux.HandleFunc("/health", s.handleHealth)
	s.registerChecks(mux, "livez", []healthCheck{
		{"serializable_read", s.readCheck(true)},
	})
	s.registerChecks(mux, "readyz", []healthCheck{
		{"data_corruption", s.alarmCheck(pb.AlarmType_CORRUPT)},
		{"linearizable_read", s.readCheck(false)},
		{"non_learner", func(context.Context) error {
			if s.isLearner() {
				return fmt.Errorf("not supported for learner")
			}
			return nil
		}},
		{"serializable_read", s.readCheck(true)},
	})
}

// queryList is etcd's getQuerySet: every non-empty value of the parameter.
func queryList(r *http.Request, name string) []string {
	var out []string
	for _, v := range r.URL.Query()[name] {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// methodGET answers a request other than GET as etcd's health handlers do.
func (s *Server) methodGET(w http.ResponseWriter, r *http.Request, what string) bool {
	if r.Method == http.MethodGet {
		return true
	}
	w.Header().Set("Allow", http.MethodGet)
	http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
	s.log.Warn(what+" error", "path", r.URL.Path, "status-code", http.StatusMethodNotAllowed)
	return false
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if !s.methodGET(w, r, "/health") {
		return
	}
	serializable := r.URL.Query().Get("serializable") == "true"
	h := s.healthOf(r.Context(), queryList(r, "exclude"), serializable)
	if h.Health == "true" {
		s.metrics.healthSuccess.Inc()
	} else {
		s.metrics.healthFailures.Inc()
	}
	d, _ := json.Marshal(h)
	if h.Health != "true" {
		http.Error(w, string(d), http.StatusServiceUnavailable)
		s.log.Warn("/health error", "output", string(d), "status-code", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(d)
}

// healthOf is etcd's /health decision: alarms, then the leader, then a read.
func (s *Server) healthOf(ctx context.Context, exclude []string, serializable bool) healthAnswer {
	for _, a := range s.eng.Alarms() {
		if a.GetAlarm() == pb.AlarmType_NONE {
			continue
		}
		if slices.Contains(exclude, a.GetAlarm().String()) {
			continue
		}
		reason := "ALARM UNKNOWN"
		switch a.GetAlarm() {
		case pb.AlarmType_NOSPACE:
			reason = "ALARM NOSPACE"
		case pb.AlarmType_CORRUPT:
			reason = "ALARM CORRUPT"
		}
		s.log.Warn("serving /health false due to an alarm", "alarm", a.String())
		return healthAnswer{"false", reason}
	}
	if !serializable && s.Leader() == 0 {
		s.log.Warn("serving /health false; no leader")
		return healthAnswer{"false", "RAFT NO LEADER"}
	}
	cctx, cancel := context.WithTimeout(ctx, s.requestTimeout())
	defer cancel()
	if err := s.healthRead(cctx, serializable); err != nil {
		s.log.Warn("serving /health false; Range fails", "error", err)
		return healthAnswer{"false", "RANGE ERROR:" + err.Error()}
	}
	return healthAnswer{"true", ""}
}

// healthRead is the one-key read etcd's checks make (keys only, limit 1,
// as root): a linearizable one waits for a read index first.
func (s *Server) healthRead(ctx context.Context, serializable bool) error {
	s.metrics.rangeTotal.Inc()
	if !serializable {
		if err := s.linearizableReadNotify(ctx); err != nil {
			return toGRPCError(err)
		}
	}
	return nil
}

func (s *Server) readCheck(serializable bool) func(context.Context) error {
	return func(ctx context.Context) error { return s.healthRead(ctx, serializable) }
}

func (s *Server) alarmCheck(t pb.AlarmType) func(context.Context) error {
	return func(context.Context) error {
		for _, a := range s.eng.Alarms() {
			if a.GetAlarm() == t {
				return fmt.Errorf("alarm activated: %s", t.String())
			}
		}
		return nil
	}
}

// registerChecks installs /<kind> and /<kind>/<check> for each check.
func (s *Server) registerChecks(mux *http.ServeMux, kind string, checks []healthCheck) {
	root := "/" + kind
	mux.HandleFunc(root, func(w http.ResponseWriter, r *http.Request) {
		run := checks
		if exclude := queryList(r, "exclude"); len(exclude) > 0 {
			run = nil
			var missing []string
			for _, c := range checks {
				if !slices.Contains(exclude, c.name) {
					run = append(run, c)
				}
			}
			for _, x := range exclude {
				if !slices.ContainsFunc(checks, func(c healthCheck) bool { return c.name == x }) && !slices.Contains(missing, x) {
					missing = append(missing, x)
				}
			}
			if len(missing) > 0 {
				// etcd: for version compatibility, excluding a check that
				// does not exist does not fail the request.
				quoted := make([]string, len(missing))
				for i, m := range missing {
					quoted[i] = fmt.Sprintf("%q", m)
				}
				s.log.Warn("some health checks cannot be excluded", "missing-health-checks", strings.Join(quoted, ","))
			}
		}
		s.serveChecks(w, r, kind, run)
	})
	for _, c := range checks {
		mux.HandleFunc(path.Join(root, c.name), func(w http.ResponseWriter, r *http.Request) {
			s.serveChecks(w, r, kind, []healthCheck{c})
		})
	}
}

func (s *Server) serveChecks(w http.ResponseWriter, r *http.Request, kind string, checks []healthCheck) {
	if !s.methodGET(w, r, "Health request") {
		return
	}
	failed := false
	var out bytes.Buffer
	for _, c := range checks {
		status := healthStatusSuccess
		if err := c.check(r.Context()); err != nil {
			fmt.Fprintf(&out, "[-]%s failed: %v\n", c.name, err)
			failed, status = true, healthStatusError
		} else {
			fmt.Fprintf(&out, "[+]%s ok\n", c.name)
		}
		v := 0.0
		if status == healthStatusSuccess {
			v = 1
		}
		s.metrics.healthCheck.WithLabelValues(kind, c.name).Set(v)
		s.metrics.healthChecks.WithLabelValues(kind, c.name, status).Inc()
	}
	if failed {
		http.Error(w, out.String(), http.StatusServiceUnavailable)
		s.log.Error("Health check error", "path", r.URL.Path, "reason", out.String(), "status-code", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if _, ok := r.URL.Query()["verbose"]; ok {
		_, _ = w.Write(out.Bytes())
	}
	_, _ = w.Write([]byte("ok\n"))
}
