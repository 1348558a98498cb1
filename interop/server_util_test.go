package interop

import (
	"context"
	"math"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/server"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Both members are named "default" with the advertised peer URL below and
// the default token, so etcd and etckit derive the same member and cluster
// IDs; the peer port is never bound by etckit and etcd listens on a random
// one.
const (
	testName    = "default"
	testPeerURL = "http://127.0.0.1:2380"
)

// member is a running etcd or etckit, with a raw gRPC connection.
type member struct {
	name     string
	endpoint string
	conn     *grpc.ClientConn
	kv       pb.KVClient
	maint    pb.MaintenanceClient
	cluster  pb.ClusterClient
	lease    pb.LeaseClient
	stop     func()
}

func dial(t testing.TB, name, endpoint string, stop func()) *member {
	t.Helper()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)))
	if err != nil {
		stop()
		t.Fatal(err)
	}
	m := &member{name: name, endpoint: endpoint, conn: conn, kv: pb.NewKVClient(conn), maint: pb.NewMaintenanceClient(conn),
		cluster: pb.NewClusterClient(conn), lease: pb.NewLeaseClient(conn)}
	var once sync.Once
	m.stop = func() { once.Do(func() { conn.Close(); stop() }) }
	t.Cleanup(m.stop)
	return m
}

// startEtckit runs etckit on dir, client API on 127.0.0.1 at a random port.
func startEtckit(t *testing.T, dir string, mod func(*server.Config)) (*server.Server, *member) {
	t.Helper()
	cfg := server.Config{
		Engine: engine.Options{Name: testName, DataDir: dir, InitialCluster: testName + "=" + testPeerURL,
			InitialAdvertisePeerURLs: []string{testPeerURL}, NoSync: true},
		ListenClientURLs: []string{"http://127.0.0.1:0"},
		TickInterval:     10 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		s.Stop()
		t.Fatal(err)
	}
	m := dial(t, "etckit", s.ClientAddrs()[0], s.Stop)
	waitReady(t, m)
	return s, m
}

// startEmbed starts etcd 3.7.3 (embed) as one member on dir, bound to
// 127.0.0.1 random ports (the client URL is chosen here, so that etcd
// advertises what it serves), no fsync, after mods, and waits until it is
// ready; stop closes it (once), as does the end of the test.
func startEmbed(tb testing.TB, dir string, mods ...func(*embed.Config)) (e *embed.Etcd, stop func()) {
	tb.Helper()
	cfg := embed.NewConfig()
	cfg.Name = testName
	cfg.Dir = dir
	cfg.LogLevel = "fatal"
	cfg.UnsafeNoFsync = true
	lc, _ := url.Parse("http://" + freeAddr(tb))
	lp, _ := url.Parse("http://127.0.0.1:0")
	ap, _ := url.Parse(testPeerURL)
	cfg.ListenClientUrls = []url.URL{*lc}
	cfg.AdvertiseClientUrls = []url.URL{*lc}
	cfg.ListenPeerUrls = []url.URL{*lp}
	cfg.AdvertisePeerUrls = []url.URL{*ap}
	cfg.InitialCluster = testName + "=" + testPeerURL
	cfg.ListenMetricsUrls = nil
	for _, mod := range mods {
		mod(cfg)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		tb.Fatal("etcd did not become ready in 60s")
	}
	var once sync.Once
	stop = func() { once.Do(e.Close) }
	tb.Cleanup(stop)
	return e, stop
}

// startEtcd runs etcd 3.7.3 (embed) on dir, bound to 127.0.0.1 random ports.
func startEtcd(t *testing.T, dir string, mods ...func(*embed.Config)) (*embed.Etcd, *member) {
	t.Helper()
	e, stop := startEmbed(t, dir, mods...)
	m := dial(t, "etcd", e.Clients[0].Addr().String(), stop)
	waitReady(t, m)
	return e, m
}

// waitReady waits (bounded) until a linearizable read succeeds.
func waitReady(t *testing.T, m *member) {
	t.Helper()
	var err error
	for i := 0; i < 300; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = m.kv.Range(ctx, &pb.RangeRequest{Key: []byte("\x00")})
		cancel()
		if err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not ready: %v", m.name, err)
}

// normalize clears the fields that legitimately differ between two members:
// member ID, cluster ID and raft term in every ResponseHeader.
func normalize(m proto.Message) proto.Message {
	if m == nil {
		return nil
	}
	c := proto.Clone(m)
	clearHeaders(c.ProtoReflect())
	return c
}

func clearHeaders(m protoreflect.Message) {
	if m.Descriptor().FullName() == "etcdserverpb.ResponseHeader" {
		for _, f := range []protoreflect.Name{"cluster_id", "member_id", "raft_term"} {
			m.Clear(m.Descriptor().Fields().ByName(f))
		}
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				clearHeaders(l.Get(i).Message())
			}
		case fd.Message() != nil && !fd.IsMap():
			clearHeaders(v.Message())
		}
		return true
	})
}

func text(m proto.Message) string {
	if m == nil {
		return "<nil>"
	}
	return prototext.MarshalOptions{}.Format(m)
}

func dataDir(t *testing.T, name string) string { return filepath.Join(t.TempDir(), name) }

var _ = clientv3.AutoWatchID
