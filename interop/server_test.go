package interop

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/etckit/etckit/server"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// call runs one request on a member and returns the response or the error
// as (code, message).
func call(ctx context.Context, m *member, req proto.Message) (proto.Message, string) {
	var resp proto.Message
	var err error
	switch r := req.(type) {
	case *pb.PutRequest:
		resp, err = m.kv.Put(ctx, r)
	case *pb.RangeRequest:
		resp, err = m.kv.Range(ctx, r)
	case *pb.DeleteRangeRequest:
		resp, err = m.kv.DeleteRange(ctx, r)
	case *pb.TxnRequest:
		resp, err = m.kv.Txn(ctx, r)
	case *pb.CompactionRequest:
		resp, err = m.kv.Compact(ctx, r)
	case *pb.HashKVRequest:
		resp, err = m.maint.HashKV(ctx, r)
	case *pb.LeaseGrantRequest:
		resp, err = m.lease.LeaseGrant(ctx, r)
	case *pb.LeaseRevokeRequest:
		resp, err = m.lease.LeaseRevoke(ctx, r)
	case *pb.LeaseTimeToLiveRequest:
		var tr *pb.LeaseTimeToLiveResponse
		if tr, err = m.lease.LeaseTimeToLive(ctx, r); err == nil && tr.TTL > 0 && tr.TTL >= tr.GrantedTTL-2 {
			// The remaining TTL follows the clock: compared as "about
			// the granted TTL".
			tr.TTL = tr.GrantedTTL
		}
		resp = tr
	case *pb.LeaseKeepAliveRequest:
		// One request on a keep-alive stream, one response.
		var st pb.Lease_LeaseKeepAliveClient
		if st, err = m.lease.LeaseKeepAlive(ctx); err == nil {
			if err = st.Send(r); err == nil {
				resp, err = st.Recv()
			}
			_ = st.CloseSend()
		}
	case *pb.DefragmentRequest:
		resp, err = m.maint.Defragment(ctx, r)
	case *pb.AlarmRequest:
		resp, err = m.maint.Alarm(ctx, r)
	default:
		panic(fmt.Sprintf("unexpected request %T", req))
	}
	if err != nil {
		st := status.Convert(err)
		return nil, fmt.Sprintf("%s: %s", st.Code(), st.Message())
	}
	return resp, ""
}

// compareCall runs req on both members and fails on any difference other
// than member ID, cluster ID and raft term.
func compareCall(t *testing.T, ctx context.Context, step int, req proto.Message, a, b *member) (resp proto.Message, errText string) {
	t.Helper()
	ra, ea := call(ctx, a, req)
	rb, eb := call(ctx, b, req)
	if ea != eb {
		t.Fatalf("step %d %T %s\n%s error: %q\n%s error: %q", step, req, text(req), a.name, ea, b.name, eb)
	}
	if !proto.Equal(normalize(ra), normalize(rb)) {
		t.Fatalf("step %d %T %s\n%s: %s\n%s: %s", step, req, text(req), a.name, text(normalize(ra)), b.name, text(normalize(rb)))
	}
	return ra, ea
}

// TestServerClientV3Workload: the same small put/get/txn/delete/compact
// workload through go.etcd.io/etcd/client/v3 against etcd 3.7.3 and etckit
// gives the same responses, field by field.
func TestServerClientV3Workload(t *testing.T) {
	_, e := startEtcd(t, dataDir(t, "etcd"))
	_, k := startEtckit(t, dataDir(t, "etckit"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type result struct {
		resp proto.Message
		err  string
	}
	run := func(m *member) []result {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		var out []result
		add := func(r proto.Message, err error) {
			s := ""
			if err != nil {
				s = err.Error()
			}
			out = append(out, result{r, s})
		}
		pr, err := cli.Put(ctx, "foo", "bar")
		add((*pb.PutResponse)(pr), err)
		pr, err = cli.Put(ctx, "foo", "baz", clientv3.WithPrevKV())
		add((*pb.PutResponse)(pr), err)
		pr, err = cli.Put(ctx, "foo/a", "1")
		add((*pb.PutResponse)(pr), err)
		gr, err := cli.Get(ctx, "foo", clientv3.WithPrefix())
		add((*pb.RangeResponse)(gr), err)
		gr, err = cli.Get(ctx, "foo", clientv3.WithRev(2))
		add((*pb.RangeResponse)(gr), err)
		tr, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.Value("foo"), "=", "baz")).
			Then(clientv3.OpPut("t", "yes"), clientv3.OpGet("foo")).Else(clientv3.OpPut("t", "no")).Commit()
		add((*pb.TxnResponse)(tr), err)
		tr, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.Version("foo"), ">", 5)).
			Then(clientv3.OpDelete("foo")).Else(clientv3.OpDelete("foo/", clientv3.WithPrefix(), clientv3.WithPrevKV())).Commit()
		add((*pb.TxnResponse)(tr), err)
		dr, err := cli.Delete(ctx, "t", clientv3.WithPrevKV())
		add((*pb.DeleteRangeResponse)(dr), err)
		cr, err := cli.Compact(ctx, 4, clientv3.WithCompactPhysical())
		add((*pb.CompactionResponse)(cr), err)
		gr, err = cli.Get(ctx, "foo", clientv3.WithRev(3))
		add((*pb.RangeResponse)(gr), err)
		gr, err = cli.Get(ctx, "foo", clientv3.WithRev(100))
		add((*pb.RangeResponse)(gr), err)
		_, err = cli.Put(ctx, "", "x")
		add(nil, err)
		hr, err := cli.HashKV(ctx, m.endpoint, 0)
		add((*pb.HashKVResponse)(hr), err)
		return out
	}
	re, rk := run(e), run(k)
	for i := range re {
		if re[i].err != rk[i].err || !proto.Equal(normalize(re[i].resp), normalize(rk[i].resp)) {
			t.Fatalf("step %d:\netcd:   %s %s\netckit: %s %s", i, text(normalize(re[i].resp)), re[i].err, text(normalize(rk[i].resp)), rk[i].err)
		}
	}
	t.Logf("%d client/v3 calls answered identically", len(re))
}

// workload generates a random request sequence from a fixed seed.
type workload struct {
	r      *rand.Rand
	keys   []string
	rev    int64 // upper bound of the current revision, for revision choices
	leases []int64
}

func (w *workload) key() []byte { return []byte(w.keys[w.r.Intn(len(w.keys))]) }

func srvPrefixEnd(k []byte) []byte {
	end := append([]byte(nil), k...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

func (w *workload) value() []byte {
	b := make([]byte, w.r.Intn(24))
	for i := range b {
		b[i] = byte('a' + w.r.Intn(26))
	}
	return b
}

func (w *workload) rangeReq() *pb.RangeRequest {
	r := &pb.RangeRequest{Key: w.key()}
	switch w.r.Intn(4) {
	case 0:
		r.RangeEnd = srvPrefixEnd(r.Key)
	case 1:
		r.Key, r.RangeEnd = []byte{0}, []byte{0}
		if w.r.Intn(2) == 0 {
			r.Key = w.key() // from-key
		}
	case 2:
		r.RangeEnd = []byte(w.keys[w.r.Intn(len(w.keys))])
	}
	if w.r.Intn(3) == 0 {
		r.Limit = int64(w.r.Intn(4))
	}
	if w.r.Intn(3) == 0 {
		r.Revision = int64(w.r.Intn(int(w.rev) + 3))
	}
	if w.r.Intn(3) == 0 {
		r.SortOrder = pb.RangeRequest_SortOrder(w.r.Intn(3))
		r.SortTarget = pb.RangeRequest_SortTarget(w.r.Intn(5))
	}
	r.KeysOnly = w.r.Intn(5) == 0
	r.CountOnly = w.r.Intn(6) == 0
	r.Serializable = w.r.Intn(4) == 0
	if w.r.Intn(6) == 0 {
		r.MinModRevision = int64(w.r.Intn(int(w.rev) + 1))
	}
	if w.r.Intn(6) == 0 {
		r.MaxModRevision = int64(w.r.Intn(int(w.rev) + 1))
	}
	if w.r.Intn(6) == 0 {
		r.MinCreateRevision = int64(w.r.Intn(int(w.rev) + 1))
	}
	if w.r.Intn(6) == 0 {
		r.MaxCreateRevision = int64(w.r.Intn(int(w.rev) + 1))
	}
	return r
}

func (w *workload) putReq() *pb.PutRequest {
	p := &pb.PutRequest{Key: w.key(), Value: w.value(), PrevKv: w.r.Intn(3) == 0}
	if len(w.leases) > 0 && w.r.Intn(5) == 0 {
		p.Lease = w.leases[w.r.Intn(len(w.leases))]
	}
	switch w.r.Intn(20) {
	case 0:
		p.IgnoreValue, p.Value = true, nil
	case 1:
		p.IgnoreLease, p.Lease = true, 0
	}
	return p
}

func (w *workload) deleteReq() *pb.DeleteRangeRequest {
	d := &pb.DeleteRangeRequest{Key: w.key(), PrevKv: w.r.Intn(2) == 0}
	if w.r.Intn(3) == 0 {
		d.RangeEnd = srvPrefixEnd(d.Key)
	}
	return d
}

func (w *workload) txnReq() *pb.TxnRequest {
	t := &pb.TxnRequest{}
	for i := w.r.Intn(3); i > 0; i-- {
		c := &pb.Compare{Key: w.key(), Result: pb.Compare_CompareResult(w.r.Intn(4))}
		switch w.r.Intn(4) {
		case 0:
			c.Target, c.TargetUnion = pb.Compare_VALUE, &pb.Compare_Value{Value: w.value()}
		case 1:
			c.Target, c.TargetUnion = pb.Compare_VERSION, &pb.Compare_Version{Version: int64(w.r.Intn(4))}
		case 2:
			c.Target, c.TargetUnion = pb.Compare_MOD, &pb.Compare_ModRevision{ModRevision: int64(w.r.Intn(int(w.rev) + 1))}
		case 3:
			c.Target, c.TargetUnion = pb.Compare_CREATE, &pb.Compare_CreateRevision{CreateRevision: int64(w.r.Intn(int(w.rev) + 1))}
		}
		t.Compare = append(t.Compare, c)
	}
	ops := func() []*pb.RequestOp {
		var out []*pb.RequestOp
		used := map[string]bool{}
		for i := w.r.Intn(4); i > 0; i-- {
			switch w.r.Intn(3) {
			case 0:
				p := w.putReq()
				if used[string(p.Key)] {
					continue
				}
				used[string(p.Key)] = true
				out = append(out, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: p}})
			case 1:
				rr := w.rangeReq()
				rr.Revision = 0
				out = append(out, &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: rr}})
			case 2:
				d := &pb.DeleteRangeRequest{Key: w.key(), PrevKv: w.r.Intn(2) == 0}
				if used[string(d.Key)] {
					continue
				}
				used[string(d.Key)] = true
				out = append(out, &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: d}})
			}
		}
		return out
	}
	t.Success, t.Failure = ops(), ops()
	return t
}

func (w *workload) next(step int) proto.Message {
	w.rev++ // an upper bound: at most one revision per request
	switch n := w.r.Intn(100); {
	case n < 30:
		return w.putReq()
	case n < 55:
		return w.rangeReq()
	case n < 65:
		return w.deleteReq()
	case n < 85:
		return w.txnReq()
	case n < 88:
		return &pb.CompactionRequest{Revision: int64(w.r.Intn(int(w.rev)) + 1), Physical: w.r.Intn(2) == 0}
	case n < 91:
		id := int64(1000 + step)
		w.leases = append(w.leases, id)
		return &pb.LeaseGrantRequest{ID: id, TTL: 3600}
	case n < 93 && len(w.leases) > 0:
		i := w.r.Intn(len(w.leases))
		id := w.leases[i]
		w.leases = append(w.leases[:i], w.leases[i+1:]...)
		return &pb.LeaseRevokeRequest{ID: id}
	case n < 94:
		return &pb.HashKVRequest{Revision: 0}
	case n < 95:
		id := int64(4242) // unknown
		if len(w.leases) > 0 && w.r.Intn(4) > 0 {
			id = w.leases[w.r.Intn(len(w.leases))]
		}
		if w.r.Intn(2) == 0 {
			return &pb.LeaseKeepAliveRequest{ID: id}
		}
		return &pb.LeaseTimeToLiveRequest{ID: id, Keys: w.r.Intn(2) == 0}
	case n < 97:
		return &pb.PutRequest{Key: nil, Value: w.value()} // empty key
	default:
		t := &pb.TxnRequest{}
		for i := 0; i < 129; i++ {
			t.Success = append(t.Success, &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: w.key()}}})
		}
		return t // too many operations
	}
}

// TestServerDifferentialConformance: one randomized client workload (fixed,
// printed seed) against embedded etcd 3.7.3 and against etckit; every
// response compared field by field, header revision included (member ID,
// cluster ID and raft term excepted), errors by gRPC code and message; then
// the whole key space and HashKV.
func TestServerDifferentialConformance(t *testing.T) {
	for _, seed := range []int64{20261121, 1, 99} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { differential(t, seed) })
	}
}

func differential(t *testing.T, seed int64) {
	const steps = 600
	t.Logf("seed %d, %d steps", seed, steps)
	// etcd's minimum lease TTL is ceil(1.5 election timeouts) seconds: 1 s
	// on both (etcd 500 ms, etckit 10 x 10 ms), so TTL-1 leases expire on
	// both within the test.
	_, e := startEtcd(t, dataDir(t, "etcd"), func(c *embed.Config) { c.TickMs, c.ElectionMs = 100, 500 })
	_, k := startEtckit(t, dataDir(t, "etckit"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	w := &workload{r: rand.New(rand.NewSource(seed)), rev: 1,
		keys: []string{"a", "b", "c", "foo", "foo/1", "foo/2", "foo/3", "zz", "\x00bin", "k\xff"}}
	if e.endpoint == k.endpoint {
		t.Fatal("same endpoint")
	}
	kinds := map[string]int{}
	rangeOpts := map[string]int{}
	errs, compactRev, expired, watched, watchEvs := 0, int64(1), 0, 0, 0
	for i := 0; i < steps; i++ {
		switch {
		case i%300 == 150:
			expireLease(t, ctx, w, i, e, k)
			expired++
		case i%100 == 50:
			watchEvs += watchFromPast(t, ctx, w, i, compactRev, e, k)
			watched++
		case i%200 == 100:
			compareCall(t, ctx, i, &pb.DefragmentRequest{}, e, k)
			kinds["DefragmentRequest"]++
		}
		req := w.next(i)
		kinds[fmt.Sprintf("%T", req)[len("*etcdserverpb."):]]++
		countRangeOptions(req, rangeOpts)
		_, et := compareCall(t, ctx, i, req, e, k)
		if et != "" {
			errs++
		} else if c, ok := req.(*pb.CompactionRequest); ok {
			compactRev = max(compactRev, c.Revision)
		}
	}
	all, _ := compareCall(t, ctx, steps, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}, e, k)
	h, _ := compareCall(t, ctx, steps+1, &pb.HashKVRequest{}, e, k)
	t.Logf("requests %v; range options %v; %d answered with the same error; %d TTL-1 leases expired on both; %d watches from past revisions (prev_kv) delivered %d identical events",
		kinds, rangeOpts, errs, expired, watched, watchEvs)
	t.Logf("final revision %d, %d keys, HashKV %d (compact revision %d)",
		all.(*pb.RangeResponse).Header.Revision, all.(*pb.RangeResponse).Count, h.(*pb.HashKVResponse).Hash, h.(*pb.HashKVResponse).CompactRevision)
}

// countRangeOptions tallies the Range options a request (or a txn's ranges)
// uses, for the log.
func countRangeOptions(req proto.Message, n map[string]int) {
	var rs []*pb.RangeRequest
	switch r := req.(type) {
	case *pb.RangeRequest:
		rs = append(rs, r)
	case *pb.TxnRequest:
		for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
			for _, op := range ops {
				if rr := op.GetRequestRange(); rr != nil {
					rs = append(rs, rr)
				}
			}
		}
	}
	for _, r := range rs {
		for name, on := range map[string]bool{
			"limit": r.Limit > 0, "revision": r.Revision > 0, "sort": r.SortOrder != pb.RangeRequest_NONE || r.SortTarget != pb.RangeRequest_KEY,
			"keys_only": r.KeysOnly, "count_only": r.CountOnly, "serializable": r.Serializable,
			"min_mod": r.MinModRevision > 0, "max_mod": r.MaxModRevision > 0, "min_create": r.MinCreateRevision > 0, "max_create": r.MaxCreateRevision > 0,
			"prefix": len(r.RangeEnd) > 0 && bytes.Equal(r.RangeEnd, srvPrefixEnd(r.Key)), "from_key": bytes.Equal(r.RangeEnd, []byte{0}) && !bytes.Equal(r.Key, []byte{0}),
			"all": bytes.Equal(r.RangeEnd, []byte{0}) && bytes.Equal(r.Key, []byte{0}),
		} {
			if on {
				n[name]++
			}
		}
	}
}

// expireLease grants a TTL-1 lease on both members, attaches a workload key
// and a key of its own, waits (bounded) until each member has revoked it on
// expiry, and compares the key space and revision after.
func expireLease(t *testing.T, ctx context.Context, w *workload, step int, a, b *member) {
	t.Helper()
	id := int64(900000 + step)
	compareCall(t, ctx, step, &pb.LeaseGrantRequest{ID: id, TTL: 1}, a, b)
	compareCall(t, ctx, step, &pb.PutRequest{Key: fmt.Appendf(nil, "exp/%d", step), Value: []byte("x"), Lease: id}, a, b)
	compareCall(t, ctx, step, &pb.PutRequest{Key: w.key(), Value: w.value(), Lease: id, PrevKv: true}, a, b)
	w.rev += 3
	start := time.Now()
	defer func() {
		t.Logf("step %d: TTL-1 lease expired on both after %v", step, time.Since(start).Round(time.Millisecond))
	}()
	for _, m := range []*member{a, b} {
		gone := false
		for try := 0; try < 300 && !gone; try++ {
			r, err := m.lease.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: id})
			if err != nil {
				t.Fatalf("%s: TimeToLive: %v", m.name, err)
			}
			// Not found (revoked), not just past its expiry: then the
			// revoke has been applied and its keys deleted.
			if gone = r.TTL == -1 && r.GrantedTTL == 0; !gone {
				time.Sleep(50 * time.Millisecond)
			}
		}
		if !gone {
			t.Fatalf("%s: lease %d with TTL 1 did not expire", m.name, id)
		}
	}
	compareCall(t, ctx, step, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}, a, b)
	compareCall(t, ctx, step, &pb.LeaseTimeToLiveRequest{ID: id, Keys: true}, a, b)
}

// watchFromPast opens a watch of every key with prev_kv from a random
// revision between the last compaction and now on both members, collects
// every response up to a progress request's answer and compares them field
// by field. It returns the number of events.
func watchFromPast(t *testing.T, ctx context.Context, w *workload, step int, compactRev int64, a, b *member) int {
	t.Helper()
	cur, _ := compareCall(t, ctx, step, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true}, a, b)
	rev := cur.(*pb.RangeResponse).Header.Revision
	start := compactRev + w.r.Int63n(rev-compactRev+1)
	c := &pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: start, PrevKv: true}
	var got [2][]*pb.WatchResponse
	for j, m := range []*member{a, b} {
		ws := openWatch(t, ctx, m)
		ws.send(t, create(c))
		got[j] = sortResponses(ws.barrier(t, ctx, 1, 200*time.Millisecond)) // a fresh stream: late answers do not matter
		_ = ws.st.CloseSend()
	}
	if x, y := texts(got[0]), texts(got[1]); x != y {
		t.Fatalf("step %d: watch from revision %d (compacted at %d, now %d):\n%s: %s\n%s: %s", step, start, compactRev, rev, a.name, x, b.name, y)
	}
	n := 0
	for _, r := range got[0] {
		n += len(r.Events)
	}
	return n
}

var _ = server.Version
