package etcd36

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// servers holds the etcd 3.6 server binary, built once per test process
// (the etckit binary is build's).
var servers struct {
	once sync.Once
	etcd string
	err  error
}

func buildServers(t *testing.T) {
	t.Helper()
	build(t)
	servers.once.Do(func() {
		servers.etcd = filepath.Join(bin.dir, "etcd-3.6")
		cmd := exec.Command("go", "build", "-o", servers.etcd, "go.etcd.io/etcd/server/v3")
		if out, err := cmd.CombinedOutput(); err != nil {
			servers.err = fmt.Errorf("go build etcd 3.6: %v\n%s", err, out)
		}
	})
	if servers.err != nil {
		t.Fatal(servers.err)
	}
}

// proc is one member process, etcd 3.6 or etckit, on 127.0.0.1.
type proc struct {
	kind, name, dir   string
	peerURL, clientEP string
	cmd               *exec.Cmd
	log               string
	conn              *grpc.ClientConn
	kv                pb.KVClient
	maint             pb.MaintenanceClient
	cluster           pb.ClusterClient
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs p's binary on its data dir with etcd's flags (both binaries
// take the same ones) and dials it.
func (p *proc) start(t *testing.T, initialCluster, state string) {
	t.Helper()
	name := servers.etcd
	args := []string{}
	if p.kind == "etckit" {
		name = bin.etckit
		args = append(args, "serve")
	}
	args = append(args, "--name", p.name, "--data-dir", p.dir,
		"--listen-peer-urls", p.peerURL, "--initial-advertise-peer-urls", p.peerURL,
		"--listen-client-urls", "http://"+p.clientEP, "--advertise-client-urls", "http://"+p.clientEP,
		"--initial-cluster", initialCluster, "--initial-cluster-state", state, "--initial-cluster-token", "etcd36-cluster",
		"--unsafe-no-fsync")
	p.log = filepath.Join(filepath.Dir(p.dir), p.name+"-"+p.kind+".log")
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(name, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cmd := p.cmd
	t.Cleanup(func() { stopCmd(cmd) })
	conn, err := grpc.NewClient(p.clientEP, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	p.conn, p.kv, p.maint, p.cluster = conn, pb.NewKVClient(conn), pb.NewMaintenanceClient(conn), pb.NewClusterClient(conn)
}

func stopCmd(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (p *proc) stop() {
	p.conn.Close()
	stopCmd(p.cmd)
}

// tail is the end of p's log, for failures.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// versions is GET /version on p's client URL.
func (p *proc) versions(t *testing.T) (server, cluster, storage string) {
	t.Helper()
	resp, err := http.Get("http://" + p.clientEP + "/version")
	if err != nil {
		return "", "", ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v struct {
		Server  string `json:"etcdserver"`
		Cluster string `json:"etcdcluster"`
		Storage string `json:"storage"`
	}
	_ = json.Unmarshal(b, &v)
	return v.Server, v.Cluster, v.Storage
}

// ladder is a cluster whose members are swapped one at a time.
type ladder struct {
	t       *testing.T
	dir     string
	members []*proc
	step    int
	next    int // the next member's number
}

func (l *ladder) newProc(kind string) *proc {
	n := l.next
	l.next++
	p := &proc{kind: kind, name: fmt.Sprintf("m%d", n), dir: filepath.Join(l.dir, fmt.Sprintf("m%d", n), "data"),
		peerURL: "http://" + freePort(l.t), clientEP: freePort(l.t)}
	if err := os.MkdirAll(filepath.Dir(p.dir), 0o700); err != nil {
		l.t.Fatal(err)
	}
	return p
}

// waitVersions waits until every member's /version reports the cluster
// and storage version want.
func (l *ladder) waitVersions(want string) {
	l.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var got []string
		ok := true
		for _, p := range l.members {
			sv, cv, st := p.versions(l.t)
			got = append(got, fmt.Sprintf("%s(%s): server %s cluster %s storage %s", p.name, p.kind, sv, cv, st))
			ok = ok && cv == want && st == want
		}
		if ok {
			l.t.Logf("versions: %s", strings.Join(got, "; "))
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("versions did not reach %s: %s", want, strings.Join(got, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// writeAndCompare puts keys through every member, then waits for HashKV
// at the last revision to agree on all and returns it.
func (l *ladder) writeAndCompare() uint32 {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l.step++
	var rev int64
	for _, p := range l.members {
		for i := 0; i < 5; i++ {
			var resp *pb.PutResponse
			var err error
			for try := 0; try < 50; try++ {
				resp, err = p.kv.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("step%d/%s/%d", l.step, p.name, i)), Value: []byte(p.kind)})
				if err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				l.t.Fatalf("put through %s (%s): %v\n%s", p.name, p.kind, err, p.tail())
			}
			rev = max(rev, resp.Header.Revision)
		}
	}
	for try := 0; ; try++ {
		var hashes []uint32
		var errs []string
		for _, p := range l.members {
			h, err := p.maint.HashKV(ctx, &pb.HashKVRequest{Revision: rev})
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", p.name, err))
				continue
			}
			hashes = append(hashes, h.Hash)
		}
		if len(errs) == 0 && len(slices.Compact(slices.Clone(hashes))) == 1 {
			return hashes[0]
		}
		if try == 100 {
			l.t.Fatalf("HashKV at revision %d: %v %v", rev, hashes, errs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (l *ladder) initialCluster() string {
	var parts []string
	for _, p := range l.members {
		parts = append(parts, p.name+"="+p.peerURL)
	}
	return strings.Join(parts, ",")
}

func (l *ladder) memberID(p *proc) uint64 {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := p.maint.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		l.t.Fatalf("status of %s: %v", p.name, err)
	}
	return st.Header.MemberId
}

// retry calls fn until it succeeds, or fails with an error that is not
// one of etcd's passing refusals (strict reconfiguration waits 5 s of
// peer connectivity; a learner must catch up before its promotion).
func retry(t *testing.T, what string, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		err := fn(ctx)
		if err == nil {
			return
		}
		transient := strings.Contains(err.Error(), "unhealthy cluster") || strings.Contains(err.Error(), "in sync with leader") ||
			strings.Contains(err.Error(), "not enough started members") || strings.Contains(err.Error(), "leader changed") ||
			strings.Contains(err.Error(), "timed out")
		if !transient || ctx.Err() != nil {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// replace adds a member of kind as a learner through another member,
// starts it, promotes it, then removes old and stops it.
func (l *ladder) replace(old *proc, kind string) *proc {
	l.t.Helper()
	var via *proc
	for _, p := range l.members {
		if p != old {
			via = p
			break
		}
	}
	n := l.newProc(kind)
	var add *pb.MemberAddResponse
	retry(l.t, "MemberAdd "+n.name, func(ctx context.Context) (err error) {
		add, err = via.cluster.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{n.peerURL}, IsLearner: true})
		return err
	})
	// Start it once every member lists it (a lagging peer's /members
	// would be refused by the joiner, as etcd refuses it).
	for _, p := range l.members {
		for i := 0; ; i++ {
			ml, err := p.cluster.MemberList(context.Background(), &pb.MemberListRequest{})
			if err == nil && slices.ContainsFunc(ml.Members, func(m *pb.Member) bool { return m.ID == add.Member.ID }) {
				break
			}
			if i == 200 {
				l.t.Fatalf("%s does not list the new member: %v", p.name, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	l.members = append(l.members, n)
	n.start(l.t, l.initialCluster(), "existing")
	retry(l.t, "MemberPromote "+n.name, func(ctx context.Context) error {
		_, err := via.cluster.MemberPromote(ctx, &pb.MemberPromoteRequest{ID: add.Member.ID})
		return err
	})
	oldID := l.memberID(old)
	retry(l.t, "MemberRemove "+old.name, func(ctx context.Context) error {
		_, err := via.cluster.MemberRemove(ctx, &pb.MemberRemoveRequest{ID: oldID})
		return err
	})
	old.stop()
	l.members = slices.DeleteFunc(l.members, func(p *proc) bool { return p == old })
	return n
}

// restartAs stops p and starts the other binary on the same data dir,
// name and URLs: an in-place upgrade or downgrade of one member.
func (l *ladder) restartAs(p *proc, kind string) {
	l.t.Helper()
	p.stop()
	p.kind = kind
	p.start(l.t, l.initialCluster(), "existing")
}

// TestEtcd36ClusterMigration is the operator's path from an etcd 3.6
// cluster to etckit and back, with real processes:
//
//  1. three etcd 3.6 members bootstrap a cluster (cluster and storage
//     version 3.6.0);
//  2. each is replaced by an etckit member (added as a learner, promoted,
//     the etcd member removed): the cluster stays at 3.6 while an etcd
//     member is left, and the version monitors raise it, and the storage
//     version, to 3.7 once only etckit (3.7.3) members remain;
//  3. `downgrade enable 3.6` brings cluster and storage back to 3.6, then
//     each etckit member is restarted in place as etcd 3.6 on its own data
//     dir; once all run 3.6 the leader ends the downgrade.
//
// After every step writes go through every member and HashKV agrees.
func TestEtcd36ClusterMigration(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real etcd 3.6 and etckit processes")
	}
	buildServers(t)
	l := &ladder{t: t, dir: t.TempDir()}
	for range 3 {
		l.members = append(l.members, l.newProc("etcd"))
	}
	for _, p := range l.members {
		p.start(t, l.initialCluster(), "new")
	}
	l.waitVersions("3.6.0")
	t.Logf("etcd 3.6 cluster: HashKV %d", l.writeAndCompare())

	for _, old := range slices.Clone(l.members) {
		n := l.replace(old, "etckit")
		h := l.writeAndCompare()
		etcdLeft := slices.ContainsFunc(l.members, func(p *proc) bool { return p.kind == "etcd" })
		if etcdLeft {
			for _, p := range l.members {
				if _, cv, _ := p.versions(t); cv != "3.6.0" {
					t.Fatalf("%s (%s) reports cluster version %s with an etcd 3.6 member left", p.name, p.kind, cv)
				}
			}
		}
		t.Logf("%s (etcd) replaced by %s (etckit): HashKV %d", old.name, n.name, h)
	}
	l.waitVersions("3.7.0")
	t.Logf("etckit cluster: HashKV %d", l.writeAndCompare())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := l.members[0].maint.Downgrade(ctx, &pb.DowngradeRequest{Action: pb.DowngradeRequest_ENABLE, Version: "3.6"})
	if err != nil {
		t.Fatalf("downgrade enable 3.6: %v", err)
	}
	t.Logf("downgrade enable 3.6: cluster version %s", resp.Version)
	l.waitVersions("3.6.0")
	for _, p := range l.members {
		l.restartAs(p, "etcd")
		t.Logf("%s restarted as etcd 3.6 on etckit's data dir: HashKV %d", p.name, l.writeAndCompare())
	}
	for i := 0; ; i++ {
		st, err := l.members[0].maint.Status(ctx, &pb.StatusRequest{})
		if err == nil && st.DowngradeInfo != nil && !st.DowngradeInfo.Enabled {
			break
		}
		if i == 300 {
			t.Fatalf("the downgrade did not end: %v %v", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	l.waitVersions("3.6.0")
	rr, err := l.members[0].kv.Range(ctx, &pb.RangeRequest{Key: []byte("step"), RangeEnd: []byte("stepz"), CountOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("downgrade done: three etcd 3.6 members, %d keys written over %d steps, HashKV %d", rr.Count, l.step, l.writeAndCompare())
}
