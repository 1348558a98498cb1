package interop

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	epb "go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	lpb "go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// lockTranscript runs one fixed session of the Lock and Election services
// on m and returns every answer, normalized (no member and cluster IDs,
// no raft term), with the errors as code and text. Leases have fixed IDs,
// so keys and revisions are the same on any member that serves the
// session as etcd does.
func lockTranscript(t *testing.T, m *member) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lock, elect := lpb.NewLockClient(m.conn), epb.NewElectionClient(m.conn)
	var out []string
	record := func(what string, resp proto.Message, err error) {
		if err != nil {
			s := status.Convert(err)
			out = append(out, fmt.Sprintf("%s: error %s: %s", what, s.Code(), s.Message()))
			return
		}
		out = append(out, fmt.Sprintf("%s: %s", what, text(normalize(resp))))
	}
	for _, id := range []int64{0x10, 0x20, 0x30} {
		if _, err := m.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: 600}); err != nil {
			t.Fatalf("%s: grant %x: %v", m.name, id, err)
		}
	}
	// waitKey polls until key exists: a blocked Lock or Campaign has
	// queued itself.
	waitKey := func(key string) {
		for i := 0; ; i++ {
			r, err := m.kv.Range(ctx, &pb.RangeRequest{Key: []byte(key)})
			if err == nil && r.Count == 1 {
				return
			}
			if i == 500 {
				t.Fatalf("%s: %s never appeared: %v", m.name, key, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// Lock: uncontended, contended (released by Unlock), the same session
	// again, a lease that does not exist, and a waiter that gives up.
	r1, err := lock.Lock(ctx, &lpb.LockRequest{Name: []byte("L"), Lease: 0x10})
	record("lock 10", r1, err)
	type lockResult struct {
		r   *lpb.LockResponse
		err error
	}
	waiting := make(chan lockResult, 1)
	go func() {
		r, err := lock.Lock(ctx, &lpb.LockRequest{Name: []byte("L"), Lease: 0x20})
		waiting <- lockResult{r, err}
	}()
	waitKey("L/20")
	r, err := lock.Lock(ctx, &lpb.LockRequest{Name: []byte("L"), Lease: 0x10})
	record("lock 10 again", r, err)
	u, err := lock.Unlock(ctx, &lpb.UnlockRequest{Key: r1.GetKey()})
	record("unlock 10", u, err)
	w := <-waiting
	record("lock 20 after wait", w.r, w.err)
	r, err = lock.Lock(ctx, &lpb.LockRequest{Name: []byte("L"), Lease: 0x99})
	record("lock with a missing lease", r, err)
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	r, err = lock.Lock(short, &lpb.LockRequest{Name: []byte("L"), Lease: 0x30})
	cancelShort()
	if err == nil {
		t.Fatalf("%s: lock 30 acquired a held lock: %v", m.name, r)
	}
	out = append(out, fmt.Sprintf("lock 30 timed out: %s", status.Code(err)))
	// The waiter that gave up removed its key (cleanup is asynchronous to
	// the caller's deadline: wait for it).
	for i := 0; ; i++ {
		rr, _ := m.kv.Range(ctx, &pb.RangeRequest{Key: []byte("L/"), RangeEnd: []byte("L0"), KeysOnly: true})
		if rr != nil && rr.Count == 1 {
			record("lock keys after the timeout", rr, nil)
			break
		}
		if i == 500 {
			t.Fatalf("%s: the timed-out waiter's key stayed: %v", m.name, rr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	u, err = lock.Unlock(ctx, &lpb.UnlockRequest{Key: w.r.GetKey()})
	record("unlock 20", u, err)
	u, err = lock.Unlock(ctx, &lpb.UnlockRequest{})
	record("unlock without a key", u, err)

	// Election.
	l, err := elect.Leader(ctx, &epb.LeaderRequest{Name: []byte("E")})
	record("leader of an empty election", l, err)
	c1, err := elect.Campaign(ctx, &epb.CampaignRequest{Name: []byte("E"), Lease: 0x10, Value: []byte("a")})
	record("campaign 10", c1, err)
	l, err = elect.Leader(ctx, &epb.LeaderRequest{Name: []byte("E")})
	record("leader", l, err)
	// An observer sees the leader of the moment and then its changes, from
	// a Get made after Observe returned (etcd's and etckit's alike): it is
	// read once before anything changes and again while E/20 still leads,
	// so what it sees does not depend on how late that Get runs. (Started
	// before the campaign, or read only after E/20 resigned, it saw
	// different leaders on each on a loaded machine.)
	obsCtx, stopObs := context.WithCancel(ctx)
	defer stopObs()
	obs, err := elect.Observe(obsCtx, &epb.LeaderRequest{Name: []byte("E")})
	if err != nil {
		t.Fatal(err)
	}
	observed := 0
	observe := func(n int) {
		for ; n > 0; n-- {
			i := observed
			observed++
			o, err := obs.Recv()
			if err != nil {
				record(fmt.Sprintf("observed %d", i), o, err)
				return
			}
			// The header of an observed change is the watch response's: the
			// event's own revision when the observer's watch was already in
			// sync, the store's revision when it caught up later (etcd does
			// both, depending on timing). Only its lower bound is fixed.
			if o.Header.GetRevision() < o.Kv.GetModRevision() {
				t.Fatalf("%s: observed %d: header revision %d below the event's %d", m.name, i, o.Header.GetRevision(), o.Kv.GetModRevision())
			}
			o.Header = nil
			record(fmt.Sprintf("observed %d", i), o, nil)
		}
	}
	observe(1)
	p, err := elect.Proclaim(ctx, &epb.ProclaimRequest{Leader: c1.GetLeader(), Value: []byte("b")})
	record("proclaim b", p, err)
	stale := proto.Clone(c1.GetLeader()).(*epb.LeaderKey)
	stale.Rev++
	p, err = elect.Proclaim(ctx, &epb.ProclaimRequest{Leader: stale, Value: []byte("x")})
	record("proclaim with a wrong revision", p, err)
	p, err = elect.Proclaim(ctx, &epb.ProclaimRequest{Value: []byte("x")})
	record("proclaim without a leader", p, err)
	type campaignResult struct {
		r   *epb.CampaignResponse
		err error
	}
	second := make(chan campaignResult, 1)
	go func() {
		r, err := elect.Campaign(ctx, &epb.CampaignRequest{Name: []byte("E"), Lease: 0x20, Value: []byte("c")})
		second <- campaignResult{r, err}
	}()
	waitKey("E/20")
	c, err := elect.Campaign(ctx, &epb.CampaignRequest{Name: []byte("E"), Lease: 0x10, Value: []byte("a2")})
	record("campaign 10 again with another value", c, err)
	rs, err := elect.Resign(ctx, &epb.ResignRequest{Leader: c1.GetLeader()})
	record("resign 10", rs, err)
	s := <-second
	record("campaign 20 after wait", s.r, s.err)
	observe(3)
	rs, err = elect.Resign(ctx, &epb.ResignRequest{})
	record("resign without a leader", rs, err)
	rs, err = elect.Resign(ctx, &epb.ResignRequest{Leader: s.r.GetLeader()})
	record("resign 20", rs, err)
	stopObs()
	h, err := m.maint.HashKV(ctx, &pb.HashKVRequest{})
	record("hashkv", h, err)
	return out
}

// TestServerLockElectionDifferential: etcd 3.7.3's Lock and Election
// services (server-side recipes of client/v3 concurrency) and etckit's
// give the same answers, step by step, and leave the same store (HashKV);
// then each is called once through the JSON gateway.
func TestServerLockElectionDifferential(t *testing.T) {
	_, e := startEtcd(t, dataDir(t, "etcd"))
	_, k := startEtckit(t, dataDir(t, "etckit"), nil)
	te, tk := lockTranscript(t, e), lockTranscript(t, k)
	for i := range max(len(te), len(tk)) {
		var a, b string
		if i < len(te) {
			a = te[i]
		}
		if i < len(tk) {
			b = tk[i]
		}
		if a != b {
			t.Fatalf("step %d:\netcd:   %s\netckit: %s", i, a, b)
		}
		t.Log(a)
	}

	// A lease-0 lock grants a 60 s lease for the session, on both.
	for _, m := range []*member{e, k} {
		resp, err := lpb.NewLockClient(m.conn).Lock(context.Background(), &lpb.LockRequest{Name: []byte("L0")})
		if err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		var id int64
		if _, err := fmt.Sscanf(strings.TrimPrefix(string(resp.Key), "L0/"), "%x", &id); err != nil {
			t.Fatalf("%s: lock key %q: %v", m.name, resp.Key, err)
		}
		ttl, err := m.lease.LeaseTimeToLive(context.Background(), &pb.LeaseTimeToLiveRequest{ID: id, Keys: true})
		if err != nil || ttl.GrantedTTL != 60 || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != string(resp.Key) {
			t.Fatalf("%s: the session lease of %q: %v %v", m.name, resp.Key, ttl, err)
		}
	}

	// The gateway serves both services.
	var bodies []string
	for _, m := range []*member{e, k} {
		var got []string
		for _, call := range [][2]string{
			{"/v3/election/leader", `{"name":"RQ=="}`}, // "E"
			{"/v3/lock/unlock", `{"key":"TC8xMA=="}`},  // "L/10", already gone
			{"/v3/election/proclaim", `{"value":"eA=="}`},
		} {
			resp, err := http.Post("http://"+m.endpoint+call[0], "application/json", strings.NewReader(call[1]))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got = append(got, fmt.Sprintf("%s %d %s", call[0], resp.StatusCode, scrubHeaderJSON(string(b))))
		}
		bodies = append(bodies, strings.Join(got, "\n"))
	}
	if bodies[0] != bodies[1] {
		t.Fatalf("gateway:\netcd:\n%s\netckit:\n%s", bodies[0], bodies[1])
	}
	t.Logf("%d steps equal; gateway:\n%s", len(te), bodies[0])
}

var headerIDs = regexp.MustCompile(`"(cluster_id|member_id|raft_term)":"[0-9]+"`)

// scrubHeaderJSON blanks the member-specific header fields of a gateway
// answer.
func scrubHeaderJSON(s string) string { return headerIDs.ReplaceAllString(s, `"$1":"-"`) }
