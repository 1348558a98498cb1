package interop

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/server"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"
)

// TestServerLimitsAndLeasesDifferential: request-size limits, lease
// grant/TTL/list/revoke/not-found and keep-alive answered as etcd 3.7.3
// answers them (codes, messages and fields).
func TestServerLimitsAndLeasesDifferential(t *testing.T) {
	_, e := startEtcd(t, dataDir(t, "etcd"))
	// etcd's default 100 ms heartbeat: the minimum lease TTL derives from it.
	_, k := startEtckit(t, dataDir(t, "etckit"), func(c *server.Config) { c.TickInterval = 100 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	big := bytes.Repeat([]byte("x"), 1600*1024) // above 1.5 MiB, below the gRPC limit
	huge := bytes.Repeat([]byte("x"), 2100*1024)
	steps := []proto.Message{
		// below the limit: one gRPC message larger than a default window
		&pb.PutRequest{Key: []byte("large"), Value: bytes.Repeat([]byte("y"), 1400*1024)},
		&pb.PutRequest{Key: []byte("big"), Value: big},
		&pb.PutRequest{Key: []byte("huge"), Value: huge},
		&pb.LeaseGrantRequest{ID: 42, TTL: 1}, // raised to the minimum TTL
		&pb.LeaseGrantRequest{ID: 42, TTL: 60},
		&pb.LeaseGrantRequest{ID: 43, TTL: mvcc.MaxLeaseTTL + 1},
		&pb.PutRequest{Key: []byte("leased"), Value: []byte("v"), Lease: 42},
		&pb.PutRequest{Key: []byte("leased2"), Value: []byte("v"), Lease: 99},
		&pb.LeaseRevokeRequest{ID: 99},
		&pb.LeaseRevokeRequest{ID: 42},
		&pb.RangeRequest{Key: []byte("leased")},
	}
	for i, r := range steps {
		compareCall(t, ctx, i, r, e, k)
	}
	for i, m := range []*member{e, k} {
		if _, err := m.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 77, TTL: 100}); err != nil {
			t.Fatal(err)
		}
		_ = i
	}
	ttl := func(m *member, id int64) proto.Message {
		r, err := m.lease.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: id, Keys: true})
		if err != nil {
			t.Fatal(err)
		}
		// The remaining TTL depends on the clock; compare its range only.
		if r.TTL != -1 && (r.TTL <= 0 || r.TTL > r.GrantedTTL) {
			t.Fatalf("%s: remaining TTL %d of %d", m.name, r.TTL, r.GrantedTTL)
		}
		if r.TTL > 0 {
			r.TTL = 1
		}
		return normalize(r)
	}
	for _, id := range []int64{77, 12345} {
		if a, b := ttl(e, id), ttl(k, id); !proto.Equal(a, b) {
			t.Fatalf("TimeToLive %d:\netcd:   %s\netckit: %s", id, text(a), text(b))
		}
	}
	ll := func(m *member) proto.Message {
		r, err := m.lease.LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return normalize(r)
	}
	if a, b := ll(e), ll(k); !proto.Equal(a, b) {
		t.Fatalf("LeaseLeases:\netcd:   %s\netckit: %s", text(a), text(b))
	}
	ka := func(m *member, id int64) proto.Message {
		st, err := m.lease.LeaseKeepAlive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer st.CloseSend()
		if err := st.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return normalize(r)
	}
	for _, id := range []int64{77, 12345} {
		if a, b := ka(e, id), ka(k, id); !proto.Equal(a, b) {
			t.Fatalf("KeepAlive %d:\netcd:   %s\netckit: %s", id, text(a), text(b))
		}
	}
}

// TestServerMaintenance: Status fields, the Snapshot stream (a bbolt image
// whose SHA-256 trailer checks and whose HashKV equals the server's), the
// HTTP endpoints, and the NOSPACE alarm at --quota-backend-bytes.
func TestServerMaintenance(t *testing.T) {
	s, k := startEtckit(t, dataDir(t, "etckit"), func(c *server.Config) { c.QuotaBackendBytes = 1 << 20 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < 20; i++ {
		if _, err := k.kv.Put(ctx, &pb.PutRequest{Key: []byte{'k', byte('a' + i)}, Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	// The storage version is written by the member's storage version
	// monitor once the cluster version is decided, as etcd's
	// monitorStorageVersion does: it may still be empty or 3.5.0 just after
	// start, so wait (bounded) for it before comparing the rest.
	var st *pb.StatusResponse
	for {
		var err error
		if st, err = k.maint.Status(ctx, &pb.StatusRequest{}); err != nil {
			t.Fatal(err)
		}
		if st.StorageVersion == "3.7.0" || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.Leader != s.ID() || st.RaftIndex == 0 || st.RaftAppliedIndex != st.RaftIndex || st.DbSize == 0 || st.StorageVersion != "3.7.0" ||
		st.DbSizeQuota != 1<<20 || st.Header.Revision != 21 || len(st.Errors) != 0 {
		t.Fatalf("status %s", text(st))
	}

	// Snapshot: blob chunks then the SHA-256 of what was sent.
	stream, err := k.maint.Snapshot(ctx, &pb.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var blobs [][]byte
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, r.Blob)
	}
	img := bytes.Join(blobs[:len(blobs)-1], nil)
	sum := sha256.Sum256(img)
	if !bytes.Equal(sum[:], blobs[len(blobs)-1]) {
		t.Fatal("snapshot trailer is not the SHA-256 of the image")
	}
	path := filepath.Join(t.TempDir(), "snap.db")
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := mvcc.Open(path, mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	h, rev, err := store.HashKV(0)
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	live, err := k.maint.HashKV(ctx, &pb.HashKVRequest{})
	if err != nil || live.Hash != h.Hash || rev != 21 {
		t.Fatalf("snapshot HashKV %d rev %d, live %v %v", h.Hash, rev, live, err)
	}
	t.Logf("snapshot: %d bytes in %d messages + sha256 trailer; HashKV %d at revision %d", len(img), len(blobs)-1, h.Hash, rev)

	get := func(p string) string {
		resp, err := http.Get("http://" + k.endpoint + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if v := get("/version"); v != `{"etcdserver":"3.7.3","etcdcluster":"3.7.0","storage":"3.7.0"}` {
		t.Fatalf("/version %q", v)
	}
	if m := get("/metrics"); !strings.Contains(m, "etcd_disk_wal_fsync_duration_seconds_bucket") || !strings.Contains(m, "etcd_disk_backend_commit_duration_seconds_count") {
		t.Fatalf("/metrics lacks the disk histograms")
	}

	// Fill the 1 MiB quota.
	val := bytes.Repeat([]byte("q"), 64*1024)
	var perr error
	for i := 0; i < 200 && perr == nil; i++ {
		_, perr = k.kv.Put(ctx, &pb.PutRequest{Key: []byte("fill"), Value: val})
		k.maint.HashKV(ctx, &pb.HashKVRequest{}) // commits the backend, so its size in use grows now
	}
	if perr == nil || perr.Error() != rpctypes.ErrGRPCNoSpace.Error() {
		t.Fatalf("quota: %v", perr)
	}
	al, err := k.maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
	if err != nil || len(al.Alarms) != 1 || al.Alarms[0].Alarm != pb.AlarmType_NOSPACE || al.Alarms[0].MemberID != s.ID() {
		t.Fatalf("alarms %v %v", al, err)
	}
	if h := get("/health"); !strings.Contains(h, `"health":"false"`) || !strings.Contains(h, "NOSPACE") {
		t.Fatalf("/health %s", h)
	}
	if _, err := k.kv.Range(ctx, &pb.RangeRequest{Key: []byte("ka")}); err != nil {
		t.Fatalf("reads must still work under NOSPACE: %v", err)
	}
	if _, err := k.maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, MemberID: s.ID(), Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatal(err)
	}
	if h := get("/health"); !strings.Contains(h, `"health":"true"`) {
		t.Fatalf("/health after disarm %s", h)
	}
}
