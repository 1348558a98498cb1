package server

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	epb "go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	lpb "go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
)

// TestLockElectionAcrossMembers: a lock held through one member blocks a
// waiter on another until it is unlocked there, and an observer on a third
// member sees each leader of an election campaigned for on the others.
func TestLockElectionAcrossMembers(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.ready()
	c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i, id := range []int64{0xa, 0xb} {
		if _, err := pb.NewLeaseClient(c.conns[i]).LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: 600}); err != nil {
			t.Fatal(err)
		}
	}
	l0, l1 := lpb.NewLockClient(c.conns[0]), lpb.NewLockClient(c.conns[1])
	held, err := l0.Lock(ctx, &lpb.LockRequest{Name: []byte("job"), Lease: 0xa})
	if err != nil || string(held.Key) != "job/a" {
		t.Fatalf("lock: %v %v", held, err)
	}
	got := make(chan *lpb.LockResponse, 1)
	go func() {
		r, err := l1.Lock(ctx, &lpb.LockRequest{Name: []byte("job"), Lease: 0xb})
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	select {
	case r := <-got:
		t.Fatalf("the second lock was granted while the first was held: %v", r)
	case <-time.After(500 * time.Millisecond):
	}
	u, err := l0.Unlock(ctx, &lpb.UnlockRequest{Key: held.Key})
	if err != nil {
		t.Fatal(err)
	}
	if r := <-got; r == nil || string(r.Key) != "job/b" || r.Header.Revision < u.Header.Revision {
		t.Fatalf("waiter: %v (unlocked at %d)", r, u.Header.Revision)
	}

	obs, err := epb.NewElectionClient(c.conns[2]).Observe(ctx, &epb.LeaderRequest{Name: []byte("e")})
	if err != nil {
		t.Fatal(err)
	}
	e0, e1 := epb.NewElectionClient(c.conns[0]), epb.NewElectionClient(c.conns[1])
	first, err := e0.Campaign(ctx, &epb.CampaignRequest{Name: []byte("e"), Lease: 0xa, Value: []byte("zero")})
	if err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() {
		_, err := e1.Campaign(ctx, &epb.CampaignRequest{Name: []byte("e"), Lease: 0xb, Value: []byte("one")})
		second <- err
	}()
	if o, err := obs.Recv(); err != nil || string(o.Kv.Value) != "zero" {
		t.Fatalf("observed %v %v", o, err)
	}
	if _, err := e0.Resign(ctx, &epb.ResignRequest{Leader: first.Leader}); err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if o, err := obs.Recv(); err != nil || string(o.Kv.Value) != "one" {
		t.Fatalf("observed after resign %v %v", o, err)
	}
	if l, err := e0.Leader(ctx, &epb.LeaderRequest{Name: []byte("e")}); err != nil || string(l.Kv.Key) != "e/b" {
		t.Fatalf("leader: %v %v", l, err)
	}
}
