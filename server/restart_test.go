package server

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestRestartPastSnapshots runs the whole member — raft loop, apply,
// snapshots, gRPC — with --snapshot-count below --snapshot-catchup-entries,
// stops it cleanly at several points and writes past several snapshots
// after each start, with 8 concurrent clients. Every acknowledged put must
// be there after each restart and no put may fail. (engine's
// TestRestartAcrossSnapshots covers the counts from 1 to 20,000 and
// crashes; cmd/etckit's kill -9 test the real process.)
func TestRestartPastSnapshots(t *testing.T) {
	for _, tc := range []struct{ count, catchUp uint64 }{{1, 20}, {7, 50}, {100, 150}, {100, 1}, {300, 1000}, {1000, 5000}} {
		t.Run(fmt.Sprintf("snapshot-count=%d/catchup=%d", tc.count, tc.catchUp), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "m.etckit")
			type ack struct {
				val string
				rev int64
			}
			acked := map[string]ack{} // the put with the highest revision, per key
			var rev int64
			for start := 0; start < 4; start++ {
				s, err := New(Config{
					Engine: engine.Options{Name: "default", DataDir: dir, InitialCluster: "default=http://127.0.0.1:2380", NoSync: true,
						SnapshotCount: tc.count, CatchUpEntries: tc.catchUp},
					ListenClientURLs: []string{"http://127.0.0.1:0"},
					TickInterval:     10 * time.Millisecond,
				})
				if err != nil {
					t.Fatalf("start %d: %v", start, err)
				}
				if err := s.Serve(); err != nil {
					s.Stop()
					t.Fatalf("start %d: %v", start, err)
				}
				conn, err := grpc.NewClient(s.ClientAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					t.Fatal(err)
				}
				kv := pb.NewKVClient(conn)
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				rr, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
				if err != nil {
					t.Fatalf("start %d: range: %v", start, err)
				}
				if rr.Header.Revision != max(rev, 1) || len(rr.Kvs) != len(acked) {
					t.Fatalf("start %d: revision %d with %d keys, acknowledged revision %d with %d keys", start, rr.Header.Revision, len(rr.Kvs), rev, len(acked))
				}
				for _, x := range rr.Kvs {
					if a := acked[string(x.Key)]; a.val != string(x.Value) || a.rev != x.ModRevision {
						t.Fatalf("start %d: %s = %q at revision %d, acknowledged %q at %d", start, x.Key, x.Value, x.ModRevision, a.val, a.rev)
					}
				}
				// 3.5 snapshots' worth, at least 200 puts, after each start:
				// from the second start on, a compaction below the log loaded
				// from the snapshot (count < catch-up < index).
				n := max(int(7*tc.count/2), 200)
				var mu sync.Mutex
				var wg sync.WaitGroup
				for w := 0; w < 8; w++ {
					wg.Add(1)
					go func(w int) {
						defer wg.Done()
						for i := w; i < n; i += 8 {
							key, val := fmt.Sprintf("k%03d", i%500), fmt.Sprintf("v%d-%d", start, i)
							resp, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte(val)})
							if err != nil {
								t.Errorf("start %d: put %s: %v", start, key, err)
								return
							}
							mu.Lock()
							if resp.Header.Revision > rev {
								rev = resp.Header.Revision
							}
							if resp.Header.Revision > acked[key].rev {
								acked[key] = ack{val, resp.Header.Revision}
							}
							mu.Unlock()
						}
					}(w)
				}
				wg.Wait()
				cancel()
				conn.Close()
				idx, _ := s.eng.Applied()
				s.Stop()
				if err := s.Err(); err != nil {
					t.Fatalf("start %d: the member stopped with %v", start, err)
				}
				if t.Failed() {
					return
				}
				t.Logf("start %d: %d puts, applied index %d, revision %d", start, n, idx, rev)
			}
		})
	}
}
