package transport

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// version is major.minor of an etcd version; patch and pre-release do not
// take part in the peer checks.
type version struct{ major, minor int }

func (v version) less(o version) bool {
	return v.major < o.major || (v.major == o.major && v.minor < o.minor)
}

// parseVersion reads a semver version header; empty is 2.0.0, as etcd
// assumes for a peer that sends none.
func parseVersion(s string) (version, error) {
	if s == "" {
		return version{2, 0}, nil
	}
	core, _, _ := strings.Cut(s, "-")
	core, _, _ = strings.Cut(core, "+")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return version{}, fmt.Errorf("version %q is not major.minor.patch", s)
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 || (len(p) > 1 && p[0] == '0') {
			return version{}, fmt.Errorf("version %q is not major.minor.patch", s)
		}
		n[i] = v
	}
	return version{n[0], n[1]}, nil
}

// streamSupported: etcd 3.6 and 3.7 know both stream types for every
// version from 2.1 on.
func streamSupported(v version, _ streamType) bool { return !v.less(version{2, 1}) }

// checkCompatibility is etcd's checkClusterCompatibilityFromHeader: the
// sender must not be older than our minimum cluster version, we must not
// be older than its, and its cluster ID must be ours, as a string.
func (t *Transport) checkCompatibility(h http.Header) error {
	rv, err := parseVersion(h.Get("X-Server-Version"))
	if err != nil {
		return ErrIncompatible
	}
	rmin, err := parseVersion(h.Get("X-Min-Cluster-Version"))
	if err != nil {
		return ErrIncompatible
	}
	lv, _ := parseVersion(t.cfg.Version)
	lmin, _ := parseVersion(MinClusterVersion)
	if rv.less(lmin) || lv.less(rmin) {
		return ErrIncompatible
	}
	if h.Get("X-Etcd-Cluster-ID") != idString(t.clusterID()) {
		return ErrClusterIDMismatch
	}
	return nil
}

// addRemoteFromRequest registers an unknown sender as a remote from its
// X-Server-From and X-PeerURLs.
func (t *Transport) addRemoteFromRequest(r *http.Request) {
	from, err := strconv.ParseUint(r.Header.Get("X-Server-From"), 16, 64)
	if err != nil {
		return
	}
	if urls := r.Header.Get("X-PeerURLs"); urls != "" {
		t.AddRemote(from, strings.Split(urls, ","))
	}
}

// Handler serves /raft, /raft/stream/, /raft/snapshot and /raft/probing;
// other /raft paths answer 404.
func (t *Transport) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/raft", t.servePipeline)
	mux.HandleFunc("/raft/", http.NotFound)
	mux.HandleFunc("/raft/stream/", t.serveStream)
	mux.HandleFunc("/raft/snapshot", t.serveSnapshot)
	mux.HandleFunc("/raft/probing", serveProbing)
	return mux
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
}

// acceptPost is what etcd's pipeline and snapshot handlers do first: POST
// only, our cluster ID in the answer, the version and cluster checks, and
// an unknown sender registered as a remote. False: answered already.
func (t *Transport) acceptPost(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, "POST")
		return false
	}
	w.Header().Set("X-Etcd-Cluster-ID", idString(t.clusterID()))
	if err := t.checkCompatibility(r.Header); err != nil {
		http.Error(w, err.Error(), http.StatusPreconditionFailed)
		return false
	}
	t.addRemoteFromRequest(r)
	return true
}

func (t *Transport) servePipeline(w http.ResponseWriter, r *http.Request) {
	if !t.acceptPost(w, r) {
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxMessageBytes+1))
	if err != nil || len(b) > MaxMessageBytes {
		http.Error(w, "error reading raft message", http.StatusBadRequest)
		return
	}
	m := &raftpb.Message{}
	if err := proto.Unmarshal(b, m); err != nil {
		http.Error(w, "error unmarshalling raft message", http.StatusBadRequest)
		return
	}
	if o := t.cfg.Observer; o != nil {
		o.ReceivedBytes(m.GetFrom(), len(b))
	}
	if m.GetType() == raftpb.MsgSnap {
		// etcd would step it and then look for a db it was never sent.
		http.Error(w, "error processing raft message", http.StatusBadRequest)
		return
	}
	if err := t.cfg.Raft.Process(r.Context(), m); err != nil {
		t.log.Warn("failed to process raft message", "from", idString(m.GetFrom()), "error", err)
		http.Error(w, "error processing raft message", http.StatusInternalServerError)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		// net/http recovers this sentinel itself and closes the connection
		// without logging: the abort etcd's handler makes (not a crash).
		panic(http.ErrAbortHandler)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (t *Transport) serveStream(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, "GET")
		return
	}
	w.Header().Set("X-Server-Version", t.cfg.Version)
	w.Header().Set("X-Etcd-Cluster-ID", idString(t.clusterID()))
	if err := t.checkCompatibility(r.Header); err != nil {
		http.Error(w, err.Error(), http.StatusPreconditionFailed)
		return
	}
	var typ streamType
	switch path.Dir(r.URL.Path) {
	case streamMsgAppV2.endpoint():
		typ = streamMsgAppV2
	case streamMessage.endpoint():
		typ = streamMessage
	default:
		http.Error(w, "invalid path", http.StatusNotFound)
		return
	}
	from, err := strconv.ParseUint(path.Base(r.URL.Path), 16, 64)
	if err != nil {
		http.Error(w, "invalid from", http.StatusNotFound)
		return
	}
	if t.cfg.Raft.IsIDRemoved(from) {
		http.Error(w, "removed member", http.StatusGone)
		return
	}
	p := t.peer(from)
	if p == nil {
		if urls := r.Header.Get("X-PeerURLs"); urls != "" {
			t.AddRemote(from, strings.Split(urls, ","))
		}
		http.Error(w, "error sender not found", http.StatusNotFound)
		return
	}
	if r.Header.Get("X-Raft-To") != idString(t.cfg.ID) {
		http.Error(w, "to field mismatch", http.StatusPreconditionFailed)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	c := &outgoingConn{typ: typ, w: w, rc: http.NewResponseController(w), done: make(chan struct{})}
	sw := p.message
	if typ == streamMsgAppV2 {
		sw = p.msgApp
	}
	// The handler lives as long as the writer keeps the connection: it ends
	// when the writer replaces or drops it (a failed write or link
	// heartbeat, every 5 s / 3, finds a dialler that went away). Not on the
	// request's context: a peer server's 5 s read deadline (etcd's, on
	// every read) ends net/http's background read of an idle stream and
	// cancels that context, which would cut every stream after 5 s and drop
	// its queued messages — etcd's handler ignores it the same way.
	if sw.attach(c) {
		<-c.done
	}
	c.finish()
}

// serveProbing answers etcd's prober: 200 {"OK":true,"Now":...}.
func serveProbing(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		OK  bool
		Now time.Time
	}{true, time.Now()})
}
