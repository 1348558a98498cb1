package interop

import (
	"context"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/etckit/etckit/server"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
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
	case n < 95:
		return &pb.HashKVRequest{Revision: 0}
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
	_, e := startEtcd(t, dataDir(t, "etcd"))
	_, k := startEtckit(t, dataDir(t, "etckit"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	w := &workload{r: rand.New(rand.NewSource(seed)), rev: 1,
		keys: []string{"a", "b", "c", "foo", "foo/1", "foo/2", "foo/3", "zz", "\x00bin", "k\xff"}}
	if e.endpoint == k.endpoint {
		t.Fatal("same endpoint")
	}
	kinds := map[string]int{}
	errs := 0
	for i := 0; i < steps; i++ {
		req := w.next(i)
		kinds[fmt.Sprintf("%T", req)[len("*etcdserverpb."):]]++
		if _, et := compareCall(t, ctx, i, req, e, k); et != "" {
			errs++
		}
	}
	all, _ := compareCall(t, ctx, steps, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}}, e, k)
	h, _ := compareCall(t, ctx, steps+1, &pb.HashKVRequest{}, e, k)
	t.Logf("requests %v; %d answered with the same error; final revision %d, %d keys, HashKV %d (compact revision %d)",
		kinds, errs, all.(*pb.RangeResponse).Header.Revision, all.(*pb.RangeResponse).Count, h.(*pb.HashKVResponse).Hash, h.(*pb.HashKVResponse).CompactRevision)
}

var _ = server.Version
