package robustness

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	flagRuns    = flag.Int("robustness.runs", 50, "seeded runs of TestRobustness, round robin over the faults (0 skips it)")
	flagSeed    = flag.Uint64("robustness.seed", 20261204, "seed from which each run's seed is derived")
	flagSoak    = flag.Duration("robustness.soak", 0, "keep starting runs until this much time has passed (overrides -robustness.runs)")
	flagEtcd    = flag.String("robustness.etcd", "", "make member 0 of every cluster etcd 3.7.3: this binary, or with \"build\" built from interop/'s module (a mixed cluster)")
	flagKeepDir = flag.String("robustness.keep", "", "keep each run's member data dirs, logs and failing history visualization under this directory")
)

// TestMain removes the binaries the runs built.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, bin := range []string{buildBin, etcdBin} {
		if bin != "" {
			os.RemoveAll(filepath.Dir(bin))
		}
	}
	os.Exit(code)
}

type faultTotals struct {
	runs, failures int
	runStats
}

// TestRobustness runs seeded runs: a fresh 3-member (or 1-member)
// cluster of `etckit serve` processes, 6 clients, one fault injected in
// the middle of the load, then the checks of runOnce. Run i's seed is
// derived from -robustness.seed and i; its fault is scenarios[i %
// len(scenarios)]; each run is a subtest seed=S/fault=F that prints the
// command replaying it.
func TestRobustness(t *testing.T) {
	runs := *flagRuns
	keptRuns = *flagKeepDir != ""
	if runs == 0 && *flagSoak == 0 {
		t.Skip("-robustness.runs=0")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	t.Logf("seed %d, %d runs over %d faults (replay all: cd robustness && go test -run TestRobustness -robustness.seed=%d -robustness.runs=%d)",
		*flagSeed, runs, len(scenarios), *flagSeed, runs)
	var mu sync.Mutex
	totals := map[string]*faultTotals{}
	start := time.Now()
	seeds := rand.New(rand.NewPCG(*flagSeed, 0))
	for i := 0; ; i++ {
		if *flagSoak > 0 {
			if time.Since(start) > *flagSoak {
				break
			}
		} else if i >= runs {
			break
		}
		seed := seeds.Uint64() % 1_000_000_000
		sc := scenarios[i%len(scenarios)]
		name := fmt.Sprintf("seed=%d/fault=%s", seed, sc.name)
		t.Run(name, func(t *testing.T) {
			extra := ""
			if *flagEtcd != "" {
				extra = " -robustness.etcd=" + *flagEtcd
			}
			t.Logf("replay: cd robustness && go test -run 'TestRobustness/seed=%d/' -robustness.seed=%d -robustness.runs=%d -robustness.keep=/tmp/robustness%s",
				seed, *flagSeed, i+1, extra)
			dir := t.TempDir()
			if *flagKeepDir != "" {
				// A fresh dir: a kept one from an earlier run holds another
				// cluster's members.
				dir = filepath.Join(*flagKeepDir, fmt.Sprintf("seed=%d-%s", seed, sc.name))
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			var st runStats
			defer func() {
				mu.Lock()
				defer mu.Unlock()
				ft := totals[sc.name]
				if ft == nil {
					ft = &faultTotals{}
					totals[sc.name] = ft
				}
				ft.runs++
				if t.Failed() {
					ft.failures++
				}
				ft.requests += st.requests
				ft.unknown += st.unknown
				ft.patched += st.patched
				ft.watchEvents += st.watchEvents
				ft.serializable += st.serializable
				ft.leases += st.leases
			}()
			st = runOnce(t, seed, sc, dir, *flagEtcd)
		})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| fault | members | runs | requests | unknown outcomes | settled by watch | lease requests (succeeded) | serializable reads | watch events | failures |\n|---|---|---|---|---|---|---|---|---|---|\n")
	var sum faultTotals
	for _, sc := range scenarios {
		ft := totals[sc.name]
		if ft == nil {
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %d | %d | %d |\n", sc.name, sc.members, ft.runs, ft.requests, ft.unknown, ft.patched, ft.leases, ft.serializable, ft.watchEvents, ft.failures)
		sum.runs += ft.runs
		sum.requests += ft.requests
		sum.unknown += ft.unknown
		sum.patched += ft.patched
		sum.watchEvents += ft.watchEvents
		sum.serializable += ft.serializable
		sum.leases += ft.leases
		sum.failures += ft.failures
	}
	fmt.Fprintf(&b, "| total | | %d | %d | %d | %d | %d | %d | %d | %d |\n", sum.runs, sum.requests, sum.unknown, sum.patched, sum.leases, sum.serializable, sum.watchEvents, sum.failures)
	t.Logf("%s\nwall time %v", b.String(), time.Since(start).Round(time.Second))
}
