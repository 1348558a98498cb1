package interop

import (
	"bytes"
	"context"
	"encoding/binary"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/etckit/etckit/mvcc"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/lease/leasepb"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"
)

// TestMixedClusterLeaseCheckpoint: with the feature gates LeaseCheckpoint
// and LeaseCheckpointPersist on every member, an etckit leader (1 s
// checkpoint interval) checkpoints a 60 s lease; its leader is stopped and
// leadership goes to an etcd 3.7.3 member or to an etckit member. The new
// leader must start the lease from the checkpointed remaining TTL (etcd's
// Promote), a lease renewed after its checkpoint from the full TTL (the
// renewal's checkpoint of 0), and the etcd and etckit members must hold
// the same lease bucket bytes. Without the gates the new leader starts
// every lease from its full TTL, as etcd does.
func TestMixedClusterLeaseCheckpoint(t *testing.T) {
	for _, tc := range []struct {
		name      string
		gates     bool
		newLeader string
	}{
		{"checkpoint/new-leader-etcd", true, "etcd"},
		{"checkpoint/new-leader-etckit", true, "etckit"},
		{"no-checkpoint/new-leader-etcd", false, "etcd"},
		{"no-checkpoint/new-leader-etckit", false, "etckit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kinds := []string{"etckit", "etckit", "etcd"}
			c := startMixedCluster(&mixedCluster{t: t, token: "ckpt", leaseCheckpoint: tc.gates, checkpointInterval: time.Second}, kinds...)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			lead := c.leader(ctx)
			if lead.kind != "etckit" {
				lead = c.moveLeader(ctx, lead, c.members[0])
			}
			const ttl = 60
			var ids [2]int64
			for i := range ids {
				g, err := lead.m.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: ttl})
				if err != nil {
					t.Fatal(err)
				}
				ids[i] = g.ID
			}
			held, renewed := ids[0], ids[1]
			// Past a few checkpoints (etcd's lessor looks every 500 ms).
			time.Sleep(5 * time.Second)
			var checkpointed int64 // the leader's last checkpoint of held
			if tc.gates {
				l, ok := lead.etckit.Engine().Store().Lessor().Lookup(held)
				if !ok || l.RemainingTTL == 0 || l.RemainingTTL > ttl-2 {
					t.Fatalf("the etckit leader did not checkpoint lease %x: %+v", held, l)
				}
				checkpointed = l.RemainingTTL
			}
			// A renewal after a checkpoint clears it through raft.
			ka, err := lead.m.lease.LeaseKeepAlive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := ka.Send(&pb.LeaseKeepAliveRequest{ID: renewed}); err != nil {
				t.Fatal(err)
			}
			if r, err := ka.Recv(); err != nil || r.TTL != ttl {
				t.Fatalf("keep-alive: %v %v", r, err)
			}
			_ = ka.CloseSend()
			time.Sleep(200 * time.Millisecond) // the followers apply it

			c.stop(lead)
			next := c.leader(ctx)
			var want *mixedMember
			for _, mm := range c.running() {
				if mm.kind == tc.newLeader {
					want = mm
				}
			}
			if next != want {
				next = c.moveLeader(ctx, next, want)
			}
			t.Logf("leader %s stopped, %s leads", lead.name, next.name)
			for _, mm := range c.running() {
				for _, id := range ids {
					r, err := mm.m.lease.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: id})
					if err != nil || r.GrantedTTL != ttl {
						t.Fatalf("TimeToLive(%x) through %s: %v %v", id, mm.name, r, err)
					}
					t.Logf("TimeToLive(%x) through %s, %s leading: %d", id, mm.name, next.name, r.TTL)
					switch {
					case id == held && tc.gates && (r.TTL > checkpointed || r.TTL < ttl-20):
						// Promote: the last checkpoint (at most the one
						// read above) plus the election timeout, truncated.
						t.Errorf("lease %x: TTL %d on the new leader %s, want the checkpointed remaining TTL (at most %d)", id, r.TTL, next.name, checkpointed)
					case (id == renewed || !tc.gates) && r.TTL < ttl-3:
						t.Errorf("lease %x: TTL %d on the new leader %s, want the full %d", id, r.TTL, next.name, ttl)
					}
				}
			}
			// The lease bucket: etcd's bytes and etckit's agree, the
			// checkpointed remaining TTL in them with the gates (cluster
			// version 3.6), none without.
			for _, id := range ids {
				etcdRec, etckitRec := c.sameLeaseRecord(t, id)
				t.Logf("lease %x stored as %x on both kinds", id, etcdRec)
				rec, err := mvcc.UnmarshalLeaseRecord(etckitRec)
				if err != nil {
					t.Fatal(err)
				}
				switch {
				case id == held && tc.gates && (rec.RemainingTTL == 0 || rec.RemainingTTL > ttl-3):
					t.Errorf("lease %x stored %+v, want a checkpointed remaining TTL", id, rec)
				case id == held && !tc.gates && rec.RemainingTTL != 0:
					t.Errorf("lease %x stored %+v without checkpoints", id, rec)
				}
			}
		})
	}
}

// moveLeader hands leadership from lead to to (Maintenance.MoveLeader on
// the leader) and waits until every running member agrees.
func (c *mixedCluster) moveLeader(ctx context.Context, lead, to *mixedMember) *mixedMember {
	c.t.Helper()
	st, err := to.m.maint.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := lead.m.maint.MoveLeader(ctx, &pb.MoveLeaderRequest{TargetID: st.Header.MemberId}); err != nil {
		c.t.Fatalf("move leader %s -> %s: %v", lead.name, to.name, err)
	}
	for {
		if got := c.leader(ctx); got == to {
			return got
		}
		if ctx.Err() != nil {
			c.t.Fatalf("leadership did not move to %s", to.name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sameLeaseRecord waits until the running etcd member and every running
// etckit member store the same lease bucket value for id, and returns
// them (etcd's read with etcd's schema package).
func (c *mixedCluster) sameLeaseRecord(t *testing.T, id int64) (etcdRec, etckitRec []byte) {
	t.Helper()
	key := binary.BigEndian.AppendUint64(nil, uint64(id))
	deadline := time.Now().Add(10 * time.Second)
	for {
		var diff string
		etcdRec, etckitRec = nil, nil
		for _, mm := range c.running() {
			switch mm.kind {
			case "etcd":
				be := mm.etcd.Server.Backend()
				tx := be.ReadTx()
				tx.RLock()
				_, vs := tx.UnsafeRange(schema.Lease, key, nil, 0)
				if len(vs) == 1 {
					etcdRec = bytes.Clone(vs[0])
				}
				tx.RUnlock()
				if etcdRec == nil {
					diff = "etcd has no lease"
					continue
				}
			case "etckit":
				v := mm.etckit.Engine().Store().Backend().View()
				b, ok := v.Get([]byte(mvcc.BucketLease), key)
				b = bytes.Clone(b)
				v.Release()
				if !ok {
					diff = mm.name + " has no lease"
					continue
				}
				if etckitRec != nil && !bytes.Equal(b, etckitRec) {
					diff = "etckit members differ"
				}
				etckitRec = b
			}
		}
		if diff == "" && bytes.Equal(etcdRec, etckitRec) {
			var l leasepb.Lease
			if err := proto.Unmarshal(etckitRec, &l); err != nil {
				t.Fatalf("etcd cannot decode etckit's lease record %x: %v", etckitRec, err)
			}
			return etcdRec, etckitRec
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease %x: etcd stores %x, etckit %x (%s)", id, etcdRec, etckitRec, diff)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLeaseCheckpointScheduleVsEtcd: etcd 3.7.3's own lessor and etckit's,
// each with a 2 s interval and a checkpointer that records and applies
// (as the raft round trip does), given the same grants, promoted, and
// looked at every 500 ms as etcd's runLoop does: the same leases are
// checkpointed in the same batch sizes with the same remaining TTLs (to
// the second: the two clocks start a moment apart), and a renewal after a
// checkpoint records the same single checkpoint of 0.
func TestLeaseCheckpointScheduleVsEtcd(t *testing.T) {
	if raceEnabled {
		t.Skip("compares two lessors' timings; the race detector skews them")
	}
	const interval = 2 * time.Second
	type rec struct {
		mu      sync.Mutex
		batches [][]mvcc.LeaseCheckpoint
	}
	add := func(r *rec, cps []mvcc.LeaseCheckpoint) {
		r.mu.Lock()
		r.batches = append(r.batches, cps)
		r.mu.Unlock()
	}
	var er, kr rec

	lg := zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel))
	be := backend.NewDefaultBackend(lg, filepath.Join(t.TempDir(), "etcd.db"))
	defer be.Close()
	le := lease.NewLessor(lg, be, v36cluster{}, lease.LessorConfig{MinLeaseTTL: testMinLeaseTTL, CheckpointInterval: interval, CheckpointPersist: true})
	defer le.Stop()
	// The apply goroutines below may still be due when the test returns:
	// once closed is set (deferred to run before either store closes) they do nothing, so
	// none writes to a closed bbolt file (etcd's backend panics on that).
	var applyMu sync.Mutex
	closed := false
	apply := func(f func()) {
		go func() {
			applyMu.Lock()
			defer applyMu.Unlock()
			if !closed {
				f()
			}
		}()
	}
	le.SetCheckpointer(func(_ context.Context, req *pb.LeaseCheckpointRequest) error {
		var cps []mvcc.LeaseCheckpoint
		for _, c := range req.Checkpoints {
			cps = append(cps, mvcc.LeaseCheckpoint{ID: c.ID, RemainingTTL: c.Remaining_TTL})
		}
		add(&er, cps)
		apply(func() { // the apply side, as etcd's: after the proposal returns
			for _, c := range req.Checkpoints {
				_ = le.Checkpoint(lease.LeaseID(c.ID), c.Remaining_TTL)
			}
		})
		return nil
	})

	var ks *mvcc.Store
	ks, err := mvcc.Open(filepath.Join(t.TempDir(), "etckit.db"), mvcc.Options{MinLeaseTTL: testMinLeaseTTL, LeaseCheckpointInterval: interval,
		LeaseCheckpointer: func(_ context.Context, cps []mvcc.LeaseCheckpoint) error {
			add(&kr, slices.Clone(cps))
			apply(func() {
				for _, c := range cps {
					_ = ks.Lessor().Checkpoint(c.ID, c.RemainingTTL, true)
				}
			})
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	defer func() { applyMu.Lock(); closed = true; applyMu.Unlock() }()
	kl := ks.Lessor()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // the server's checkpointLoop
		defer close(done)
		tk := time.NewTicker(500 * time.Millisecond)
		defer tk.Stop()
		for {
			kl.CheckpointScheduled()
			select {
			case <-tk.C:
			case <-stop:
				return
			}
		}
	}()
	defer func() { close(stop); <-done }()

	var id int64 = 1
	grant := func(ttl int64) {
		if _, err := le.Grant(lease.LeaseID(id), ttl); err != nil {
			t.Fatal(err)
		}
		if _, err := kl.Grant(id, ttl); err != nil {
			t.Fatal(err)
		}
		id++
	}
	for _, ttl := range []int64{1, 2, 3, 4, 5, 10, 60, 3600, mvcc.MaxLeaseTTL} {
		grant(ttl)
	}
	for range 2100 {
		grant(100)
	}
	// Granted on followers, promoted at once: Promote schedules every
	// lease within a few milliseconds, so one look finds them all due.
	le.Promote(0)
	kl.Promote(0)
	time.Sleep(interval + 1200*time.Millisecond)

	snap := func(r *rec) [][]mvcc.LeaseCheckpoint {
		r.mu.Lock()
		defer r.mu.Unlock()
		out := slices.Clone(r.batches)
		r.batches = nil
		return out
	}
	eb, kb := snap(&er), snap(&kr)
	flat := func(b [][]mvcc.LeaseCheckpoint) (sizes []int, n int, m map[int64]int64) {
		m = map[int64]int64{}
		for _, x := range b {
			sizes = append(sizes, len(x))
			n += len(x)
			for _, c := range x {
				m[c.ID] = c.RemainingTTL
			}
		}
		return sizes, n, m
	}
	es, en, em := flat(eb)
	ksz, kn, km := flat(kb)
	t.Logf("etcd: batches %v (%d checkpoints of %d leases), etckit: batches %v (%d of %d)", es, en, len(em), ksz, kn, len(km))
	// Which of the 2100 equal leases Promote pushes later (and so which
	// are checkpointed twice, or not at all) follows map order in both,
	// and the edges of the windows fall within a few microseconds — more
	// on a loaded machine, where a 500 ms look can come late: the counts
	// must agree to 2% (30 of about 1470 checkpoints; seen apart by up to
	// 14 with four other builds running).
	near := func(a, b, d int) bool { return a-b <= d && b-a <= d }
	if len(es) != len(ksz) || es[0] != ksz[0] || !near(en, kn, 30) || !near(len(em), len(km), 30) || len(em) == 0 {
		t.Fatalf("batches: etcd %v, etckit %v", es, ksz)
	}
	for id := int64(1); id <= 9; id++ { // the leases of distinct TTLs: exactly the same
		e, eok := em[id]
		k, kok := km[id]
		if eok != kok || k < e-1 || k > e+1 {
			t.Errorf("lease %d: etcd checkpointed %d (%v), etckit %d (%v)", id, e, eok, k, kok)
		}
	}
	for id, e := range em {
		if k, ok := km[id]; ok && (k < e-1 || k > e+1) {
			t.Errorf("lease %d: etcd checkpointed %d, etckit %d", id, e, k)
		}
	}
	// The expiries Promote spread out: as many leases in each second.
	eh, kh := map[int64]int{}, map[int64]int{}
	for id := int64(10); id < 2110; id++ {
		eh[int64(le.Lookup(lease.LeaseID(id)).Remaining().Seconds())]++
		st, _ := kl.TimeToLive(id, false)
		kh[st.TTL]++
	}
	t.Logf("remaining seconds -> leases: etcd %v, etckit %v", eh, kh)
	for sec, n := range eh {
		if !near(n, kh[sec], 10) {
			t.Errorf("%d s remaining: etcd %d leases, etckit %d", sec, n, kh[sec])
		}
	}
	// Renew lease 7 (TTL 60, checkpointed): both record {7, 0}; renew a
	// lease granted now (not checkpointed yet): neither records anything.
	// (etcd's Renew of an expired lease waits for its revocation.)
	time.Sleep(100 * time.Millisecond) // the applies above
	fresh := id
	grant(50)
	for _, rid := range []int64{7, fresh} {
		ettl, eerr := le.Renew(lease.LeaseID(rid))
		kttl, kerr := kl.Renew(rid)
		if eerr != nil || kerr != nil || ettl != kttl {
			t.Fatalf("renew %d: etcd %d %v, etckit %d %v", rid, ettl, eerr, kttl, kerr)
		}
	}
	eb, kb = snap(&er), snap(&kr)
	want := [][]mvcc.LeaseCheckpoint{{{ID: 7, RemainingTTL: 0}}}
	if !slices.EqualFunc(eb, want, slices.Equal) || !slices.EqualFunc(kb, want, slices.Equal) {
		t.Fatalf("renewals recorded: etcd %v, etckit %v", eb, kb)
	}
}
