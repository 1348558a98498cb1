package interop

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

var scrapeInterval = flag.Duration("scrape.interval", time.Second, "BenchmarkMetricsScrape: how often the scraper GETs /metrics")

// processCPU is the CPU time (user + system) this process has used.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMetricsScrape is the cost of being scraped: b.N puts (8-byte
// keys out of 100,000, seeded, 256-byte values, 16 clients) against a fresh
// member, without a scraper and with one that GETs /metrics every
// -scrape.interval (default 1 s, Prometheus' usual 15 s made harsher), on
// etckit and on etcd 3.7.3 (embed), both in this process with fsync on.
// Reported: the process CPU time per put (members, clients and scraper
// together: the difference between scrape=off and scrape=on is the
// scrape's cost), puts/s and the number of scrapes. The target is
// under 1% more CPU with the scraper. Run long enough for many scrapes,
// e.g. -benchtime 60000x.
func BenchmarkMetricsScrape(b *testing.B) {
	const seed, clients = 42, 16
	b.Logf("seed %d", seed)
	value := make([]byte, 256)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	for _, impl := range []string{"etckit", "etcd"} {
		for _, scrape := range []bool{false, true} {
			b.Run(fmt.Sprintf("impl=%s/scrape=%v", impl, scrape), func(b *testing.B) {
				b.StopTimer()
				runtime.GC()
				m := launch(b, impl, filepath.Join(b.TempDir(), impl))
				defer m.stop()
				conns := make([]*grpc.ClientConn, clients)
				for i := range conns {
					conns[i] = dialTB(b, m.endpoint)
					defer conns[i].Close()
				}
				stop := make(chan struct{})
				var scrapes atomic.Int64
				var scraper sync.WaitGroup
				if scrape {
					scraper.Add(1)
					go func() {
						defer scraper.Done()
						c := &http.Client{Timeout: 10 * time.Second}
						t := time.NewTicker(*scrapeInterval)
						defer t.Stop()
						for {
							select {
							case <-t.C:
							case <-stop:
								return
							}
							resp, err := c.Get("http://" + m.endpoint + "/metrics")
							if err != nil {
								continue
							}
							_, _ = io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							scrapes.Add(1)
						}
					}()
				}
				var next atomic.Int64
				var failed atomic.Value
				var wg sync.WaitGroup
				cpu0, t0 := processCPU(b), time.Now()
				b.StartTimer()
				for c := range conns {
					wg.Add(1)
					go func(c int) {
						defer wg.Done()
						kv := pb.NewKVClient(conns[c])
						r := rand.New(rand.NewSource(seed + int64(c)))
						for next.Add(1) <= int64(b.N) {
							if _, err := kv.Put(context.Background(), &pb.PutRequest{Key: fmt.Appendf(nil, "%08d", r.Intn(100000)), Value: value}); err != nil {
								failed.Store(err)
								return
							}
						}
					}(c)
				}
				wg.Wait()
				b.StopTimer()
				cpu, elapsed := processCPU(b)-cpu0, time.Since(t0)
				close(stop)
				scraper.Wait()
				if err := failed.Load(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/put")
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "puts/s")
				b.ReportMetric(float64(scrapes.Load()), "scrapes")
			})
		}
	}
}

// BenchmarkMetricsScrapeCPU is the CPU one scrape of /metrics costs the
// whole process (member, HTTP client and parse-free read together), on a
// member that has served 20,000 puts (16 clients, seeded) so that every
// histogram and per-method series is populated, etckit against etcd 3.7.3
// embed in the same run. b.N scrapes run one after another with no other
// load. Reported: cpu-us/scrape and the bytes of one exposition. With the
// cpu-us/put of BenchmarkMetricsScrape's scrape=false runs, a scrape every
// second under a put load of P puts/s costs cpu-us/scrape / (P *
// cpu-us/put) of that load's CPU.
func BenchmarkMetricsScrapeCPU(b *testing.B) {
	const seed, clients, puts = 42, 16, 20000
	value := make([]byte, 256)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	for _, impl := range []string{"etckit", "etcd"} {
		b.Run("impl="+impl, func(b *testing.B) {
			b.StopTimer()
			m := launch(b, impl, filepath.Join(b.TempDir(), impl))
			defer m.stop()
			var next atomic.Int64
			var failed atomic.Value
			var wg sync.WaitGroup
			for c := 0; c < clients; c++ {
				conn := dialTB(b, m.endpoint)
				defer conn.Close()
				wg.Add(1)
				go func(c int) {
					defer wg.Done()
					kv := pb.NewKVClient(conn)
					r := rand.New(rand.NewSource(seed + int64(c)))
					for next.Add(1) <= puts {
						if _, err := kv.Put(context.Background(), &pb.PutRequest{Key: fmt.Appendf(nil, "%08d", r.Intn(100000)), Value: value}); err != nil {
							failed.Store(err)
							return
						}
					}
				}(c)
			}
			wg.Wait()
			if err := failed.Load(); err != nil {
				b.Fatal(err)
			}
			c := &http.Client{Timeout: 10 * time.Second}
			var size int64
			runtime.GC()
			cpu0 := processCPU(b)
			b.StartTimer()
			for i := 0; i < b.N; i++ {
				resp, err := c.Get("http://" + m.endpoint + "/metrics")
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					b.Fatalf("scrape: status %d, %v", resp.StatusCode, err)
				}
				size = n
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-us/scrape")
			b.ReportMetric(float64(size), "bytes/scrape")
		})
	}
}
