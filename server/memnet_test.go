package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/transport"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// memNet is an in-memory network between members of one process: every
// ordered pair of members has a queue delivered in order by its own
// goroutine, and any direction can be cut (messages dropped), as a
// partition or a one-way loss would.
type memNet struct {
	mu    sync.Mutex
	nodes map[uint64]*Server
	cut   map[[2]uint64]bool
	links map[[2]uint64]chan *raftpb.Message
	stopc chan struct{}
	wg    sync.WaitGroup
}

func newMemNet() *memNet {
	return &memNet{nodes: map[uint64]*Server{}, cut: map[[2]uint64]bool{}, links: map[[2]uint64]chan *raftpb.Message{},
		stopc: make(chan struct{})}
}

func (n *memNet) register(s *Server) {
	n.mu.Lock()
	n.nodes[s.ID()] = s
	n.mu.Unlock()
}

func (n *memNet) unregister(id uint64) {
	n.mu.Lock()
	delete(n.nodes, id)
	n.mu.Unlock()
}

// partition cuts every link between the members in a and those in b.
func (n *memNet) partition(a, b []uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			n.cut[[2]uint64{x, y}], n.cut[[2]uint64{y, x}] = true, true
		}
	}
}

// drop cuts the one direction from → to.
func (n *memNet) drop(from, to uint64) {
	n.mu.Lock()
	n.cut[[2]uint64{from, to}] = true
	n.mu.Unlock()
}

func (n *memNet) heal() {
	n.mu.Lock()
	n.cut = map[[2]uint64]bool{}
	n.mu.Unlock()
}

func (n *memNet) stop() {
	close(n.stopc)
	n.wg.Wait()
}

// deliver queues m on the link from → m.To.
func (n *memNet) deliver(from uint64, m *raftpb.Message) {
	key := [2]uint64{from, m.GetTo()}
	n.mu.Lock()
	if n.cut[key] {
		n.mu.Unlock()
		return
	}
	c := n.links[key]
	if c == nil {
		c = make(chan *raftpb.Message, 4096)
		n.links[key] = c
		n.wg.Add(1)
		go n.run(key, c)
	}
	n.mu.Unlock()
	select {
	case c <- m:
	default: // a full queue drops, as etcd's does
	}
}

func (n *memNet) run(key [2]uint64, c chan *raftpb.Message) {
	defer n.wg.Done()
	for {
		select {
		case m := <-c:
			n.mu.Lock()
			dst, cut := n.nodes[key[1]], n.cut[key]
			n.mu.Unlock()
			if dst == nil || cut {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = dst.Process(ctx, m)
			cancel()
		case <-n.stopc:
			return
		}
	}
}

// memTransport is one member's end of a memNet (server.Transport). The
// sender of a message is its From, as raft sets it.
type memTransport struct {
	net *memNet
}

func (t *memTransport) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		t.net.deliver(m.GetFrom(), m)
	}
}

// SendSnapshot hands the db to the receiver's SnapshotStore and the MsgSnap
// to its raft, as /raft/snapshot does, unless the link is cut.
func (t *memTransport) SendSnapshot(sm *transport.SnapshotMessage) {
	from, to := sm.Message.GetFrom(), sm.Message.GetTo()
	go func() {
		db, err := io.ReadAll(sm.DB)
		t.net.mu.Lock()
		dst, src, cut := t.net.nodes[to], t.net.nodes[from], t.net.cut[[2]uint64{from, to}]
		t.net.mu.Unlock()
		ok := err == nil && dst != nil && !cut
		if ok {
			_, err = dst.SaveDB(bytes.NewReader(db), sm.Message)
			ok = err == nil && dst.Process(context.Background(), sm.Message) == nil
		}
		if src != nil {
			if ok {
				src.ReportSnapshot(to, raft.SnapshotFinish)
			} else {
				src.ReportSnapshot(to, raft.SnapshotFailure)
			}
		}
		sm.Done(ok)
	}()
}

func (t *memTransport) AddPeer(uint64, []string) error    { return nil }
func (t *memTransport) RemovePeer(uint64)                 {}
func (t *memTransport) UpdatePeer(uint64, []string) error { return nil }
func (t *memTransport) Stop()                             {}

// memCluster is n members on a memNet, each with a gRPC client.
type memCluster struct {
	t       *testing.T
	net     *memNet
	names   []string
	dirs    []string
	initial string
	mod     func(*Config)
	srv     []*Server
	conns   []*grpc.ClientConn
}

func newMemCluster(t *testing.T, n int, mod func(*Config)) *memCluster {
	c := &memCluster{t: t, net: newMemNet(), mod: mod, srv: make([]*Server, n), conns: make([]*grpc.ClientConn, n)}
	var parts []string
	for i := 0; i < n; i++ {
		c.names = append(c.names, fmt.Sprintf("m%d", i))
		c.dirs = append(c.dirs, filepath.Join(t.TempDir(), c.names[i]))
		// Peer URLs name the members (IDs derive from them); nothing
		// listens there, the memNet carries the messages.
		parts = append(parts, fmt.Sprintf("%s=http://%s", c.names[i], freeAddr(t)))
	}
	c.initial = strings.Join(parts, ",")
	for i := 0; i < n; i++ {
		c.start(i)
	}
	t.Cleanup(func() {
		for i := range c.srv {
			c.stop(i)
		}
		c.net.stop()
	})
	return c
}

func (c *memCluster) start(i int) {
	c.t.Helper()
	tr := &memTransport{net: c.net}
	cfg := Config{
		Engine:           engine.Options{Name: c.names[i], DataDir: c.dirs[i], InitialCluster: c.initial, NoSync: true},
		ListenClientURLs: []string{"http://127.0.0.1:0"},
		TickInterval:     10 * time.Millisecond,
		ElectionTicks:    10,
		Transport:        tr,
	}
	if c.mod != nil {
		c.mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.net.register(s)
	if err := s.Serve(); err != nil {
		s.Stop()
		c.t.Fatal(err)
	}
	conn, err := grpc.NewClient(s.ClientAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.srv[i], c.conns[i] = s, conn
}

func (c *memCluster) stop(i int) {
	if c.srv[i] == nil {
		return
	}
	c.net.unregister(c.srv[i].ID())
	c.conns[i].Close()
	c.srv[i].Stop()
	c.srv[i], c.conns[i] = nil, nil
}

// leaderOf waits until the members in idx agree on a leader among them.
func (c *memCluster) leaderOf(idx ...int) int {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		lead := uint64(0)
		agree := true
		for _, i := range idx {
			l := c.srv[i].Leader()
			if l == 0 || (lead != 0 && l != lead) {
				agree = false
				break
			}
			lead = l
		}
		if agree {
			for _, i := range idx {
				if c.srv[i].ID() == lead {
					return i
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("members %v agreed on no leader among them in 20 s", idx)
	return -1
}

func (c *memCluster) put(ctx context.Context, i int, key string) (int64, error) {
	resp, err := pb.NewKVClient(c.conns[i]).Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte(c.names[i])})
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// converge waits until HashKV at rev is equal on the members in idx.
func (c *memCluster) converge(rev int64, idx ...int) uint32 {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var got []uint32
	for time.Now().Before(deadline) {
		got = got[:0]
		for _, i := range idx {
			h, _, err := c.srv[i].Engine().Store().HashKV(rev)
			if err != nil {
				break
			}
			got = append(got, h.Hash)
		}
		if len(got) == len(idx) {
			same := true
			for _, h := range got {
				same = same && h == got[0]
			}
			if same {
				return got[0]
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("members %v did not converge at revision %d: %v", idx, rev, got)
	return 0
}

func others(n, skip int) []int {
	var out []int
	for i := 0; i < n; i++ {
		if i != skip {
			out = append(out, i)
		}
	}
	return out
}

// TestMemNetPartitionedLeader: the leader is cut off from both followers.
// The majority elects a new leader and takes writes; the old leader, with
// raft's CheckQuorum, steps down and takes none (a write through it fails);
// after the partition heals it follows and catches up.
func TestMemNetPartitionedLeader(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	lead := c.leaderOf(0, 1, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.put(ctx, lead, "before"); err != nil {
		t.Fatal(err)
	}
	rest := others(3, lead)
	c.net.partition([]uint64{c.srv[lead].ID()}, []uint64{c.srv[rest[0]].ID(), c.srv[rest[1]].ID()})
	newLead := c.leaderOf(rest...)
	var rev int64
	for k := 0; k < 30; k++ {
		r, err := c.put(ctx, rest[k%2], fmt.Sprintf("majority/%02d", k))
		if err != nil {
			t.Fatalf("put through the majority: %v", err)
		}
		rev = r
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := c.put(wctx, lead, "minority")
	wcancel()
	if err == nil {
		t.Fatal("the partitioned old leader took a write")
	}
	t.Logf("leader %s cut off: %s leads the majority; a write through the old leader: %v", c.names[lead], c.names[newLead], err)
	c.net.heal()
	c.leaderOf(0, 1, 2)
	h := c.converge(rev, 0, 1, 2)
	rr, err := pb.NewKVClient(c.conns[lead]).Range(ctx, &pb.RangeRequest{Key: []byte("minority")})
	if err != nil || rr.Count != 0 {
		t.Fatalf("the refused write is there: %v %v", rr, err)
	}
	t.Logf("healed: HashKV %d at revision %d on all three", h, rev)
}

// TestMemNetOneWayLoss: messages from the leader to one follower are
// dropped while the other direction works. The cluster keeps taking writes
// through every member (the cut follower forwards its proposals; the
// leader's answers reach it only through the log once healed), and all
// three converge after the loss ends.
func TestMemNetOneWayLoss(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	lead := c.leaderOf(0, 1, 2)
	rest := others(3, lead)
	c.net.drop(c.srv[lead].ID(), c.srv[rest[0]].ID())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var rev int64
	for k := 0; k < 30; k++ {
		r, err := c.put(ctx, rest[1], fmt.Sprintf("oneway/%02d", k))
		if err != nil {
			t.Fatalf("put through %s: %v", c.names[rest[1]], err)
		}
		rev = max(rev, r)
	}
	c.converge(rev, lead, rest[1])
	c.net.heal()
	c.leaderOf(0, 1, 2)
	h := c.converge(rev, 0, 1, 2)
	t.Logf("one-way loss %s→%s healed: HashKV %d at revision %d on all three", c.names[lead], c.names[rest[0]], h, rev)
}

// TestMemNetSnapshotCatchUp: a follower cut off while the others write far
// past their raft logs (--snapshot-count 50, --snapshot-catchup-entries
// 10) is sent a db snapshot when the partition heals, applies it, serves
// the same data, and restarts on the data dir that the snapshot left.
func TestMemNetSnapshotCatchUp(t *testing.T) {
	c := newMemCluster(t, 3, func(cfg *Config) { cfg.Engine.SnapshotCount, cfg.Engine.CatchUpEntries = 50, 10 })
	lead := c.leaderOf(0, 1, 2)
	lag := others(3, lead)[0]
	c.net.partition([]uint64{c.srv[lag].ID()}, []uint64{c.srv[lead].ID(), c.srv[others(3, lead)[1]].ID()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var rev int64
	for k := 0; k < 400; k++ {
		r, err := c.put(ctx, lead, fmt.Sprintf("snap/%03d", k%120))
		if err != nil {
			t.Fatal(err)
		}
		rev = r
	}
	c.net.heal()
	h := c.converge(rev, 0, 1, 2)
	if c.srv[lag].SnapshotsReceived() == 0 {
		t.Fatalf("%s caught up without a snapshot", c.names[lag])
	}
	rr, err := pb.NewKVClient(c.conns[lag]).Range(ctx, &pb.RangeRequest{Key: []byte("snap/"), RangeEnd: []byte("snap0"), Serializable: true})
	if err != nil || rr.Count != 120 {
		t.Fatalf("%s after the snapshot: %v %v", c.names[lag], rr.GetCount(), err)
	}
	c.stop(lag)
	c.start(lag)
	c.converge(rev, 0, 1, 2)
	t.Logf("%s caught up by snapshot and restarted: HashKV %d at revision %d", c.names[lag], h, rev)
}

// TestMemNetWatchAcrossSnapshot: a watch open on a follower that catches
// up by a db snapshot stays open, with the same watch ID, and delivers
// every revision it had not seen exactly once and in order, read from the
// snapshot's db (etcd's watchableStore.Restore keeps watchers the same way).
func TestMemNetWatchAcrossSnapshot(t *testing.T) {
	c := newMemCluster(t, 3, func(cfg *Config) { cfg.Engine.SnapshotCount, cfg.Engine.CatchUpEntries = 50, 10 })
	lead := c.leaderOf(0, 1, 2)
	lag := others(3, lead)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start, err := c.put(ctx, lead, "watched/000")
	if err != nil {
		t.Fatal(err)
	}
	c.converge(start, 0, 1, 2)
	wc, err := pb.NewWatchClient(c.conns[lag]).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := wc.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key: []byte("watched/"), RangeEnd: []byte("watched0"), StartRevision: start}}}); err != nil {
		t.Fatal(err)
	}
	created, err := wc.Recv()
	if err != nil || !created.Created {
		t.Fatalf("create: %v %v", created, err)
	}
	c.net.partition([]uint64{c.srv[lag].ID()}, []uint64{c.srv[lead].ID(), c.srv[others(3, lead)[1]].ID()})
	const n = 300
	var rev int64
	for k := 1; k <= n; k++ {
		if rev, err = c.put(ctx, lead, fmt.Sprintf("watched/%03d", k%100)); err != nil {
			t.Fatal(err)
		}
	}
	c.net.heal()
	c.converge(rev, 0, 1, 2)
	if c.srv[lag].SnapshotsReceived() == 0 {
		t.Fatalf("%s caught up without a snapshot", c.names[lag])
	}
	next := start
	for next <= rev {
		r, err := wc.Recv()
		if err != nil {
			t.Fatalf("watch on %s ended at revision %d of %d: %v", c.names[lag], next, rev, err)
		}
		if r.WatchId != created.WatchId || r.Canceled {
			t.Fatalf("unexpected response %v", r)
		}
		for _, ev := range r.Events {
			if ev.Kv.ModRevision != next {
				t.Fatalf("event at revision %d, want %d", ev.Kv.ModRevision, next)
			}
			next++
		}
	}
	// The stream still works on the new db: a new watch, a new event.
	if err := wc.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key: []byte("after")}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := wc.Recv(); err != nil || !r.Created || r.WatchId == created.WatchId {
		t.Fatalf("second create: %v %v", r, err)
	}
	after, err := c.put(ctx, lead, "after")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := wc.Recv(); err != nil || len(r.Events) != 1 || r.Events[0].Kv.ModRevision != after {
		t.Fatalf("event after the snapshot: %v %v", r, err)
	}
	t.Logf("watch on %s delivered revisions %d..%d across a snapshot", c.names[lag], start, rev)
}

// TestMemNetRemoveMember: MemberRemove of a follower through the leader;
// the removed member stops by itself with etcd's message and the other two
// go on; removing it again is refused with "member not found".
func TestMemNetRemoveMember(t *testing.T) {
	c := newMemCluster(t, 3, func(cfg *Config) { cfg.DisableStrictReconfigCheck = true })
	lead := c.leaderOf(0, 1, 2)
	victim := others(3, lead)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	id := c.srv[victim].ID()
	resp, err := pb.NewClusterClient(c.conns[lead]).MemberRemove(ctx, &pb.MemberRemoveRequest{ID: id})
	if err != nil || len(resp.Members) != 2 {
		t.Fatalf("MemberRemove: %v %v", resp, err)
	}
	select {
	case <-c.srv[victim].Stopped():
	case <-time.After(10 * time.Second):
		t.Fatal("the removed member did not stop")
	}
	if err := c.srv[victim].Err(); err == nil || err.Error() != "the member has been permanently removed from the cluster" {
		t.Fatalf("the removed member stopped with %v", err)
	}
	c.conns[victim].Close()
	c.net.unregister(id)
	c.srv[victim], c.conns[victim] = nil, nil
	rest := others(3, victim)
	rev, err := c.put(ctx, rest[0], "after-remove")
	if err != nil {
		t.Fatal(err)
	}
	c.converge(rev, rest...)
	_, err = pb.NewClusterClient(c.conns[lead]).MemberRemove(ctx, &pb.MemberRemoveRequest{ID: id})
	if err == nil || !strings.Contains(err.Error(), "etcdserver: member not found") {
		t.Fatalf("removing it again: %v", err)
	}
}
