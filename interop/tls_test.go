package interop

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/server"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc/status"
)

// tlsFiles are a certificate, its key and the CA that verifies it.
type tlsFiles struct{ cert, key, ca string }

// testPKI is a CA made for one test; issue writes certificates it signs.
type testPKI struct {
	t      testing.TB
	dir    string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	caFile string
	serial int64
}

func newTestPKI(t testing.TB, name string) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &testPKI{t: t, dir: t.TempDir(), cert: cert, key: key, serial: 100}
	p.caFile = filepath.Join(p.dir, "ca.pem")
	p.write(p.caFile, "CERTIFICATE", der)
	return p
}

func (p *testPKI) write(path, typ string, der []byte) {
	p.t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
}

// issue signs a certificate for CN cn with IP SAN 127.0.0.1 and both
// serverAuth and clientAuth, as a peer certificate must have; it returns
// the files and the serial.
func (p *testPKI) issue(cn string) (tlsFiles, *big.Int) {
	p.t.Helper()
	return p.issueWith(cn, nil)
}

// issueWith is issue with the template changed by mod first.
func (p *testPKI) issueWith(cn string, mod func(*x509.Certificate)) (tlsFiles, *big.Int) {
	p.t.Helper()
	p.serial++
	serial := big.NewInt(p.serial)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
	if mod != nil {
		mod(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	f := tlsFiles{cert: filepath.Join(p.dir, cn+".pem"), key: filepath.Join(p.dir, cn+"-key.pem"), ca: p.caFile}
	p.write(f.cert, "CERTIFICATE", der)
	p.write(f.key, "EC PRIVATE KEY", kb)
	return f, serial
}

// crl writes a DER revocation list of serials (etcd reads DER only).
func (p *testPKI) crl(serials ...*big.Int) string {
	p.t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
		ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour), RevokedCertificateEntries: entries}, p.cert, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	path := filepath.Join(p.dir, "revoke.crl")
	if err := os.WriteFile(path, der, 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// TestMixedClusterPeerTLS: etcd 3.7.3 and etckit members bootstrapped
// together on https peer URLs, client certificates required (one
// certificate with serverAuth and clientAuth and IP SAN 127.0.0.1 for all,
// as etcd's own tests do): writes through every member agree on HashKV,
// and a member of the other kind joins over https (it reads /members with
// the peer TLS, then raft reaches it over TLS streams).
func TestMixedClusterPeerTLS(t *testing.T) {
	pki := newTestPKI(t, "peer-ca")
	files, _ := pki.issue("member")
	for _, kinds := range [][]string{{"etcd", "etcd", "etckit"}, {"etckit", "etckit", "etcd"}} {
		t.Run(strings.Join(kinds, "+"), func(t *testing.T) {
			c := startMixedCluster(&mixedCluster{t: t, token: "tls-" + strings.Join(kinds, "-"), peerTLS: &files}, kinds...)
			for _, mm := range c.members {
				if !strings.HasPrefix(mm.peerURL, "https://") {
					t.Fatalf("%s peer URL %s", mm.name, mm.peerURL)
				}
			}
			h := c.checkWrites("tls")
			joiner := "etckit"
			if kinds[2] == "etcd" {
				joiner = "etcd"
			}
			n := c.add(joiner, false)
			h2 := c.checkWrites("joined")
			t.Logf("HashKV %d over TLS; %s joined, HashKV %d on four", h, n.name, h2)
		})
	}
}

// clientTLSCase is one client of TestClientTLSDifferential.
type clientTLSCase struct {
	name   string
	scheme string // of the endpoint
	cfg    *tls.Config
	ok     bool // served, on etcd and on etckit alike
}

// TestClientTLSDifferential: embedded etcd 3.7.3 and etckit with the same
// client TLS flags (https, --cert-file, --key-file, --trusted-ca-file,
// --client-cert-auth, --client-crl-file) answer etcd's client/v3 alike: a
// good certificate is served, and no certificate, one of an untrusted CA,
// a revoked one, one without the clientAuth usage, an expired one and a
// plaintext client fail with the same class of error;
// /health over https likewise with and without a certificate.
func TestClientTLSDifferential(t *testing.T) {
	pki, other := newTestPKI(t, "ca"), newTestPKI(t, "other-ca")
	srv, _ := pki.issue("server")
	alice, _ := pki.issue("alice")
	bob, bobSerial := pki.issue("bob")
	mallory, _ := other.issue("mallory")
	// Bad certificates of the right CA: one only for servers, one expired.
	serverOnly, _ := pki.issueWith("carol", func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })
	expired, _ := pki.issueWith("dave", func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-time.Minute) })
	crl := pki.crl(bobSerial)
	clientCfg := func(f *tlsFiles, ca string) *tls.Config {
		pool := x509.NewCertPool()
		b, err := os.ReadFile(ca)
		if err != nil || !pool.AppendCertsFromPEM(b) {
			t.Fatalf("CA %s: %v", ca, err)
		}
		cfg := &tls.Config{RootCAs: pool}
		if f != nil {
			kp, err := tls.LoadX509KeyPair(f.cert, f.key)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{kp}
		}
		return cfg
	}
	cases := []clientTLSCase{
		{"good-cert", "https", clientCfg(&alice, pki.caFile), true},
		{"no-cert", "https", clientCfg(nil, pki.caFile), false},
		{"untrusted-ca", "https", clientCfg(&mallory, pki.caFile), false},
		{"revoked", "https", clientCfg(&bob, pki.caFile), false},
		{"server-auth-only", "https", clientCfg(&serverOnly, pki.caFile), false},
		{"expired", "https", clientCfg(&expired, pki.caFile), false},
		{"plaintext", "http", nil, false},
	}
	results := map[string]map[string]string{}
	for _, impl := range []string{"etcd", "etckit"} {
		addr := startClientTLS(t, impl, srv, crl)
		res := map[string]string{}
		for _, tc := range cases {
			res[tc.name] = clientOutcome(t, tc.scheme+"://"+addr, tc.cfg)
		}
		res["health-cert"] = healthOutcome("https://"+addr, clientCfg(&alice, pki.caFile))
		res["health-no-cert"] = healthOutcome("https://"+addr, clientCfg(nil, pki.caFile))
		results[impl] = res
		t.Logf("%s: %v", impl, res)
	}
	for _, tc := range cases {
		e, k := results["etcd"][tc.name], results["etckit"][tc.name]
		if (e == "ok") != tc.ok {
			t.Errorf("%s: etcd %s", tc.name, e)
		}
		if e != k {
			t.Errorf("%s: etcd %q, etckit %q", tc.name, e, k)
		}
	}
	for _, h := range []string{"health-cert", "health-no-cert"} {
		if results["etcd"][h] != results["etckit"][h] {
			t.Errorf("%s: etcd %q, etckit %q", h, results["etcd"][h], results["etckit"][h])
		}
	}
	if results["etckit"]["health-cert"] != "200" {
		t.Errorf("/health with a certificate: %s", results["etckit"]["health-cert"])
	}
}

// startClientTLS starts impl with client URL https://127.0.0.1:<port> and
// the client TLS flags; it returns host:port.
func startClientTLS(t testing.TB, impl string, srv tlsFiles, crl string) string {
	t.Helper()
	addr, peer := freeAddr(t), "http://"+freeAddr(t)
	dir := filepath.Join(t.TempDir(), impl)
	switch impl {
	case "etcd":
		cfg := embed.NewConfig()
		cfg.Name, cfg.Dir, cfg.LogLevel, cfg.UnsafeNoFsync = "tls", dir, "error", true
		cu, _ := url.Parse("https://" + addr)
		pu, _ := url.Parse(peer)
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
		cfg.InitialCluster = "tls=" + peer
		cfg.ListenMetricsUrls = nil
		cfg.ClientTLSInfo = transport.TLSInfo{CertFile: srv.cert, KeyFile: srv.key, TrustedCAFile: srv.ca, ClientCertAuth: true, CRLFile: crl}
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(30 * time.Second):
			t.Fatal("etcd not ready in 30 s")
		}
	case "etckit":
		s, err := server.New(server.Config{
			Engine:           engine.Options{Name: "tls", DataDir: dir, InitialCluster: "tls=" + peer, InitialAdvertisePeerURLs: []string{peer}, NoSync: true},
			ListenClientURLs: []string{"https://" + addr},
			ListenPeerURLs:   []string{peer},
			ClientTLS:        server.TLSInfo{CertFile: srv.cert, KeyFile: srv.key, TrustedCAFile: srv.ca, ClientCertAuth: true, CRLFile: crl},
			TickInterval:     10 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Stop)
		if err := s.Serve(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-s.Ready():
		case <-time.After(30 * time.Second):
			t.Fatal("etckit not ready in 30 s")
		}
	}
	return addr
}

// clientOutcome is "ok" when client/v3 can Put through endpoint, else the
// class of its error: "deadline" for context deadline exceeded, or the
// gRPC code.
func clientOutcome(t *testing.T, endpoint string, cfg *tls.Config) string {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: cfg, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err == nil {
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = cli.Put(ctx, "k", "v")
		cancel()
	}
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	}
	if st, ok := status.FromError(err); ok {
		return st.Code().String()
	}
	return fmt.Sprintf("other: %v", err)
}

// healthOutcome is GET /health's status code, or "refused".
func healthOutcome(base string, cfg *tls.Config) string {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	resp, err := c.Get(base + "/health")
	if err != nil {
		return "refused"
	}
	resp.Body.Close()
	return fmt.Sprint(resp.StatusCode)
}
