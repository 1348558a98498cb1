package server

import (
	"bufio"
	"net"
	"sync"
	"time"
)

// firstBytesTimeout bounds the wait for a new connection's first bytes.
const firstBytesTimeout = 5 * time.Minute

// http2Preface starts every HTTP/2 connection (RFC 9113 §3.4).
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// splitListener sorts the connections of one client listener by protocol,
// as etcd's cmux does: HTTP/2 (gRPC clients: etcdctl, client/v3) goes to
// grpc-go's own transport, which batches the frames of many streams into
// one write; HTTP/1 (/health, /metrics, /version) goes to net/http; a TLS
// ClientHello (an https and an http URL on one address) goes to the TLS
// side. Serving gRPC through net/http's HTTP/2 server instead costs a
// write(2) and a goroutine hand-off per frame (BENCHMARKS.md, server load).
// A nil target takes nothing of its kind: with one target only, every
// connection goes there unread.
type splitListener struct {
	l               net.Listener
	grpc, http, tls *chanListener
}

func newSplitListener(l net.Listener) *splitListener {
	return newSplitListenerFor(l, true, true, false)
}

// newSplitListenerFor makes the targets asked for.
func newSplitListenerFor(l net.Listener, grpc, http, tls bool) *splitListener {
	done := make(chan struct{})
	var once sync.Once
	closeAll := func() { once.Do(func() { close(done); l.Close() }) }
	mk := func(on bool) *chanListener {
		if !on {
			return nil
		}
		return &chanListener{addr: l.Addr(), conns: make(chan net.Conn), done: done, close: closeAll}
	}
	return &splitListener{l: l, grpc: mk(grpc), http: mk(http), tls: mk(tls)}
}

// run accepts until the listener is closed.
func (s *splitListener) run() {
	defer s.closeAll()
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		go s.dispatch(c)
	}
}

func (s *splitListener) closeAll() {
	for _, t := range []*chanListener{s.grpc, s.http, s.tls} {
		if t != nil {
			t.close()
			return
		}
	}
	s.l.Close()
}

// only is the one target when there is a single one.
func (s *splitListener) only() *chanListener {
	var one *chanListener
	n := 0
	for _, t := range []*chanListener{s.grpc, s.http, s.tls} {
		if t != nil {
			one, n = t, n+1
		}
	}
	if n == 1 {
		return one
	}
	return nil
}

// tlsRecordHandshake starts every TLS connection (the ClientHello's
// record type).
const tlsRecordHandshake = 0x16

// dispatch reads as much of the HTTP/2 preface as the client sends before
// the first byte that differs ("GET ...", "POST ..." differ by the second
// byte), so no protocol waits for bytes it will not send.
func (s *splitListener) dispatch(c net.Conn) {
	if t := s.only(); t != nil {
		s.hand(t, c)
		return
	}
	// etcd's cmux waits for the first bytes without a deadline; this one
	// frees a connection that sends nothing at all for as long as etcd's
	// HTTP server waits for a request header.
	_ = c.SetReadDeadline(time.Now().Add(firstBytesTimeout))
	br := bufio.NewReader(c)
	target := s.grpc
	if s.tls != nil {
		b, err := br.Peek(1)
		if err != nil {
			c.Close()
			return
		}
		if b[0] == tlsRecordHandshake {
			target = s.tls
		}
	}
	if target != s.tls {
		switch {
		case s.grpc == nil:
			target = s.http
		case s.http != nil:
			for i := 1; i <= len(http2Preface); i++ {
				b, err := br.Peek(i)
				if err != nil {
					c.Close()
					return
				}
				if b[i-1] != http2Preface[i-1] {
					target = s.http
					break
				}
			}
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	if target == nil {
		c.Close()
		return
	}
	s.hand(target, &peekedConn{Conn: c, r: br})
}

func (s *splitListener) hand(target *chanListener, c net.Conn) {
	select {
	case target.conns <- c:
	case <-target.done:
		c.Close()
	}
}

// peekedConn replays the bytes read while sniffing, then reads the
// connection directly. Read is called by one goroutine at a time.
type peekedConn struct {
	net.Conn
	r *bufio.Reader // nil once its bytes are consumed
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(p)
		}
		c.r = nil
	}
	return c.Conn.Read(p)
}

// chanListener is a net.Listener fed by a splitListener.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	close func()
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { l.close(); return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }
