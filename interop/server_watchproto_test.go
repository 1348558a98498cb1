package interop

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"sort"
	"testing"
	"time"

	"github.com/etckit/etckit/server"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// watchSession is one gRPC watch stream whose responses are collected by a
// goroutine.
type watchSession struct {
	m    *member
	st   pb.Watch_WatchClient
	resp chan *pb.WatchResponse
	errc chan error
}

func openWatch(t *testing.T, ctx context.Context, m *member) *watchSession {
	t.Helper()
	st, err := pb.NewWatchClient(m.conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ws := &watchSession{m: m, st: st, resp: make(chan *pb.WatchResponse, 4096), errc: make(chan error, 1)}
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				ws.errc <- err
				return
			}
			ws.resp <- r
		}
	}()
	return ws
}

func (ws *watchSession) send(t *testing.T, r *pb.WatchRequest) {
	t.Helper()
	if err := ws.st.Send(r); err != nil {
		t.Fatalf("%s: send: %v", ws.m.name, err)
	}
}

func isProgressAll(r *pb.WatchResponse) bool {
	return r.WatchId == -1 && !r.Created && !r.Canceled && len(r.Events) == 0
}

// barrier sends a WatchProgressRequest and collects every response up to
// the progress notification (watch ID -1) that answers it. etcd answers one
// only once every watcher of the stream is synced, and drops the request
// otherwise, so it is re-sent while watchers catch up (bounded). The
// progress response is returned last.
//
// Control responses (created, canceled by the client) travel apart from the
// watch responses in etcd and may come after the progress response, so it
// also waits for wantCtrl of them.
//
// A progress request dropped while watchers catch up is re-sent after
// resend; on a stream used for further steps it should be long enough that
// no request is answered after it (a late answer would end the next
// barrier early).
func (ws *watchSession) barrier(t *testing.T, ctx context.Context, wantCtrl int, resend time.Duration) []*pb.WatchResponse {
	t.Helper()
	var out []*pb.WatchResponse
	ctrl, progressed := 0, false
	for try := 0; try < 30; try++ {
		if !progressed {
			ws.send(t, &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
		}
		wait := time.NewTimer(resend)
		for {
			select {
			case r := <-ws.resp:
				out = append(out, r)
				if r.Created || (r.Canceled && r.CompactRevision == 0) {
					ctrl++
				}
				if isProgressAll(r) {
					progressed = true
				}
				if progressed && ctrl >= wantCtrl {
					wait.Stop()
					return out
				}
				continue
			case err := <-ws.errc:
				t.Fatalf("%s: watch stream: %v", ws.m.name, err)
			case <-ctx.Done():
				t.Fatalf("%s: %v", ws.m.name, ctx.Err())
			case <-wait.C:
			}
			break
		}
	}
	t.Fatalf("%s: no progress response after 30 requests, or %d of %d control responses", ws.m.name, ctrl, wantCtrl)
	return nil
}

// sortResponses orders the responses of one step by watch ID and revision:
// etcd notifies the watchers of one revision in map order.
func sortResponses(rs []*pb.WatchResponse) []*pb.WatchResponse {
	out := make([]*pb.WatchResponse, 0, len(rs))
	for _, r := range rs {
		out = append(out, normalize(r).(*pb.WatchResponse))
	}
	first := func(r *pb.WatchResponse) int64 {
		if len(r.Events) > 0 {
			return r.Events[0].Kv.ModRevision
		}
		return 0
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if isProgressAll(a) != isProgressAll(b) {
			return isProgressAll(b) // the barrier's response stays last
		}
		if a.WatchId != b.WatchId {
			return a.WatchId < b.WatchId
		}
		return first(a) < first(b)
	})
	return out
}

func create(c *pb.WatchCreateRequest) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: c}}
}

func cancelWatch(id int64) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}
}

// TestServerWatchProtocolDifferential: one watch stream driven by the same
// script on etcd 3.7.3 and etckit after the same seeded history (with a
// compaction); after every step the responses up to a progress request's
// answer are compared field by field (header revision included): client
// chosen and allocated watch IDs, duplicate IDs, watches from past
// revisions with prev_kv and filters, watches from a compacted revision
// (created, then canceled with compact_revision), empty ranges, negative
// start revisions, a future start revision, cancel of live, compacted and
// unknown watchers,
// progress requests (watch ID -1 with the current revision, withheld while
// a compacted watcher stays in the stream), live events, fragmented
// responses above --max-request-bytes; then a periodic progress_notify
// response.
func TestServerWatchProtocolDifferential(t *testing.T) {
	const seed = 5
	t.Logf("seed %d", seed)
	_, e := startEtcd(t, dataDir(t, "etcd"), func(c *embed.Config) {
		c.WatchProgressNotifyInterval = 300 * time.Millisecond
	})
	_, k := startEtckit(t, dataDir(t, "etckit"), func(c *server.Config) {
		c.WatchProgressNotifyInterval = 300 * time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	members := []*member{e, k}

	// The same history on both: 120 seeded writes, a compaction in the
	// middle, 40 more.
	gen := func(n int, seed int64) []proto.Message {
		w := &workload{r: rand.New(rand.NewSource(seed)), rev: 1, keys: []string{"a", "b", "c", "foo", "foo/1", "foo/2", "zz"}}
		var reqs []proto.Message
		for len(reqs) < n {
			switch r := w.next(len(reqs)).(type) {
			case *pb.PutRequest:
				if len(r.Key) > 0 && r.Lease == 0 {
					reqs = append(reqs, r)
				}
			case *pb.DeleteRangeRequest:
				reqs = append(reqs, r)
			case *pb.TxnRequest:
				if len(r.Success) < 10 && !txnHasLease(r) {
					reqs = append(reqs, r)
				}
			}
		}
		return reqs
	}
	write := func(reqs []proto.Message) int64 {
		var rev int64
		for i, r := range reqs {
			var revs [2]int64
			for j, m := range members {
				resp, et := call(ctx, m, r)
				if et != "" {
					continue
				}
				revs[j] = resp.ProtoReflect().Get(resp.ProtoReflect().Descriptor().Fields().ByName("header")).Message().Interface().(*pb.ResponseHeader).Revision
			}
			if revs[0] != revs[1] {
				t.Fatalf("write %d: revision %d on etcd, %d on etckit", i, revs[0], revs[1])
			}
			rev = max(rev, revs[0])
		}
		return rev
	}
	mid := write(gen(120, seed))
	compactRev := mid - 30
	compareCall(t, ctx, 0, &pb.CompactionRequest{Revision: compactRev, Physical: true}, e, k)
	cur := write(gen(40, seed+1))
	t.Logf("history: compacted at %d, current revision %d", compactRev, cur)

	sessions := []*watchSession{openWatch(t, ctx, e), openWatch(t, ctx, k)}
	type step struct {
		what string
		reqs []*pb.WatchRequest
		live []proto.Message // writes after the requests
		ctrl int             // control responses the requests get
		mk   func() []*pb.WatchRequest
	}
	big := func(key string, n int) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: bytes.Repeat([]byte{byte('a' + n)}, 480*1024)}}}
	}
	bigTxn := func(n int) proto.Message {
		return &pb.TxnRequest{Success: []*pb.RequestOp{big("big/1", n), big("big/2", n), big("big/3", n)}}
	}
	steps := []step{
		{what: "barrier watcher, allocated ID 0", reqs: []*pb.WatchRequest{create(&pb.WatchCreateRequest{Key: []byte("zz-barrier")})}},
		{what: "client-chosen ID 1", reqs: []*pb.WatchRequest{create(&pb.WatchCreateRequest{WatchId: 1, Key: []byte("a")})}},
		{what: "every key from after the compaction, prev_kv; allocated ID skips 1", reqs: []*pb.WatchRequest{create(&pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: compactRev + 1, PrevKv: true})}},
		{what: "duplicate ID", reqs: []*pb.WatchRequest{create(&pb.WatchCreateRequest{WatchId: 1, Key: []byte("b")})}},
		{what: "prefix from the compaction revision, NOPUT, prev_kv", reqs: []*pb.WatchRequest{create(&pb.WatchCreateRequest{Key: []byte("foo"), RangeEnd: []byte("fop"), StartRevision: compactRev, PrevKv: true, Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}})}},
		{what: "empty range, negative start revision", reqs: []*pb.WatchRequest{
			create(&pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("a")}),
			create(&pb.WatchCreateRequest{Key: []byte("b"), StartRevision: -1})}},
		{what: "cancel 1, cancel unknown 99, reuse 1 with NODELETE from key c", ctrl: 2, reqs: []*pb.WatchRequest{cancelWatch(1), cancelWatch(99),
			create(&pb.WatchCreateRequest{WatchId: 1, Key: []byte("c"), RangeEnd: []byte{0}, StartRevision: mid, Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}})}},
		{what: "live writes", live: gen(30, seed+2)},
		{what: "fragmented responses of a watcher with fragment and prev_kv", reqs: []*pb.WatchRequest{
			create(&pb.WatchCreateRequest{WatchId: 50, Key: []byte("big/"), RangeEnd: []byte("big0"), PrevKv: true, Fragment: true}),
			create(&pb.WatchCreateRequest{WatchId: 51, Key: []byte("big/"), RangeEnd: []byte("big0"), PrevKv: true})},
			live: []proto.Message{bigTxn(0), bigTxn(1)}},
	}
	curRev := func() int64 {
		r, err := e.kv.Range(ctx, &pb.RangeRequest{Key: []byte("x"), CountOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	fput := func(k string) proto.Message { return &pb.PutRequest{Key: []byte(k), Value: []byte("f")} }
	steps = append(steps, step{what: "future start revision: created now, events and progress once it is reached",
		mk: func() []*pb.WatchRequest {
			return []*pb.WatchRequest{create(&pb.WatchCreateRequest{WatchId: 70, Key: []byte("fut/"), RangeEnd: []byte("fut0"), StartRevision: curRev() + 2})}
		},
		live: []proto.Message{fput("fut/a"), fput("fut/b"), fput("fut/c")}})
	for i, s := range steps {
		if s.mk != nil {
			s.reqs = s.mk()
		}
		var got [2][]*pb.WatchResponse
		for j, ws := range sessions {
			for _, r := range s.reqs {
				ws.send(t, r)
			}
			if j == 1 {
				write(s.live) // both members, after both streams got the requests
			}
		}
		for j, ws := range sessions {
			want := s.ctrl
			if want == 0 {
				want = len(s.reqs)
			}
			got[j] = sortResponses(ws.barrier(t, ctx, want, 2*time.Second))
		}
		if len(got[0]) != len(got[1]) {
			t.Fatalf("step %d (%s): %d responses from etcd, %d from etckit:\netcd:   %s\netckit: %s", i, s.what, len(got[0]), len(got[1]), texts(got[0]), texts(got[1]))
		}
		frags := 0
		for _, r := range got[1] {
			if r.Fragment {
				frags++
			}
		}
		for n := range got[0] {
			if !proto.Equal(got[0][n], got[1][n]) {
				t.Fatalf("step %d (%s), response %d:\netcd:   %s\netckit: %s", i, s.what, n, texts(got[0][n:n+1]), texts(got[1][n:n+1]))
			}
		}
		t.Logf("step %d (%s): %d responses identical (%d fragments)", i, s.what, len(got[0]), frags)
	}

	// A watcher from a compacted revision: created, then canceled with
	// compact_revision; while it stays in the stream, progress requests
	// go unanswered (etcd), so the barrier comes after the client cancels it.
	var got [2][]*pb.WatchResponse
	for j, ws := range sessions {
		ws.send(t, create(&pb.WatchCreateRequest{WatchId: 60, Key: []byte("b"), StartRevision: 2}))
		for len(got[j]) < 2 {
			select {
			case r := <-ws.resp:
				got[j] = append(got[j], r)
			case err := <-ws.errc:
				t.Fatal(err)
			case <-ctx.Done():
				t.Fatalf("%s: compacted watcher: %v", ws.m.name, ctx.Err())
			}
		}
		ws.send(t, cancelWatch(60))
		got[j] = append(got[j], ws.barrier(t, ctx, 1, 2*time.Second)...)
	}
	if a, b := texts(sortResponses(got[0])), texts(sortResponses(got[1])); a != b {
		t.Fatalf("compacted watcher:\netcd:   %s\netckit: %s", a, b)
	}
	t.Logf("compacted watcher: %s", texts(sortResponses(got[1])))

	// progress_notify: the first periodic notification of a quiet watcher
	// (300 ms interval on both).
	for j := range got {
		ws := openWatch(t, ctx, members[j])
		ws.send(t, create(&pb.WatchCreateRequest{WatchId: 3, Key: []byte("quiet"), ProgressNotify: true}))
		got[j] = nil
		for len(got[j]) < 2 {
			select {
			case r := <-ws.resp:
				got[j] = append(got[j], normalize(r).(*pb.WatchResponse))
			case err := <-ws.errc:
				t.Fatal(err)
			case <-ctx.Done():
				t.Fatalf("%s: no progress notification: %v", members[j].name, ctx.Err())
			}
		}
		ws.st.CloseSend()
	}
	if a, b := texts(got[0]), texts(got[1]); a != b {
		t.Fatalf("progress_notify:\netcd:   %s\netckit: %s", a, b)
	}
	t.Logf("progress_notify: %s", texts(got[1]))
}

func txnHasLease(t *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{t.Success, t.Failure} {
		for _, op := range ops {
			if p := op.GetRequestPut(); p != nil && p.Lease != 0 {
				return true
			}
		}
	}
	return false
}

func texts(rs []*pb.WatchResponse) string {
	var b bytes.Buffer
	for _, r := range rs {
		r = proto.CloneOf(r)
		for _, ev := range r.Events {
			for _, kv := range []*mvccpb.KeyValue{ev.Kv, ev.PrevKv} {
				if kv != nil && len(kv.Value) > 64 {
					kv.Value = fmt.Appendf(kv.Value[:32:32], "...(%d bytes)", len(kv.Value))
				}
			}
		}
		fmt.Fprintf(&b, "\n  {%s}", text(r))
	}
	return b.String()
}

// TestServerClientV3WatchProgress: go.etcd.io/etcd/client/v3 against etcd
// 3.7.3 and etckit: a watch from a past revision with prev_kv and
// fragment, then Client.RequestProgress, which the client turns into a
// progress notification on the watch channel (from the server's watch ID
// -1 response): the same events and the same progress revision.
func TestServerClientV3WatchProgress(t *testing.T) {
	_, e := startEtcd(t, dataDir(t, "etcd"))
	_, k := startEtckit(t, dataDir(t, "etckit"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type result struct {
		events   []string
		progress int64
	}
	run := func(m *member) result {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		for i := 0; i < 10; i++ {
			if _, err := cli.Put(ctx, fmt.Sprintf("w/%d", i%3), fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := cli.Delete(ctx, "w/1"); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		wch := cli.Watch(clientv3.WithRequireLeader(wctx), "w/", clientv3.WithPrefix(), clientv3.WithRev(4), clientv3.WithPrevKV(), clientv3.WithFragment())
		var res result
		for len(res.events) < 9 {
			wr, ok := <-wch
			if !ok || wr.Err() != nil {
				t.Fatalf("%s: watch: %v", m.name, wr.Err())
			}
			for _, ev := range wr.Events {
				res.events = append(res.events, fmt.Sprintf("%s %s=%s@%d prev=%v", ev.Type, ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision, ev.PrevKv))
			}
		}
		// The server answers once the watcher is synced; the client asks
		// again (bounded) until a notification comes.
		for try := 0; try < 50 && res.progress == 0; try++ {
			if err := cli.RequestProgress(clientv3.WithRequireLeader(ctx)); err != nil { // the watch stream is keyed by the context metadata
				t.Fatal(err)
			}
			select {
			case wr := <-wch:
				if wr.IsProgressNotify() {
					res.progress = wr.Header.Revision
				}
			case <-time.After(200 * time.Millisecond):
			}
		}
		return res
	}
	re, rk := run(e), run(k)
	if fmt.Sprint(re) != fmt.Sprint(rk) || re.progress != 12 {
		t.Fatalf("etcd:   %v\netckit: %v", re, rk)
	}
	t.Logf("%d events from revision 4 with prev_kv, then a progress notification at revision %d, on both", len(rk.events), rk.progress)
}
