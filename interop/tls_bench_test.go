package interop

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkTLSHandshake counts TLS handshakes per second on new client
// connections to etckit and to etcd 3.7.3 (embed), both serving https with
// --cert-file, --key-file, --trusted-ca-file and --client-cert-auth (ECDSA
// P-256 certificates made here): 8 clients, each dialing, completing the
// handshake (ALPN h2, a client certificate) and closing, b.N handshakes in
// all. The handshake is most of what a reconnecting kube-apiserver costs a
// member.
func BenchmarkTLSHandshake(b *testing.B) {
	pki := newTestPKI(b, "bench-ca")
	srv, _ := pki.issue("server")
	cli, _ := pki.issue("client")
	pair, err := tls.LoadX509KeyPair(cli.cert, cli.key)
	if err != nil {
		b.Fatal(err)
	}
	caPEM, err := os.ReadFile(pki.caFile)
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"h2"}}
	for _, impl := range []string{"etckit", "etcd"} {
		addr := startClientTLS(b, impl, srv, "")
		b.Run("impl="+impl, func(b *testing.B) {
			var next atomic.Int64
			var failed atomic.Value
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for c := 0; c < 8; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						conn, err := tls.Dial("tcp", addr, cfg)
						if err == nil {
							err = conn.Handshake()
							conn.Close()
						}
						if err != nil {
							failed.Store(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			if err := failed.Load(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "handshakes/s")
		})
	}
}
