package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/transport"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Transport carries raft messages to the other members and learns which
// members there are. *transport.Transport is etcd's peer protocol; tests
// may put an in-memory one in Config.Transport.
type Transport interface {
	Send(msgs []*raftpb.Message)
	SendSnapshot(m *transport.SnapshotMessage)
	AddPeer(id uint64, urls []string) error
	RemovePeer(id uint64)
	UpdatePeer(id uint64, urls []string) error
	Stop()
}

// peerURLs are this member's advertised peer URLs.
func (s *Server) peerURLs() []string {
	if m, ok := s.eng.Member(s.ID()); ok && len(m.PeerURLs) > 0 {
		return m.PeerURLs
	}
	return s.cfg.Engine.InitialAdvertisePeerURLs
}

// peerDialTimeout is etcd's peer dial timeout: 1 s + the election timeout.
func (c *Config) peerDialTimeout() time.Duration {
	return time.Second + time.Duration(c.ElectionTicks)*c.TickInterval
}

// newPeerRoundTripper is etcd's peer round-tripper for the peer endpoints
// (/members, /version, /members/hashkv, ...): the peer TLS config, etcd's
// dial timeout, TCP keep-alive 30 s, a 10 s TLS handshake, up to 1024 idle
// connections per host. It speaks HTTP/1.1 only: etcd's peer listener
// offers h2 in ALPN but serves HTTP/1, so a client that took h2 would fail.
func newPeerRoundTripper(tc *tls.Config, dialTimeout time.Duration, localAddr string) *http.Transport {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	if ip := net.ParseIP(localAddr); ip != nil {
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return &http.Transport{
		DialContext:         d.DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: tlsHandshakeTimeout,
		MaxIdleConnsPerHost: 1024,
	}
}

// startPeer binds --listen-peer-urls and serves etcd's peer endpoints on
// them, with the raft transport behind /raft. A member that is alone in
// its cluster and has no peer URLs to listen on runs without. On https
// URLs every connection passes etcd's TLS listener first (handshake,
// the client certificate's SANs against the source address unless
// SkipClientSANVerify, the CRL), then reaches net/http as plain HTTP/1.
func (s *Server) startPeer() error {
	if s.cfg.Transport == nil {
		s.tr = transport.New(transport.Config{ID: s.ID(), ClusterID: s.ClusterID(), URLs: s.peerURLs(), Raft: s, Version: Version,
			DialTimeout: s.cfg.peerDialTimeout(), TLSClientConfig: s.peerDial, Snapshots: s, LocalAddr: s.localAddr,
			OnCritical: func(err error) { s.failWith(err) }, Logger: s.log.With("component", "rafthttp"),
			Observer: newPeerObserver(s.metrics, s.ID())})
		s.cfg.Transport = s.tr
	}
	if !s.cfg.PeerTLS.Empty() {
		s.log.Info("starting with peer TLS", "tls-info", s.cfg.PeerTLS.String(), "cipher-suites", s.cfg.PeerTLS.cipherSuiteNames())
	}
	var tlsCfg *tls.Config
	var checks []connCheck
	for _, u := range s.cfg.ListenPeerURLs {
		pu, err := parseListenURL("--listen-peer-urls", u)
		if err != nil {
			return err
		}
		// unix and unixs peer URLs are listened on as etcd does (the
		// socket path is the URL's host); etckit's peer transport dials
		// http and https peers only.
		network, addr, secure := resolveURL(pu)
		l, err := s.cfg.listenOn(network, addr)
		if err != nil {
			return fmt.Errorf("server: listen %s: %w", u, err)
		}
		l = &deadlineListener{Listener: l}
		if secure {
			if tlsCfg == nil {
				if tlsCfg, err = s.cfg.PeerTLS.serverConfig(s.log); err != nil {
					_ = l.Close()
					return fmt.Errorf("server: peer TLS: %w", err)
				}
				if !s.cfg.PeerTLS.SkipClientSANVerify {
					checks = append(checks, sanCheck)
				}
				if crl := s.cfg.PeerTLS.CRLFile; crl != "" {
					checks = append(checks, crlCheck(peerTLSFlags.crl, crl))
				}
			}
			l = newTLSListener(l, tlsCfg, s.log, "rejected connection on peer endpoint", true, checks...)
		}
		s.peerListeners = append(s.peerListeners, l)
	}
	if len(s.peerListeners) == 0 {
		return nil
	}
	mux := http.NewServeMux()
	if s.tr != nil {
		h := s.tr.Handler()
		mux.Handle("/raft", h)
		mux.Handle("/raft/", h)
	}
	mux.HandleFunc("/members", s.serveMembers)
	mux.HandleFunc("/members/promote/", s.servePromote)
	mux.HandleFunc("/members/hashkv", s.serveHashKV)
	mux.HandleFunc("/downgrade/enabled", s.serveDowngradeEnabled)
	mux.HandleFunc("/version", s.serveVersion)
	mux.HandleFunc("/leases", s.serveLeaseRenew)
	mux.HandleFunc("/leases/internal", s.serveLeaseTimeToLive)
	// etcd's peer server: 5 minutes per request, and 5 s read and write
	// deadlines on every I/O call of a connection (under TLS too).
	s.peerSrv = &http.Server{Handler: mux, ReadTimeout: 5 * time.Minute}
	for _, l := range s.peerListeners {
		go func() { _ = s.peerSrv.Serve(l) }()
		s.log.Info("serving peer traffic", "address", l.Addr().String())
	}
	return nil
}

// deadlineListener gives every accepted connection etcd's per-I/O 5 s
// deadlines.
type deadlineListener struct{ net.Listener }

func (l *deadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &deadlineConn{Conn: c}, nil
}

type deadlineConn struct{ net.Conn }

func (c *deadlineConn) Read(b []byte) (int, error) {
	_ = c.SetReadDeadline(time.Now().Add(transport.ConnReadTimeout))
	return c.Conn.Read(b)
}

func (c *deadlineConn) Write(b []byte) (int, error) {
	_ = c.SetWriteDeadline(time.Now().Add(transport.ConnWriteTimeout))
	return c.Conn.Write(b)
}

// PeerAddrs are the addresses the peer listeners are bound to.
func (s *Server) PeerAddrs() []string {
	var out []string
	for _, l := range s.peerListeners {
		out = append(out, l.Addr().String())
	}
	return out
}

// syncPeers makes the transport's peers the members other than this one,
// with their current peer URLs. It runs at start and after every applied
// conf change.
func (s *Server) syncPeers() {
	if s.cfg.Transport == nil {
		return
	}
	s.peersMu.Lock()
	defer s.peersMu.Unlock()
	want := map[uint64][]string{}
	for _, m := range s.eng.Members() {
		if m.ID != s.ID() {
			want[m.ID] = m.PeerURLs
		}
	}
	for id, urls := range want {
		have, ok := s.peers[id]
		switch {
		case !ok:
			if err := s.cfg.Transport.AddPeer(id, urls); err != nil {
				s.log.Warn("cannot add peer", "peer-id", fmt.Sprintf("%x", id), "peer-urls", urls, "error", err)
				continue
			}
		case !slices.Equal(have, urls):
			if err := s.cfg.Transport.UpdatePeer(id, urls); err != nil {
				s.log.Warn("cannot update peer", "peer-id", fmt.Sprintf("%x", id), "peer-urls", urls, "error", err)
				continue
			}
		}
		s.peers[id] = urls
	}
	for id := range s.peers {
		if _, ok := want[id]; !ok {
			s.cfg.Transport.RemovePeer(id)
			delete(s.peers, id)
		}
	}
}

// Process steps a raft message from a peer (transport.Raft). It waits for
// room in the raft loop's inbox, as etcd's Step waits for raft's node.
func (s *Server) Process(ctx context.Context, m *raftpb.Message) error {
	if s.eng.IsRemoved(m.GetFrom()) {
		return transport.ErrRemovedSender
	}
	if m.GetTo() != s.ID() {
		return transport.ErrWrongTarget
	}
	select {
	case s.msgc <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stopc:
		return rpctypes.ErrGRPCStopped
	}
}

// IsIDRemoved reports whether id was removed from the cluster.
func (s *Server) IsIDRemoved(id uint64) bool { return s.eng.IsRemoved(id) }

// ReportUnreachable tells raft a peer could not be reached.
func (s *Server) ReportUnreachable(id uint64) {
	s.report(func() { s.rn.ReportUnreachable(id) }, false)
}

// ReportSnapshot tells raft how sending a snapshot to id ended.
func (s *Server) ReportSnapshot(id uint64, st raft.SnapshotStatus) {
	s.report(func() { s.rn.ReportSnapshot(id, st) }, true)
}

// report runs fn on the raft loop; an unreachable report may be dropped
// when the loop is busy, a snapshot report waits.
func (s *Server) report(fn func(), wait bool) {
	if wait {
		select {
		case s.reportc <- fn:
		case <-s.stopc:
		}
		return
	}
	select {
	case s.reportc <- fn:
	default:
	}
}

// serveMembers is GET /members: every member as etcd's JSON, by ID.
func (s *Server) serveMembers(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("X-Etcd-Cluster-ID", fmt.Sprintf("%x", s.ClusterID()))
	w.Header().Set("Content-Type", "application/json")
	ms := s.eng.Members()
	if ms == nil {
		ms = []engine.Member{}
	}
	_ = json.NewEncoder(w).Encode(ms)
}

// serveVersion is GET /version on the peer port.
func (s *Server) serveVersion(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	s.writeVersion(w)
}

// waitAppliedCommit waits up to a second for the applied index to reach
// the commit index, as etcd's lease handlers do.
func (s *Server) waitAppliedCommit(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return s.waitApplied(ctx, s.eng.CommitIndex())
}

const errWaitApplied = "waiting for node to catch up its applied index has timed out"

// leaseRequest is what etcd's two lease handlers do before they answer:
// POST only, a body of at most 64 KiB decoded by decode, the applied index
// caught up with the commit index (1 s at most), and this member the
// leader (else notLeader, "not a primary lessor"). False: answered already.
func (s *Server) leaseRequest(w http.ResponseWriter, r *http.Request, decode func([]byte) error, notLeader int) bool {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		http.Error(w, "error reading body", http.StatusRequestEntityTooLarge)
		return false
	}
	if err := decode(b); err != nil {
		http.Error(w, "error unmarshalling request", http.StatusBadRequest)
		return false
	}
	if err := s.waitAppliedCommit(r.Context()); err != nil {
		http.Error(w, errWaitApplied, http.StatusRequestTimeout)
		return false
	}
	if s.Leader() != s.ID() {
		http.Error(w, "not a primary lessor", notLeader)
		return false
	}
	return true
}

// serveLeaseRenew is POST /leases: a follower forwarding a keep-alive.
func (s *Server) serveLeaseRenew(w http.ResponseWriter, r *http.Request) {
	var req pb.LeaseKeepAliveRequest
	if !s.leaseRequest(w, r, func(b []byte) error { return proto.Unmarshal(b, &req) }, http.StatusBadRequest) {
		return
	}
	ttl, err := s.eng.Store().Lessor().Renew(req.ID)
	if err == nil {
		s.metrics.leaseRenewed.Inc()
	}
	if errors.Is(err, mvcc.ErrLeaseNotFound) {
		http.Error(w, "lease not found", http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, _ := proto.Marshal(&pb.LeaseKeepAliveResponse{ID: req.ID, TTL: ttl})
	w.Header().Set("Content-Type", "application/protobuf")
	_, _ = w.Write(out)
}

// serveLeaseTimeToLive is POST /leases/internal: a follower forwarding a
// TimeToLive.
func (s *Server) serveLeaseTimeToLive(w http.ResponseWriter, r *http.Request) {
	var ttlReq pb.LeaseTimeToLiveRequest
	if !s.leaseRequest(w, r, func(b []byte) error { return unwrapField1(b, &ttlReq) }, http.StatusInternalServerError) {
		return
	}
	st, err := s.eng.Store().Lessor().TimeToLive(ttlReq.ID, ttlReq.Keys)
	if errors.Is(err, mvcc.ErrLeaseNotFound) {
		http.Error(w, "lease not found", http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out := wrapField1(&pb.LeaseTimeToLiveResponse{Header: &pb.ResponseHeader{}, ID: ttlReq.ID, TTL: st.TTL, GrantedTTL: st.GrantedTTL, Keys: st.Keys})
	w.Header().Set("Content-Type", "application/protobuf")
	_, _ = w.Write(out)
}

// leaderPeerURLs are the peer URLs of the current leader.
func (s *Server) leaderPeerURLs() ([]string, error) {
	lead := s.Leader()
	if lead == raft.None {
		return nil, rpctypes.ErrGRPCNoLeader
	}
	m, ok := s.eng.Member(lead)
	if !ok || len(m.PeerURLs) == 0 {
		return nil, rpctypes.ErrGRPCNoLeader
	}
	return m.PeerURLs, nil
}

// errLeaseNotFoundOnLeader is the leader's 404 on a forwarded lease call.
var errLeaseNotFoundOnLeader = errors.New("lease not found")

// forwardLease POSTs a lease request to the leader's path, as etcd's
// leasehttp client, trying its URLs in turn until ctx ends.
func (s *Server) forwardLease(ctx context.Context, path string, body []byte) ([]byte, error) {
	cctx, cancel := context.WithTimeout(ctx, s.requestTimeout())
	defer cancel()
	var lastErr error
	for cctx.Err() == nil {
		urls, err := s.leaderPeerURLs()
		if err != nil {
			lastErr = err
			select {
			case <-time.After(50 * time.Millisecond):
				continue
			case <-cctx.Done():
			}
			break
		}
		for _, u := range urls {
			req, err := http.NewRequestWithContext(cctx, http.MethodPost, u+path, bytes.NewReader(body))
			if err != nil {
				lastErr = err
				continue
			}
			req.Header.Set("Content-Type", "application/protobuf")
			resp, err := s.peerClient.Do(req)
			if err != nil {
				lastErr = err
				continue
			}
			b, err := io.ReadAll(io.LimitReader(resp.Body, 100<<20))
			resp.Body.Close()
			switch {
			case err != nil:
				lastErr = err
			case resp.StatusCode == http.StatusOK:
				return b, nil
			case resp.StatusCode == http.StatusNotFound:
				return nil, errLeaseNotFoundOnLeader
			default:
				lastErr = fmt.Errorf("leader answered %d %s", resp.StatusCode, bytes.TrimSpace(b))
			}
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-cctx.Done():
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if errors.Is(lastErr, rpctypes.ErrGRPCNoLeader) {
		return nil, lastErr
	}
	return nil, rpctypes.ErrGRPCTimeout
}

// renewLease renews a lease: locally on the leader, else on the leader
// over /leases (etcd's LeaseRenew).
func (s *Server) renewLease(ctx context.Context, id int64) (int64, error) {
	if s.Leader() == s.ID() {
		ttl, err := s.eng.Store().Lessor().Renew(id)
		if err == nil {
			s.metrics.leaseRenewed.Inc() // etcd: renewals seen by the leader
		}
		// As etcd's LeaseRenew: a leader that lost its leadership while
		// clearing a checkpoint forwards the renewal to the new one.
		if !errors.Is(err, mvcc.ErrNotPrimary) {
			return ttl, err
		}
	}
	body, _ := proto.Marshal(&pb.LeaseKeepAliveRequest{ID: id})
	b, err := s.forwardLease(ctx, "/leases", body)
	if errors.Is(err, errLeaseNotFoundOnLeader) {
		return 0, mvcc.ErrLeaseNotFound
	}
	if err != nil {
		return 0, err
	}
	var resp pb.LeaseKeepAliveResponse
	if err := proto.Unmarshal(b, &resp); err != nil {
		return 0, err
	}
	return resp.TTL, nil
}

// leaseTimeToLive answers TimeToLive: locally on the leader, else from
// the leader over /leases/internal.
func (s *Server) leaseTimeToLive(ctx context.Context, id int64, keys bool) (*pb.LeaseTimeToLiveResponse, error) {
	resp := &pb.LeaseTimeToLiveResponse{Header: &pb.ResponseHeader{}, ID: id, TTL: -1}
	if s.Leader() == s.ID() {
		st, err := s.eng.Store().Lessor().TimeToLive(id, keys)
		if err == nil {
			resp.TTL, resp.GrantedTTL, resp.Keys = st.TTL, st.GrantedTTL, st.Keys
		} else if !errors.Is(err, mvcc.ErrLeaseNotFound) {
			return nil, err
		}
		return resp, nil
	}
	body := wrapField1(&pb.LeaseTimeToLiveRequest{ID: id, Keys: keys})
	b, err := s.forwardLease(ctx, "/leases/internal", body)
	if errors.Is(err, errLeaseNotFoundOnLeader) {
		return resp, nil
	}
	if err != nil {
		return nil, err
	}
	r := &pb.LeaseTimeToLiveResponse{}
	if err := unwrapField1(b, r); err != nil {
		return nil, fmt.Errorf("leader's TimeToLive answer: %w", err)
	}
	resp.TTL, resp.GrantedTTL, resp.Keys = r.TTL, r.GrantedTTL, r.Keys
	return resp, nil
}

// leasepb.LeaseInternalRequest and LeaseInternalResponse (etcd's
// server/lease/leasepb) each hold one message as field 1: the
// LeaseTimeToLiveRequest, the LeaseTimeToLiveResponse.

func wrapField1(m proto.Message) []byte {
	b, _ := proto.Marshal(m)
	return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), b)
}

// unwrapField1 unmarshals field 1 of b into m (the last occurrence wins,
// as protobuf merges).
func unwrapField1(b []byte, m proto.Message) error {
	found := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(v, m); err != nil {
				return err
			}
			found = true
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	if !found {
		return errors.New("no field 1")
	}
	return nil
}

// serveHashKV is the peer endpoint GET /members/hashkv (a JSON body
// {"revision":N}) the leader's corruption checks use; etckit's HashKV is
// etcd's, hash for hash.
func (s *Server) serveHashKV(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	if gcid := r.Header.Get("X-Etcd-Cluster-ID"); gcid != "" && gcid != fmt.Sprintf("%x", s.ClusterID()) {
		http.Error(w, transport.ErrClusterIDMismatch.Error(), http.StatusPreconditionFailed)
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "error reading body", http.StatusBadRequest)
		return
	}
	var req pb.HashKVRequest
	if err := json.Unmarshal(b, &req); err != nil {
		http.Error(w, "error unmarshalling request", http.StatusBadRequest)
		return
	}
	h, rev, err := s.eng.Store().HashKV(req.Revision)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, err := json.Marshal(&pb.HashKVResponse{Header: &pb.ResponseHeader{Revision: rev}, Hash: h.Hash,
		CompactRevision: h.CompactRevision, HashRevision: h.Revision})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("X-Etcd-Cluster-ID", fmt.Sprintf("%x", s.ClusterID()))
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// serveDowngradeEnabled is GET /downgrade/enabled: after a linearizable
// read, whether a downgrade is in progress (a joining member widens its
// version window by one minor while it is).
func (s *Server) serveDowngradeEnabled(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("X-Etcd-Cluster-ID", fmt.Sprintf("%x", s.ClusterID()))
	ctx, cancel := context.WithTimeout(r.Context(), s.requestTimeout())
	defer cancel()
	if err := s.linearizableReadNotify(ctx); err != nil {
		http.Error(w, fmt.Sprintf("failed linearized read: %v", err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(strconv.FormatBool(s.eng.DowngradeInfo().Enabled)))
}

// inferLocalAddr is etcd's Config.InferLocalAddr: with the feature gate
// SetMemberLocalAddr, peers are dialed from the first advertised peer URL
// whose host is an IP that is neither loopback nor unspecified.
func (c *Config) inferLocalAddr() string {
	if !c.SetMemberLocalAddr {
		return ""
	}
	urls := c.Engine.InitialAdvertisePeerURLs
	c.Logger.Info("searching for a suitable member local address in AdvertisePeerURLs", "advertise-peer-urls", urls)
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil {
			continue
		}
		if addr, err := netip.ParseAddr(u.Hostname()); err == nil {
			if addr.IsLoopback() || addr.IsUnspecified() {
				continue
			}
			c.Logger.Info("setting member local address", "LocalAddr", addr.String())
			return addr.String()
		}
	}
	c.Logger.Warn("unable to set a member local address due to lack of suitable local addresses", "advertise-peer-urls", urls)
	return ""
}
