package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// peerTLSMod turns a testCluster's members to https peer URLs with the
// certificate certs[name] (CA ca, client certificates required), logging
// to logs[name]; extra adjusts the TLS settings.
func peerTLSMod(ca *testCA, certs map[string]testCert, logs map[string]*logBuffer, extra func(*TLSInfo)) func(*Config) {
	https := func(u string) string { return strings.Replace(u, "http://", "https://", 1) }
	return func(cfg *Config) {
		name := cfg.Engine.Name
		for i := range cfg.ListenPeerURLs {
			cfg.ListenPeerURLs[i] = https(cfg.ListenPeerURLs[i])
		}
		for i := range cfg.Engine.InitialAdvertisePeerURLs {
			cfg.Engine.InitialAdvertisePeerURLs[i] = https(cfg.Engine.InitialAdvertisePeerURLs[i])
		}
		cfg.Engine.InitialCluster = strings.ReplaceAll(cfg.Engine.InitialCluster, "http://", "https://")
		c := certs[name]
		cfg.PeerTLS = TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: ca.CAFile, ClientCertAuth: true}
		if extra != nil {
			extra(&cfg.PeerTLS)
		}
		cfg.Logger = logs[name].logger()
	}
}

// TestPeerTLSCluster: three members over https peer URLs with client
// certificates required elect a leader and replicate; the peer endpoints
// refuse plaintext and certless clients; and a fourth member joins over
// https (MemberAdd, then --initial-cluster-state=existing reading the
// peers' /members with the peer TLS).
func TestPeerTLSCluster(t *testing.T) {
	ca := newTestCA(t, "peer-ca")
	certs, logs := map[string]testCert{}, map[string]*logBuffer{}
	for i := 0; i < 4; i++ {
		name := fmt.Sprintf("m%d", i)
		certs[name], logs[name] = ca.issue(name, name), &logBuffer{}
	}
	mod := peerTLSMod(ca, certs, logs, nil)
	c := newTestCluster(t, 3, mod)
	c.ready()
	c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	put, err := c.kv(0).Put(ctx, &pb.PutRequest{Key: []byte("over"), Value: []byte("tls")})
	if err != nil {
		t.Fatal(err)
	}
	for i := range c.srv {
		rr, err := c.kv(i).Range(ctx, &pb.RangeRequest{Key: []byte("over")})
		if err != nil || rr.Count != 1 || string(rr.Kvs[0].Value) != "tls" {
			t.Fatalf("linearizable read on %s: %v %v", c.names[i], rr, err)
		}
	}
	if h := c.hashKVs(ctx, put.Header.Revision); !sameHash(h) {
		t.Fatalf("HashKV differs: %v", h)
	}

	peerAddr := c.srv[1].PeerAddrs()[0]
	if _, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + peerAddr + "/members"); err == nil {
		t.Fatal("a plaintext GET /members was answered on an https peer URL")
	}
	if _, err := httpsClient(ca.clientTLS(nil)).Get("https://" + peerAddr + "/members"); err == nil {
		t.Fatal("GET /members without a client certificate was answered")
	}
	m3 := certs["m3"]
	if body := httpGetOK(t, httpsClient(ca.clientTLS(&m3)), "https://"+peerAddr+"/members"); !strings.Contains(body, `"peerURLs":["https://`) {
		t.Fatalf("/members: %s", body)
	}

	// A fourth member joins over https.
	joinURL := "https://" + freeAddr(t)
	// etcd's MemberAdd wants the peers connected for 5 s first.
	for {
		_, err := pb.NewClusterClient(c.conns[0]).MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{joinURL}})
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "unhealthy cluster") || ctx.Err() != nil {
			t.Fatalf("MemberAdd: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.waitListed(ctx, 4)
	cfg := Config{
		Engine: engine.Options{Name: "m3", DataDir: filepath.Join(t.TempDir(), "m3"), InitialCluster: c.initial + ",m3=" + strings.Replace(joinURL, "https://", "http://", 1),
			InitialAdvertisePeerURLs: []string{strings.Replace(joinURL, "https://", "http://", 1)}, NoSync: true},
		InitialClusterState: "existing",
		ListenClientURLs:    []string{"http://127.0.0.1:0"},
		ListenPeerURLs:      []string{strings.Replace(joinURL, "https://", "http://", 1)},
		TickInterval:        10 * time.Millisecond,
		ElectionTicks:       10,
	}
	mod(&cfg)
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("joining over https: %v", err)
	}
	t.Cleanup(s.Stop)
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("the joining member did not publish itself in 20 s")
	}
	conn, err := grpc.NewClient(s.ClientAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rr, err := pb.NewKVClient(conn).Range(ctx, &pb.RangeRequest{Key: []byte("over")})
	if err != nil || rr.Count != 1 {
		t.Fatalf("read on the joined member: %v %v", rr, err)
	}
}

// TestPeerTLSWrongCN: with --peer-cert-allowed-cn, a member whose
// certificate has another CN is refused by the others ("client
// certificate authentication failed") and never hears of a leader, while
// the two others make a quorum.
func TestPeerTLSWrongCN(t *testing.T) {
	ca := newTestCA(t, "peer-ca")
	certs := map[string]testCert{"m0": ca.issue("m0", "member"), "m1": ca.issue("m1", "member"), "m2": ca.issue("m2", "intruder")}
	logs := map[string]*logBuffer{"m0": {}, "m1": {}, "m2": {}}
	c := newTestCluster(t, 3, peerTLSMod(ca, certs, logs, func(i *TLSInfo) { i.AllowedCNs = []string{"member"} }))
	deadline := time.Now().Add(20 * time.Second)
	for c.srv[0].Leader() == 0 || c.srv[0].Leader() != c.srv[1].Leader() {
		if time.Now().After(deadline) {
			t.Fatal("m0 and m1 agreed on no leader in 20 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.kv(0).Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	line := ""
	for time.Now().Before(deadline) && line == "" {
		for _, n := range []string{"m0", "m1"} {
			for _, l := range strings.Split(logs[n].String(), "\n") {
				if strings.Contains(l, "rejected connection on peer endpoint") && strings.Contains(l, "client certificate authentication failed") {
					line = l
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if line == "" {
		t.Fatal("no member logged refusing the intruder's certificate")
	}
	if l := c.srv[2].Leader(); l != 0 {
		t.Fatalf("the refused member knows leader %x", l)
	}
	select {
	case <-c.srv[2].Ready():
		t.Fatal("the refused member published itself")
	default:
	}
}

// TestPeerTLSClientSAN: the peer listener checks a client certificate's
// SANs against the connection's source address, as etcd's checkSAN (a
// certificate for 10.1.2.3 is refused from 127.0.0.1, one without SANs
// passes), unless SkipClientSANVerify (--peer-skip-client-san-verification).
func TestPeerTLSClientSAN(t *testing.T) {
	ca := newTestCA(t, "peer-ca")
	srvCert := ca.issue("server", "server")
	elsewhere := ca.issueFor("elsewhere", "elsewhere", []net.IP{net.ParseIP("10.1.2.3")}, nil)
	noSAN := ca.issueFor("nosan", "nosan", nil, nil)
	for _, skip := range []bool{false, true} {
		t.Run(fmt.Sprintf("skip=%v", skip), func(t *testing.T) {
			peer := "https://" + freeAddr(t)
			s, logs := startTLSServer(t, func(c *Config) {
				c.ListenClientURLs = []string{"http://127.0.0.1:0"}
				c.Engine.InitialCluster = "default=" + peer
				c.Engine.InitialAdvertisePeerURLs = []string{peer}
				c.ListenPeerURLs = []string{peer}
				c.PeerTLS = TLSInfo{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile, TrustedCAFile: ca.CAFile,
					ClientCertAuth: true, SkipClientSANVerify: skip}
			})
			base := "https://" + s.PeerAddrs()[0]
			httpGetOK(t, httpsClient(ca.clientTLS(&noSAN)), base+"/members")
			_, err := httpsClient(ca.clientTLS(&elsewhere)).Get(base + "/members")
			if skip {
				if err != nil {
					t.Fatalf("with the SAN check off: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("a certificate for 10.1.2.3 was served from 127.0.0.1")
			}
			logs.waitLog(t, 5*time.Second, "rejected connection on peer endpoint", "10.1.2.3")
		})
	}
}
