package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// cnMethod is a test-only RPC answering the caller's certCommonName.
const cnMethod = "/etckit.test.CN/Get"

// noCN is what cnMethod answers when certCommonName has none.
const noCN = "<none>"

// registerCNService adds cnMethod to gs, through the server's
// interceptors like every RPC.
func registerCNService(gs *grpc.Server, srv func() *Server) {
	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: "etckit.test.CN",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Get", Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, _ any) (any, error) {
				cn, ok := srv().certCommonName(ctx)
				if !ok {
					cn = noCN
				}
				return wrapperspb.String(cn), nil
			}
			if ic == nil {
				return h(ctx, in)
			}
			return ic(ctx, in, &grpc.UnaryServerInfo{FullMethod: cnMethod}, h)
		}}},
	}, struct{}{})
}

// startTLSServer starts one member with client URL https://127.0.0.1:0
// (mod may change it and set the TLS settings), waits until it serves,
// and stops it at the end of the test.
func startTLSServer(t *testing.T, mod func(*Config)) (*Server, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	var sp atomic.Pointer[Server]
	cfg := Config{
		Engine: engine.Options{Name: "default", DataDir: filepath.Join(t.TempDir(), "default.etckit"),
			InitialCluster: "default=http://127.0.0.1:2380", NoSync: true},
		ListenClientURLs: []string{"https://127.0.0.1:0"},
		TickInterval:     10 * time.Millisecond,
		Logger:           logs.logger(),
		serviceRegister:  func(gs *grpc.Server) { registerCNService(gs, sp.Load) },
	}
	mod(&cfg)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sp.Store(s)
	t.Cleanup(s.Stop)
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("member not ready in 20 s")
	}
	return s, logs
}

// dialGRPC connects to addr with TLS cfg (nil: plaintext).
func dialGRPC(t *testing.T, addr string, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	creds := insecure.NewCredentials()
	if cfg != nil {
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// callCN makes cnMethod on a new connection; a refused connection gives
// an error within 5 s.
func callCN(t *testing.T, addr string, cfg *tls.Config) (string, error) {
	t.Helper()
	conn := dialGRPC(t, addr, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := new(wrapperspb.StringValue)
	if err := conn.Invoke(ctx, cnMethod, &emptypb.Empty{}, out); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}

// TestTLSClientCertRules: an https listener with --trusted-ca-file,
// --client-cert-auth and --client-crl-file refuses plaintext clients,
// clients without a certificate, with one of another CA, and with a
// revoked one (the CRL re-read for the next connection, etcd's words in
// the log); a good certificate's CN reaches certCommonName, and the
// member advertises its https client URL.
func TestTLSClientCertRules(t *testing.T) {
	ca, other := newTestCA(t, "ca"), newTestCA(t, "other")
	srvCert := ca.issue("server", "server")
	alice, bob := ca.issue("alice", "alice"), ca.issue("bob", "bob")
	mallory := other.issue("mallory", "mallory")
	crl := filepath.Join(t.TempDir(), "revoke.crl")
	ca.writeCRL(crl)
	s, logs := startTLSServer(t, func(c *Config) {
		c.ClientTLS = TLSInfo{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile, TrustedCAFile: ca.CAFile,
			ClientCertAuth: true, CRLFile: crl}
	})
	addr := s.ClientAddrs()[0]

	if cn, err := callCN(t, addr, ca.clientTLS(&alice)); err != nil || cn != "alice" {
		t.Fatalf("alice: cn %q, err %v", cn, err)
	}
	if _, err := callCN(t, addr, nil); err == nil {
		t.Fatal("a plaintext client was served on an https listener")
	}
	if _, err := callCN(t, addr, ca.clientTLS(nil)); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	if _, err := callCN(t, addr, other.clientTLS(&mallory)); err == nil {
		t.Fatal("a certificate of an untrusted CA was served")
	}
	logs.waitLog(t, 5*time.Second, "rejected connection on client endpoint")

	ca.writeCRL(crl, bob.Serial)
	if _, err := callCN(t, addr, ca.clientTLS(&bob)); err == nil {
		t.Fatal("a revoked certificate was served")
	}
	logs.waitLog(t, 5*time.Second, "rejected connection on client endpoint",
		fmt.Sprintf("transport: certificate serial %x revoked", bob.Serial.Bytes()))
	if cn, err := callCN(t, addr, ca.clientTLS(&alice)); err != nil || cn != "alice" {
		t.Fatalf("alice after revoking bob: cn %q, err %v", cn, err)
	}

	// The advertised client URL keeps the scheme.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ml, err := pb.NewClusterClient(dialGRPC(t, addr, ca.clientTLS(&alice))).MemberList(ctx, &pb.MemberListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ml.Members[0].ClientURLs; len(got) != 1 || got[0] != "https://"+addr {
		t.Fatalf("client URLs %v, want [https://%s]", got, addr)
	}
}

// TestTLSCertCommonName: certCommonName answers only with
// --client-cert-auth and only over TLS, on combined and on gRPC-only
// (--listen-client-http-urls) listeners alike.
func TestTLSCertCommonName(t *testing.T) {
	ca := newTestCA(t, "ca")
	srvCert, alice := ca.issue("server", "server"), ca.issue("alice", "alice")
	for _, tc := range []struct {
		name     string
		certAuth bool
		split    bool
		want     string
	}{
		{"trusted-ca-only", false, false, noCN},
		{"client-cert-auth", true, false, "alice"},
		{"client-cert-auth-grpc-only", true, true, "alice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := startTLSServer(t, func(c *Config) {
				c.ListenClientURLs = []string{"https://" + freeAddr(t), "http://" + freeAddr(t)}
				if tc.split {
					c.ListenClientHTTPURLs = []string{"http://" + freeAddr(t)}
				}
				c.ClientTLS = TLSInfo{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile, TrustedCAFile: ca.CAFile, ClientCertAuth: tc.certAuth}
			})
			addrs := s.ClientAddrs()
			if cn, err := callCN(t, addrs[0], ca.clientTLS(&alice)); err != nil || cn != tc.want {
				t.Fatalf("over TLS: cn %q, err %v; want %q", cn, err, tc.want)
			}
			if cn, err := callCN(t, addrs[1], nil); err != nil || cn != noCN {
				t.Fatalf("plaintext: cn %q, err %v; want none", cn, err)
			}
		})
	}
}

// TestTLSGRPCOnlyCRL: with --listen-client-http-urls the https client URL
// serves gRPC only, over gRPC's own transport, and still refuses a revoked
// certificate (in the handshake, as etcd since 3.6.13); the HTTP URL
// serves /health and no gRPC.
func TestTLSGRPCOnlyCRL(t *testing.T) {
	ca := newTestCA(t, "ca")
	srvCert, alice, bob := ca.issue("server", "server"), ca.issue("alice", "alice"), ca.issue("bob", "bob")
	crl := filepath.Join(t.TempDir(), "revoke.crl")
	ca.writeCRL(crl, bob.Serial)
	s, logs := startTLSServer(t, func(c *Config) {
		c.ListenClientHTTPURLs = []string{"http://" + freeAddr(t)}
		c.ClientTLS = TLSInfo{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile, TrustedCAFile: ca.CAFile, ClientCertAuth: true, CRLFile: crl}
	})
	addrs := s.ClientAddrs()
	if cn, err := callCN(t, addrs[0], ca.clientTLS(&alice)); err != nil || cn != "alice" {
		t.Fatalf("alice: cn %q, err %v", cn, err)
	}
	if _, err := callCN(t, addrs[0], ca.clientTLS(&bob)); err == nil {
		t.Fatal("a revoked certificate was served")
	}
	logs.waitLog(t, 5*time.Second, "rejected connection on client endpoint", "revoked")
	if body := httpGetOK(t, &http.Client{Timeout: 5 * time.Second}, "http://"+addrs[1]+"/health"); !strings.Contains(body, `"health":"true"`) {
		t.Fatalf("/health on the HTTP URL: %s", body)
	}
	if _, err := callCN(t, addrs[1], nil); err == nil {
		t.Fatal("gRPC served on a --listen-client-http-urls URL")
	}
}

func httpGetOK(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	return string(b)
}

func httpsClient(cfg *tls.Config) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// TestTLSHealthEndpoints: /health, /version and /metrics sit behind the
// client TLS rules (no client certificate, no answer), an http
// --listen-metrics-urls serves /metrics and /health without one, and an
// https one uses the client TLS.
func TestTLSHealthEndpoints(t *testing.T) {
	ca := newTestCA(t, "ca")
	srvCert, alice := ca.issue("server", "server"), ca.issue("alice", "alice")
	s, _ := startTLSServer(t, func(c *Config) {
		c.ListenMetricsURLs = []string{"http://" + freeAddr(t), "https://" + freeAddr(t)}
		c.ClientTLS = TLSInfo{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile, TrustedCAFile: ca.CAFile, ClientCertAuth: true}
	})
	base := "https://" + s.ClientAddrs()[0]
	withCert := httpsClient(ca.clientTLS(&alice))
	var h struct{ Health, Reason string }
	if err := json.Unmarshal([]byte(httpGetOK(t, withCert, base+"/health")), &h); err != nil || h.Health != "true" {
		t.Fatalf("/health: %+v %v", h, err)
	}
	if v := httpGetOK(t, withCert, base+"/version"); !strings.Contains(v, `"etcdserver":"`+Version+`"`) {
		t.Fatalf("/version: %s", v)
	}
	if _, err := httpsClient(ca.clientTLS(nil)).Get(base + "/health"); err == nil {
		t.Fatal("/health answered a client without a certificate")
	}
	m := s.MetricsAddrs()
	if body := httpGetOK(t, &http.Client{Timeout: 5 * time.Second}, "http://"+m[0]+"/metrics"); !strings.Contains(body, "etcd_server_has_leader") {
		t.Fatal("/metrics on the http metrics URL lacks etcd_server_has_leader")
	}
	httpGetOK(t, &http.Client{Timeout: 5 * time.Second}, "http://"+m[0]+"/health")
	httpGetOK(t, withCert, "https://"+m[1]+"/health")
	if _, err := httpsClient(ca.clientTLS(nil)).Get("https://" + m[1] + "/health"); err == nil {
		t.Fatal("the https metrics URL answered a client without a certificate")
	}
}

// TestTLSVersionsAndCipherSuites: --tls-min-version, --tls-max-version and
// --cipher-suites bound what a handshake may agree on.
func TestTLSVersionsAndCipherSuites(t *testing.T) {
	ca := newTestCA(t, "ca")
	srvCert := ca.issue("server", "server")
	const suite, otherSuite = tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
	s13, _ := startTLSServer(t, func(c *Config) {
		c.ClientTLS = TLSInfo{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile, MinVersion: tls.VersionTLS13}
	})
	s12, _ := startTLSServer(t, func(c *Config) {
		c.ClientTLS = TLSInfo{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{suite}}
	})
	handshake := func(addr string, mod func(*tls.Config)) (tls.ConnectionState, error) {
		cfg := ca.clientTLS(nil)
		mod(cfg)
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer c.Close()
		return c.(*tls.Conn).ConnectionState(), nil
	}
	if _, err := handshake(s13.ClientAddrs()[0], func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }); err == nil {
		t.Fatal("a TLS 1.2 client was served with --tls-min-version TLS1.3")
	}
	if st, err := handshake(s13.ClientAddrs()[0], func(*tls.Config) {}); err != nil || st.Version != tls.VersionTLS13 {
		t.Fatalf("TLS 1.3 server: version %x, err %v", st.Version, err)
	}
	if st, err := handshake(s12.ClientAddrs()[0], func(*tls.Config) {}); err != nil || st.Version != tls.VersionTLS12 || st.CipherSuite != suite {
		t.Fatalf("TLS 1.2 server: version %x suite %x, err %v", st.Version, st.CipherSuite, err)
	}
	if _, err := handshake(s12.ClientAddrs()[0], func(c *tls.Config) { c.CipherSuites = []uint16{otherSuite} }); err == nil {
		t.Fatal("a cipher suite outside --cipher-suites was agreed on")
	}
	if st, err := handshake(s12.ClientAddrs()[0], func(*tls.Config) {}); err != nil || st.NegotiatedProtocol != "" {
		t.Fatalf("no ALPN asked: protocol %q, err %v", st.NegotiatedProtocol, err)
	}
	if st, err := handshake(s12.ClientAddrs()[0], func(c *tls.Config) { c.NextProtos = []string{"h2"} }); err != nil || st.NegotiatedProtocol != "h2" {
		t.Fatalf("ALPN h2: protocol %q, err %v", st.NegotiatedProtocol, err)
	}
}

// TestTLSCertHotReload: the server certificate is read for every
// handshake, so a replaced file is served from the next connection on.
func TestTLSCertHotReload(t *testing.T) {
	ca := newTestCA(t, "ca")
	first, second := ca.issue("first", "first"), ca.issue("second", "second")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	install := func(c testCert) {
		for from, to := range map[string]string{c.CertFile: certFile, c.KeyFile: keyFile} {
			b, err := os.ReadFile(from)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(to, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(first)
	s, _ := startTLSServer(t, func(c *Config) { c.ClientTLS = TLSInfo{CertFile: certFile, KeyFile: keyFile} })
	served := func() string {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", s.ClientAddrs()[0], ca.clientTLS(nil))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "first" {
		t.Fatalf("served %q, want first", cn)
	}
	install(second)
	if cn := served(); cn != "second" {
		t.Fatalf("after replacing the files served %q, want second", cn)
	}
}

// TestTLSMixedSchemesOneAddress: an http and an https URL on one address
// are both served (the first byte tells TLS from plaintext), and unix
// and unixs sockets as well.
func TestTLSMixedSchemesOneAddress(t *testing.T) {
	ca := newTestCA(t, "ca")
	srvCert := ca.issue("server", "server")
	addr := freeAddr(t)
	sockDir, err := os.MkdirTemp("", "etk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	plain, secure := filepath.Join(sockDir, "c.sock"), filepath.Join(sockDir, "cs.sock")
	s, _ := startTLSServer(t, func(c *Config) {
		c.ListenClientURLs = []string{"http://" + addr, "https://" + addr, "unix://" + plain, "unixs://" + secure}
		c.ClientTLS = TLSInfo{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile}
	})
	if n := len(s.ClientAddrs()); n != 3 {
		t.Fatalf("%d listeners, want 3 (one per address)", n)
	}
	for _, tc := range []struct {
		target string
		cfg    *tls.Config
	}{
		{addr, nil}, {addr, ca.clientTLS(nil)}, {"unix://" + plain, nil}, {"unix://" + secure, ca.clientTLS(nil)},
	} {
		if cn, err := callCN(t, tc.target, tc.cfg); err != nil || cn != noCN {
			t.Fatalf("%s (TLS %v): %q %v", tc.target, tc.cfg != nil, cn, err)
		}
	}
	httpGetOK(t, &http.Client{Timeout: 5 * time.Second}, "http://"+addr+"/health")
	httpGetOK(t, httpsClient(ca.clientTLS(nil)), "https://"+addr+"/health")
}

// TestTLSAutoTLS: --auto-tls makes a self-signed certificate for the
// listen hosts in <data-dir>/fixtures/client, and serves with it.
func TestTLSAutoTLS(t *testing.T) {
	s, _ := startTLSServer(t, func(c *Config) { c.ClientTLS = TLSInfo{AutoTLS: true} })
	certFile := filepath.Join(s.cfg.Engine.DataDir, "fixtures", "client", "cert.pem")
	if _, err := os.Stat(filepath.Join(s.cfg.Engine.DataDir, "fixtures", "client", "key.pem")); err != nil {
		t.Fatal(err)
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", s.ClientAddrs()[0], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	leaf := c.ConnectionState().PeerCertificates[0]
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("fixtures/client/cert.pem holds no certificate")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1"}); err != nil {
		t.Fatalf("served certificate is not the fixture for 127.0.0.1: %v", err)
	}
	if cn, err := callCN(t, s.ClientAddrs()[0], &tls.Config{InsecureSkipVerify: true}); err != nil || cn != noCN {
		t.Fatalf("gRPC over auto TLS: %q %v", cn, err)
	}
}

// TestTLSStartupErrors: bad combinations fail at start with etcd's texts.
func TestTLSStartupErrors(t *testing.T) {
	ca := newTestCA(t, "ca")
	srvCert := ca.issue("server", "server")
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"https without cert", func(c *Config) { c.ListenClientURLs = []string{"https://127.0.0.1:0"} },
			"TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:0 with HTTPS scheme"},
		{"same url twice", func(c *Config) {
			c.ListenClientURLs = []string{"http://127.0.0.1:23790"}
			c.ListenClientHTTPURLs = []string{"http://127.0.0.1:23790"}
		}, "cannot bind both --listen-client-urls and --listen-client-http-urls on the same url http://127.0.0.1:23790"},
		{"metrics https without cert", func(c *Config) { c.ListenMetricsURLs = []string{"https://127.0.0.1:0"} },
			"client TLS key/cert (--cert-file, --key-file) must be provided for metrics secure url"},
		{"peer https without cert", func(c *Config) { c.ListenPeerURLs = []string{"https://127.0.0.1:0"} },
			"cannot listen on TLS for 127.0.0.1:0: KeyFile and CertFile are not presented"},
		{"min above max", func(c *Config) {
			c.ClientTLS = TLSInfo{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile, MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS12}
		}, "min version (TLS1.3) is greater than max version (TLS1.2)"},
		{"allowed cn and hostname", func(c *Config) {
			c.ListenPeerURLs = []string{"https://127.0.0.1:0"}
			c.PeerTLS = TLSInfo{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile, AllowedCNs: []string{"a"}, AllowedHostnames: []string{"b"}}
		}, `AllowedCNs and AllowedHostnames are mutually exclusive (cns=["a"], hostnames=["b"])`},
		{"missing cert file", func(c *Config) {
			c.ListenClientURLs = []string{"https://127.0.0.1:0"}
			c.ClientTLS = TLSInfo{CertFile: "/nonexistent/cert.pem", KeyFile: srvCert.KeyFile}
		}, "--cert-file: open /nonexistent/cert.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Engine: engine.Options{Name: "default", DataDir: filepath.Join(t.TempDir(), "d"),
				InitialCluster: "default=http://127.0.0.1:2380", NoSync: true},
				ListenClientURLs: []string{"http://127.0.0.1:0"}}
			tc.mod(&cfg)
			s, err := New(cfg)
			if err == nil {
				err = s.Serve()
				s.Stop()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// TestTLSFlags: the serve command's TLS flags reach the config, and the
// shared ones fail as etcd's do.
func TestTLSFlags(t *testing.T) {
	parse := func(args ...string) (Config, error) {
		cmd, f := newCommand()
		cmd.SetErr(io.Discard)
		if err := cmd.Flags().Parse(args); err != nil {
			return Config{}, err
		}
		return f.config(cmd)
	}
	cfg, err := parse("--cert-file=c.pem", "--key-file=k.pem", "--trusted-ca-file=ca.pem", "--client-cert-auth",
		"--client-crl-file=r.crl", "--client-cert-allowed-hostname=a,b", "--cipher-suites=TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
		"--tls-max-version=TLS1.2", "--peer-cert-file=pc.pem", "--peer-key-file=pk.pem", "--peer-trusted-ca-file=pca.pem",
		"--peer-client-cert-auth", "--peer-cert-allowed-cn=m1,m2", "--peer-crl-file=p.crl", "--listen-client-http-urls=http://127.0.0.1:1",
		"--listen-metrics-urls=http://127.0.0.1:2", "--auto-tls", "--peer-auto-tls", "--self-signed-cert-validity=3")
	if err != nil {
		t.Fatal(err)
	}
	ct, pt := cfg.ClientTLS, cfg.PeerTLS
	if ct.CertFile != "c.pem" || ct.KeyFile != "k.pem" || ct.TrustedCAFile != "ca.pem" || !ct.ClientCertAuth || ct.CRLFile != "r.crl" ||
		strings.Join(ct.AllowedHostnames, ",") != "a,b" || !ct.AutoTLS || ct.SelfSignedCertValidity != 3 ||
		ct.MinVersion != tls.VersionTLS12 || ct.MaxVersion != tls.VersionTLS12 ||
		len(ct.CipherSuites) != 2 || ct.CipherSuites[0] != tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 {
		t.Fatalf("client TLS %+v", ct)
	}
	if pt.CertFile != "pc.pem" || pt.KeyFile != "pk.pem" || pt.TrustedCAFile != "pca.pem" || !pt.ClientCertAuth || pt.CRLFile != "p.crl" ||
		strings.Join(pt.AllowedCNs, ",") != "m1,m2" || !pt.AutoTLS || len(pt.CipherSuites) != 2 || pt.MaxVersion != tls.VersionTLS12 {
		t.Fatalf("peer TLS %+v", pt)
	}
	if cfg, err := parse("--experimental-peer-skip-client-san-verification"); err != nil || !cfg.PeerTLS.SkipClientSANVerify {
		t.Fatalf("--experimental-peer-skip-client-san-verification (3.6's name): %v", err)
	}
	if len(cfg.ListenClientHTTPURLs) != 1 || len(cfg.ListenMetricsURLs) != 1 {
		t.Fatalf("http URLs %v, metrics URLs %v", cfg.ListenClientHTTPURLs, cfg.ListenMetricsURLs)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-min-version=TLS1.1"}, `unexpected TLS version "TLS1.1" (must be one of: TLS1.2, TLS1.3)`},
		{[]string{"--tls-max-version=tls1.3"}, `unexpected TLS version "tls1.3" (must be one of: TLS1.2, TLS1.3)`},
		{[]string{"--tls-min-version=TLS1.3", "--tls-max-version=TLS1.2"}, "min version (TLS1.3) is greater than max version (TLS1.2)"},
		{[]string{"--tls-min-version=TLS1.3", "--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}, "cipher suites cannot be configured when only TLS1.3 is enabled"},
		{[]string{"--cipher-suites=TLS_NOPE"}, `unexpected TLS cipher suite "TLS_NOPE"`},
		{[]string{"--experimental-peer-skip-client-san-verification", "--peer-skip-client-san-verification"},
			"cannot set --experimental-peer-skip-client-san-verification and --peer-skip-client-san-verification at the same time, please use --peer-skip-client-san-verification only"},
	} {
		if _, err := parse(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestTLSCertCNAsUser: with --client-cert-auth and auth enabled, the CN
// of the client certificate is the user when no token is sent; with
// --auto-tls etcd drops --client-cert-auth, and so does etckit.
func TestTLSCertCNAsUser(t *testing.T) {
	ca := newTestCA(t, "ca")
	srvCert, alice := ca.issue("server", "server"), ca.issue("alice", "alice")
	s, _ := startTLSServer(t, func(c *Config) {
		c.ClientTLS = TLSInfo{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile, TrustedCAFile: ca.CAFile, ClientCertAuth: true}
	})
	conn := dialGRPC(t, s.ClientAddrs()[0], ca.clientTLS(&alice))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	enableTestAuth(t, ctx, conn)
	kv := pb.NewKVClient(conn)
	if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("a1"), Value: []byte("v")}); err != nil {
		t.Fatalf("alice by certificate, in her range: %v", err)
	}
	if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("z"), Value: []byte("v")}); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("alice by certificate, outside her range: %v", err)
	}

	auto, _ := startTLSServer(t, func(c *Config) { c.ClientTLS = TLSInfo{AutoTLS: true, ClientCertAuth: true} })
	if auto.cfg.ClientTLS.ClientCertAuth {
		t.Fatal("--auto-tls kept --client-cert-auth")
	}
}
