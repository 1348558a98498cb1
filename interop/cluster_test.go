package interop

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/server"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/pkg/v3/featuregate"
	"go.etcd.io/etcd/server/v3/embed"
)

// mixedMember is one member of a mixed cluster: etcd 3.7.3 (embed) or
// etckit, on 127.0.0.1.
type mixedMember struct {
	kind       string // "etcd" or "etckit"
	name, dir  string
	peerURL    string
	clientAddr string
	etcd       *embed.Etcd
	etckit     *server.Server
	m          *member
	// forceNew starts the member with --force-new-cluster.
	forceNew bool
}

type mixedCluster struct {
	t       testing.TB
	members []*mixedMember
	initial string
	token   string
	// snapshotCount and catchUp, when set, are every member's
	// --snapshot-count and --snapshot-catchup-entries.
	snapshotCount, catchUp uint64
	// production: fsync on and etcd's default timings (100 ms heartbeat,
	// 1 s election), for benchmarks; otherwise no fsync and 50 ms ticks.
	production bool
	// peerTLS, when set, puts every member on https peer URLs with this
	// certificate and CA, client certificates required (tls_test.go).
	peerTLS *tlsFiles
	// leaseCheckpoint turns on the feature gates LeaseCheckpoint and
	// LeaseCheckpointPersist on every member; checkpointInterval is the
	// etckit members' interval (etcd's embed has no setting for it: 5 min).
	leaseCheckpoint    bool
	checkpointInterval time.Duration
}

// peerScheme is the scheme of the members' peer URLs.
func (c *mixedCluster) peerScheme() string {
	if c.peerTLS != nil {
		return "https"
	}
	return "http"
}

// newMixedCluster bootstraps one cluster of the given kinds ("etcd",
// "etckit"), all started at once as an operator would.
func newMixedCluster(t testing.TB, kinds ...string) *mixedCluster {
	return newMixedClusterWith(t, 0, 0, kinds...)
}

func newMixedClusterWith(t testing.TB, snapshotCount, catchUp uint64, kinds ...string) *mixedCluster {
	return startMixedCluster(&mixedCluster{t: t, token: "mixed-" + strings.Join(kinds, "-"), snapshotCount: snapshotCount, catchUp: catchUp}, kinds...)
}

// startMixedCluster starts c's members, all at once.
func startMixedCluster(c *mixedCluster, kinds ...string) *mixedCluster {
	t := c.t
	var parts []string
	for i, k := range kinds {
		mm := &mixedMember{kind: k, name: fmt.Sprintf("%s-%d", k, i), dir: filepath.Join(t.TempDir(), fmt.Sprintf("m%d", i)),
			peerURL: c.peerScheme() + "://" + freeAddr(t), clientAddr: freeAddr(t)}
		c.members = append(c.members, mm)
		parts = append(parts, mm.name+"="+mm.peerURL)
	}
	c.initial = strings.Join(parts, ",")
	errc := make(chan error, len(kinds))
	for _, mm := range c.members {
		go func() { errc <- c.start(mm, "new") }()
	}
	for range kinds {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	for _, mm := range c.members {
		c.dial(mm)
	}
	t.Cleanup(func() {
		for _, mm := range c.members {
			c.stop(mm)
		}
	})
	return c
}

func (c *mixedCluster) start(mm *mixedMember, state string) error {
	switch mm.kind {
	case "etcd":
		cfg := embed.NewConfig()
		cfg.Name, cfg.Dir = mm.name, mm.dir
		cfg.LogLevel = "error"
		cfg.UnsafeNoFsync = !c.production
		pu, _ := url.Parse(mm.peerURL)
		cu, _ := url.Parse("http://" + mm.clientAddr)
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
		cfg.InitialCluster, cfg.InitialClusterToken, cfg.ClusterState = c.initial, c.token, state
		if !c.production {
			cfg.TickMs, cfg.ElectionMs = 50, 500
		}
		if c.snapshotCount != 0 {
			cfg.SnapshotCount, cfg.SnapshotCatchUpEntries = c.snapshotCount, c.catchUp
		}
		cfg.ListenMetricsUrls = nil
		cfg.ForceNewCluster = mm.forceNew
		if c.leaseCheckpoint {
			if err := cfg.ServerFeatureGate.(featuregate.MutableFeatureGate).Set("LeaseCheckpoint=true,LeaseCheckpointPersist=true"); err != nil {
				return err
			}
		}
		if f := c.peerTLS; f != nil {
			cfg.PeerTLSInfo = transport.TLSInfo{CertFile: f.cert, KeyFile: f.key, TrustedCAFile: f.ca, ClientCertAuth: true}
		}
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			return fmt.Errorf("%s: %w", mm.name, err)
		}
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(60 * time.Second):
			e.Close()
			return fmt.Errorf("%s: not ready in 60 s", mm.name)
		}
		mm.etcd = e
	case "etckit":
		tick := 50 * time.Millisecond
		if c.production {
			tick = 100 * time.Millisecond
		}
		var peerTLS server.TLSInfo
		if f := c.peerTLS; f != nil {
			peerTLS = server.TLSInfo{CertFile: f.cert, KeyFile: f.key, TrustedCAFile: f.ca, ClientCertAuth: true}
		}
		s, err := server.New(server.Config{
			PeerTLS: peerTLS,
			Engine: engine.Options{Name: mm.name, DataDir: mm.dir, InitialCluster: c.initial, InitialClusterToken: c.token,
				InitialAdvertisePeerURLs: []string{mm.peerURL}, NoSync: !c.production, SnapshotCount: c.snapshotCount, CatchUpEntries: c.catchUp},
			InitialClusterState: state,
			ForceNewCluster:     mm.forceNew,
			ListenClientURLs:    []string{"http://" + mm.clientAddr},
			ListenPeerURLs:      []string{mm.peerURL},
			TickInterval:        tick,
			ElectionTicks:       10,

			LeaseCheckpoint:         c.leaseCheckpoint,
			LeaseCheckpointPersist:  c.leaseCheckpoint,
			LeaseCheckpointInterval: c.checkpointInterval,
		})
		if err != nil {
			return fmt.Errorf("%s: %w", mm.name, err)
		}
		if err := s.Serve(); err != nil {
			s.Stop()
			return fmt.Errorf("%s: %w", mm.name, err)
		}
		select {
		case <-s.Ready():
		case <-time.After(60 * time.Second):
			s.Stop()
			return fmt.Errorf("%s: not ready in 60 s", mm.name)
		}
		mm.etckit = s
	}
	return nil
}

func (c *mixedCluster) dial(mm *mixedMember) {
	stop := func() {}
	mm.m = dial(c.t, mm.name, mm.clientAddr, stop)
	// Serializable: a learner refuses linearizable reads.
	var err error
	for i := 0; i < 300; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = mm.m.kv.Range(ctx, &pb.RangeRequest{Key: []byte("\x00"), Serializable: true})
		cancel()
		if err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("%s not ready: %v", mm.name, err)
}

func (c *mixedCluster) stop(mm *mixedMember) {
	if mm.m != nil {
		mm.m.stop()
		mm.m = nil
	}
	if mm.etcd != nil {
		mm.etcd.Close()
		mm.etcd = nil
	}
	if mm.etckit != nil {
		mm.etckit.Stop()
		mm.etckit = nil
	}
}

func (c *mixedCluster) running() []*mixedMember {
	var out []*mixedMember
	for _, mm := range c.members {
		if mm.m != nil {
			out = append(out, mm)
		}
	}
	return out
}

// leader waits until every running member names the same leader.
func (c *mixedCluster) leader(ctx context.Context) *mixedMember {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var lead uint64
		agree := true
		byID := map[uint64]*mixedMember{}
		for _, mm := range c.running() {
			st, err := mm.m.maint.Status(ctx, &pb.StatusRequest{})
			if err != nil || st.Leader == 0 || (lead != 0 && st.Leader != lead) {
				agree = false
				break
			}
			lead = st.Leader
			byID[st.Header.MemberId] = mm
		}
		if agree && byID[lead] != nil {
			return byID[lead]
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatal("the members did not agree on a leader in 30 s")
	return nil
}

// sameHashKV waits until HashKV at rev is the same on every running member.
func (c *mixedCluster) sameHashKV(ctx context.Context, rev int64) uint32 {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got map[string]uint32
	for time.Now().Before(deadline) {
		got = map[string]uint32{}
		var first uint32
		same := true
		for i, mm := range c.running() {
			r, err := mm.m.maint.HashKV(ctx, &pb.HashKVRequest{Revision: rev})
			if err != nil {
				same = false
				break
			}
			got[mm.name] = r.Hash
			if i == 0 {
				first = r.Hash
			} else if r.Hash != first {
				same = false
			}
		}
		if same {
			return first
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("HashKV at revision %d differs: %v", rev, got)
	return 0
}

// TestMixedClusterBootstrap: etcd 3.7.3 and etckit members bootstrapped
// together as one cluster (two of one, one of the other, both ways). Writes
// and linearizable reads through every member, a lease kept alive through
// each member and revoked, MemberList on each naming all three with their
// client URLs, HashKV equal on all; then the leader stops, the other two
// go on, and the old leader comes back and catches up.
func TestMixedClusterBootstrap(t *testing.T) {
	for _, kinds := range [][]string{{"etcd", "etcd", "etckit"}, {"etckit", "etckit", "etcd"}} {
		t.Run(strings.Join(kinds, "+"), func(t *testing.T) {
			c := newMixedCluster(t, kinds...)
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			lead := c.leader(ctx)
			t.Logf("leader: %s", lead.name)
			var rev int64
			for round := 0; round < 3; round++ {
				for _, mm := range c.members {
					for k := 0; k < 10; k++ {
						resp, err := mm.m.kv.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("k/%d/%s/%02d", round, mm.name, k)), Value: []byte(mm.kind)})
						if err != nil {
							t.Fatalf("put through %s: %v", mm.name, err)
						}
						rev = max(rev, resp.Header.Revision)
					}
					txn, err := mm.m.kv.Txn(ctx, &pb.TxnRequest{
						Compare: []*pb.Compare{{Key: []byte("k/0/" + mm.name + "/00"), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Version{Version: 1}}},
						Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("k/0/" + mm.name + "/01")}}}}})
					if err != nil {
						t.Fatalf("txn through %s: %v", mm.name, err)
					}
					rev = max(rev, txn.Header.Revision)
				}
			}
			for _, mm := range c.members {
				rr, err := mm.m.kv.Range(ctx, &pb.RangeRequest{Key: []byte("k/"), RangeEnd: []byte("k0"), CountOnly: true})
				if err != nil || rr.Count != 87 || rr.Header.Revision < rev {
					t.Fatalf("linearizable range on %s: count %d at %d (want 87 at >= %d): %v", mm.name, rr.GetCount(), rr.GetHeader().GetRevision(), rev, err)
				}
				ml, err := mm.m.cluster.MemberList(ctx, &pb.MemberListRequest{Linearizable: true})
				if err != nil || len(ml.Members) != 3 {
					t.Fatalf("member list on %s: %v %v", mm.name, ml, err)
				}
				for _, x := range ml.Members {
					if x.Name == "" || len(x.ClientURLs) != 1 {
						t.Fatalf("member list on %s: %v not published", mm.name, x)
					}
				}
			}
			// A lease granted through one member, kept alive through each.
			g, err := c.members[0].m.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 5})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.members[1].m.kv.Put(ctx, &pb.PutRequest{Key: []byte("leased"), Value: []byte("x"), Lease: g.ID}); err != nil {
				t.Fatal(err)
			}
			for _, mm := range c.members {
				ka, err := mm.m.lease.LeaseKeepAlive(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := ka.Send(&pb.LeaseKeepAliveRequest{ID: g.ID}); err != nil {
					t.Fatal(err)
				}
				r, err := ka.Recv()
				if err != nil || r.TTL != 5 || r.ID != g.ID {
					t.Fatalf("keep-alive through %s: %v %v", mm.name, r, err)
				}
				ka.CloseSend()
				ttl, err := mm.m.lease.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: g.ID, Keys: true})
				if err != nil || ttl.GrantedTTL != 5 || ttl.TTL < 3 || ttl.TTL > 5 || len(ttl.Keys) != 1 {
					t.Fatalf("TimeToLive through %s: %v %v", mm.name, ttl, err)
				}
			}
			rv, err := c.members[2].m.lease.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: g.ID})
			if err != nil {
				t.Fatal(err)
			}
			rev = rv.Header.Revision
			h := c.sameHashKV(ctx, rev)
			t.Logf("revision %d: HashKV %d on all three", rev, h)

			// The leader stops; the other two elect one and go on.
			c.stop(lead)
			newLead := c.leader(ctx)
			t.Logf("leader %s stopped; new leader %s", lead.name, newLead.name)
			for _, mm := range c.running() {
				for k := 0; k < 10; k++ {
					resp, err := mm.m.kv.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("after/%s/%02d", mm.name, k)), Value: []byte("y")})
					if err != nil {
						t.Fatalf("put through %s with the leader down: %v", mm.name, err)
					}
					rev = max(rev, resp.Header.Revision)
				}
			}
			if err := c.start(lead, "new"); err != nil {
				t.Fatal(err)
			}
			c.dial(lead)
			c.leader(ctx)
			h = c.sameHashKV(ctx, rev)
			rr, err := lead.m.kv.Range(ctx, &pb.RangeRequest{Key: []byte("after/"), RangeEnd: []byte("after0"), CountOnly: true})
			if err != nil || rr.Count != 20 {
				t.Fatalf("restarted %s: %v %v", lead.name, rr.GetCount(), err)
			}
			t.Logf("%s restarted and caught up: revision %d, HashKV %d on all three", lead.name, rev, h)
		})
	}
}

// TestMixedClusterSnapshotCatchUp: a member of the other kind is stopped,
// the other two write far past their raft logs (--snapshot-count 100,
// --snapshot-catchup-entries 50), and when it comes back the leader sends
// it a db snapshot: etcd's leader to an etckit follower, and etckit's
// leader to an etcd follower. It must catch up to the same HashKV and
// keep taking writes, and its data dir must reopen.
func TestMixedClusterSnapshotCatchUp(t *testing.T) {
	for _, kinds := range [][]string{{"etcd", "etcd", "etckit"}, {"etckit", "etckit", "etcd"}} {
		t.Run(strings.Join(kinds, "+")+"/lagging-"+kinds[2], func(t *testing.T) {
			c := newMixedClusterWith(t, 100, 50, kinds...)
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			c.leader(ctx)
			lag := c.members[2]
			c.stop(lag)
			lead := c.leader(ctx)
			var rev int64
			for k := 0; k < 1000; k++ {
				mm := c.members[k%2]
				resp, err := mm.m.kv.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("lag/%04d", k%300)), Value: []byte(fmt.Sprintf("v%d", k))})
				if err != nil {
					t.Fatalf("put through %s: %v", mm.name, err)
				}
				rev = max(rev, resp.Header.Revision)
			}
			t.Logf("%s down; %d puts through the leader %s and the other member", lag.name, 1000, lead.name)
			if err := c.start(lag, "new"); err != nil {
				t.Fatal(err)
			}
			c.dial(lag)
			h := c.sameHashKV(ctx, rev)
			if lag.etckit != nil && lag.etckit.SnapshotsReceived() == 0 {
				t.Fatalf("%s caught up without a snapshot", lag.name)
			}
			if lead.etckit != nil {
				if m := httpGet(t, "http://"+lead.clientAddr+"/metrics"); !strings.Contains(m, "etcd_network_snapshot_send_success{To=") {
					t.Fatalf("%s sent no snapshot", lead.name)
				}
			}
			rr, err := lag.m.kv.Range(ctx, &pb.RangeRequest{Key: []byte("lag/"), RangeEnd: []byte("lag0"), Serializable: true})
			if err != nil || rr.Count != 300 {
				t.Fatalf("caught-up %s: %d keys, %v", lag.name, rr.GetCount(), err)
			}
			for k := 0; k < 20; k++ {
				resp, err := lag.m.kv.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("post/%02d", k)), Value: []byte("z")})
				if err != nil {
					t.Fatalf("put through caught-up %s: %v", lag.name, err)
				}
				rev = resp.Header.Revision
			}
			c.sameHashKV(ctx, rev)
			// Its data dir reopens (the snapshot's .snap, WAL record and db).
			c.stop(lag)
			if err := c.start(lag, "new"); err != nil {
				t.Fatal(err)
			}
			c.dial(lag)
			h = c.sameHashKV(ctx, rev)
			t.Logf("%s caught up by snapshot and restarted: revision %d, HashKV %d on all three", lag.name, rev, h)
		})
	}
}

func httpGet(t testing.TB, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// add asks a running member to add a member of kind (as a learner if
// asked), then starts it with --initial-cluster-state=existing and an
// --initial-cluster of every member, as an operator does.
func (c *mixedCluster) add(kind string, learner bool) *mixedMember {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mm := &mixedMember{kind: kind, name: fmt.Sprintf("%s-%d", kind, len(c.members)), dir: filepath.Join(c.t.TempDir(), fmt.Sprintf("m%d", len(c.members))),
		peerURL: c.peerScheme() + "://" + freeAddr(c.t), clientAddr: freeAddr(c.t)}
	via := c.running()[0]
	var resp *pb.MemberAddResponse
	if err := retryUnhealthy(ctx, func() (err error) {
		resp, err = via.m.cluster.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{mm.peerURL}, IsLearner: learner})
		return err
	}); err != nil {
		c.t.Fatalf("MemberAdd %s through %s: %v", mm.name, via.name, err)
	}
	// MemberAdd answers once the member it went through applied the
	// change; a peer the new member asks for /members may lag behind and
	// list one member fewer, which etcd and etckit both refuse ("member
	// count is unequal"). Start it once every member lists it, as an
	// operator would see in etcdctl member list.
	for _, o := range c.running() {
		for {
			ml, err := o.m.cluster.MemberList(ctx, &pb.MemberListRequest{})
			if err != nil {
				c.t.Fatalf("MemberList through %s: %v", o.name, err)
			}
			if slices.ContainsFunc(ml.Members, func(m *pb.Member) bool { return m.ID == resp.Member.ID }) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	var parts []string
	for _, m := range resp.Members {
		name := m.Name
		if m.ID == resp.Member.ID {
			name = mm.name
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, name+"="+u)
		}
	}
	c.initial = strings.Join(parts, ",")
	c.members = append(c.members, mm)
	if err := c.start(mm, "existing"); err != nil {
		c.t.Fatal(err)
	}
	c.dial(mm)
	return mm
}

// retryUnhealthy calls fn until it succeeds or fails otherwise than with
// "unhealthy cluster": etcd and etckit both refuse member changes until the
// peers have been connected for etcd's HealthInterval (5 s), the strict
// reconfiguration check.
func retryUnhealthy(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if err == nil || !strings.Contains(err.Error(), "unhealthy cluster") || ctx.Err() != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// remove removes mm through another member and stops it.
func (c *mixedCluster) remove(mm *mixedMember) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := mm.m.maint.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		c.t.Fatal(err)
	}
	var via *mixedMember
	for _, o := range c.running() {
		if o != mm {
			via = o
			break
		}
	}
	if err := retryUnhealthy(ctx, func() error {
		_, err := via.m.cluster.MemberRemove(ctx, &pb.MemberRemoveRequest{ID: st.Header.MemberId})
		return err
	}); err != nil {
		c.t.Fatalf("MemberRemove %s through %s: %v", mm.name, via.name, err)
	}
	c.stop(mm)
}

// promote promotes the learner mm through another member, retrying while
// it is not yet in sync (etcd's readiness rule).
func (c *mixedCluster) promote(mm *mixedMember) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := mm.m.maint.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		c.t.Fatal(err)
	}
	for _, via := range c.running() {
		if via == mm {
			continue
		}
		for {
			_, err := via.m.cluster.MemberPromote(ctx, &pb.MemberPromoteRequest{ID: st.Header.MemberId})
			if err == nil {
				return
			}
			if !strings.Contains(err.Error(), "in sync with leader") || ctx.Err() != nil {
				c.t.Fatalf("MemberPromote %s through %s: %v", mm.name, via.name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// checkLearner: a learner refuses writes and linearizable reads with
// etcd's error, and answers serializable reads.
func (c *mixedCluster) checkLearner(mm *mixedMember) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := mm.m.kv.Put(ctx, &pb.PutRequest{Key: []byte("learner"), Value: []byte("x")})
	if err == nil || !strings.Contains(err.Error(), "etcdserver: rpc not supported for learner") {
		c.t.Fatalf("put through the learner %s: %v", mm.name, err)
	}
	_, err = mm.m.kv.Range(ctx, &pb.RangeRequest{Key: []byte("a")})
	if err == nil || !strings.Contains(err.Error(), "etcdserver: rpc not supported for learner") {
		c.t.Fatalf("linearizable range on the learner %s: %v", mm.name, err)
	}
	if _, err := mm.m.kv.Range(ctx, &pb.RangeRequest{Key: []byte("a"), Serializable: true}); err != nil {
		c.t.Fatalf("serializable range on the learner %s: %v", mm.name, err)
	}
}

// checkWrites writes through every running member and waits for HashKV to
// agree.
func (c *mixedCluster) checkWrites(tag string) uint32 {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var rev int64
	for _, mm := range c.running() {
		for k := 0; k < 5; k++ {
			resp, err := mm.m.kv.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("%s/%s/%d", tag, mm.name, k)), Value: []byte(mm.kind)})
			if err != nil {
				c.t.Fatalf("%s: put through %s: %v", tag, mm.name, err)
			}
			rev = max(rev, resp.Header.Revision)
		}
	}
	return c.sameHashKV(ctx, rev)
}

// TestMixedClusterMembership: the operator's migration. etckit joins an
// etcd 3.7.3 cluster through MemberAdd and etcd joins an etckit cluster;
// then the members of a three-member etcd cluster are replaced by etckit
// one at a time — each new member added as a learner, promoted once in
// sync, then an etcd member removed — with writes through every member and
// HashKV equal after each step, until no etcd member is left.
func TestMixedClusterMembership(t *testing.T) {
	t.Run("etckit-joins-etcd", func(t *testing.T) {
		c := newMixedCluster(t, "etcd", "etcd", "etcd")
		c.checkWrites("before")
		c.add("etckit", false)
		h := c.checkWrites("after")
		t.Logf("four members, HashKV %d on all", h)
	})
	t.Run("etcd-joins-etckit-as-learner", func(t *testing.T) {
		c := newMixedCluster(t, "etckit", "etckit", "etckit")
		c.checkWrites("before")
		n := c.add("etcd", true)
		c.checkLearner(n)
		c.promote(n)
		h := c.checkWrites("after")
		t.Logf("four members, HashKV %d on all", h)
	})
	t.Run("replace-etcd-with-etckit", func(t *testing.T) {
		c := newMixedCluster(t, "etcd", "etcd", "etcd")
		c.checkWrites("start")
		old := append([]*mixedMember(nil), c.members...)
		for i, o := range old {
			n := c.add("etckit", true)
			c.checkLearner(n)
			c.promote(n)
			c.checkWrites(fmt.Sprintf("added-%d", i))
			c.remove(o)
			h := c.checkWrites(fmt.Sprintf("removed-%d", i))
			t.Logf("step %d: %s added, promoted; %s removed; HashKV %d", i, n.name, o.name, h)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ml, err := c.running()[0].m.cluster.MemberList(ctx, &pb.MemberListRequest{Linearizable: true})
		if err != nil || len(ml.Members) != 3 {
			t.Fatalf("member list %v %v", ml, err)
		}
		for _, m := range ml.Members {
			if !strings.HasPrefix(m.Name, "etckit-") || m.IsLearner {
				t.Fatalf("member %v after the migration", m)
			}
		}
	})
}

// TestMixedClusterPeerEndpoints asks an etcd and an etckit member of one
// cluster the same questions on their peer URLs: /members, /version,
// /members/hashkv, /downgrade/enabled, /raft/probing and a path neither
// has. Every answer must be equal, /version too.
func TestMixedClusterPeerEndpoints(t *testing.T) {
	c := newMixedCluster(t, "etcd", "etckit", "etckit")
	c.checkWrites("peer")
	e, k := c.members[0], c.members[1]
	get := func(base, path, body string) (int, string, http.Header) {
		req, _ := http.NewRequest(http.MethodGet, base+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	for _, q := range []struct{ path, body string }{
		{"/members", ""}, {"/members/hashkv", `{"revision":0}`}, {"/members/hashkv", `{"revision":100000}`},
		{"/members/hashkv", `nonsense`}, {"/downgrade/enabled", ""}, {"/nothing", ""}, {"/raft/nothing", ""},
	} {
		ec, eb, eh := get(e.peerURL, q.path, q.body)
		kc, kb, kh := get(k.peerURL, q.path, q.body)
		if ec != kc || eb != kb || eh.Get("X-Etcd-Cluster-ID") != kh.Get("X-Etcd-Cluster-ID") {
			t.Errorf("GET %s %s: etcd %d %q (cluster %q), etckit %d %q (cluster %q)", q.path, q.body, ec, eb, eh.Get("X-Etcd-Cluster-ID"), kc, kb, kh.Get("X-Etcd-Cluster-ID"))
		} else {
			t.Logf("GET %s %s: %d %.120s", q.path, q.body, ec, eb)
		}
	}
	// Both run 3.7.3; the storage version follows the cluster version
	// within a storage monitor's period (4 s) on each member.
	const want = `{"etcdserver":"3.7.3","etcdcluster":"3.7.0","storage":"3.7.0"}`
	var ev, kv string
	for i := 0; i < 100 && (ev != want || kv != want); i++ {
		_, ev, _ = get(e.peerURL, "/version", "")
		_, kv, _ = get(k.peerURL, "/version", "")
		time.Sleep(100 * time.Millisecond)
	}
	if ev != want || kv != want {
		t.Errorf("/version: etcd %s, etckit %s, want %s on both", ev, kv, want)
	}
	ec, eb, _ := get(e.peerURL, "/raft/probing", "")
	kc, kb, _ := get(k.peerURL, "/raft/probing", "")
	if ec != 200 || kc != 200 || !strings.HasPrefix(eb, `{"OK":true,"Now":"`) || !strings.HasPrefix(kb, `{"OK":true,"Now":"`) {
		t.Errorf("/raft/probing: etcd %d %q, etckit %d %q", ec, eb, kc, kb)
	}
}
