package server

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// freeAddr is a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// testCluster is n members of one cluster in this process, each with its
// own data dir, client and peer listeners on 127.0.0.1, talking etcd's
// peer protocol.
type testCluster struct {
	t       *testing.T
	names   []string
	dirs    []string
	peers   []string // peer URLs
	initial string
	mod     func(*Config)
	srv     []*Server
	conns   []*grpc.ClientConn
}

func newTestCluster(t *testing.T, n int, mod func(*Config)) *testCluster {
	c := &testCluster{t: t, mod: mod}
	var parts []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("m%d", i)
		c.names = append(c.names, name)
		c.dirs = append(c.dirs, filepath.Join(t.TempDir(), name))
		c.peers = append(c.peers, "http://"+freeAddr(t))
		parts = append(parts, name+"="+c.peers[i])
	}
	c.initial = strings.Join(parts, ",")
	c.srv = make([]*Server, n)
	c.conns = make([]*grpc.ClientConn, n)
	for i := 0; i < n; i++ {
		c.start(i)
	}
	t.Cleanup(func() {
		for i := range c.srv {
			c.stop(i)
		}
	})
	return c
}

func (c *testCluster) start(i int) {
	c.t.Helper()
	if err := c.tryStart(i); err != nil {
		c.t.Fatalf("start %s: %v", c.names[i], err)
	}
}

// tryStart starts member i, or says why it did not start.
func (c *testCluster) tryStart(i int) error {
	cfg := Config{
		Engine: engine.Options{Name: c.names[i], DataDir: c.dirs[i], InitialCluster: c.initial,
			InitialAdvertisePeerURLs: []string{c.peers[i]}, NoSync: true},
		ListenClientURLs: []string{"http://127.0.0.1:0"},
		ListenPeerURLs:   []string{c.peers[i]},
		TickInterval:     10 * time.Millisecond,
		ElectionTicks:    10,
	}
	if c.mod != nil {
		c.mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		return err
	}
	if err := s.Serve(); err != nil {
		s.Stop()
		return err
	}
	conn, err := grpc.NewClient(s.ClientAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.Stop()
		return err
	}
	c.srv[i], c.conns[i] = s, conn
	return nil
}

func (c *testCluster) stop(i int) {
	if c.srv[i] == nil {
		return
	}
	c.conns[i].Close()
	c.srv[i].Stop()
	c.srv[i], c.conns[i] = nil, nil
}

// leader waits for the running members to agree on a leader and returns
// its index.
func (c *testCluster) leader() int {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		lead, agree := uint64(0), true
		for _, s := range c.srv {
			if s == nil {
				continue
			}
			l := s.Leader()
			if l == 0 || (lead != 0 && l != lead) {
				agree = false
				break
			}
			lead = l
		}
		if agree && lead != 0 {
			for i, s := range c.srv {
				if s != nil && s.ID() == lead {
					return i
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatal("no leader agreed on in 20 s")
	return -1
}

func (c *testCluster) kv(i int) pb.KVClient { return pb.NewKVClient(c.conns[i]) }

// ready waits for every running member to serve a linearizable read.
func (c *testCluster) ready() {
	c.t.Helper()
	for i, s := range c.srv {
		if s == nil {
			continue
		}
		select {
		case <-s.Ready():
		case <-time.After(20 * time.Second):
			c.t.Fatalf("%s did not publish itself in 20 s", c.names[i])
		}
	}
}

// hashKVs is every running member's HashKV at rev.
func (c *testCluster) hashKVs(ctx context.Context, rev int64) map[string]uint32 {
	c.t.Helper()
	out := map[string]uint32{}
	for i, s := range c.srv {
		if s == nil {
			continue
		}
		// HashKV is local: a follower that has not applied rev yet
		// answers "future revision" for a moment.
		var r *pb.HashKVResponse
		var err error
		for try := 0; ; try++ {
			r, err = pb.NewMaintenanceClient(c.conns[i]).HashKV(ctx, &pb.HashKVRequest{Revision: rev})
			if err == nil || !strings.Contains(err.Error(), "future revision") || try == 200 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			c.t.Fatalf("%s: HashKV: %v", c.names[i], err)
		}
		out[c.names[i]] = r.Hash
	}
	return out
}

// waitListed waits until every running member lists n members: a new
// member started before a lagging peer applied its MemberAdd would read
// one member fewer from that peer's /members and refuse to join ("member
// count is unequal"), as etcd does.
func (c *testCluster) waitListed(ctx context.Context, n int) {
	c.t.Helper()
	for i, s := range c.srv {
		if s == nil {
			continue
		}
		for {
			ml, err := pb.NewClusterClient(c.conns[i]).MemberList(ctx, &pb.MemberListRequest{})
			if err == nil && len(ml.Members) == n {
				break
			}
			if ctx.Err() != nil {
				c.t.Fatalf("%s does not list %d members: %v %v", c.names[i], n, ml, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func sameHash(h map[string]uint32) bool {
	var first uint32
	n := 0
	for _, v := range h {
		if n == 0 {
			first = v
		} else if v != first {
			return false
		}
		n++
	}
	return true
}

// TestClusterThreeMembers: three members bootstrapped together elect a
// leader, take writes through every member (followers forward proposals),
// answer linearizable reads on followers, agree on HashKV, survive the
// leader stopping (a new leader, writes go on) and catch the old leader up
// when it comes back.
func TestClusterThreeMembers(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.ready()
	lead := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var rev int64
	for round := 0; round < 3; round++ {
		for i := range c.srv {
			for k := 0; k < 20; k++ {
				resp, err := c.kv(i).Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("k/%d/%s/%02d", round, c.names[i], k)), Value: []byte("v")})
				if err != nil {
					t.Fatalf("put through %s: %v", c.names[i], err)
				}
				rev = resp.Header.Revision
			}
		}
	}
	for i := range c.srv {
		rr, err := c.kv(i).Range(ctx, &pb.RangeRequest{Key: []byte("k/"), RangeEnd: []byte("k0")})
		if err != nil || rr.Count != 180 || rr.Header.Revision < rev {
			t.Fatalf("linearizable range on %s: %v %v", c.names[i], rr.GetHeader(), err)
		}
	}
	if h := c.hashKVs(ctx, rev); !sameHash(h) {
		t.Fatalf("HashKV at %d differs: %v", rev, h)
	}
	members, err := pb.NewClusterClient(c.conns[0]).MemberList(ctx, &pb.MemberListRequest{Linearizable: true})
	if err != nil || len(members.Members) != 3 {
		t.Fatalf("member list %v %v", members, err)
	}
	for _, m := range members.Members {
		if m.Name == "" || len(m.ClientURLs) != 1 || len(m.PeerURLs) != 1 {
			t.Fatalf("member %v not published", m)
		}
	}

	// The leader stops; the others elect a new one and go on.
	t.Logf("stopping the leader %s", c.names[lead])
	c.stop(lead)
	newLead := c.leader()
	if newLead == lead {
		t.Fatal("the stopped member is still leader")
	}
	follower := (newLead + 1) % 3
	if follower == lead {
		follower = (follower + 1) % 3
	}
	for k := 0; k < 50; k++ {
		resp, err := c.kv(follower).Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("after/%02d", k)), Value: []byte("w")})
		if err != nil {
			t.Fatalf("put through %s after the leader stopped: %v", c.names[follower], err)
		}
		rev = resp.Header.Revision
	}
	c.start(lead)
	c.ready()
	c.leader()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rr, err := c.kv(lead).Range(ctx, &pb.RangeRequest{Key: []byte("after/"), RangeEnd: []byte("after0"), Serializable: true})
		if err == nil && rr.Count == 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted member did not catch up: %v %v", rr.GetCount(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if h := c.hashKVs(ctx, rev); !sameHash(h) {
		t.Fatalf("HashKV at %d after the restart differs: %v", rev, h)
	}
	t.Logf("revision %d, HashKV equal on all three", rev)
}

// TestClusterStreamsOutliveIdle: the peer streams between members stay up
// through 7 idle seconds. A peer server reads with etcd's 5 s deadline, and
// its expiry must not end a stream (it did: every stream was cut after 5 s
// idle and the messages queued on it were dropped, so a proposal forwarded
// then timed out).
func TestClusterStreamsOutliveIdle(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.ready()
	c.leader()
	ids := func(i int) []uint64 {
		var out []uint64
		for j, s := range c.srv {
			if j != i {
				out = append(out, s.ID())
			}
		}
		return out
	}
	// Both streams of every pair attached.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := true
		for i, s := range c.srv {
			for _, id := range ids(i) {
				ok = ok && s.tr.StreamAttaches(id) >= 2
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("streams not attached in 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := map[[2]int]uint64{}
	for i, s := range c.srv {
		for j, id := range ids(i) {
			before[[2]int{i, j}] = s.tr.StreamAttaches(id)
		}
	}
	time.Sleep(7 * time.Second)
	for i, s := range c.srv {
		for j, id := range ids(i) {
			if n := s.tr.StreamAttaches(id); n != before[[2]int{i, j}] {
				t.Errorf("%s: peer %x dialled its streams %d times more during 7 idle seconds", c.names[i], id, n-before[[2]int{i, j}])
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range c.srv {
		if _, err := c.kv(i).Put(ctx, &pb.PutRequest{Key: []byte("after-idle"), Value: []byte(c.names[i])}); err != nil {
			t.Fatalf("put through %s after the idle time: %v", c.names[i], err)
		}
	}
}
