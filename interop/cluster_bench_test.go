package interop

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// BenchmarkClusterLoad is BenchmarkLoad's etcd-benchmark-style load
// against a 3-member cluster: three etckit members, then three etcd 3.7.3
// members (embed), in this process, started the same way (fsync on, 100 ms
// heartbeat, 1 s election, etcd's peer protocol on 127.0.0.1), alternating
// which kind runs first (-load.first).
//
//   - op=put: clients spread over the three members, round robin (writes
//     through followers are forwarded to the leader).
//   - op=range-linearizable-follower: every client on one follower, each
//     read a ReadIndex round with the leader.
//
// Reported: ops/s and p99 in ms. Run with a fixed count, e.g.
// -benchtime 20000x (BENCHMARKS.md).
func BenchmarkClusterLoad(b *testing.B) {
	kinds := []string{"etckit", "etcd"}
	if *loadFirst == "etcd" {
		kinds = []string{"etcd", "etckit"}
	}
	const seed = 42
	value := make([]byte, 256)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	for _, op := range []string{"put", "range-linearizable-follower"} {
		for _, clients := range []int{16, 100} {
			for _, kind := range kinds {
				runtime.GC()
				c := startMixedCluster(&mixedCluster{t: b, token: "bench-" + kind, production: true}, kind, kind, kind)
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				lead := c.leader(ctx)
				cancel()
				var targets []*mixedMember
				for _, mm := range c.members {
					if op == "put" || mm != lead {
						targets = append(targets, mm)
					}
				}
				if op != "put" {
					targets = targets[:1]
				}
				conns := make([]*grpc.ClientConn, clients)
				for i := range conns {
					conns[i] = dialTB(b, targets[i%len(targets)].clientAddr)
				}
				if _, err := pb.NewKVClient(conns[0]).Put(context.Background(), &pb.PutRequest{Key: []byte("foo"), Value: value}); err != nil {
					b.Fatal(err)
				}
				loadOp := "put"
				if op != "put" {
					loadOp = "range-linearizable"
				}
				b.Run(fmt.Sprintf("op=%s/clients=%d/impl=%s", op, clients, kind), func(b *testing.B) {
					runLoad(b, loadOp, conns, value, seed)
				})
				for _, cc := range conns {
					cc.Close()
				}
				for _, mm := range c.members {
					c.stop(mm)
				}
			}
		}
	}
}

var catchUpEntries = flag.Int("catchup.entries", 100000, "BenchmarkClusterCatchUp: puts while the follower is down")

// BenchmarkClusterCatchUp: a follower of a 3-member cluster is stopped,
// -catchup.entries puts (default 100,000, 16 clients, through the leader)
// go into the other two, and the follower is started again; reported is
// the time from its start until it has applied the leader's index (it gets
// a db snapshot and the entries after it), for etckit and etcd 3.7.3 alike
// (fsync on, default --snapshot-count 10,000 and catch-up entries 5,000).
func BenchmarkClusterCatchUp(b *testing.B) {
	kinds := []string{"etckit", "etcd"}
	if *loadFirst == "etcd" {
		kinds = []string{"etcd", "etckit"}
	}
	value := make([]byte, 256)
	for _, kind := range kinds {
		b.Run("impl="+kind, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				runtime.GC()
				c := startMixedCluster(&mixedCluster{t: b, token: "catchup-" + kind, production: true}, kind, kind, kind)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				lead := c.leader(ctx)
				var lag *mixedMember
				for _, mm := range c.members {
					if mm != lead {
						lag = mm
						break
					}
				}
				c.stop(lag)
				c.leader(ctx)
				conns := make([]*grpc.ClientConn, 16)
				for i := range conns {
					conns[i] = dialTB(b, lead.clientAddr)
				}
				n := *catchUpEntries
				errc := make(chan error, len(conns))
				for w := range conns {
					go func(w int) {
						kv := pb.NewKVClient(conns[w])
						for k := w; k < n; k += len(conns) {
							if _, err := kv.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "%08d", k%100000), Value: value}); err != nil {
								errc <- err
								return
							}
						}
						errc <- nil
					}(w)
				}
				for range conns {
					if err := <-errc; err != nil {
						b.Fatal(err)
					}
				}
				st, err := lead.m.maint.Status(ctx, &pb.StatusRequest{})
				if err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				start := time.Now()
				if err := c.start(lag, "new"); err != nil {
					b.Fatal(err)
				}
				c.dial(lag)
				for {
					ls, err := lag.m.maint.Status(ctx, &pb.StatusRequest{})
					if err == nil && ls.RaftAppliedIndex >= st.RaftAppliedIndex {
						break
					}
					if ctx.Err() != nil {
						b.Fatalf("%s did not catch up: %v", lag.name, err)
					}
					time.Sleep(5 * time.Millisecond)
				}
				took := time.Since(start)
				b.StopTimer()
				b.ReportMetric(took.Seconds(), "catchup-s")
				c.sameHashKV(ctx, 0)
				for _, cc := range conns {
					cc.Close()
				}
				for _, mm := range c.members {
					c.stop(mm)
				}
				cancel()
			}
		})
	}
}
