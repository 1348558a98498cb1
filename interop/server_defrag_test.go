package interop

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/server"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

// TestServerDefragment: Maintenance.Defragment on a live etckit with an
// open watcher, a lease and writers running during the defrag. The db file
// shrinks after deletes and a compaction; keys, revision and HashKV are
// unchanged; the watcher keeps receiving events; the lease still holds its
// key; the writes made during the defrag all land; the rewritten file is
// what a restarted member reads; and etcdctl's defrag works against it.
func TestServerDefragment(t *testing.T) {
	dir := dataDir(t, "etckit")
	s, k := startEtckit(t, dir, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	lg, err := k.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 7, TTL: 3600})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.kv.Put(ctx, &pb.PutRequest{Key: []byte("leased"), Value: []byte("v"), Lease: lg.ID}); err != nil {
		t.Fatal(err)
	}
	wc := pb.NewWatchClient(k.conn)
	ws, err := wc.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key: []byte("after/"), RangeEnd: []byte("after0"), PrevKv: true}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := ws.Recv(); err != nil || !r.Created {
		t.Fatalf("watch create: %v %v", r, err)
	}

	const n = 3000
	val := bytes.Repeat([]byte("x"), 1024)
	for i := 0; i < n; i++ {
		if _, err := k.kv.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "key/%05d", i), Value: val}); err != nil {
			t.Fatal(err)
		}
	}
	dr, err := k.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("key/00100"), RangeEnd: []byte("key0")})
	if err != nil || dr.Deleted != n-100 {
		t.Fatalf("delete: %v %v", dr, err)
	}
	if _, err := k.kv.Compact(ctx, &pb.CompactionRequest{Revision: dr.Header.Revision, Physical: true}); err != nil {
		t.Fatal(err)
	}
	type state struct {
		size, rev int64
		hash      uint32
		kvs       []byte
	}
	capture := func() state {
		st, err := k.maint.Status(ctx, &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		h, err := k.maint.HashKV(ctx, &pb.HashKVRequest{})
		if err != nil {
			t.Fatal(err)
		}
		all, err := k.kv.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := proto.Marshal(&pb.RangeResponse{Kvs: all.Kvs, Count: all.Count})
		return state{size: st.DbSize, rev: all.Header.Revision, hash: h.Hash, kvs: b}
	}
	before := capture()
	if _, err := k.maint.Defragment(ctx, &pb.DefragmentRequest{}); err != nil {
		t.Fatal(err)
	}
	after := capture()
	if after.size >= before.size/2 {
		t.Fatalf("db %d bytes before the defrag, %d after: expected it to shrink by half at least", before.size, after.size)
	}
	if after.rev != before.rev || after.hash != before.hash || !bytes.Equal(after.kvs, before.kvs) {
		t.Fatalf("defrag changed the data: revision %d -> %d, HashKV %d -> %d", before.rev, after.rev, before.hash, after.hash)
	}

	// Writers run while a second defrag does; they wait and then land.
	var wg sync.WaitGroup
	werrs := make(chan error, 40)
	start := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			<-start
			for i := 0; i < 10; i++ {
				if _, err := k.kv.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "during/%d/%d", g, i), Value: []byte("d")}); err != nil {
					werrs <- err
				}
			}
		}(g)
	}
	close(start)
	if _, err := k.maint.Defragment(ctx, &pb.DefragmentRequest{}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(werrs)
	for err := range werrs {
		t.Fatalf("write during defrag: %v", err)
	}
	during, err := k.kv.Range(ctx, &pb.RangeRequest{Key: []byte("during/"), RangeEnd: []byte("during0"), CountOnly: true})
	if err != nil || during.Count != 40 || during.Header.Revision != before.rev+40 {
		t.Fatalf("writes during the defrag: %v %v", during, err)
	}
	// The lease and the watcher survived.
	ttl, err := k.lease.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: lg.ID, Keys: true})
	if err != nil || ttl.TTL <= 0 || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "leased" {
		t.Fatalf("lease after defrag: %v %v", ttl, err)
	}
	pr, err := k.kv.Put(ctx, &pb.PutRequest{Key: []byte("after/1"), Value: []byte("w")})
	if err != nil {
		t.Fatal(err)
	}
	wr, err := ws.Recv()
	if err != nil || len(wr.Events) != 1 || string(wr.Events[0].Kv.Key) != "after/1" || wr.Events[0].Kv.ModRevision != pr.Header.Revision {
		t.Fatalf("watch after defrag: %v %v", wr, err)
	}
	t.Logf("%d keys put, %d deleted, compacted: db %d bytes -> %d after the defrag; revision %d, HashKV %d unchanged; 40 writes during the defrag landed",
		n, n-100, before.size, after.size, before.rev, before.hash)

	// etcdctl (3.4, Debian) defrag against etckit.
	if ctl, err := exec.LookPath("etcdctl"); err == nil {
		cmd := exec.CommandContext(ctx, ctl, "--endpoints="+k.endpoint, "defrag")
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Finished defragmenting etcd member[") {
			t.Fatalf("etcdctl defrag: %v\n%s", err, out)
		}
		t.Logf("etcdctl: %s", strings.TrimSpace(string(out)))
	} else if os.Getenv("CI") != "" {
		t.Fatal("etcdctl not installed")
	} else {
		t.Log("etcdctl not installed; skipped its defrag")
	}
	final := capture()

	// No temporary file is left; a restarted member reads the new file.
	if m, _ := filepath.Glob(filepath.Join(dir, "member", "snap", "db.tmp.*")); len(m) != 0 {
		t.Fatalf("temporary files left: %v", m)
	}
	ws.CloseSend()
	k.stop()
	<-s.Stopped()
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	_, k2 := startEtckit(t, dir, nil)
	k = k2
	re := capture()
	if re.rev != final.rev || re.hash != final.hash || !bytes.Equal(re.kvs, final.kvs) {
		t.Fatalf("after restart: revision %d hash %d, before %d %d", re.rev, re.hash, final.rev, final.hash)
	}
}

// TestServerDefragOperatorFlows: etcd's documented recovery from NOSPACE
// (compact, defragment, disarm, write again) on etckit, and a Snapshot
// stream that is in flight while a defrag swaps the file: it finishes on
// the old file and its image checks (SHA-256 trailer, HashKV of the live
// member).
func TestServerDefragOperatorFlows(t *testing.T) {
	s, k := startEtckit(t, dataDir(t, "etckit"), func(c *server.Config) { c.QuotaBackendBytes = 4 << 20 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	val := bytes.Repeat([]byte("q"), 128*1024)
	var perr error
	puts := 0
	for i := 0; i < 400 && perr == nil; i++ {
		_, perr = k.kv.Put(ctx, &pb.PutRequest{Key: []byte("fill"), Value: val})
		puts++
		k.maint.HashKV(ctx, &pb.HashKVRequest{}) // commits, so the size in use grows now
	}
	if perr == nil || perr.Error() != rpctypes.ErrGRPCNoSpace.Error() {
		t.Fatalf("quota: %v", perr)
	}
	st1, err := k.maint.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cr, err := k.kv.Range(ctx, &pb.RangeRequest{Key: []byte("fill"), CountOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.kv.Compact(ctx, &pb.CompactionRequest{Revision: cr.Header.Revision, Physical: true}); err != nil {
		t.Fatal(err)
	}

	// A snapshot stream takes its view, sends its first chunk, and waits
	// for the client (gRPC flow control) while the defrag runs.
	// A fixed 64 KiB window (no BDP growth) keeps most of the image
	// unsent until the client reads.
	sconn, err := grpc.NewClient(k.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer sconn.Close()
	snap, err := pb.NewMaintenanceClient(sconn).Snapshot(ctx, &pb.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := snap.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.maint.Defragment(ctx, &pb.DefragmentRequest{}); err != nil {
		t.Fatal(err)
	}
	blobs := [][]byte{first.Blob}
	for {
		r, err := snap.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, r.Blob)
	}
	img := bytes.Join(blobs[:len(blobs)-1], nil)
	if sum := sha256.Sum256(img); !bytes.Equal(sum[:], blobs[len(blobs)-1]) {
		t.Fatal("snapshot taken across a defrag: trailer is not the SHA-256 of the image")
	}
	path := filepath.Join(t.TempDir(), "snap.db")
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
	store, err := mvcc.Open(path, mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := store.HashKV(0)
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	live, err := k.maint.HashKV(ctx, &pb.HashKVRequest{})
	if err != nil || live.Hash != h.Hash {
		t.Fatalf("snapshot across the defrag: HashKV %d, live %v %v", h.Hash, live, err)
	}

	st2, err := k.maint.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st2.DbSize >= st1.DbSize/4 || len(st2.Errors) != 1 {
		t.Fatalf("after compaction and defrag: db %d bytes (was %d), errors %q", st2.DbSize, st1.DbSize, st2.Errors)
	}
	if _, err := k.kv.Put(ctx, &pb.PutRequest{Key: []byte("x"), Value: []byte("y")}); err == nil || err.Error() != rpctypes.ErrGRPCNoSpace.Error() {
		t.Fatalf("the alarm holds until disarmed: %v", err)
	}
	if _, err := k.maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, MemberID: s.ID(), Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.kv.Put(ctx, &pb.PutRequest{Key: []byte("x"), Value: []byte("y")}); err != nil {
		t.Fatalf("write after compact, defrag, disarm: %v", err)
	}
	t.Logf("NOSPACE after %d puts of 128 KiB at a 4 MiB quota: db %d bytes; compact+defrag: %d bytes; disarmed, writes accepted; a %d-byte snapshot streamed across the defrag checks",
		puts, st1.DbSize, st2.DbSize, len(img))
}

// TestServerDefragBytesAsEtcd: the same db defragmented by etcd 3.7.3's
// backend (storage/backend.Defrag) and by etckit's Backend.Defrag gives the
// same file, byte for byte (compared right after the defrag, before either
// backend commits again).
func TestServerDefragBytesAsEtcd(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.db")
	st, err := mvcc.Open(a, mvcc.Options{Backend: mvcc.BackendOptions{NoSync: true}})
	if err != nil {
		t.Fatal(err)
	}
	val := bytes.Repeat([]byte("v"), 300)
	for i := 0; i < 25000; i++ { // more than two 10,000-key copy transactions
		if _, err := st.Put(&pb.PutRequest{Key: fmt.Appendf(nil, "k/%06d", i%12000), Value: val}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.DeleteRange(&pb.DeleteRangeRequest{Key: []byte("k/000000"), RangeEnd: []byte("k/006000")}); err != nil {
		t.Fatal(err)
	}
	if err := st.Compact(st.Rev() - 1000); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(dir, "b.db")
	if err := os.WriteFile(b, orig, 0o600); err != nil {
		t.Fatal(err)
	}

	eb := backend.NewDefaultBackend(zap.NewNop(), a)
	if err := eb.Defrag(); err != nil {
		t.Fatal(err)
	}
	etcdBytes, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	eb.Close()

	kb, err := mvcc.OpenBackend(b, mvcc.BackendOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := kb.Defrag()
	if err != nil {
		t.Fatal(err)
	}
	ours, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := kb.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(etcdBytes, ours) {
		n := 0
		for n < min(len(ours), len(etcdBytes)) && ours[n] == etcdBytes[n] {
			n++
		}
		t.Fatalf("defragmented files differ: etcd %d bytes, etckit %d; first difference at offset %d (page %d)", len(etcdBytes), len(ours), n, n/4096)
	}
	t.Logf("%d-byte db -> %d bytes, identical to etcd's defrag (%v)", len(orig), len(ours), ds.Took.Round(time.Millisecond))
}
