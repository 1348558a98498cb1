package server

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

// clientURLsKnown: the advertised client URLs are configured, or derived
// from listeners that are bound.
func (s *Server) clientURLsKnown() bool {
	if len(s.cfg.AdvertiseClientURLs) > 0 {
		return true
	}
	select {
	case <-s.boundc:
		return true
	default:
		return false
	}
}

// clientURLs are the advertised client URLs.
func (s *Server) clientURLs() []string {
	if len(s.cfg.AdvertiseClientURLs) > 0 {
		return s.cfg.AdvertiseClientURLs
	}
	var out []string
	for _, l := range s.listeners {
		out = append(out, "http://"+l.Addr().String())
	}
	return out
}

// Serve listens on the client URLs and serves gRPC and HTTP on them until
// Stop. It returns once the listeners are open.
func (s *Server) Serve() error {
	urls := s.cfg.ListenClientURLs
	if len(urls) == 0 {
		urls = []string{"http://127.0.0.1:2379"}
	}
	for _, u := range urls {
		pu, err := url.Parse(u)
		if err != nil {
			return fmt.Errorf("server: --listen-client-urls %q: %w", u, err)
		}
		if pu.Scheme != "http" {
			return fmt.Errorf("server: --listen-client-urls %q: only http is supported yet", u)
		}
		l, err := net.Listen("tcp", pu.Host)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("server: listen %s: %w", u, err)
		}
		s.listeners = append(s.listeners, l)
	}
	s.grpc = newGRPCServer(s)
	mux := http.NewServeMux()
	s.registerHTTP(mux)
	// etcd's client HTTP server: 5 minutes to send a request's header, no
	// idle timeout on keep-alive connections.
	s.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Minute}
	close(s.boundc)
	// As etcd, accept client requests only once the member has published
	// itself (before that, MemberList would show it without client URLs).
	// Connections made meanwhile wait in the listen backlog.
	go func() {
		select {
		case <-s.readyc:
		case <-s.stopc:
			return
		}
		// etcd's words: tools and etcd's own test framework wait for them.
		s.log.Info("ready to serve client requests")
		for _, l := range s.listeners {
			sl := newSplitListener(l)
			go sl.run()
			go func() { _ = s.grpc.Serve(sl.grpc) }()
			go func() { _ = s.httpSrv.Serve(sl.http) }()
			s.log.Info("serving client traffic", "address", l.Addr().String())
		}
	}()
	return nil
}

// ClientAddrs are the addresses the client listeners are bound to.
func (s *Server) ClientAddrs() []string {
	var out []string
	for _, l := range s.listeners {
		out = append(out, l.Addr().String())
	}
	return out
}

func (s *Server) closeListeners() {
	for _, l := range s.listeners {
		_ = l.Close()
	}
}
