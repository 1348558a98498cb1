package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// corruptValue changes one byte of the value of key's revision rev (0:
// its first) in a stopped member's db, as a bit flip on disk would: the
// file stays valid bbolt and protobuf, only the data differs.
func corruptValue(t *testing.T, dataDir, key string, rev int64) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dataDir, "member", "snap", "db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("key"))
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var kv mvccpb.KeyValue
			if err := proto.Unmarshal(v, &kv); err != nil {
				return err
			}
			if string(kv.Key) != key || (rev != 0 && kv.ModRevision != rev) || len(kv.Value) == 0 {
				continue
			}
			kv.Value[0] ^= 0x01
			nv, err := proto.Marshal(&kv)
			if err != nil {
				return err
			}
			return b.Put(append([]byte(nil), k...), nv)
		}
		return fmt.Errorf("no revision of %q to corrupt", key)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// corruptCluster starts 3 members with mod, writes 10 keys, waits until
// all agree, and flips a value byte of key "k3" in one follower's db while
// it is stopped. It returns the cluster, the corrupted member's index and
// its ID.
func corruptCluster(t *testing.T, ctx context.Context, mod func(*Config)) (*testCluster, int, uint64) {
	t.Helper()
	c := newTestCluster(t, 3, mod)
	c.ready()
	lead := c.leader()
	var rev int64
	for k := 0; k < 10; k++ {
		r, err := c.kv(lead).Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("k%d", k)), Value: []byte("value")})
		if err != nil {
			t.Fatal(err)
		}
		rev = r.Header.Revision
	}
	if h := c.hashKVs(ctx, rev); !sameHash(h) {
		t.Fatalf("members disagree before the corruption: %v", h)
	}
	bad := (lead + 1) % 3
	id := c.srv[bad].ID()
	c.stop(bad)
	corruptValue(t, c.dirs[bad], "k3", 0)
	return c, bad, id
}

// TestInitialCorruptCheckRefusesDivergedMember: with InitialCorruptCheck a
// restarted member whose db differs from its peers' at the same revision
// does not start, with etcd's error naming it; a member whose data agrees
// restarts as before (etcd's TestEtcdCorruptHash).
func TestInitialCorruptCheckRefusesDivergedMember(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	logs := &logBuffer{}
	c, bad, id := corruptCluster(t, ctx, func(cfg *Config) {
		cfg.InitialCorruptCheck = true
		cfg.Logger = logs.logger()
	})
	err := c.tryStart(bad)
	if err == nil {
		t.Fatalf("a member with a corrupted db started")
	}
	if want := fmt.Sprintf("%x found data inconsistency with peers", id); err.Error() != want {
		t.Fatalf("start error %q, want %q", err, want)
	}
	logs.waitLog(t, time.Second, "found different hash values from remote peer", fmt.Sprintf(`"local-member-id":"%x"`, id))
	good := (bad + 1) % 3
	if c.srv[good].Leader() == c.srv[good].ID() {
		good = (bad + 2) % 3
	}
	goodID := c.srv[good].ID()
	c.stop(good)
	if err := c.tryStart(good); err != nil {
		t.Fatalf("a member that agrees with its peers did not restart: %v", err)
	}
	logs.waitLog(t, time.Second, "initial corruption checking passed; no corruption", fmt.Sprintf(`"local-member-id":"%x"`, goodID))
}

// waitCorruptAlarm waits (bounded) until member i lists alarms and
// returns them once it does.
func waitCorruptAlarm(t *testing.T, ctx context.Context, c *testCluster, i int, d time.Duration) []*pb.AlarmMember {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		r, err := pb.NewMaintenanceClient(c.conns[i]).Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
		if err == nil && len(r.Alarms) > 0 {
			return r.Alarms
		}
		if time.Now().After(deadline) {
			t.Fatalf("no alarm within %v (last: %v, %v)", d, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkCorruptAlarmed: the only alarm is CORRUPT for member id, writes and
// reads are refused as etcd's corrupt applier refuses them, and /health
// says why.
func checkCorruptAlarmed(t *testing.T, ctx context.Context, c *testCluster, at int, id uint64) {
	t.Helper()
	alarms := waitCorruptAlarm(t, ctx, c, at, 10*time.Second)
	if len(alarms) != 1 || alarms[0].Alarm != pb.AlarmType_CORRUPT || alarms[0].MemberID != id {
		t.Fatalf("alarms %v, want only CORRUPT for member %x", alarms, id)
	}
	if _, err := c.kv(at).Put(ctx, &pb.PutRequest{Key: []byte("after"), Value: []byte("x")}); err == nil || !strings.Contains(err.Error(), "etcdserver: corrupt cluster") {
		t.Fatalf("put under CORRUPT: %v, want etcdserver: corrupt cluster", err)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + c.srv[at].ClientAddrs()[0] + "/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var h struct{ Health, Reason string }
	if err := json.Unmarshal(body, &h); err != nil || h.Health != "false" || !strings.Contains(h.Reason, "CORRUPT") {
		t.Fatalf("/health under CORRUPT: %d %s", resp.StatusCode, body)
	}
}

// TestPeriodicCheckAlarmsCorruptMember: with --corrupt-check-time the
// leader finds the follower whose db differs at the same revision and
// raises the CORRUPT alarm naming it (etcd's
// TestPeriodicCheckDetectsCorruption).
func TestPeriodicCheckAlarmsCorruptMember(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	logs := &logBuffer{}
	c, bad, id := corruptCluster(t, ctx, func(cfg *Config) {
		cfg.CorruptCheckTime = 200 * time.Millisecond
		cfg.Logger = logs.logger()
	})
	c.start(bad)
	lead := c.leader()
	if lead == bad {
		t.Skipf("the corrupted member became the leader: the periodic check trusts the leader's hash (as etcd's)")
	}
	checkCorruptAlarmed(t, ctx, c, lead, id)
	logs.waitLog(t, time.Second, "same compact revision then hashes must match", fmt.Sprintf(`"follower-id":"%x"`, id))
}

// TestCompactHashCheckAlarmsCorruptMember: with CompactHashCheck the
// leader compares the hash every compaction recorded and alarms the member
// outside the quorum's hash (etcd's TestCompactHashCheckDetectCorruption).
func TestCompactHashCheckAlarmsCorruptMember(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	logs := &logBuffer{}
	c, bad, id := corruptCluster(t, ctx, func(cfg *Config) {
		cfg.CompactHashCheck = true
		cfg.CompactHashCheckTime = 200 * time.Millisecond
		cfg.Logger = logs.logger()
	})
	c.start(bad)
	lead := c.leader()
	if _, err := c.kv(lead).Compact(ctx, &pb.CompactionRequest{Revision: 8, Physical: true}); err != nil {
		t.Fatal(err)
	}
	checkCorruptAlarmed(t, ctx, c, lead, id)
	logs.waitLog(t, time.Second, "Detected compaction hash mismatch", `"quorum-exist":true`, fmt.Sprintf(`"members":["%x"]`, id))
}

// TestCorruptChecksQuietOnHealthyCluster: both checks run (their success
// is logged) and raise nothing on members that agree, across compactions.
func TestCorruptChecksQuietOnHealthyCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	logs := &logBuffer{}
	c := newTestCluster(t, 3, func(cfg *Config) {
		cfg.CorruptCheckTime = 100 * time.Millisecond
		cfg.CompactHashCheck = true
		cfg.CompactHashCheckTime = 100 * time.Millisecond
		cfg.Logger = logs.logger()
	})
	c.ready()
	lead := c.leader()
	for round := 0; round < 3; round++ {
		var rev int64
		for k := 0; k < 20; k++ {
			r, err := c.kv(k%3).Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("k%d", k%5)), Value: []byte(fmt.Sprint(round, k))})
			if err != nil {
				t.Fatal(err)
			}
			rev = r.Header.Revision
		}
		if _, err := c.kv(lead).Compact(ctx, &pb.CompactionRequest{Revision: rev - 3, Physical: true}); err != nil {
			t.Fatal(err)
		}
		logs.waitLog(t, 10*time.Second, "successfully checked hash on whole cluster", fmt.Sprintf(`"revision":%d`, rev-3))
	}
	time.Sleep(300 * time.Millisecond) // a few periodic checks more
	for i := range c.srv {
		r, err := pb.NewMaintenanceClient(c.conns[i]).Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Alarms) != 0 {
			t.Fatalf("%s: alarms %v on members that agree\n%s", c.names[i], r.Alarms, logs.String())
		}
	}
	if strings.Contains(logs.String(), "must match") || strings.Contains(logs.String(), "mismatch") {
		t.Fatalf("a check found a mismatch on members that agree:\n%s", logs.String())
	}
}

// TestPeerHashKVErrors: the peer client maps the endpoint's answers as
// etcd's HashByRev does (compacted, future revision, cluster ID mismatch).
func TestPeerHashKVErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := newTestCluster(t, 1, nil)
	c.ready()
	s := c.srv[0]
	var rev int64
	for k := 0; k < 5; k++ {
		r, err := c.kv(0).Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte(fmt.Sprint(k))})
		if err != nil {
			t.Fatal(err)
		}
		rev = r.Header.Revision
	}
	if _, err := c.kv(0).Compact(ctx, &pb.CompactionRequest{Revision: rev - 1, Physical: true}); err != nil {
		t.Fatal(err)
	}
	url := c.peers[0]
	got, err := hashKVByRev(ctx, s.ClusterID(), s.peerClient, url, rev)
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := s.eng.Store().HashKV(rev)
	if err != nil || got.Hash != h.Hash || got.CompactRevision != rev-1 || got.Header.Revision != rev {
		t.Fatalf("peer hash %+v, local %+v %v", got, h, err)
	}
	for _, tc := range []struct {
		cid  uint64
		rev  int64
		want error
	}{
		{s.ClusterID(), rev - 2, errPeerCompacted},
		{s.ClusterID(), rev + 10, errPeerFutureRev},
		{s.ClusterID() + 1, rev, nil},
	} {
		_, err := hashKVByRev(ctx, tc.cid, s.peerClient, url, tc.rev)
		if tc.want != nil && err != tc.want || tc.want == nil && (err == nil || !strings.Contains(err.Error(), "cluster ID mismatch")) {
			t.Errorf("cid %x rev %d: %v, want %v", tc.cid, tc.rev, err, tc.want)
		}
	}
	// The body the endpoint takes is etcd's JSON; anything else is a 400.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+peerHashKVPath, bytes.NewReader([]byte("{")))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad body: %d", resp.StatusCode)
	}
}
