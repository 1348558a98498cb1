package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

var (
	killCycles     = flag.Int("killnine.cycles", 50, "kill -9 cycles of TestKillNineDuringWrites at the serve default --snapshot-count")
	killSnapCycles = flag.Int("killnine.snapshot-cycles", 30, "kill -9 cycles of TestKillNineDuringWrites at -killnine.snapshot-count")
	killSeed       = flag.Int64("killnine.seed", 20261121, "seed of TestKillNineDuringWrites (load durations)")
	killSnapCount  = flag.Uint64("killnine.snapshot-count", 300, "the small --snapshot-count of TestKillNineDuringWrites, so that kills cross snapshots")
	killWriters    = 8
)

// ackedPut is a put whose response arrived: its value and the revision the
// response header gave.
type ackedPut struct {
	value string
	rev   int64
}

// TestKillNineDuringWrites: the real `etckit serve` process (fsync on, the
// serve command's defaults) is killed with SIGKILL in the middle of a
// concurrent put load, then restarted on the same data dir, for
// -killnine.cycles cycles; then again with a small --snapshot-count
// (-killnine.snapshot-count, below the default 5,000
// --snapshot-catchup-entries), so that every cycle writes past snapshots
// and kills land before and after them. After every restart the member
// must become healthy, every acknowledged put must be there with its value
// and the revision its response reported, and the store's revision must
// not go backwards (it is at least every acknowledged revision and the
// revision seen after the previous restart). A put may fail only because
// of the kill: a member that stops by itself during the load fails the
// test. (Before, every failed put was put down to the kill, so a member
// that stopped on a storage error a second after each restart passed.)
func TestKillNineDuringWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	t.Run("default-snapshot-count", func(t *testing.T) { killNineDuringWrites(t, *killCycles) })
	t.Run(fmt.Sprintf("snapshot-count=%d", *killSnapCount), func(t *testing.T) {
		killNineDuringWrites(t, *killSnapCycles, fmt.Sprintf("--snapshot-count=%d", *killSnapCount))
	})
}

func killNineDuringWrites(t *testing.T, cycles int, extra ...string) {
	r := rand.New(rand.NewSource(*killSeed))
	t.Logf("seed %d, %d cycles, %d writers, flags %q (replay: go test ./cmd/etckit -run TestKillNineDuringWrites -killnine.seed %d)",
		*killSeed, cycles, killWriters, extra, *killSeed)
	dataDir := filepath.Join(t.TempDir(), "member.etckit")
	var (
		acked     = map[string]ackedPut{} // every acknowledged put, by key
		prefixes  []string                // one key prefix per cycle
		lastRev   int64                   // revision seen after the previous restart
		maxAcked  int64                   // highest acknowledged revision
		checked   int                     // acknowledged puts verified, summed over restarts
		unacked   int                     // puts with no response
		landed    int                     // puts with no response found after restart
		totalLoad time.Duration
	)
	verify := func(kv pb.KVClient, cycle int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		found := map[string]bool{}
		var rev int64
		for _, p := range prefixes {
			resp, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte(p), RangeEnd: prefixEnd(p)})
			if err != nil {
				t.Fatalf("after restart %d: range %s: %v", cycle, p, err)
			}
			rev = resp.Header.Revision
			for _, x := range resp.Kvs {
				k := string(x.Key)
				found[k] = true
				a, ok := acked[k]
				if !ok {
					continue // a put killed before its response: may or may not land
				}
				if string(x.Value) != a.value || x.ModRevision != a.rev || x.CreateRevision != a.rev || x.Version != 1 {
					t.Fatalf("after restart %d: %s = %q (create %d, mod %d, version %d), acknowledged %q at revision %d",
						cycle, k, x.Value, x.CreateRevision, x.ModRevision, x.Version, a.value, a.rev)
				}
			}
		}
		missing := 0
		for k, a := range acked {
			if !found[k] {
				if missing < 10 {
					t.Errorf("after restart %d: acknowledged put %s = %q at revision %d is missing", cycle, k, a.value, a.rev)
				}
				missing++
			}
		}
		if missing > 0 {
			t.Fatalf("after restart %d: %d of %d acknowledged puts missing", cycle, missing, len(acked))
		}
		if rev < lastRev || rev < maxAcked {
			t.Fatalf("after restart %d: revision %d, but %d was seen after the previous restart and %d acknowledged", cycle, rev, lastRev, maxAcked)
		}
		checked += len(acked)
		landed = len(found) - len(acked)
		lastRev = rev
	}

	for cycle := 0; cycle <= cycles; cycle++ {
		s := startKillable(t, dataDir, cycle, extra...) // bounded health wait; fails if the member does not come back
		conn, err := grpc.NewClient(strings.TrimPrefix(s.url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)))
		if err != nil {
			t.Fatal(err)
		}
		kv := pb.NewKVClient(conn)
		verify(kv, cycle)
		if cycle == cycles {
			conn.Close()
			s.cmd.Process.Signal(syscall.SIGTERM)
			if err := s.cmd.Wait(); err != nil {
				t.Fatalf("etckit serve exited with %v on SIGTERM; log:\n%s", err, tail(s.log, 4000))
			}
			break
		}

		prefix := fmt.Sprintf("/kill/%03d/", cycle)
		prefixes = append(prefixes, prefix)
		load := time.Duration(100+r.Intn(301)) * time.Millisecond
		totalLoad += load
		var (
			mu      sync.Mutex
			wg      sync.WaitGroup
			killed  bool  // set (under mu) just before the SIGKILL
			lostErr error // a put that failed before the kill
		)
		for w := 0; w < killWriters; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < 1_000_000; i++ {
					key := fmt.Sprintf("%s%d/%06d", prefix, w, i)
					val := fmt.Sprintf("v-%d-%d-%d", cycle, w, i)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					resp, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte(val)})
					cancel()
					mu.Lock()
					if err != nil {
						unacked++
						if !killed && lostErr == nil {
							lostErr = fmt.Errorf("put %s: %w", key, err)
						}
						mu.Unlock()
						return // the member is gone
					}
					acked[key] = ackedPut{val, resp.Header.Revision}
					maxAcked = max(maxAcked, resp.Header.Revision)
					mu.Unlock()
				}
			}(w)
		}
		time.Sleep(load)
		mu.Lock()
		killed = true
		mu.Unlock()
		if err := s.cmd.Process.Kill(); err != nil { // SIGKILL
			t.Fatalf("cycle %d: kill: %v; log:\n%s", cycle, err, tail(s.log, 4000))
		}
		wg.Wait()
		s.cmd.Wait()
		conn.Close()
		if lostErr != nil {
			t.Fatalf("cycle %d: the member failed a put before it was killed (%v); log:\n%s", cycle, lostErr, tail(s.log, 4000))
		}
	}
	t.Logf("%d kill -9 cycles (%v of load in all), %d restarts: %d acknowledged puts, all present after every restart (%d key checks in all); %d puts unanswered at the kill, %d of them landed; final revision %d",
		cycles, totalLoad, cycles, len(acked), checked, unacked, landed, lastRev)
}

type killable struct {
	cmd *exec.Cmd
	url string
	log string // path of the process's combined output
}

// startKillable runs `etckit serve` on dataDir (127.0.0.1, random ports),
// its output in a file, and waits for /health with bounded time: 1 s per
// request, 30 s in all (a normal start takes well under a second). A
// member that does not come back is sent SIGQUIT so that its goroutines
// are in the failure message.
func startKillable(t *testing.T, dataDir string, cycle int, extra ...string) *killable {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	logPath := filepath.Join(t.TempDir(), fmt.Sprintf("serve-%03d.log", cycle))
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(os.Args[0], "serve", "--data-dir", dataDir,
		"--listen-client-urls", url, "--advertise-client-urls", url,
		"--initial-advertise-peer-urls", peer, "--listen-peer-urls", peer, "--initial-cluster", "default="+peer)
	if *killSnapCount != 0 {
		cmd.Args = append(cmd.Args, fmt.Sprintf("--snapshot-count=%d", *killSnapCount))
	}
	cmd.Args = append(cmd.Args, extra...)
	cmd.Env = append(os.Environ(), "ETCKIT_RUN_MAIN=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	client := &http.Client{Timeout: time.Second}
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := client.Get(url + "/health")
		if err != nil {
			last = err.Error()
			continue
		}
		var h struct{ Health, Reason string }
		json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if h.Health == "true" {
			return &killable{cmd: cmd, url: url, log: logPath}
		}
		last = fmt.Sprintf("%d %+v", resp.StatusCode, h)
	}
	cmd.Process.Signal(syscall.SIGQUIT)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	t.Fatalf("restart %d: etckit serve not healthy after 30 s (last: %s); log (with goroutines, SIGQUIT):\n%s", cycle, last, tail(logPath, 60000))
	return nil
}

// TestKillNineSnapshotAfterRestart: a member killed with SIGKILL, restarted,
// then taking a snapshot (--snapshot-count=20, 60 puts) and stopped
// cleanly must come back a third time. The snapshot taken after a restart
// must carry the raft configuration (voters), else the next start restores
// a configuration without voters and the member never elects itself.
func TestKillNineSnapshotAfterRestart(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "member.etckit")
	put := func(s *killable, n int, prefix string) {
		t.Helper()
		conn, err := grpc.NewClient(strings.TrimPrefix(s.url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		kv := pb.NewKVClient(conn)
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := kv.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "%s%03d", prefix, i), Value: []byte("v")})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	s := startKillable(t, dataDir, 0, "--snapshot-count=20")
	put(s, 5, "/first/")
	s.cmd.Process.Kill() // SIGKILL
	s.cmd.Wait()
	s = startKillable(t, dataDir, 1, "--snapshot-count=20")
	put(s, 60, "/second/") // the member takes a snapshot
	s.cmd.Process.Signal(syscall.SIGTERM)
	if err := s.cmd.Wait(); err != nil {
		t.Fatalf("SIGTERM: %v; log:\n%s", err, tail(s.log, 4000))
	}
	snaps, _ := filepath.Glob(filepath.Join(dataDir, "member", "snap", "*.snap"))
	if len(snaps) == 0 {
		t.Fatal("no .snap written after 60 puts with --snapshot-count=20")
	}
	s = startKillable(t, dataDir, 2, "--snapshot-count=20")
	put(s, 1, "/third/")
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
	t.Logf("restarted after the snapshot %s", filepath.Base(snaps[len(snaps)-1]))
}

// tail is the last n bytes of the file at path.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// prefixEnd is the range end of the keys starting with p.
func prefixEnd(p string) []byte {
	b := []byte(p)
	b[len(b)-1]++
	return b
}
