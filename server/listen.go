package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
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

// clientURLs are the advertised client URLs: configured, or each
// --listen-client-urls URL with its listener's actual address.
func (s *Server) clientURLs() []string {
	if len(s.cfg.AdvertiseClientURLs) > 0 {
		return s.cfg.AdvertiseClientURLs
	}
	return s.boundClientURLs
}

// defaultListenClientURLs is what Serve listens on without
// ListenClientURLs.
var defaultListenClientURLs = []string{"http://127.0.0.1:2379"}

// errMissingClientTLSForMetrics is etcd's ErrMissingClientTLSInfoForMetricsURL.
var errMissingClientTLSForMetrics = errors.New("client TLS key/cert (--cert-file, --key-file) must be provided for metrics secure url")

// clientAddr is one client listening address (host:port, or a unix
// socket path) and what is served on it, as etcd's serveCtx: several URLs
// with the same address share one listener.
type clientAddr struct {
	network, addr    string
	secure, insecure bool // some URL is https/unixs, some http/unix
	httpOnly         bool // from --listen-client-http-urls
	urls             []*url.URL
	l                net.Listener
}

// resolveURL is etcd's: a unix URL's address is its host and path.
func resolveURL(u *url.URL) (network, addr string, secure bool) {
	network, addr = "tcp", u.Host
	if u.Scheme == "unix" || u.Scheme == "unixs" {
		network, addr = "unix", u.Host+u.Path
	}
	return network, addr, u.Scheme == "https" || u.Scheme == "unixs"
}

// parseListenURL checks a listen URL's scheme and address.
func parseListenURL(flag, raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return nil, fmt.Errorf("server: %s %q: %w", flag, raw, err)
	}
	switch u.Scheme {
	case "http", "https":
		if _, _, err := net.SplitHostPort(u.Host); err != nil {
			return nil, fmt.Errorf(`server: %s %q: URL address does not have the form "host:port"`, flag, raw)
		}
	case "unix", "unixs":
		if u.Host+u.Path == "" {
			return nil, fmt.Errorf("server: %s %q: no socket path", flag, raw)
		}
	default:
		return nil, fmt.Errorf("server: %s %q: URL scheme must be http, https, unix, or unixs", flag, raw)
	}
	return u, nil
}

// listenClientURLs are ListenClientURLs or the default.
func (c *Config) listenClientURLs() []string {
	if len(c.ListenClientURLs) == 0 {
		return defaultListenClientURLs
	}
	return c.ListenClientURLs
}

// prepareTLS is what etcd does to the TLS settings before it listens:
// the shared version and cipher checks (Config.Validate), the self-signed
// certificates of --peer-auto-tls and --auto-tls, the warnings for
// certificates given with plaintext URLs, and the errors for TLS URLs
// without certificates.
func (c *Config) prepareTLS() error {
	c.ClientTLS.fl, c.PeerTLS.fl = &clientTLSFlags, &peerTLSFlags
	log := c.Logger
	if err := c.ClientTLS.validateVersions(); err != nil {
		return err
	}
	if err := c.PeerTLS.validateVersions(); err != nil {
		return err
	}
	var phosts []string
	for _, raw := range c.ListenPeerURLs {
		if u, err := url.Parse(raw); err == nil {
			phosts = append(phosts, u.Host)
		}
	}
	if err := c.PeerTLS.selfCertIn(log, filepath.Join(c.Engine.DataDir, "fixtures", "peer"), phosts); err != nil {
		return err
	}
	for _, raw := range c.ListenPeerURLs {
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("server: --listen-peer-urls %q: %w", raw, err)
		}
		switch u.Scheme {
		case "http":
			if !c.PeerTLS.Empty() {
				log.Warn("scheme is HTTP while key and cert files are present; ignoring key and cert files", "peer-url", raw)
			}
			if c.PeerTLS.ClientCertAuth {
				log.Warn("scheme is HTTP while --peer-client-cert-auth is enabled; ignoring client cert auth for this URL", "peer-url", raw)
			}
		case "https":
			if c.PeerTLS.Empty() {
				return fmt.Errorf("cannot listen on TLS for %s: KeyFile and CertFile are not presented (--listen-peer-urls %s needs --peer-cert-file and --peer-key-file)", u.Host, raw)
			}
		}
	}
	curls := append(append([]string(nil), c.listenClientURLs()...), c.ListenClientHTTPURLs...)
	var chosts []string
	for _, raw := range curls {
		if u, err := url.Parse(raw); err == nil {
			chosts = append(chosts, u.Host)
		}
	}
	// Auto TLS replaces the client TLS settings, --client-cert-auth
	// among them, so then no certificate is required and no CN is a user,
	// as in etcd (its ClientCertAuthEnabled is read after ClientSelfCert).
	if err := c.ClientTLS.selfCertIn(log, filepath.Join(c.Engine.DataDir, "fixtures", "client"), chosts); err != nil {
		return err
	}
	for _, raw := range curls {
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("server: --listen-client-urls %q: %w", raw, err)
		}
		switch u.Scheme {
		case "http", "unix":
			if !c.ClientTLS.Empty() {
				log.Warn("scheme is http or unix while key and cert files are present; ignoring key and cert files", "client-url", raw)
			}
			if c.ClientTLS.ClientCertAuth {
				log.Warn("scheme is http or unix while --client-cert-auth is enabled; ignoring client cert auth for this URL", "client-url", raw)
			}
		case "https", "unixs":
			if c.ClientTLS.Empty() {
				return fmt.Errorf("TLS key/cert (--cert-file, --key-file) must be provided for client url %s with HTTPS scheme", u.String())
			}
		}
	}
	if _, err := c.clientAddrs(); err != nil {
		return err
	}
	for _, raw := range c.ListenMetricsURLs {
		if u, err := url.Parse(raw); err == nil && (u.Scheme == "https" || u.Scheme == "unixs") && c.ClientTLS.Empty() {
			return errMissingClientTLSForMetrics
		}
	}
	return nil
}

// clientAddrs groups --listen-client-urls and --listen-client-http-urls
// by address, as etcd's configureClientListeners.
func (c *Config) clientAddrs() ([]*clientAddr, error) {
	var out []*clientAddr
	byAddr := map[string]*clientAddr{}
	add := func(flag string, raws []string, httpOnly bool) error {
		for _, raw := range raws {
			u, err := parseListenURL(flag, raw)
			if err != nil {
				return err
			}
			network, addr, secure := resolveURL(u)
			ca := byAddr[network+" "+addr]
			if ca == nil {
				ca = &clientAddr{network: network, addr: addr, httpOnly: httpOnly}
				byAddr[network+" "+addr] = ca
				out = append(out, ca)
			} else if httpOnly && !ca.httpOnly {
				return fmt.Errorf("cannot bind both --listen-client-urls and --listen-client-http-urls on the same url %s", u.String())
			}
			ca.secure = ca.secure || secure
			ca.insecure = ca.insecure || !secure
			ca.urls = append(ca.urls, u)
		}
		return nil
	}
	if err := add("--listen-client-urls", c.listenClientURLs(), false); err != nil {
		return nil, err
	}
	if err := add("--listen-client-http-urls", c.ListenClientHTTPURLs, true); err != nil {
		return nil, err
	}
	return out, nil
}

// listenOn binds a TCP address or a unix socket (an old socket file is
// removed first, as etcd does).
// With --socket-reuse-port/--socket-reuse-address, TCP listeners get
// SO_REUSEPORT/SO_REUSEADDR (etcd's transport.SocketOpts).
func (c *Config) listenOn(network, addr string) (net.Listener, error) {
	if network == "unix" {
		if err := os.Remove(addr); err != nil && !os.IsNotExist(err) {
			return nil, err
		}
	}
	lc := net.ListenConfig{}
	if network == "tcp" && (c.SocketReusePort || c.SocketReuseAddress) {
		lc.Control = c.socketControl
	}
	return lc.Listen(context.Background(), network, addr)
}

// Serve listens on the client URLs and serves gRPC and HTTP on them until
// Stop. It returns once the listeners are open.
//
// As etcd: an address with only http/unix URLs sorts HTTP/1 connections
// to the HTTP mux and HTTP/2 ones to the gRPC server; on https/unixs the
// TLS listener does the handshake (10 s), the CRL check, and hands the
// connection to one net/http server that passes application/grpc HTTP/2
// requests to the gRPC server (grpc.Server.ServeHTTP) and others to the
// mux. With --listen-client-http-urls, the client URLs serve gRPC only
// (over TLS: the gRPC server's own transport, the CRL checked in the
// handshake) and the HTTP URLs the mux only.
func (s *Server) Serve() error {
	addrs, err := s.cfg.clientAddrs()
	if err != nil {
		return err
	}
	split := len(s.cfg.ListenClientHTTPURLs) > 0
	if !s.cfg.ClientTLS.Empty() {
		s.log.Info("starting with client TLS", "tls-info", s.cfg.ClientTLS.String(), "cipher-suites", s.cfg.ClientTLS.cipherSuiteNames())
	}
	var tlsCfg, grpcTLSCfg *tls.Config
	for _, ca := range addrs {
		if !ca.secure {
			continue
		}
		if tlsCfg, err = s.cfg.ClientTLS.serverConfig(s.log); err != nil {
			return fmt.Errorf("server: client TLS: %w", err)
		}
		// gRPC-only listeners refuse a revoked certificate in the
		// handshake itself (etcd's ConfigureCRLVerification).
		grpcTLSCfg = tlsCfg.Clone()
		if crl := s.cfg.ClientTLS.CRLFile; crl != "" {
			grpcTLSCfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return nil
				}
				return checkCRL(clientTLSFlags.crl, crl, cs.PeerCertificates)
			}
		}
		break
	}
	for _, ca := range addrs {
		l, err := s.cfg.listenOn(ca.network, ca.addr)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("server: listen %s: %w", ca.urls[0], err)
		}
		ca.l = l
		s.listeners = append(s.listeners, l)
	}
	for _, ca := range addrs {
		if ca.httpOnly {
			continue
		}
		for _, u := range ca.urls {
			bound := *u
			if ca.network == "tcp" {
				bound.Host = ca.l.Addr().String()
			}
			s.boundClientURLs = append(s.boundClientURLs, bound.String())
		}
	}
	if err := s.listenMetrics(); err != nil {
		s.closeListeners()
		return err
	}
	s.grpc = newGRPCServer(s, grpc.Creds(handshakenCreds{}))
	if s.cfg.serviceRegister != nil {
		s.cfg.serviceRegister(s.grpc)
	}
	mux := http.NewServeMux()
	s.registerHTTP(mux)
	if !s.cfg.DisableGRPCGateway {
		if err := s.registerGateway(mux); err != nil {
			s.closeListeners()
			return fmt.Errorf("server: gRPC gateway: %w", err)
		}
	}
	// etcd's client HTTP server: 5 minutes to send a request's header, no
	// idle timeout on keep-alive connections.
	handler := s.clientHTTPHandler(mux)
	s.httpSrv = &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Minute}
	if tlsCfg != nil {
		h := handler
		if !split {
			h = grpcHandler(s.grpc, handler)
		}
		httpsUsed := false
		for _, ca := range addrs {
			httpsUsed = httpsUsed || (ca.secure && (!split || ca.httpOnly))
		}
		if err := h2CipherSuites(tlsCfg.CipherSuites); httpsUsed && err != nil {
			s.closeListeners()
			return fmt.Errorf("server: --cipher-suites: %w", err)
		}
		// net/http adjusts its server's TLS config (ALPN http/1.1); the
		// TLS listener keeps etcd's own (h2 only), as etcd's does.
		s.httpsLnCfg = tlsCfg.Clone()
		// As etcd's, it logs no client's errors.
		s.httpsSrv = &http.Server{Handler: h, TLSConfig: tlsCfg, ReadHeaderTimeout: 5 * time.Minute, ErrorLog: log.New(io.Discard, "", 0),
			HTTP2: &http.HTTP2Config{MaxConcurrentStreams: int(min(s.cfg.MaxConcurrentStreams, 1<<31-1))}}
	}
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
		s.serveGateway()
		for _, ca := range addrs {
			s.serveClientAddr(ca, split, grpcTLSCfg)
		}
	}()
	return nil
}

// serveClientAddr starts serving one client address.
func (s *Server) serveClientAddr(ca *clientAddr, split bool, grpcTLSCfg *tls.Config) {
	grpcOn := !split || !ca.httpOnly
	httpOn := !split || ca.httpOnly
	traffic := "grpc+http"
	switch {
	case !httpOn:
		traffic = "grpc"
	case !grpcOn:
		traffic = "http"
	}
	sl := newSplitListenerFor(ca.l, ca.insecure && grpcOn, ca.insecure && httpOn, ca.secure)
	go sl.run()
	if sl.grpc != nil {
		go func() { _ = s.grpc.Serve(sl.grpc) }()
	}
	if sl.http != nil {
		go func() { _ = s.httpSrv.Serve(sl.http) }()
	}
	if ca.insecure {
		s.log.Info("serving client traffic insecurely; this is strongly discouraged!", "traffic", traffic, "address", ca.l.Addr().String())
	}
	if sl.tls == nil {
		return
	}
	const rejected = "rejected connection on client endpoint"
	if !httpOn {
		tl := newTLSListener(sl.tls, grpcTLSCfg, s.log, rejected, false)
		go func() { _ = s.grpc.Serve(tl) }()
	} else {
		var checks []connCheck
		if crl := s.cfg.ClientTLS.CRLFile; crl != "" {
			checks = append(checks, crlCheck(clientTLSFlags.crl, crl))
		}
		tl := newTLSListener(sl.tls, s.httpsLnCfg, s.log, rejected, false, checks...)
		go func() { _ = s.httpsSrv.Serve(tl) }()
	}
	s.log.Info("serving client traffic securely", "traffic", traffic, "address", ca.l.Addr().String())
}

// h2CipherSuites is the check etcd's http2.ConfigureServer makes of its
// https client server: configured cipher suites must include one that
// HTTP/2 requires, else etcd does not serve.
func h2CipherSuites(suites []uint16) error {
	if len(suites) == 0 {
		return nil
	}
	for _, cs := range suites {
		if cs == tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 || cs == tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 {
			return nil
		}
	}
	return errors.New("http2: TLSConfig.CipherSuites is missing an HTTP/2-required AES_128_GCM_SHA256 cipher (need at least one of TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 or TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)")
}

// grpcHandler is etcd's grpcHandlerFunc: HTTP/2 requests of content type
// application/grpc go to the gRPC server, others to the mux.
func grpcHandler(gs *grpc.Server, other http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.Contains(r.Header.Get("Content-Type"), "application/grpc") {
			gs.ServeHTTP(w, r)
			return
		}
		other.ServeHTTP(w, r)
	})
}

// listenMetrics binds --listen-metrics-urls and serves /metrics and
// /health on them at once (etcd does not wait for the member to be
// ready): plain on http, with the client TLS on https (and, as etcd's
// listener there, the peer listener's SAN check of client certificates).
func (s *Server) listenMetrics() error {
	if len(s.cfg.ListenMetricsURLs) == 0 {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", s.handleMetrics)
	s.registerHealth(mux)
	s.metricsSrv = &http.Server{Handler: mux}
	var ls []net.Listener
	fail := func(err error) error {
		for _, l := range ls {
			_ = l.Close()
		}
		return err
	}
	for _, raw := range s.cfg.ListenMetricsURLs {
		u, err := parseListenURL("--listen-metrics-urls", raw)
		if err != nil {
			return fail(err)
		}
		network, addr, secure := resolveURL(u)
		l, err := s.cfg.listenOn(network, addr)
		if err != nil {
			return fail(fmt.Errorf("server: listen %s: %w", raw, err))
		}
		if secure {
			if s.cfg.ClientTLS.Empty() {
				_ = l.Close()
				return fail(errMissingClientTLSForMetrics)
			}
			cfg, err := s.cfg.ClientTLS.serverConfig(s.log)
			if err != nil {
				_ = l.Close()
				return fail(fmt.Errorf("server: --listen-metrics-urls %s: %w", raw, err))
			}
			checks := []connCheck{sanCheck}
			if crl := s.cfg.ClientTLS.CRLFile; crl != "" {
				checks = append(checks, crlCheck(clientTLSFlags.crl, crl))
			}
			l = newTLSListener(l, cfg, s.log, "rejected connection on client endpoint", false, checks...)
		}
		ls = append(ls, l)
	}
	s.metricsLns = ls
	for i, l := range ls {
		s.log.Info("serving metrics", "address", s.cfg.ListenMetricsURLs[i])
		go func() { _ = s.metricsSrv.Serve(l) }()
	}
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

// MetricsAddrs are the addresses the --listen-metrics-urls listeners are
// bound to.
func (s *Server) MetricsAddrs() []string {
	var out []string
	for _, l := range s.metricsLns {
		out = append(out, l.Addr().String())
	}
	return out
}

func (s *Server) closeListeners() {
	for _, l := range s.listeners {
		_ = l.Close()
	}
	for _, l := range s.metricsLns {
		_ = l.Close()
	}
}
