package interop

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/server"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// launched is a member started for the load benchmarks and the etcdctl
// session: its client endpoint (host:port on 127.0.0.1) and how to stop it.
type launched struct {
	impl     string
	endpoint string
	stop     func()
	dir      string
}

// launchEtckit starts etckit in-process on dir with the serve command's
// defaults (fsync on, 100 ms tick, default snapshot count), the client API
// on 127.0.0.1 at a random port.
func launchEtckit(tb testing.TB, dir string) *launched {
	tb.Helper()
	cfg := server.Config{
		Engine: engine.Options{Name: testName, DataDir: dir, InitialCluster: testName + "=" + testPeerURL,
			InitialAdvertisePeerURLs: []string{testPeerURL}},
		ListenClientURLs: []string{"http://127.0.0.1:0"},
	}
	s, err := server.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		s.Stop()
		tb.Fatal(err)
	}
	l := &launched{impl: "etckit", endpoint: s.ClientAddrs()[0], stop: s.Stop, dir: dir}
	tb.Cleanup(l.stop)
	waitServing(tb, l)
	return l
}

// launchEtcd starts etcd 3.7.3 (embed) on dir with its defaults (fsync on,
// 100 ms heartbeat, default snapshot count), bound to 127.0.0.1 random ports.
func launchEtcd(tb testing.TB, dir string) *launched {
	tb.Helper()
	e, stop := startEmbed(tb, dir, func(cfg *embed.Config) { cfg.UnsafeNoFsync = false })
	l := &launched{impl: "etcd", endpoint: e.Clients[0].Addr().String(), stop: stop, dir: dir}
	waitServing(tb, l)
	return l
}

// freeAddr is a free 127.0.0.1 port.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func launch(tb testing.TB, impl, dir string) *launched {
	if impl == "etcd" {
		return launchEtcd(tb, dir)
	}
	return launchEtckit(tb, dir)
}

// waitServing waits (bounded) until a linearizable read succeeds.
func waitServing(tb testing.TB, l *launched) {
	tb.Helper()
	conn := dialTB(tb, l.endpoint)
	defer conn.Close()
	kv := pb.NewKVClient(conn)
	var err error
	for i := 0; i < 300; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = kv.Range(ctx, &pb.RangeRequest{Key: []byte("\x00")})
		cancel()
		if err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("%s not ready: %v", l.impl, err)
}

func dialTB(tb testing.TB, endpoint string) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	return conn
}

// launchTLS is launch with client TLS: https on 127.0.0.1, srv's
// certificate, client certificates required and their CN the user
// (--cert-file, --key-file, --trusted-ca-file, --client-cert-auth).
func launchTLS(tb testing.TB, impl, dir string, srv tlsFiles) *launched {
	tb.Helper()
	addr := freeAddr(tb)
	l := &launched{impl: impl, endpoint: addr, dir: dir}
	switch impl {
	case "etcd":
		_, l.stop = startEmbed(tb, dir, func(cfg *embed.Config) {
			cfg.UnsafeNoFsync = false
			lc, _ := url.Parse("https://" + addr)
			cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*lc}, []url.URL{*lc}
			cfg.ClientTLSInfo = transport.TLSInfo{CertFile: srv.cert, KeyFile: srv.key, TrustedCAFile: srv.ca, ClientCertAuth: true}
		})
	default:
		s, err := server.New(server.Config{
			Engine: engine.Options{Name: testName, DataDir: dir, InitialCluster: testName + "=" + testPeerURL,
				InitialAdvertisePeerURLs: []string{testPeerURL}},
			ListenClientURLs: []string{"https://" + addr},
			ClientTLS:        server.TLSInfo{CertFile: srv.cert, KeyFile: srv.key, TrustedCAFile: srv.ca, ClientCertAuth: true},
		})
		if err != nil {
			tb.Fatal(err)
		}
		if err := s.Serve(); err != nil {
			s.Stop()
			tb.Fatal(err)
		}
		l.stop = s.Stop
	}
	tb.Cleanup(l.stop)
	return l
}

// dialTLS dials endpoint over TLS, presenting cert (verified against its CA).
func dialTLS(tb testing.TB, endpoint string, cert tlsFiles) *grpc.ClientConn {
	tb.Helper()
	pair, err := tls.LoadX509KeyPair(cert.cert, cert.key)
	if err != nil {
		tb.Fatal(err)
	}
	caPEM, err := os.ReadFile(cert.ca)
	if err != nil {
		tb.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair}, RootCAs: roots, ServerName: "127.0.0.1"})))
	if err != nil {
		tb.Fatal(err)
	}
	return conn
}
