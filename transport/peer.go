package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// streamType is one of the two stream kinds.
type streamType int

const (
	streamMsgAppV2 streamType = iota
	streamMessage
)

func (s streamType) String() string {
	if s == streamMsgAppV2 {
		return "stream MsgApp v2"
	}
	return "stream Message"
}

// endpoint is the stream's path prefix.
func (s streamType) endpoint() string {
	if s == streamMsgAppV2 {
		return "/raft/stream/msgapp"
	}
	return "/raft/stream/message"
}

// picker chooses a peer's URL: the current one until a request to it
// fails, then the next.
type picker struct {
	mu   sync.Mutex
	urls []url.URL
	i    int
}

func (p *picker) pick() url.URL {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.urls[p.i]
}

func (p *picker) unreachable(u url.URL) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if u == p.urls[p.i] {
		p.i = (p.i + 1) % len(p.urls)
	}
}

func (p *picker) update(urls []url.URL) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.urls, p.i = urls, 0
}

// status is whether a peer is reachable, and since when.
type status struct {
	mu     sync.Mutex
	active bool
	since  time.Time
	on     func(active bool) // the observer's PeerActive; nil: none
}

func (s *status) activate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.active {
		s.active, s.since = true, time.Now()
		if s.on != nil {
			s.on(true)
		}
	}
}

func (s *status) deactivate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active && s.on != nil {
		s.on(false)
	}
	s.active, s.since = false, time.Time{}
}

func (s *status) activeSince() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.since
}

// peer is everything towards one member: two stream writers (attached
// when the member dials us), two stream readers (we dial it), the
// pipeline, and the goroutines that hand received messages to raft. A
// remote has only the pipeline.
type peer struct {
	t      *Transport
	id     uint64
	picker *picker
	status status

	msgApp, message *streamWriter // nil for a remote
	readers         []*streamReader
	pipec           chan *raftpb.Message
	recvc, propc    chan *raftpb.Message

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startPeer(t *Transport, id uint64, urls []url.URL, full bool) *peer {
	ctx, cancel := context.WithCancel(context.Background())
	p := &peer{t: t, id: id, picker: &picker{urls: urls}, pipec: make(chan *raftpb.Message, pipelineBufSize),
		recvc: make(chan *raftpb.Message, recvBufSize), propc: make(chan *raftpb.Message, streamBufSize), ctx: ctx, cancel: cancel}
	if o := t.cfg.Observer; o != nil {
		p.status.on = func(active bool) { o.PeerActive(id, active) }
	}
	for i := 0; i < connPerPipeline; i++ {
		p.wg.Add(1)
		go p.pipelineWorker()
	}
	if !full {
		return p
	}
	if t.cfg.Observer != nil {
		p.wg.Add(1)
		go p.probeLoop()
	}
	p.msgApp, p.message = newStreamWriter(p, streamMsgAppV2), newStreamWriter(p, streamMessage)
	for _, w := range []*streamWriter{p.msgApp, p.message} {
		p.wg.Add(1)
		go w.run()
	}
	for _, c := range []chan *raftpb.Message{p.recvc, p.propc} {
		p.wg.Add(1)
		go p.processLoop(c)
	}
	for _, typ := range []streamType{streamMsgAppV2, streamMessage} {
		r := &streamReader{p: p, typ: typ}
		p.readers = append(p.readers, r)
		p.wg.Add(1)
		go r.run()
	}
	return p
}

// processLoop hands received messages to raft, in order.
func (p *peer) processLoop(c chan *raftpb.Message) {
	defer p.wg.Done()
	for {
		select {
		case m := <-c:
			if err := p.t.cfg.Raft.Process(p.ctx, m); err != nil && p.ctx.Err() == nil {
				p.t.log.Warn("failed to process raft message", "from", idString(p.id), "type", m.GetType().String(), "error", err)
			}
		case <-p.ctx.Done():
			return
		}
	}
}

// send queues m on the channel etcd would pick.
func (p *peer) send(m *raftpb.Message) {
	if p.ctx.Err() != nil {
		return
	}
	if m.GetType() == raftpb.MsgSnap {
		// A MsgSnap goes with its db through SendSnapshot; POSTed to
		// /raft it would make an etcd receiver apply a db it has not got.
		p.t.cfg.Raft.ReportSnapshot(m.GetTo(), raft.SnapshotFailure)
		return
	}
	c := p.pipec
	if p.message != nil {
		if m.GetType() == raftpb.MsgApp {
			if wc, ok := p.msgApp.writec(); ok {
				c = wc
			} else if wc, ok := p.message.writec(); ok {
				c = wc
			}
		} else if wc, ok := p.message.writec(); ok {
			c = wc
		}
	}
	select {
	case c <- m:
	default:
		p.t.cfg.Raft.ReportUnreachable(m.GetTo())
		p.t.log.Debug("dropped raft message: sending buffer full", "to", idString(p.id), "type", m.GetType().String())
	}
}

func (p *peer) stop() {
	p.cancel()
	if p.msgApp != nil {
		p.msgApp.stop()
		p.message.stop()
	}
	for _, r := range p.readers {
		r.stop()
	}
	p.wg.Wait()
}

// probeLoop measures the round trip of a GET of the peer's /raft/probing
// every ProbeInterval, as etcd's prober does, for the observer.
func (p *peer) probeLoop() {
	defer p.wg.Done()
	t := time.NewTicker(ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-p.ctx.Done():
			return
		}
		u := p.picker.pick()
		u.Path = "/raft/probing"
		req, err := http.NewRequestWithContext(p.ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			continue
		}
		start := time.Now()
		resp, err := p.t.pipelineClient.Do(req)
		if err != nil {
			continue
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			p.t.cfg.Observer.RoundTrip(p.id, time.Since(start))
		}
	}
}

// pipelineWorker POSTs queued messages to /raft, one per request.
func (p *peer) pipelineWorker() {
	defer p.wg.Done()
	for {
		select {
		case m := <-p.pipec:
			if err := p.post(m); err != nil {
				if o := p.t.cfg.Observer; o != nil {
					o.SendFailed(p.id)
				}
				p.status.deactivate()
				p.t.cfg.Raft.ReportUnreachable(m.GetTo())
				if errors.Is(err, ErrMemberRemoved) {
					p.t.critical(err)
				}
				if p.ctx.Err() == nil {
					p.t.log.Debug("failed to post raft message", "to", idString(p.id), "type", m.GetType().String(), "error", err)
				}
				continue
			}
			p.status.activate()
		case <-p.ctx.Done():
			return
		}
	}
}

func (p *peer) post(m *raftpb.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	u := p.picker.pick()
	uu := u
	uu.Path = "/raft"
	req, err := http.NewRequestWithContext(p.ctx, http.MethodPost, uu.String(), bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/protobuf")
	p.t.setHeaders(req.Header)
	resp, err := p.t.pipelineClient.Do(req)
	if err != nil {
		p.picker.unreachable(u)
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		p.picker.unreachable(u)
		return err
	}
	if err := checkPostResponse(resp, body); err != nil {
		p.picker.unreachable(u)
		return fmt.Errorf("post to %s: %w", uu.String(), err)
	}
	if o := p.t.cfg.Observer; o != nil {
		o.SentBytes(p.id, len(b))
	}
	return nil
}

// checkPostResponse judges a pipeline or snapshot POST's answer as etcd.
func checkPostResponse(resp *http.Response, body []byte) error {
	switch resp.StatusCode {
	case http.StatusNoContent:
		return nil
	case http.StatusForbidden:
		return ErrMemberRemoved
	case http.StatusPreconditionFailed:
		switch strings.TrimSuffix(string(body), "\n") {
		case ErrIncompatible.Error():
			return ErrIncompatible
		case ErrClusterIDMismatch.Error():
			return ErrClusterIDMismatch
		}
		return fmt.Errorf("unhandled error %q when precondition failed", body)
	default:
		return fmt.Errorf("unexpected http status %s", http.StatusText(resp.StatusCode))
	}
}

// outgoingConn is a stream the peer dialled: our response body. Writes
// and flushes go through it so that none happens after the handler has
// returned (finish).
type outgoingConn struct {
	typ  streamType
	w    http.ResponseWriter
	rc   *http.ResponseController
	done chan struct{} // closed to end the handler
	once sync.Once

	mu   sync.Mutex
	dead bool
}

var errConnClosed = errors.New("rafthttp: stream connection closed")

// Write writes with etcd's 5 s write deadline.
func (c *outgoingConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return 0, errConnClosed
	}
	_ = c.rc.SetWriteDeadline(time.Now().Add(ConnWriteTimeout))
	return c.w.Write(b)
}

func (c *outgoingConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return errConnClosed
	}
	_ = c.rc.SetWriteDeadline(time.Now().Add(ConnWriteTimeout))
	return c.rc.Flush()
}

func (c *outgoingConn) close() { c.once.Do(func() { close(c.done) }) }

// finish is the handler returning: no write may follow.
func (c *outgoingConn) finish() {
	c.close()
	c.mu.Lock()
	c.dead = true
	c.mu.Unlock()
}

// streamWriter writes one stream type to a peer over the connection the
// peer dialled, batching flushes, with a link heartbeat every
// ConnReadTimeout/3.
type streamWriter struct {
	p     *peer
	typ   streamType
	connc chan *outgoingConn
	stopc chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	msgc     chan *raftpb.Message
	working  bool
	conn     *outgoingConn
	attaches uint64 // connections attached so far
}

func newStreamWriter(p *peer, typ streamType) *streamWriter {
	return &streamWriter{p: p, typ: typ, connc: make(chan *outgoingConn), stopc: make(chan struct{}), done: make(chan struct{}),
		msgc: make(chan *raftpb.Message, streamBufSize)}
}

type encoder interface{ Encode(*raftpb.Message) error }

func (w *streamWriter) run() {
	defer w.p.wg.Done()
	defer close(w.done)
	var (
		msgc    chan *raftpb.Message
		beat    <-chan time.Time
		enc     encoder
		flush   func() error
		batched int
	)
	tick := time.NewTicker(ConnReadTimeout / 3)
	defer tick.Stop()
	for {
		select {
		case <-beat:
			err := enc.Encode(linkHeartbeat())
			if err == nil {
				err = flush()
			}
			if err == nil {
				batched = 0
				continue
			}
			w.p.status.deactivate()
			w.close()
			msgc, beat = nil, nil
		case m := <-msgc:
			err := enc.Encode(m)
			if o := w.p.t.cfg.Observer; o != nil {
				if err == nil {
					o.SentBytes(w.p.id, proto.Size(m))
				} else {
					o.SendFailed(w.p.id)
				}
			}
			if err == nil {
				if len(msgc) == 0 || batched > streamBufSize/2 {
					err = flush()
					batched = 0
				} else {
					batched++
				}
			}
			if err == nil {
				continue
			}
			w.p.status.deactivate()
			w.close()
			msgc, beat = nil, nil
			w.p.t.cfg.Raft.ReportUnreachable(m.GetTo())
		case c := <-w.connc:
			w.mu.Lock()
			w.closeLocked()
			switch c.typ {
			case streamMsgAppV2:
				e := NewMsgAppV2Encoder(c)
				enc, flush = e, func() error {
					if err := e.Flush(); err != nil {
						return err
					}
					return c.flush()
				}
			default:
				enc, flush = NewMessageEncoder(c), c.flush
			}
			w.conn, w.working = c, true
			w.attaches++
			msgc = w.msgc
			w.mu.Unlock()
			beat = tick.C
			w.p.status.activate()
		case <-w.stopc:
			w.close()
			return
		}
	}
}

// writec is the queue to write to while a connection is attached.
func (w *streamWriter) writec() (chan *raftpb.Message, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.msgc, w.working
}

func (w *streamWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closeLocked()
}

// closeLocked ends the attached connection; messages still queued for it
// are dropped and raft is told the peer is unreachable.
func (w *streamWriter) closeLocked() {
	if !w.working {
		return
	}
	w.conn.close()
	if len(w.msgc) > 0 {
		w.p.t.cfg.Raft.ReportUnreachable(w.p.id)
	}
	w.msgc = make(chan *raftpb.Message, streamBufSize)
	w.working, w.conn = false, nil
}

func (w *streamWriter) attach(c *outgoingConn) bool {
	select {
	case w.connc <- c:
		return true
	case <-w.done:
		return false
	}
}

func (w *streamWriter) stop() {
	select {
	case <-w.stopc:
	default:
		close(w.stopc)
	}
	<-w.done
}

// streamReader dials the peer for one stream type and hands what it reads
// to raft, redialing at most every 100 ms.
type streamReader struct {
	p   *peer
	typ streamType

	mu   sync.Mutex
	body io.Closer
}

func (r *streamReader) run() {
	defer r.p.wg.Done()
	for {
		start := time.Now()
		body, err := r.dial()
		if err == nil {
			r.p.status.activate()
			err = r.decodeLoop(body)
			if r.p.ctx.Err() == nil && !errors.Is(err, io.EOF) && !isClosedConn(err) {
				r.p.status.deactivate()
				r.p.t.log.Debug("lost stream from peer", "stream", r.typ.String(), "peer-id", idString(r.p.id), "error", err)
			}
		} else if !errors.Is(err, errUnsupportedStream) {
			r.p.status.deactivate()
		}
		if errors.Is(err, ErrMemberRemoved) {
			r.p.t.critical(err)
		}
		wait := dialRetryInterval - time.Since(start)
		select {
		case <-r.p.ctx.Done():
			return
		case <-time.After(max(wait, 0)):
		}
	}
}

func isClosedConn(err error) bool {
	return err != nil && strings.Contains(err.Error(), "use of closed network connection")
}

func (r *streamReader) decodeLoop(body io.ReadCloser) error {
	r.mu.Lock()
	if r.p.ctx.Err() != nil {
		r.mu.Unlock()
		body.Close()
		return errStreamReaderClosed
	}
	r.body = body
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.body = nil
		r.mu.Unlock()
		body.Close()
	}()
	var dec interface {
		Decode() (*raftpb.Message, error)
		Offset() int64
	}
	if r.typ == streamMsgAppV2 {
		dec = NewMsgAppV2Decoder(body, r.p.id, r.p.t.cfg.ID)
	} else {
		dec = NewMessageDecoder(body, MaxMessageBytes)
	}
	o := r.p.t.cfg.Observer
	var off int64
	for {
		m, err := dec.Decode()
		if err != nil {
			if o != nil && r.p.ctx.Err() == nil && !errors.Is(err, io.EOF) && !isClosedConn(err) {
				o.ReceiveFailed(r.p.id)
			}
			return err
		}
		if o != nil {
			n := dec.Offset()
			o.ReceivedBytes(r.p.id, int(n-off))
			off = n
		}
		if IsLinkHeartbeat(m) {
			continue
		}
		c := r.p.recvc
		if m.GetType() == raftpb.MsgProp {
			c = r.p.propc
		}
		select {
		case c <- m:
		default:
			r.p.t.log.Warn("dropped raft message: receiving buffer full", "from", idString(r.p.id), "type", m.GetType().String())
		}
	}
}

// dial GETs the stream; only a 200 returns the body.
func (r *streamReader) dial() (io.ReadCloser, error) {
	u := r.p.picker.pick()
	uu := u
	uu.Path = path.Join(r.typ.endpoint(), idString(r.p.t.cfg.ID))
	req, err := http.NewRequestWithContext(r.p.ctx, http.MethodGet, uu.String(), nil)
	if err != nil {
		r.p.picker.unreachable(u)
		return nil, err
	}
	r.p.t.setHeaders(req.Header)
	req.Header.Set("X-Raft-To", idString(r.p.id))
	resp, err := r.p.t.streamClient.Do(req)
	if err != nil {
		r.p.picker.unreachable(u)
		return nil, err
	}
	rv, err := parseVersion(resp.Header.Get("X-Server-Version"))
	if err != nil || !streamSupported(rv, r.typ) {
		resp.Body.Close()
		r.p.picker.unreachable(u)
		return nil, errUnsupportedStream
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Body, nil
	case http.StatusGone:
		resp.Body.Close()
		r.p.picker.unreachable(u)
		return nil, ErrMemberRemoved
	case http.StatusPreconditionFailed:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		resp.Body.Close()
		r.p.picker.unreachable(u)
		switch strings.TrimSuffix(string(b), "\n") {
		case ErrIncompatible.Error():
			return nil, ErrIncompatible
		case ErrClusterIDMismatch.Error():
			return nil, ErrClusterIDMismatch
		}
		return nil, fmt.Errorf("unhandled error %q when precondition failed", b)
	default:
		resp.Body.Close()
		r.p.picker.unreachable(u)
		return nil, fmt.Errorf("peer %s: unhandled http status %d on %s", idString(r.p.id), resp.StatusCode, uu.Path)
	}
}

func (r *streamReader) stop() {
	r.mu.Lock()
	if r.body != nil {
		r.body.Close()
	}
	r.mu.Unlock()
}
