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
// one write; HTTP/1 (/health, /metrics, /version) goes to net/http.
// Serving gRPC through net/http's HTTP/2 server instead costs a write(2)
// and a goroutine hand-off per frame (BENCHMARKS.md, server load).
type splitListener struct {
	l          net.Listener
	grpc, http *chanListener
}

func newSplitListener(l net.Listener) *splitListener {
	done := make(chan struct{})
	var once sync.Once
	closeAll := func() { once.Do(func() { close(done); l.Close() }) }
	return &splitListener{
		l:    l,
		grpc: &chanListener{addr: l.Addr(), conns: make(chan net.Conn), done: done, close: closeAll},
		http: &chanListener{addr: l.Addr(), conns: make(chan net.Conn), done: done, close: closeAll},
	}
}

// run accepts until the listener is closed.
func (s *splitListener) run() {
	defer s.grpc.close()
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		go s.dispatch(c)
	}
}

// dispatch reads as much of the HTTP/2 preface as the client sends before
// the first byte that differs ("GET ...", "POST ..." differ by the second
// byte), so no protocol waits for bytes it will not send.
func (s *splitListener) dispatch(c net.Conn) {
	// etcd's cmux waits for the first bytes without a deadline; this one
	// frees a connection that sends nothing at all for as long as etcd's
	// HTTP server waits for a request header.
	_ = c.SetReadDeadline(time.Now().Add(firstBytesTimeout))
	br := bufio.NewReader(c)
	target := s.grpc
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
	_ = c.SetReadDeadline(time.Time{})
	select {
	case target.conns <- &peekedConn{Conn: c, r: br}:
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
