package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// startServer starts a one-member server on dir (client URL on a free
// 127.0.0.1 port, no fsync, fast ticks), each mod applied to its Config
// first, and a client connection to it; the end of the test stops both.
func startServer(t *testing.T, dir string, mods ...func(*Config)) (*Server, *grpc.ClientConn) {
	t.Helper()
	cfg := Config{
		Engine:           engine.Options{Name: "default", DataDir: dir, InitialCluster: "default=http://127.0.0.1:2380", NoSync: true},
		ListenClientURLs: []string{"http://127.0.0.1:0"},
		TickInterval:     10 * time.Millisecond,
	}
	for _, mod := range mods {
		mod(&cfg)
	}
	s := serveConfig(t, cfg)
	conn, err := grpc.NewClient(s.ClientAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return s, conn
}

// serveConfig starts a server on cfg; the end of the test stops it.
func serveConfig(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		s.Stop()
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func TestServePutGetRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "default.etckit")
	s, conn := startServer(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv := pb.NewKVClient(conn)
	pr, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("foo"), Value: []byte("bar")})
	if err != nil {
		t.Fatal(err)
	}
	if pr.Header.Revision != 2 || pr.Header.MemberId != s.ID() || pr.Header.ClusterId != s.ClusterID() {
		t.Fatalf("put header %v", pr.Header)
	}
	// Concurrent writers share WAL writes.
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("k%02d", i)), Value: []byte("v")}); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	rr, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	if err != nil || rr.Count != 50 || rr.Header.Revision != 52 {
		t.Fatalf("range %v %v", rr.GetHeader(), err)
	}
	_, err = kv.Put(ctx, &pb.PutRequest{})
	if status.Convert(err).Message() != rpctypes.ErrGRPCEmptyKey.Error() && err.Error() != rpctypes.ErrGRPCEmptyKey.Error() {
		t.Fatalf("empty key: %v", err)
	}
	_, err = kv.Range(ctx, &pb.RangeRequest{Key: []byte("foo"), Revision: 1000})
	if err == nil || !strings.Contains(err.Error(), "future revision") {
		t.Fatalf("future rev: %v", err)
	}
	resp, err := http.Get("http://" + s.ClientAddrs()[0] + "/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"health":"true"`) {
		t.Fatalf("/health: %s", body)
	}
	ml, err := pb.NewClusterClient(conn).MemberList(ctx, &pb.MemberListRequest{})
	if err != nil || len(ml.Members) != 1 || ml.Members[0].Name != "default" {
		t.Fatalf("members %v %v", ml, err)
	}
	s.Stop()
	conn.Close()

	s2, conn2 := startServer(t, dir)
	rr, err = pb.NewKVClient(conn2).Range(ctx, &pb.RangeRequest{Key: []byte("foo")})
	if err != nil || len(rr.Kvs) != 1 || string(rr.Kvs[0].Value) != "bar" || rr.Header.Revision != 52 {
		t.Fatalf("after restart: %v %v", rr, err)
	}
	_ = s2
}

// TestConcurrentWritesShareFsync: 64 writers × 20 puts with fsync on; the
// WAL is synced far fewer times than there are puts, because proposals that
// arrive while one Ready is persisted go out together in the next.
func TestConcurrentWritesShareFsync(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "batch.etckit")
	s, err := New(Config{
		Engine:           engine.Options{Name: "default", DataDir: dir, InitialCluster: "default=http://127.0.0.1:2380"},
		ListenClientURLs: []string{"http://127.0.0.1:0"},
		TickInterval:     10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(s.ClientAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kv := pb.NewKVClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("warmup")}); err != nil {
		t.Fatal(err)
	}
	before := histCount(s.metrics.walFsync)
	const writers, each = 64, 20
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("w%02d/%02d", w, i)), Value: []byte("v")}); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start)
	syncs := histCount(s.metrics.walFsync) - before
	t.Logf("%d puts by %d writers in %v (%.0f puts/s) with %d WAL fsyncs (%.1f puts per fsync)",
		writers*each, writers, el.Round(time.Millisecond), float64(writers*each)/el.Seconds(), syncs, float64(writers*each)/float64(syncs))
	if syncs == 0 || syncs >= writers*each {
		t.Fatalf("%d fsyncs for %d puts", syncs, writers*each)
	}
}

// TestLeaseExpiry: the leader revokes an expired lease and its keys.
func TestLeaseExpiry(t *testing.T) {
	_, conn := startServer(t, filepath.Join(t.TempDir(), "lease.etckit"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lc, kv := pb.NewLeaseClient(conn), pb.NewKVClient(conn)
	g, err := lc.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("ephemeral"), Value: []byte("v"), Lease: g.ID}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		rr, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("ephemeral")})
		if err != nil {
			t.Fatal(err)
		}
		if rr.Count == 0 {
			ttl, err := lc.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: g.ID})
			if err != nil || ttl.TTL != -1 {
				t.Fatalf("lease still there: %v %v", ttl, err)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("expired lease was never revoked")
}

func TestExistingStateNeedsWAL(t *testing.T) {
	_, err := New(Config{InitialClusterState: "existing",
		Engine: engine.Options{Name: "default", DataDir: filepath.Join(t.TempDir(), "x"), InitialCluster: "default=http://127.0.0.1:2380"}})
	if err == nil || !strings.Contains(err.Error(), "joining a running cluster") {
		t.Fatalf("err %v", err)
	}
}

// TestMetricsEveryCommit: /metrics carries etcd's metric names, and the
// backend commit histogram counts the batch commits of ordinary writes (not
// only snapshots).
func TestMetricsEveryCommit(t *testing.T) {
	s, conn := startServer(t, filepath.Join(t.TempDir(), "m.etckit"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv := pb.NewKVClient(conn)
	metrics := func() string {
		resp, err := http.Get("http://" + s.ClientAddrs()[0] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	before := histCount(s.metrics.backendCommit)
	commits := s.Engine().Store().Backend().Commits()
	for i := 0; i < 5; i++ {
		if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprint("k", i)), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	// The batch interval is 100 ms; wait (bounded) for a commit of the puts.
	for i := 0; i < 200 && histCount(s.metrics.backendCommit) == before; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if histCount(s.metrics.backendCommit) == before || s.Engine().Store().Backend().Commits() == commits {
		t.Fatalf("no backend commit observed after 5 puts")
	}
	m := metrics()
	for _, want := range []string{
		"etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"}",
		"etcd_disk_backend_commit_duration_seconds_count",
		"etcd_disk_backend_defrag_duration_seconds_count 0",
		"etcd_server_has_leader 1",
		"etcd_server_is_leader 1",
		"etcd_server_leader_changes_seen_total 1",
		"etcd_mvcc_db_total_size_in_bytes ",
		"etcd_mvcc_db_total_size_in_use_in_bytes ",
		"etcd_server_quota_backend_bytes 2.147483648e+09",
		"etcd_server_proposals_failed_total 0",
		"etcd_disk_defrag_inflight 0",
		"etcd_debugging_mvcc_current_revision 6",
		"etcd_debugging_mvcc_compact_revision 0",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(m, "etcd_disk_backend_commit_duration_seconds_count 0\n") {
		t.Errorf("commit histogram empty:\n%s", m)
	}
}

// TestProposalTimesOutWithoutLeader: a proposal made while no leader is
// known waits for one (as with raft.Node), and after the request timeout
// fails with etcd's "no leader" error; it is not proposed later.
func TestProposalTimesOutWithoutLeader(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "default.etckit")
	s, err := New(Config{
		Engine: engine.Options{Name: "default", DataDir: dir, InitialCluster: "default=http://127.0.0.1:2380", NoSync: true},
		// The election clock is fast-forwarded to one tick short of a
		// campaign, and the next tick is an hour away: no leader.
		TickInterval: time.Hour,
		reqTimeout:   200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	start := time.Now()
	_, err = s.propose(context.Background(), &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}})
	if err != rpctypes.ErrGRPCNoLeader {
		t.Fatalf("propose without a leader: %v, want %v", err, rpctypes.ErrGRPCNoLeader)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Fatalf("failed after %v, before the request timeout", waited)
	}
	if n := counterValue(s.metrics.proposalsFailed); n != 1 {
		t.Fatalf("proposals failed: %v, want 1", n)
	}
	s.waitMu.Lock()
	n := len(s.waits)
	s.waitMu.Unlock()
	if n != 0 {
		t.Fatalf("%d waiters left", n)
	}
}
