package interop

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	etcdmvcc "go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/etckit/etckit/mvcc"
)

// watchLog records what one watcher received.
type watchLog struct {
	events     []*mvccpb.Event
	compactRev int64
	progress   int64 // revision of the last progress response
}

type watchRecorder struct {
	mu   sync.Mutex
	logs map[int64]*watchLog
}

func (r *watchRecorder) get(id int64) *watchLog {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.logs[id]
	if l == nil {
		l = &watchLog{}
		r.logs[id] = l
	}
	return l
}

func (r *watchRecorder) record(id int64, evs []*mvccpb.Event, rev, compactRev int64) {
	l := r.get(id)
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case compactRev != 0:
		l.compactRev = compactRev
	case len(evs) == 0:
		l.progress = rev
	default:
		for _, ev := range evs {
			l.events = append(l.events, proto.CloneOf(ev))
		}
	}
}

// done reports whether the watcher was compacted or has seen rev.
func (r *watchRecorder) done(id, rev int64) bool {
	l := r.get(id)
	r.mu.Lock()
	defer r.mu.Unlock()
	return l.compactRev != 0 || l.progress >= rev
}

type watchSpec struct {
	key, end []byte
	start    int64
}

// TestMVCCWatchDifferential runs a random workload against etcd's
// watchable store and etckit's, with watchers of every shape created along
// the way (live, from a past revision, from a future revision) and nobody
// reading until the end, so that both overflow their buffers and catch up
// from the store. Every watcher must receive the same events in the same
// order. (Compactions are left out of the random part: whether a lagging
// watcher catches up before a compaction or is cancelled by it depends on
// the timing of the background sync loops, in etcd as here.) Then watchers
// from below, at and above a compaction get the same compacted response or
// the same history.
func TestMVCCWatchDifferential(t *testing.T) {
	const seed = 77
	t.Logf("seed %d", seed)
	dir := t.TempDir()
	lg := zap.NewNop()
	be := backend.NewDefaultBackend(lg, filepath.Join(dir, "etcd.db"))
	le := lease.NewLessor(lg, be, v36cluster{}, lease.LessorConfig{MinLeaseTTL: testMinLeaseTTL})
	ws := etcdmvcc.New(lg, be, le, etcdmvcc.StoreConfig{CompactionBatchLimit: 100, CompactionSleepInterval: time.Nanosecond})
	e := &etcdKV{lg: lg, be: be, le: le, s: ws}
	defer e.close()
	k := openEtckit(t, filepath.Join(dir, "etckit.db"))
	defer k.Close()
	p := &pair{t: t, e: e, k: k, seed: seed}

	eStream := ws.NewWatchStream()
	defer eStream.Close()
	kStream := k.NewWatchStream(0)
	defer kStream.Close()
	eRec, kRec := &watchRecorder{logs: map[int64]*watchLog{}}, &watchRecorder{logs: map[int64]*watchLog{}}

	g := newGen(seed)
	type watchPair struct {
		spec   watchSpec
		eID    int64
		kID    int64
		atOp   int
		before int64
	}
	var watches []watchPair
	readers := func() {
		go func() {
			for r := range eStream.Chan() {
				eRec.record(int64(r.WatchID), r.Events, r.Revision, r.CompactRevision)
			}
		}()
		go func() {
			for r := range kStream.Chan() {
				kRec.record(r.WatchId, r.Events, r.Header.Revision, r.CompactRevision)
			}
		}()
	}
	const nops = 4000
	for p.op = 0; p.op < nops; p.op++ {
		cur, compact := p.rev(), p.k.CompactRev()
		if p.op%100 == 0 {
			key, end := g.span()
			if len(end) == 1 && end[0] == 0 {
				end = []byte{} // etcd's gRPC layer turns "\x00" into an empty end
			}
			spec := watchSpec{key: key, end: end}
			switch g.r.IntN(4) {
			case 1, 2:
				lo := max(compact-3, 1)
				spec.start = lo + g.r.Int64N(cur-lo+3)
			}
			eID, eerr := eStream.Watch(context.Background(), clientv3.AutoWatchID, spec.key, spec.end, spec.start)
			kID, kerr := kStream.Watch(mvcc.WatchOptions{Key: spec.key, RangeEnd: spec.end, StartRevision: spec.start})
			if errText(eerr) != errText(kerr) {
				p.fail("watch %q-%q from %d: etcd %v, etckit %v", spec.key, spec.end, spec.start, eerr, kerr)
			}
			if eerr == nil {
				watches = append(watches, watchPair{spec, int64(eID), kID, p.op, cur})
			}
		}
		switch x := g.r.IntN(100); {
		case x < 45:
			r := g.putReq()
			ge, ee := p.e.put(r)
			gk, ek := p.k.Put(r)
			p.check("put", r, ge, gk, ee, ek)
		case x < 65:
			r := g.delReq()
			ge, ee := p.e.del(r)
			gk, ek := p.k.DeleteRange(r)
			p.check("delete", r, ge, gk, ee, ek)
		case x < 90:
			r := g.txnReq(cur, compact, 0)
			if mvcc.ValidateTxn(r, 128) != nil || etcdPanics(r) {
				continue
			}
			ge, ee := p.e.txn(r)
			gk, ek := p.k.Txn(r)
			p.check("txn", r, ge, gk, ee, ek)
		case x < 96:
			id, ttl := g.leases[g.r.IntN(len(g.leases))], g.r.Int64N(30)
			_, ee := p.e.le.Grant(lease.LeaseID(id), ttl)
			_, ek := p.k.Lessor().Grant(id, ttl)
			if errText(ee) != errText(ek) {
				p.fail("grant: etcd %v, etckit %v", ee, ek)
			}
		default:
			id := g.leases[g.r.IntN(len(g.leases))]
			ee, ek := p.e.le.Revoke(lease.LeaseID(id)), p.k.Lessor().Revoke(id)
			if errText(ee) != errText(ek) {
				p.fail("revoke: etcd %v, etckit %v", ee, ek)
			}
		}
		if p.rev() != p.e.s.Rev() {
			p.fail("revision: etcd %d, etckit %d", p.e.s.Rev(), p.rev())
		}
	}
	// Only now start reading: every watcher has overflowed or is behind.
	readers()
	final := p.rev()
	for _, w := range watches {
		for !eRec.done(w.eID, final) {
			eStream.RequestProgress(etcdmvcc.WatchID(w.eID))
			time.Sleep(5 * time.Millisecond)
		}
		for !kRec.done(w.kID, final) {
			kStream.RequestProgress(w.kID)
			time.Sleep(5 * time.Millisecond)
		}
	}
	total := 0
	for _, w := range watches {
		el, kl := eRec.get(w.eID), kRec.get(w.kID)
		name := fmt.Sprintf("watcher created at op %d (rev %d) on %q-%q from %d", w.atOp, w.before, w.spec.key, w.spec.end, w.spec.start)
		if el.compactRev != kl.compactRev {
			t.Fatalf("%s: compacted at %d by etcd, %d by etckit", name, el.compactRev, kl.compactRev)
		}
		for i := range min(len(el.events), len(kl.events)) {
			if !proto.Equal(el.events[i], kl.events[i]) {
				t.Fatalf("%s: event %d:\n etcd   %v\n etckit %v", name, i, el.events[i], kl.events[i])
			}
		}
		if len(el.events) != len(kl.events) {
			for _, x := range [][]*mvccpb.Event{el.events, kl.events} {
				for _, ev := range x[max(len(x)-3, 0):] {
					t.Logf("%v %q@%d", ev.Type, ev.Kv.Key, ev.Kv.ModRevision)
				}
			}
			t.Fatalf("%s: %d events from etcd, %d from etckit (final %d; etckit progress %d compact %d; etcd progress %d compact %d)", name,
				len(el.events), len(kl.events), final, kl.progress, kl.compactRev, el.progress, el.compactRev)
		}
		total += len(el.events)
	}
	t.Logf("%d watchers, %d events compared, final revision %d", len(watches), total, final)

	// Compaction: a watcher from below the compact revision gets the
	// compacted response, one from the compact revision the history.
	compactAt := final - 50
	if ee, ek := p.e.compact(compactAt), p.k.Compact(compactAt); ee != nil || ek != nil {
		t.Fatalf("compact: %v %v", ee, ek)
	}
	for _, start := range []int64{compactAt - 10, compactAt - 1, compactAt, compactAt + 20} {
		eID, eerr := eStream.Watch(context.Background(), clientv3.AutoWatchID, []byte{0}, []byte{}, start)
		kID, kerr := kStream.Watch(mvcc.WatchOptions{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: start})
		if eerr != nil || kerr != nil {
			t.Fatalf("watch from %d: %v %v", start, eerr, kerr)
		}
		for !eRec.done(int64(eID), final) {
			eStream.RequestProgress(etcdmvcc.WatchID(eID))
			time.Sleep(5 * time.Millisecond)
		}
		for !kRec.done(kID, final) {
			kStream.RequestProgress(kID)
			time.Sleep(5 * time.Millisecond)
		}
		el, kl := eRec.get(int64(eID)), kRec.get(kID)
		if el.compactRev != kl.compactRev || len(el.events) != len(kl.events) {
			t.Fatalf("watch from %d after compaction at %d: etcd compacted %d, %d events; etckit %d, %d events",
				start, compactAt, el.compactRev, len(el.events), kl.compactRev, len(kl.events))
		}
		for i := range el.events {
			if !proto.Equal(el.events[i], kl.events[i]) {
				t.Fatalf("watch from %d: event %d:\n etcd   %v\n etckit %v", start, i, el.events[i], kl.events[i])
			}
		}
		t.Logf("watch from %d after compaction at %d: compacted %d, %d events on both", start, compactAt, el.compactRev, len(el.events))
	}
}
