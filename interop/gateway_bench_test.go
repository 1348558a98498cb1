package interop

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkGatewayPut is BenchmarkLoad's put through the JSON gateway:
// each client POSTs /v3/kv/put (a random 8-byte key out of 100,000,
// seeded, a 256-byte value, base64 as the gateway wants) on its own
// keep-alive HTTP/1.1 connection, against etckit serve and etcd 3.7.3
// embed started the same way (fsync on, the gateway on the client URL by
// default); -load.first says which runs first in each case. Reported:
// ops/s over the run and p99 latency. b.N is the total number of requests,
// e.g. -benchtime 20000x.
func BenchmarkGatewayPut(b *testing.B) {
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
	val64 := base64.StdEncoding.EncodeToString(value)
	for _, clients := range []int{16, 100} {
		for _, impl := range impls {
			runtime.GC()
			m := launch(b, impl, filepath.Join(b.TempDir(), impl))
			b.Run(fmt.Sprintf("clients=%d/impl=%s", clients, impl), func(b *testing.B) {
				runGatewayPut(b, "http://"+m.endpoint+"/v3/kv/put", clients, val64, seed)
			})
			m.stop()
		}
	}
}

func runGatewayPut(b *testing.B, url string, clients int, val64 string, seed int64) {
	var next atomic.Int64
	lat := make([][]time.Duration, clients)
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			// One connection per client, kept alive.
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}}
			defer hc.CloseIdleConnections()
			r := rand.New(rand.NewSource(seed + int64(c)))
			var body bytes.Buffer
			for next.Add(1) <= int64(b.N) {
				key := base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "%08d", r.Intn(100000)))
				body.Reset()
				fmt.Fprintf(&body, `{"key":%q,"value":%q}`, key, val64)
				t0 := time.Now()
				resp, err := hc.Post(url, "application/json", &body)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("POST %s: %s", url, resp.Status)
					}
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
