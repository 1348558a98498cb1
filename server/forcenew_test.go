package server

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestForceNewClusterRecovery is the disaster recovery etcd's
// --force-new-cluster is for: a three-member cluster takes writes, all
// three stop (the quorum is lost for good), one follower restarts with
// ForceNewCluster and becomes the leader of a one-member cluster with the
// same cluster ID and every key (HashKV as before); MemberList names it
// alone, the two others are removed for good, writes go on, a restart
// without the flag keeps it so; then a new member joins through MemberAdd
// and --initial-cluster-state=existing and catches up.
func TestForceNewClusterRecovery(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.ready()
	lead := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var rev int64
	for i := range c.srv {
		for k := 0; k < 10; k++ {
			resp, err := c.kv(i).Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("k/%s/%02d", c.names[i], k)), Value: []byte("v")})
			if err != nil {
				t.Fatalf("put through %s: %v", c.names[i], err)
			}
			rev = resp.Header.Revision
		}
	}
	hashes := c.hashKVs(ctx, rev)
	if !sameHash(hashes) {
		t.Fatalf("HashKV differs: %v", hashes)
	}
	clusterID := c.srv[0].ClusterID()
	var oldIDs []uint64
	for _, s := range c.srv {
		oldIDs = append(oldIDs, s.ID())
	}
	for i := range c.srv {
		c.stop(i)
	}

	// A follower is forced into a new cluster.
	f := (lead + 1) % 3
	c.mod = func(cfg *Config) { cfg.ForceNewCluster = true }
	c.start(f)
	c.mod = nil
	s := c.srv[f]
	fr := s.Engine().ForceNew()
	if fr == nil || len(fr.Members) != 3 || len(fr.Appended) != 2 {
		t.Fatalf("force-new: %+v", fr)
	}
	t.Logf("%s forced: WAL commit %d, commit %d, %d entries dropped, %d conf changes appended", c.names[f], fr.WALCommit, fr.Commit, fr.Discarded, len(fr.Appended))
	waitAlone := func() {
		t.Helper()
		c.ready()
		if got := c.leader(); got != f {
			t.Fatalf("leader %s, want %s", c.names[got], c.names[f])
		}
	}
	waitAlone()
	check := func(when string, wantKeys int64) {
		t.Helper()
		if s.ClusterID() != clusterID {
			t.Fatalf("%s: cluster ID %x, was %x", when, s.ClusterID(), clusterID)
		}
		rr, err := c.kv(f).Range(ctx, &pb.RangeRequest{Key: []byte("k/"), RangeEnd: []byte("k0")})
		if err != nil || rr.Count != wantKeys {
			t.Fatalf("%s: range: %v keys, %v; want %d", when, rr.GetCount(), err, wantKeys)
		}
		h, err := pb.NewMaintenanceClient(c.conns[f]).HashKV(ctx, &pb.HashKVRequest{Revision: rev})
		if err != nil || h.Hash != hashes[c.names[f]] {
			t.Fatalf("%s: HashKV at %d: %v %v, was %d", when, rev, h.GetHash(), err, hashes[c.names[f]])
		}
		ml, err := pb.NewClusterClient(c.conns[f]).MemberList(ctx, &pb.MemberListRequest{Linearizable: true})
		if err != nil || len(ml.Members) != 1 || ml.Members[0].ID != s.ID() || ml.Members[0].Name != c.names[f] || len(ml.Members[0].ClientURLs) != 1 {
			t.Fatalf("%s: member list %v %v", when, ml, err)
		}
		for _, id := range oldIDs {
			if id != s.ID() && !s.Engine().IsRemoved(id) {
				t.Fatalf("%s: %x is not in members_removed", when, id)
			}
		}
	}
	check("forced", 30)
	for k := 0; k < 5; k++ {
		resp, err := c.kv(f).Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("k/after/%d", k)), Value: []byte("alone")})
		if err != nil {
			t.Fatalf("put after the force: %v", err)
		}
		if resp.Header.Revision != rev+int64(k)+1 {
			t.Fatalf("put after the force at revision %d, want %d", resp.Header.Revision, rev+int64(k)+1)
		}
	}

	// Restarted without the flag it is still alone.
	c.stop(f)
	c.start(f)
	s = c.srv[f]
	if s.Engine().ForceNew() != nil {
		t.Fatal("force-new without the flag")
	}
	waitAlone()
	check("restarted", 35)

	// A new member joins the one-member cluster.
	joinPeer := "http://" + freeAddr(t)
	var add *pb.MemberAddResponse
	for {
		var err error
		add, err = pb.NewClusterClient(c.conns[f]).MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{joinPeer}})
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "unhealthy cluster") || ctx.Err() != nil {
			t.Fatalf("MemberAdd: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(add.Members) != 2 {
		t.Fatalf("MemberAdd: members %v", add.Members)
	}
	js, err := New(Config{
		Engine: engine.Options{Name: "m3", DataDir: filepath.Join(t.TempDir(), "m3"), InitialCluster: c.names[f] + "=" + c.peers[f] + ",m3=" + joinPeer,
			InitialAdvertisePeerURLs: []string{joinPeer}, NoSync: true},
		InitialClusterState: "existing",
		ListenClientURLs:    []string{"http://127.0.0.1:0"},
		ListenPeerURLs:      []string{joinPeer},
		TickInterval:        10 * time.Millisecond,
		ElectionTicks:       10,
	})
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	t.Cleanup(js.Stop)
	if err := js.Serve(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-js.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("the joining member did not publish itself in 30 s")
	}
	if js.ID() != add.Member.ID || js.ClusterID() != clusterID {
		t.Fatalf("joined as %x of cluster %x, want %x of %x", js.ID(), js.ClusterID(), add.Member.ID, clusterID)
	}
	conn, err := grpc.NewClient(js.ClientAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rr, err := pb.NewKVClient(conn).Range(ctx, &pb.RangeRequest{Key: []byte("k/"), RangeEnd: []byte("k0")})
	if err != nil || rr.Count != 35 {
		t.Fatalf("linearizable range on the new member: %v %v", rr.GetCount(), err)
	}
	h1, err1 := pb.NewMaintenanceClient(conn).HashKV(ctx, &pb.HashKVRequest{Revision: rev + 5})
	h2, err2 := pb.NewMaintenanceClient(c.conns[f]).HashKV(ctx, &pb.HashKVRequest{Revision: rev + 5})
	if err1 != nil || err2 != nil || h1.Hash != h2.Hash {
		t.Fatalf("HashKV at %d: new member %v %v, recovered member %v %v", rev+5, h1.GetHash(), err1, h2.GetHash(), err2)
	}
	ml, err := pb.NewClusterClient(conn).MemberList(ctx, &pb.MemberListRequest{Linearizable: true})
	if err != nil || len(ml.Members) != 2 {
		t.Fatalf("member list after the join: %v %v", ml, err)
	}
	if _, err := pb.NewKVClient(conn).Put(ctx, &pb.PutRequest{Key: []byte("k/joined"), Value: []byte("two")}); err != nil {
		t.Fatalf("put through the new member: %v", err)
	}
	t.Logf("revision %d before the stop; one member after the force; %s joined as %x, HashKV %d on both", rev, "m3", js.ID(), h1.Hash)
}

// TestCommandForceNewCluster: etcd's flag name, default and usage text
// (embed.Config's; etcd's --help page words it "one-member"), also read
// from ETCD_FORCE_NEW_CLUSTER, reaching the engine.
func TestCommandForceNewCluster(t *testing.T) {
	c, f := newCommand()
	fl := c.Flags().Lookup("force-new-cluster")
	if fl == nil || fl.DefValue != "false" || fl.Usage != "Force to create a new one member cluster." {
		t.Fatalf("flag %+v", fl)
	}
	if err := setFlagsFromEnv(c.Flags(), []string{"ETCD_FORCE_NEW_CLUSTER=true"}, discardLogger); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.config(c)
	if err != nil {
		t.Fatal(err)
	}
	cfg.setDefaults()
	if !cfg.ForceNewCluster || !cfg.Engine.ForceNewCluster {
		t.Fatalf("ETCD_FORCE_NEW_CLUSTER=true: config %v, engine %v", cfg.ForceNewCluster, cfg.Engine.ForceNewCluster)
	}
	c, f = newCommand()
	if cfg, err = f.config(c); err != nil || cfg.ForceNewCluster {
		t.Fatalf("default: %v %v", cfg.ForceNewCluster, err)
	}
}
