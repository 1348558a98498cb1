package robustness

import (
	"io"
	"net"
	"sync"
	"time"
)

// proxy is a loopback TCP proxy in front of one member's peer listener:
// the member advertises the proxy's address to its peers, so every
// connection a peer dials to it (the raft streams it writes its messages
// on, the pipelines and snapshots sent to it) passes through here, where
// a fault can drop or delay the bytes. It exists only in this test
// module; the product has no fault hooks.
type proxy struct {
	ln     net.Listener
	target string

	mu        sync.Mutex
	blackhole bool
	delay     time.Duration
	conns     map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup
}

func newProxy(ln net.Listener, target string) *proxy {
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *proxy) serve(in net.Conn) {
	defer p.wg.Done()
	if !p.track(in) {
		in.Close()
		return
	}
	defer p.untrack(in)
	out, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		return
	}
	if !p.track(out) {
		out.Close()
		return
	}
	defer p.untrack(out)
	done := make(chan struct{}, 2)
	go func() { p.pipe(out, in); done <- struct{}{} }()
	go func() { p.pipe(in, out); done <- struct{}{} }()
	<-done
	// One direction ended: close both so the other copy ends too.
	in.Close()
	out.Close()
	<-done
}

// pipe copies src to dst chunk by chunk, dropping chunks while the proxy
// blackholes and holding each one for the current delay (in order, so a
// delay slows a stream without reordering its bytes).
func (p *proxy) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			drop, delay := p.blackhole, p.delay
			p.mu.Unlock()
			if delay > 0 {
				time.Sleep(delay)
			}
			if !drop {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// setBlackhole starts or ends dropping every byte. Ending it closes every
// connection: a stream that lost bytes in the middle of a message is
// broken, and the members reconnect as they do after any network fault.
func (p *proxy) setBlackhole(on bool) {
	p.mu.Lock()
	p.blackhole = on
	p.mu.Unlock()
	if !on {
		p.resetConns()
	}
}

func (p *proxy) setDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

func (p *proxy) resetConns() {
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.resetConns()
	p.wg.Wait()
}
