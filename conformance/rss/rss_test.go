// Package rss measures the resident memory of 3-member clusters run as
// processes: `etckit serve` against etcd 3.7.3, the binaries that
// conformance/run.sh builds into conformance/bin, the same load on each.
// It is a benchmark, run by hand after run.sh:
//
//	cd conformance && go test ./rss -run '^$' -bench . -benchtime 20000x
package rss

import (
	"bufio"
	"context"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func freePort(tb testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// cluster starts three processes of bin (argv prefix) on 127.0.0.1.
func cluster(b *testing.B, argv []string) (pids []int, clients []string) {
	b.Helper()
	var peers, cls, parts []string
	for i := 0; i < 3; i++ {
		peers = append(peers, "http://"+freePort(b))
		cls = append(cls, freePort(b))
		parts = append(parts, fmt.Sprintf("m%d=%s", i, peers[i]))
	}
	for i := 0; i < 3; i++ {
		args := append(slices.Clone(argv[1:]), "--name", fmt.Sprintf("m%d", i), "--data-dir", filepath.Join(b.TempDir(), "d"),
			"--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
			"--listen-client-urls", "http://"+cls[i], "--advertise-client-urls", "http://"+cls[i],
			"--initial-cluster", strings.Join(parts, ","), "--initial-cluster-token", "rss", "--log-level", "error")
		cmd := exec.Command(argv[0], args...)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		pids = append(pids, cmd.Process.Pid)
	}
	for _, c := range cls {
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get("http://" + c + "/health")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s not healthy: %v", c, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return pids, cls
}

// rssKB reads VmRSS and VmHWM (peak) of pid, in KiB.
func rssKB(pid int) (rss, hwm int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm
}

// BenchmarkClusterRSS: each kind's 3-member cluster takes b.N puts (16
// clients over the three members, 8-byte keys out of 100,000, 256-byte
// values, fsync on); reported is the median member's RSS after the load
// and its peak, in MiB.
func BenchmarkClusterRSS(b *testing.B) {
	dir, _ := os.Getwd()
	kinds := map[string][]string{
		"etckit": {filepath.Join(dir, "..", "bin", "etckit"), "serve"},
		"etcd":   {filepath.Join(dir, "..", "bin", "etcd-3.7.3")},
	}
	for _, kind := range []string{"etckit", "etcd"} {
		b.Run("impl="+kind, func(b *testing.B) {
			if _, err := os.Stat(kinds[kind][0]); err != nil {
				b.Skipf("%s: build it with conformance/run.sh first", kinds[kind][0])
			}
			pids, cls := cluster(b, kinds[kind])
			conns := make([]*grpc.ClientConn, 16)
			for i := range conns {
				c, err := grpc.NewClient(cls[i%3], grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				conns[i] = c
			}
			value := make([]byte, 256)
			var next atomic.Int64
			var wg sync.WaitGroup
			var failed atomic.Value
			b.ResetTimer()
			for w := range conns {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					kv := pb.NewKVClient(conns[w])
					r := rand.New(rand.NewSource(int64(w)))
					for next.Add(1) <= int64(b.N) {
						if _, err := kv.Put(context.Background(), &pb.PutRequest{Key: fmt.Appendf(nil, "%08d", r.Intn(100000)), Value: value}); err != nil {
							failed.Store(err)
							return
						}
					}
				}(w)
			}
			wg.Wait()
			b.StopTimer()
			if err := failed.Load(); err != nil {
				b.Fatal(err)
			}
			var rss, hwm []int64
			for _, p := range pids {
				r, h := rssKB(p)
				rss, hwm = append(rss, r), append(hwm, h)
			}
			slices.Sort(rss)
			slices.Sort(hwm)
			b.ReportMetric(float64(rss[1])/1024, "rss-MiB")
			b.ReportMetric(float64(hwm[1])/1024, "peak-rss-MiB")
			b.Logf("%s members: RSS %v KiB, peak %v KiB", kind, rss, hwm)
		})
	}
}
