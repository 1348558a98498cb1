package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Raft is the member behind the transport: what it receives goes to
// Process, and what the transport learns about peers is reported back.
type Raft interface {
	// Process steps a message from a peer into raft.
	Process(ctx context.Context, m *raftpb.Message) error
	IsIDRemoved(id uint64) bool
	ReportUnreachable(id uint64)
	ReportSnapshot(id uint64, status raft.SnapshotStatus)
}

// The errors etcd's Process gives for a message from a removed member or
// to another member. etcd means them as 403 answers, which make the
// sender stop, but its handlers do not recognise its own error type
// (HTTPError.WriteTo returns an error, the handlers' interface wants none),
// so a pipeline POST gets 500 and an aborted connection and a snapshot
// POST 500 with the message; etckit answers the same. A removed member
// learns it from the 410 of its stream dials.
var (
	ErrRemovedSender = errors.New("cannot process message from removed member")
	ErrWrongTarget   = errors.New("cannot process message to mismatch member")
)

// Errors a sender reports (ErrMemberRemoved through Config.OnCritical).
var (
	ErrMemberRemoved      = errors.New("the member has been permanently removed from the cluster")
	ErrIncompatible       = errors.New("incompatible version")
	ErrClusterIDMismatch  = errors.New("cluster ID mismatch")
	errUnsupportedStream  = errors.New("stream type is not supported by the peer's version")
	errStreamReaderClosed = errors.New("stream reader is stopped")
)

// ConnReadTimeout and ConnWriteTimeout are the peer connections' I/O
// deadlines, etcd's rafthttp globals of the same names, which etcd's
// --raft-read-timeout and --raft-write-timeout set (process-wide).
var (
	ConnReadTimeout  = DefaultConnReadTimeout
	ConnWriteTimeout = DefaultConnWriteTimeout
)

// Timings and sizes, as etcd's rafthttp.
const (
	DefaultConnReadTimeout  = 5 * time.Second
	DefaultConnWriteTimeout = 5 * time.Second
	streamBufSize           = 4096
	recvBufSize             = 4096
	pipelineBufSize         = 64
	connPerPipeline         = 4
	dialRetryInterval       = 100 * time.Millisecond
	// tlsHandshakeTimeout bounds a TLS handshake with a peer.
	tlsHandshakeTimeout = 10 * time.Second
	// MinClusterVersion is what etcd 3.x sends as X-Min-Cluster-Version.
	MinClusterVersion = "3.0.0"
)

// Config configures a Transport.
type Config struct {
	ID, ClusterID uint64
	// URLs are this member's advertised peer URLs (X-PeerURLs).
	URLs []string
	Raft Raft
	// Version is this member's etcd version (X-Server-Version), e.g. "3.7.3".
	Version string
	// DialTimeout bounds dialing a peer (etcd: 1 s + the election timeout).
	DialTimeout time.Duration
	// TLSClientConfig dials https peers (etcd's peer TLS info: the
	// certificate to present, the trusted CA); nil: Go's defaults. It
	// must offer no ALPN protocol: peers speak HTTP/1.1.
	TLSClientConfig *tls.Config
	// LocalAddr, when set, is the IP peer connections are dialed from
	// (etcd's feature gate SetMemberLocalAddr).
	LocalAddr string
	// Snapshots receives and opens db snapshots; nil refuses them.
	Snapshots SnapshotStore
	// OnCritical is called once when a peer says this member was removed.
	OnCritical func(error)
	Logger     *slog.Logger
	// Observer, when set, is told of the traffic with peers and probes
	// their round trip time (the server's etcd_network_* metrics).
	Observer Observer
}

// Observer is told of the traffic with each peer, for the server's
// metrics (transport knows no metrics library). Its methods are called
// from the peers' goroutines and must be cheap.
type Observer interface {
	// SentBytes and ReceivedBytes count raft message bytes to and from a
	// peer; SendFailed and ReceiveFailed count failed sends and streams
	// broken by an error.
	SentBytes(to uint64, n int)
	ReceivedBytes(from uint64, n int)
	SendFailed(to uint64)
	ReceiveFailed(from uint64)
	// PeerActive is told when a peer becomes reachable or unreachable.
	PeerActive(remote uint64, active bool)
	// RoundTrip is the time of a probe of the peer's /raft/probing
	// (etcd's prober, every ProbeInterval).
	RoundTrip(to uint64, d time.Duration)
}

// ProbeInterval is how often peers are probed for their round trip time
// (etcd's proberInterval: ConnReadTimeout - 1 s, with etcd's default).
const ProbeInterval = DefaultConnReadTimeout - time.Second

// Transport sends raft messages to the peers and serves the peer handlers.
type Transport struct {
	cfg Config
	log *slog.Logger

	streamClient   *http.Client // no keep-alive reuse; per-I/O deadlines
	pipelineClient *http.Client

	mu      sync.RWMutex
	peers   map[uint64]*peer
	remotes map[uint64]*peer // pipeline-only contacts of members not (yet) peers
	stopped bool

	criticalOnce sync.Once
}

// New returns a Transport; it sends nothing until peers are added.
func New(cfg Config) *Transport {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.Version == "" {
		cfg.Version = "3.7.3"
	}
	t := &Transport{cfg: cfg, log: cfg.Logger, peers: map[uint64]*peer{}, remotes: map[uint64]*peer{}}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	if ip := net.ParseIP(cfg.LocalAddr); ip != nil {
		dialer.LocalAddr = &net.TCPAddr{IP: ip}
	}
	t.streamClient = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &deadlineConn{Conn: c, rd: ConnReadTimeout, wd: ConnWriteTimeout}, nil
		},
		TLSClientConfig:     cfg.TLSClientConfig,
		TLSHandshakeTimeout: tlsHandshakeTimeout,
		MaxIdleConnsPerHost: -1,
		DisableKeepAlives:   true,
		ForceAttemptHTTP2:   false,
	}, CheckRedirect: noRedirect}
	t.pipelineClient = &http.Client{Transport: &http.Transport{
		DialContext:         dialer.DialContext,
		TLSClientConfig:     cfg.TLSClientConfig,
		TLSHandshakeTimeout: tlsHandshakeTimeout,
		MaxIdleConnsPerHost: 1024,
		ForceAttemptHTTP2:   false,
	}, CheckRedirect: noRedirect}
	return t
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// deadlineConn re-arms a read and a write deadline on every call, as
// etcd's timeout transport: a stream silent for 5 s is dropped.
type deadlineConn struct {
	net.Conn
	rd, wd time.Duration
}

func (c *deadlineConn) Read(b []byte) (int, error) {
	_ = c.SetReadDeadline(time.Now().Add(c.rd))
	return c.Conn.Read(b)
}

func (c *deadlineConn) Write(b []byte) (int, error) {
	_ = c.SetWriteDeadline(time.Now().Add(c.wd))
	return c.Conn.Write(b)
}

// ID is this member's ID in hex, as the peer protocol writes it.
func idString(id uint64) string { return strconv.FormatUint(id, 16) }

// SetClusterID sets the cluster ID a joining member learns from its peers.
func (t *Transport) SetClusterID(id uint64) {
	t.mu.Lock()
	t.cfg.ClusterID = id
	t.mu.Unlock()
}

func (t *Transport) clusterID() uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.cfg.ClusterID
}

// ParseURLs checks peer URLs as etcd's types.NewURLs: http, https, unix or
// unixs, host:port, no path.
func ParseURLs(urls []string) ([]url.URL, error) {
	var out []url.URL
	for _, s := range urls {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		if u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "unix" && u.Scheme != "unixs" {
			return nil, fmt.Errorf("URL scheme must be http, https, unix, or unixs: %s", s)
		}
		if _, _, err := net.SplitHostPort(u.Host); err != nil {
			return nil, fmt.Errorf(`URL address does not have the form "host:port": %s`, s)
		}
		if u.Path != "" {
			return nil, fmt.Errorf("URL must not contain a path: %s", s)
		}
		out = append(out, *u)
	}
	slices.SortFunc(out, func(a, b url.URL) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}

// AddPeer starts the streams and pipeline to member id at urls.
func (t *Transport) AddPeer(id uint64, urls []string) error {
	us, err := ParseURLs(urls)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped || t.peers[id] != nil || id == t.cfg.ID {
		return nil
	}
	if r := t.remotes[id]; r != nil {
		delete(t.remotes, id) // the peer takes over
		go r.stop()
	}
	t.peers[id] = startPeer(t, id, us, true)
	t.log.Info("added peer", "peer-id", idString(id), "peer-urls", urls)
	return nil
}

// AddRemote adds a pipeline-only contact for a member that is not a peer
// yet (a joining member answering the leader before its membership has
// caught up). It does nothing for a known peer.
func (t *Transport) AddRemote(id uint64, urls []string) {
	us, err := ParseURLs(urls)
	if err != nil {
		t.log.Warn("ignored peer URLs of a remote", "remote-id", idString(id), "urls", urls, "error", err)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped || t.peers[id] != nil || t.remotes[id] != nil || id == t.cfg.ID {
		return
	}
	t.remotes[id] = startPeer(t, id, us, false)
}

// RemovePeer stops everything towards member id.
func (t *Transport) RemovePeer(id uint64) {
	t.mu.Lock()
	p, r := t.peers[id], t.remotes[id]
	delete(t.peers, id)
	delete(t.remotes, id)
	t.mu.Unlock()
	if p != nil {
		p.stop()
		t.log.Info("removed peer", "peer-id", idString(id))
	}
	if r != nil {
		r.stop()
	}
}

// RemoveAllPeers stops every peer and remote (before a snapshot's
// membership replaces them).
func (t *Transport) RemoveAllPeers() {
	t.mu.RLock()
	var ids []uint64
	for id := range t.peers {
		ids = append(ids, id)
	}
	for id := range t.remotes {
		ids = append(ids, id)
	}
	t.mu.RUnlock()
	for _, id := range ids {
		t.RemovePeer(id)
	}
}

// UpdatePeer changes the URLs of member id.
func (t *Transport) UpdatePeer(id uint64, urls []string) error {
	us, err := ParseURLs(urls)
	if err != nil {
		return err
	}
	t.mu.RLock()
	p := t.peers[id]
	t.mu.RUnlock()
	if p != nil {
		p.picker.update(us)
	}
	return nil
}

// PeerIDs are the IDs of the current peers.
func (t *Transport) PeerIDs() []uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var ids []uint64
	for id := range t.peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// ActiveSince is when the connection to peer id became active, or the zero
// time while it is not.
func (t *Transport) ActiveSince(id uint64) time.Time {
	t.mu.RLock()
	p := t.peers[id]
	t.mu.RUnlock()
	if p == nil {
		return time.Time{}
	}
	return p.status.activeSince()
}

// StreamAttaches is how many stream connections peer id has dialled to
// this member so far, both stream types: 2 while the streams hold, more
// after each reconnect.
func (t *Transport) StreamAttaches(id uint64) uint64 {
	p := t.peer(id)
	if p == nil {
		return 0
	}
	var n uint64
	for _, w := range []*streamWriter{p.msgApp, p.message} {
		w.mu.Lock()
		n += w.attaches
		w.mu.Unlock()
	}
	return n
}

// Send sends messages to their To members: MsgApp on the msgappv2 stream,
// others on the message stream, the pipeline while no stream is attached.
// Messages to unknown members are dropped; a full queue reports the peer
// unreachable to raft, as etcd does.
func (t *Transport) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		to := m.GetTo()
		if to == 0 {
			continue
		}
		t.mu.RLock()
		p := t.peers[to]
		if p == nil {
			p = t.remotes[to]
		}
		t.mu.RUnlock()
		if p == nil {
			t.log.Debug("ignored message to an unknown member", "type", m.GetType().String(), "to", idString(to))
			continue
		}
		p.send(m)
	}
}

// Stop stops every peer; the handlers refuse what comes after.
func (t *Transport) Stop() {
	t.mu.Lock()
	t.stopped = true
	ps := make([]*peer, 0, len(t.peers)+len(t.remotes))
	for _, p := range t.peers {
		ps = append(ps, p)
	}
	for _, p := range t.remotes {
		ps = append(ps, p)
	}
	t.peers, t.remotes = map[uint64]*peer{}, map[uint64]*peer{}
	t.mu.Unlock()
	for _, p := range ps {
		p.stop()
	}
	t.streamClient.CloseIdleConnections()
	t.pipelineClient.CloseIdleConnections()
}

func (t *Transport) critical(err error) {
	t.criticalOnce.Do(func() {
		t.log.Error("peer reported a critical error", "error", err)
		if t.cfg.OnCritical != nil {
			go t.cfg.OnCritical(err)
		}
	})
}

func (t *Transport) peer(id uint64) *peer {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.peers[id]
}

// setHeaders sets the headers every rafthttp request carries.
func (t *Transport) setHeaders(h http.Header) {
	h.Set("X-Server-From", idString(t.cfg.ID))
	h.Set("X-Server-Version", t.cfg.Version)
	h.Set("X-Min-Cluster-Version", MinClusterVersion)
	h.Set("X-Etcd-Cluster-ID", idString(t.clusterID()))
	if len(t.cfg.URLs) > 0 {
		h.Set("X-PeerURLs", strings.Join(t.cfg.URLs, ","))
	}
}
