package interop

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// watchEvents opens a watch on m and returns the created response and the
// events up to revision until (responses may be batched differently by two
// servers; the event sequence may not).
func watchEvents(t *testing.T, ctx context.Context, m *member, create *pb.WatchCreateRequest, during func() int64) (*pb.WatchResponse, []*mvccpb.Event) {
	t.Helper()
	st, err := pb.NewWatchClient(m.conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: create}}); err != nil {
		t.Fatal(err)
	}
	created, err := st.Recv()
	if err != nil || !created.Created {
		t.Fatalf("%s: created %v %v", m.name, created, err)
	}
	type batch struct {
		evs []*mvccpb.Event
		err error
	}
	ch := make(chan batch, 1024)
	go func() {
		for {
			r, err := st.Recv()
			if err == nil && r.Canceled {
				err = fmt.Errorf("watch canceled: %q (compact revision %d)", r.CancelReason, r.CompactRevision)
			}
			ch <- batch{r.GetEvents(), err}
			if err != nil {
				return
			}
		}
	}()
	until := during()
	var evs []*mvccpb.Event
	for len(evs) == 0 || evs[len(evs)-1].Kv.ModRevision < until {
		b := <-ch
		if b.err != nil {
			last := int64(0)
			if len(evs) > 0 {
				last = evs[len(evs)-1].Kv.ModRevision
			}
			t.Fatalf("%s: recv after %d events (last revision %d, want %d): %v", m.name, len(evs), last, until, b.err)
		}
		evs = append(evs, b.evs...)
	}
	st.CloseSend()
	return created, evs
}

// TestServerWatchDifferential: the same seeded writes on etcd 3.7.3 and
// etckit; a live watch (every key, prev_kv) opened before them and a
// catch-up watch from revision 2 opened after them deliver the same event
// sequences, and the created responses are equal.
func TestServerWatchDifferential(t *testing.T) {
	const seed = 11
	t.Logf("seed %d", seed)
	_, e := startEtcd(t, dataDir(t, "etcd"))
	_, k := startEtckit(t, dataDir(t, "etckit"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	gen := func() []proto.Message {
		w := &workload{r: rand.New(rand.NewSource(seed)), rev: 1, keys: []string{"a", "b", "foo", "foo/1", "foo/2", "zz"}}
		var reqs []proto.Message
		for len(reqs) < 200 {
			switch r := w.next(len(reqs)).(type) {
			case *pb.PutRequest, *pb.DeleteRangeRequest:
				reqs = append(reqs, r)
			case *pb.TxnRequest:
				if len(r.Success) < 10 {
					reqs = append(reqs, r)
				}
			}
		}
		return reqs
	}
	writes := gen()
	runWrites := func(m *member) func() int64 {
		return func() int64 {
			for _, r := range writes {
				call(ctx, m, r)
			}
			resp, et := call(ctx, m, &pb.PutRequest{Key: []byte("last"), Value: []byte("x")})
			if et != "" {
				t.Fatal(et)
			}
			return resp.(*pb.PutResponse).Header.Revision
		}
	}
	all := &pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, PrevKv: true}
	ck, ek := watchEvents(t, ctx, k, all, runWrites(k))
	ce, ee := watchEvents(t, ctx, e, all, runWrites(e))
	compareEvents(t, "live", ce, ee, ck, ek)
	liveN := len(ee)
	final := ee[len(ee)-1].Kv.ModRevision
	lastFoo := int64(0)
	for _, ev := range ee {
		if strings.HasPrefix(string(ev.Kv.Key), "foo") {
			lastFoo = ev.Kv.ModRevision
		}
	}
	catchUp := &pb.WatchCreateRequest{Key: []byte("foo"), RangeEnd: []byte("fop"), StartRevision: 2, PrevKv: true}
	noop := func() int64 { return lastFoo }
	ce, ee = watchEvents(t, ctx, e, catchUp, noop)
	ck, ek = watchEvents(t, ctx, k, catchUp, noop)
	compareEvents(t, "catch-up", ce, ee, ck, ek)
	t.Logf("%d live events and %d catch-up events identical, final revision %d", liveN, len(ek), final)
}

func compareEvents(t *testing.T, what string, ce *pb.WatchResponse, ee []*mvccpb.Event, ck *pb.WatchResponse, ek []*mvccpb.Event) {
	t.Helper()
	if !proto.Equal(normalize(ce), normalize(ck)) {
		t.Fatalf("%s: created responses differ:\netcd:   %s\netckit: %s", what, text(normalize(ce)), text(normalize(ck)))
	}
	if len(ee) != len(ek) {
		t.Fatalf("%s: %d events from etcd, %d from etckit", what, len(ee), len(ek))
	}
	for i := range ee {
		if !proto.Equal(ee[i], ek[i]) {
			t.Fatalf("%s: event %d:\netcd:   %s\netckit: %s", what, i, text(ee[i]), text(ek[i]))
		}
	}
}
