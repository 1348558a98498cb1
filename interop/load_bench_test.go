package interop

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// BenchmarkLoad is an etcd-benchmark-style load (tools/benchmark's put and
// range) against etckit serve and against etcd 3.7.3 embed, both started
// the same way in this process (fsync on, default snapshot count, 100 ms
// heartbeat, their own temp dir, 127.0.0.1 random port), alternately: for
// every case one runs, then the other, each on a fresh member.
//
//   - op=put: each request puts a random 8-byte key out of 100,000 (seeded)
//     with a 256-byte value, as `benchmark put --key-size 8
//     --key-space-size 100000 --val-size 256`.
//   - op=range-linearizable / range-serializable: each request reads one
//     key holding a 256-byte value, as `benchmark range foo
//     --consistency l|s`.
//
// b.N is the total number of requests, shared by the clients; each client
// has its own gRPC connection. Reported: ops/s over the whole run and the
// p99 request latency in ms. Run with a fixed count, e.g.
// -benchtime 40000x (see BENCHMARKS.md).
//
// Neither implementation may inherit the other's teardown (its garbage, its
// goroutines winding down): the heap is collected before each member
// starts, and -load.first says which implementation runs first in every
// case, so that a series of processes can alternate it.
var loadFirst = flag.String("load.first", "etckit", "BenchmarkLoad: the implementation that runs first in each case (etckit or etcd)")

func BenchmarkLoad(b *testing.B) {
	impls := []string{"etckit", "etcd"}
	switch *loadFirst {
	case "etckit":
	case "etcd":
		impls = []string{"etcd", "etckit"}
	default:
		b.Fatalf("-load.first %q: want etckit or etcd", *loadFirst)
	}
	const seed = 42
	b.Logf("seed %d", seed)
	value := make([]byte, 256)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	for _, op := range []string{"put", "range-linearizable", "range-serializable"} {
		for _, clients := range []int{16, 100} {
			for _, impl := range impls {
				runtime.GC()
				dir := filepath.Join(b.TempDir(), impl)
				m := launch(b, impl, dir)
				conns := make([]*grpc.ClientConn, clients)
				for i := range conns {
					conns[i] = dialTB(b, m.endpoint)
				}
				kv0 := pb.NewKVClient(conns[0])
				if _, err := kv0.Put(context.Background(), &pb.PutRequest{Key: []byte("foo"), Value: value}); err != nil {
					b.Fatal(err)
				}
				b.Run(fmt.Sprintf("op=%s/clients=%d/impl=%s", op, clients, impl), func(b *testing.B) {
					runLoad(b, op, conns, value, seed)
				})
				for _, c := range conns {
					c.Close()
				}
				m.stop()
				os.RemoveAll(dir)
			}
		}
	}
}

func runLoad(b *testing.B, op string, conns []*grpc.ClientConn, value []byte, seed int64) {
	runLoadAs(b, op, conns, nil, []byte("foo"), value, seed)
}

// runLoadAs is runLoad with a context per connection (nil: background;
// auth tokens travel in it) and the key the range ops read.
func runLoadAs(b *testing.B, op string, conns []*grpc.ClientConn, ctxs []context.Context, rangeKey, value []byte, seed int64) {
	var next atomic.Int64
	lat := make([][]time.Duration, len(conns))
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for c := range conns {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			kv := pb.NewKVClient(conns[c])
			r := rand.New(rand.NewSource(seed + int64(c)))
			ctx := context.Background()
			if ctxs != nil {
				ctx = ctxs[c]
			}
			for next.Add(1) <= int64(b.N) {
				var err error
				t0 := time.Now()
				switch op {
				case "put":
					_, err = kv.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "%08d", r.Intn(100000)), Value: value})
				case "range-linearizable":
					_, err = kv.Range(ctx, &pb.RangeRequest{Key: rangeKey})
				case "range-serializable":
					_, err = kv.Range(ctx, &pb.RangeRequest{Key: rangeKey, Serializable: true})
				}
				lat[c] = append(lat[c], time.Since(t0))
				if err != nil {
					failed.Store(err)
					return
				}
			}
		}(c)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(all[(len(all)*99)/100].Microseconds())/1000, "p99-ms")
}
