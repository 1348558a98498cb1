package mvcc

import (
	"errors"
	"fmt"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// handOverStores opens two stores with the same revisions 2..6; the second
// (the leader's snapshot, further on) then gets revisions 7..12.
func handOverStores(t *testing.T) (old, next *Store) {
	old, _ = openTestStore(t, Options{})
	next, _ = openTestStore(t, Options{})
	for _, s := range []*Store{old, next} {
		mustPut(t, s, "a", "1")   // 2
		mustPut(t, s, "p/1", "2") // 3
		mustPut(t, s, "p/2", "3") // 4
		mustPut(t, s, "b", "4")   // 5
		mustPut(t, s, "a", "5")   // 6
	}
	mustPut(t, next, "a", "7")                                                              // 7
	mustPut(t, next, "p/3", "8")                                                            // 8
	mustPut(t, next, "b", "9")                                                              // 9
	mustPut(t, next, "b", "10")                                                             // 10
	if _, err := next.DeleteRange(&pb.DeleteRangeRequest{Key: []byte("p/1")}); err != nil { // 11
		t.Fatal(err)
	}
	mustPut(t, next, "a", "12") // 12
	return old, next
}

// collect reads responses from the streams until want events (and
// compactions) have arrived, as "watchID: event" lines per stream.
func collect(t *testing.T, ws *WatchStream, want int) map[int64][]string {
	t.Helper()
	got := map[int64][]string{}
	n := 0
	timeout := time.After(10 * time.Second)
	for n < want {
		select {
		case r := <-ws.Chan():
			if r.CompactRevision != 0 {
				got[r.WatchId] = append(got[r.WatchId], fmt.Sprintf("compacted %d", r.CompactRevision))
				n++
			}
			for _, ev := range r.Events {
				got[r.WatchId] = append(got[r.WatchId], evString(ev))
				n++
			}
		case <-timeout:
			t.Fatalf("%d of %d events in 10 s: %v", n, want, got)
		}
	}
	return got
}

// TestWatchHandOver: the watchers of a store handed over to the store of a
// received snapshot stay on their streams and get exactly the revisions
// they had not seen, read from the new store (as etcd's
// watchableStore.Restore); a stream then watches, cancels and closes on
// the new store, and a stream opened on the old store opens on the new one.
func TestWatchHandOver(t *testing.T) {
	old, next := handOverStores(t)
	ws := old.NewWatchStream(0)
	defer ws.Close()
	ws2 := old.NewWatchStream(0)
	defer ws2.Close()
	single, _ := ws.Watch(WatchOptions{Key: []byte("a")})
	prefix, _ := ws.Watch(WatchOptions{Key: []byte("p/"), RangeEnd: []byte("p0")})
	future, _ := ws.Watch(WatchOptions{Key: []byte("b"), StartRevision: 10})
	prev, err := ws2.Watch(WatchOptions{Key: []byte("a"), PrevKV: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.HandOver(next); err != nil {
		t.Fatal(err)
	}
	got := collect(t, ws, 5)
	want := map[int64][]string{
		single: {`PUT a@7 c2 v3 "7"`, `PUT a@12 c2 v4 "12"`},
		prefix: {`PUT p/3@8 c8 v1 "8"`, `DELETE p/1@11 c0 v0 ""`},
		future: {`PUT b@10 c5 v3 "10"`},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the hand-over:\n got %v\nwant %v", got, want)
	}
	if got := collect(t, ws2, 2)[prev]; fmt.Sprint(got) != `[PUT a@7 c2 v3 "7" prev "5"@6 PUT a@12 c2 v4 "12" prev "7"@7]` {
		t.Fatalf("prev_kv after the hand-over: %v", got)
	}

	// The stream lives on the new store now.
	c, err := ws.Watch(WatchOptions{Key: []byte("c")})
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Cancel(single); err != nil {
		t.Fatal(err)
	}
	mustPut(t, next, "a", "13") // 13: nobody on ws
	mustPut(t, next, "c", "14") // 14
	if got := collect(t, ws, 1); fmt.Sprint(got) != fmt.Sprint(map[int64][]string{c: {`PUT c@14 c14 v1 "14"`}}) {
		t.Fatalf("after a new watch and a cancel: %v", got)
	}
	// A stream opened on the old store opens on the new one.
	ws3 := old.NewWatchStream(0)
	defer ws3.Close()
	c3, err := ws3.Watch(WatchOptions{Key: []byte("c"), StartRevision: 14})
	if err != nil {
		t.Fatal(err)
	}
	if got := collect(t, ws3, 1); fmt.Sprint(got) != fmt.Sprint(map[int64][]string{c3: {`PUT c@14 c14 v1 "14"`}}) {
		t.Fatalf("a stream opened on the old store: %v", got)
	}
	// The old store is closed, and cannot be handed over twice.
	if _, err := old.Put(&pb.PutRequest{Key: []byte("x")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("put on the old store: %v", err)
	}
	if err := old.HandOver(next); !errors.Is(err, ErrClosed) {
		t.Fatalf("second hand-over: %v", err)
	}
	if n := next.hub.n.Load(); n != 5 { // prefix, future, c; prev; c3
		t.Fatalf("watchers on the new store: %d, want 5", n)
	}
	ws3.Close()
	ws2.Close()
	ws.Close()
	next.mu.RLock()
	defer next.mu.RUnlock()
	if n, streams := next.hub.n.Load(), len(next.hub.streams); n != 0 || streams != 0 {
		t.Fatalf("after closing the streams the new store still has %d watchers, %d streams", n, streams)
	}
}

// TestWatchHandOverCompacted: a watcher whose next revision the new store
// has compacted away is told so (CompactRevision) and ends; one waiting
// past the compaction goes on.
func TestWatchHandOverCompacted(t *testing.T) {
	old, next := handOverStores(t)
	if err := next.Compact(9); err != nil {
		t.Fatal(err)
	}
	ws := old.NewWatchStream(0)
	defer ws.Close()
	single, _ := ws.Watch(WatchOptions{Key: []byte("a")})
	future, _ := ws.Watch(WatchOptions{Key: []byte("b"), StartRevision: 10})
	if err := old.HandOver(next); err != nil {
		t.Fatal(err)
	}
	got := collect(t, ws, 2)
	want := map[int64][]string{single: {"compacted 9"}, future: {`PUT b@10 c5 v3 "10"`}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}
