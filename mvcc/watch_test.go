package mvcc

import (
	"fmt"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// recv reads responses until n events arrived (fragments and progress
// responses included in the returned list).
func recvEvents(t *testing.T, ws *WatchStream, n int) ([]*mvccpb.Event, []*pb.WatchResponse) {
	t.Helper()
	var evs []*mvccpb.Event
	var resps []*pb.WatchResponse
	for len(evs) < n {
		r, ok := <-ws.Chan()
		if !ok {
			t.Fatalf("stream closed after %d events", len(evs))
		}
		resps = append(resps, r)
		evs = append(evs, r.Events...)
	}
	if len(evs) != n {
		t.Fatalf("%d events, want %d", len(evs), n)
	}
	return evs, resps
}

func evString(ev *mvccpb.Event) string {
	s := fmt.Sprintf("%s %s@%d c%d v%d %q", ev.Type, ev.Kv.Key, ev.Kv.ModRevision, ev.Kv.CreateRevision, ev.Kv.Version, ev.Kv.Value)
	if ev.PrevKv != nil {
		s += fmt.Sprintf(" prev %q@%d", ev.PrevKv.Value, ev.PrevKv.ModRevision)
	}
	return s
}

func TestWatchSyncedAndRange(t *testing.T) {
	s, _ := openTestStore(t, Options{})
	ws := s.NewWatchStream(0)
	defer ws.Close()
	single, err := ws.Watch(WatchOptions{Key: []byte("a")})
	if err != nil {
		t.Fatal(err)
	}
	prefix, err := ws.Watch(WatchOptions{Key: []byte("p/"), RangeEnd: []byte("p0")})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "a", "1")   // 2
	mustPut(t, s, "p/x", "2") // 3
	mustPut(t, s, "b", "3")   // 4: nobody
	if _, err := s.Txn(&pb.TxnRequest{Success: []*pb.RequestOp{
		{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("p/y"), Value: []byte("4")}}},
		{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("a")}}},
	}}); err != nil { // 5
		t.Fatal(err)
	}
	got := map[int64][]string{}
	for range 4 {
		r := <-ws.Chan()
		for _, ev := range r.Events {
			got[r.WatchId] = append(got[r.WatchId], fmt.Sprintf("%s@%d/%d", evString(ev), r.Header.Revision, len(r.Events)))
		}
	}
	want := map[int64][]string{
		single: {`PUT a@2 c2 v1 "1"@2/1`, `DELETE a@5 c0 v0 ""@5/1`},
		prefix: {`PUT p/x@3 c3 v1 "2"@3/1`, `PUT p/y@5 c5 v1 "4"@5/1`},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

// A watcher from a past revision replays history from the store, then goes
// on with live events without gap or duplicate, even when the stream's
// buffer overflows while nobody reads.
func TestWatchHistoryAndSlowReader(t *testing.T) {
	s, _ := openTestStore(t, Options{})
	for i := range 300 {
		mustPut(t, s, fmt.Sprintf("k%d", i%7), fmt.Sprint(i)) // revisions 2..301
	}
	ws := s.NewWatchStream(0)
	defer ws.Close()
	if _, err := ws.Watch(WatchOptions{Key: []byte("k"), RangeEnd: []byte("l"), StartRevision: 10}); err != nil {
		t.Fatal(err)
	}
	live, err := ws.Watch(WatchOptions{Key: []byte("k3")})
	if err != nil {
		t.Fatal(err)
	}
	for i := 300; i < 1000; i++ { // nobody reads: both watchers overflow
		mustPut(t, s, fmt.Sprintf("k%d", i%7), fmt.Sprint(i))
	}
	var all, k3 []int64
	for len(all) < 1000-8 || len(k3) < 100 {
		r := <-ws.Chan()
		for _, ev := range r.Events {
			if r.WatchId == live {
				k3 = append(k3, ev.Kv.ModRevision)
			} else {
				all = append(all, ev.Kv.ModRevision)
			}
		}
	}
	for i, rev := range all {
		if rev != int64(10+i) {
			t.Fatalf("range watcher event %d at revision %d, want %d", i, rev, 10+i)
		}
	}
	for i, rev := range k3 {
		if want := int64(306 + 7*i); rev != want { // puts of k3 from i=304 on, at revision i+2
			t.Fatalf("k3 event %d at %d, want %d", i, rev, want)
		}
	}
	if len(all) != 1000-8 || len(k3) != 100 {
		t.Fatalf("%d and %d events", len(all), len(k3))
	}
}

func TestWatchCompacted(t *testing.T) {
	s, _ := openTestStore(t, Options{})
	for i := range 10 {
		mustPut(t, s, "a", fmt.Sprint(i))
	}
	if err := s.Compact(8); err != nil {
		t.Fatal(err)
	}
	ws := s.NewWatchStream(0)
	defer ws.Close()
	if _, err := ws.Watch(WatchOptions{Key: []byte("a"), StartRevision: 5}); err != nil {
		t.Fatal(err)
	}
	r := <-ws.Chan()
	if r.CompactRevision != 8 || !r.Canceled || len(r.Events) != 0 || r.CancelReason != ErrCompacted.Error() {
		t.Fatalf("%v", r)
	}
	// at the compact revision itself the history is still there
	if _, err := ws.Watch(WatchOptions{Key: []byte("a"), StartRevision: 8}); err != nil {
		t.Fatal(err)
	}
	evs, _ := recvEvents(t, ws, 4)
	if evs[0].Kv.ModRevision != 8 || evs[3].Kv.ModRevision != 11 {
		t.Fatalf("%v", evs)
	}
}

func TestWatchPrevKVFiltersProgress(t *testing.T) {
	s, _ := openTestStore(t, Options{})
	mustPut(t, s, "a", "old") // 2
	ws := s.NewWatchStream(0)
	defer ws.Close()
	noPut, _ := ws.Watch(WatchOptions{Key: []byte("a"), PrevKV: true, Filters: []WatchFilter{FilterNoPut}})
	withPrev, _ := ws.Watch(WatchOptions{Key: []byte("a"), PrevKV: true, Filters: []WatchFilter{FilterNoDelete}})
	mustPut(t, s, "a", "new")                                                          // 3
	if _, err := s.DeleteRange(&pb.DeleteRangeRequest{Key: []byte("a")}); err != nil { // 4
		t.Fatal(err)
	}
	got := map[int64]string{}
	for range 2 {
		r := <-ws.Chan()
		got[r.WatchId] += evString(r.Events[0]) + ";"
	}
	if got[noPut] != `DELETE a@4 c0 v0 "" prev "new"@3;` || got[withPrev] != `PUT a@3 c2 v2 "new" prev "old"@2;` {
		t.Fatalf("%v", got)
	}
	ws.RequestProgress(noPut)
	r := <-ws.Chan()
	if r.WatchId != noPut || len(r.Events) != 0 || r.Header.Revision != 4 {
		t.Fatalf("progress: %v", r)
	}
}

func TestWatchFragments(t *testing.T) {
	s, _ := openTestStore(t, Options{})
	ws := s.NewWatchStream(300)
	defer ws.Close()
	var ops []*pb.RequestOp
	for i := range 20 {
		ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
			Key: fmt.Appendf(nil, "f/%02d", i), Value: make([]byte, 50)}}})
	}
	frag, _ := ws.Watch(WatchOptions{Key: []byte("f/"), RangeEnd: []byte("f0"), Fragment: true})
	if _, err := s.Txn(&pb.TxnRequest{Success: ops}); err != nil {
		t.Fatal(err)
	}
	evs, resps := recvEvents(t, ws, 20)
	if len(resps) < 5 {
		t.Fatalf("%d responses for 20 events of ~60 bytes under a 300-byte limit", len(resps))
	}
	for i, r := range resps {
		if r.WatchId != frag || r.Fragment != (i < len(resps)-1) {
			t.Fatalf("response %d: fragment %v", i, r.Fragment)
		}
	}
	for i, ev := range evs {
		if string(ev.Kv.Key) != fmt.Sprintf("f/%02d", i) {
			t.Fatalf("event %d: %s", i, ev.Kv.Key)
		}
	}
}

func TestWatchProgressNotify(t *testing.T) {
	s, _ := openTestStore(t, Options{})
	mustPut(t, s, "a", "1")
	ws := s.NewWatchStreamOptions(WatchStreamOptions{ProgressNotifyInterval: 10 * time.Millisecond})
	defer ws.Close()
	id, _ := ws.Watch(WatchOptions{Key: []byte("a"), ProgressNotify: true})
	if _, err := ws.Watch(WatchOptions{Key: []byte("b")}); err != nil { // no notifications
		t.Fatal(err)
	}
	for range 3 {
		r := <-ws.Chan()
		if r.WatchId != id || len(r.Events) != 0 || r.Header.Revision != 2 {
			t.Fatalf("%v", r)
		}
	}
}
