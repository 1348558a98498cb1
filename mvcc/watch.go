package mvcc

import (
	"bytes"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// Watch errors.
var (
	ErrWatcherNotExist   = errors.New("mvcc: watcher does not exist")
	ErrEmptyWatcherRange = errors.New("mvcc: watcher range is empty")
	ErrStreamClosed      = errors.New("mvcc: watch stream is closed")
)

// WatchFilter drops events of one type, as etcd's WatchCreateRequest
// filters.
type WatchFilter int

const (
	FilterNoPut    WatchFilter = WatchFilter(pb.WatchCreateRequest_NOPUT)
	FilterNoDelete WatchFilter = WatchFilter(pb.WatchCreateRequest_NODELETE)
)

// WatchOptions describes one watcher.
type WatchOptions struct {
	Key []byte
	// RangeEnd as in a RangeRequest: nil watches Key only, "\x00" every key
	// from Key on.
	RangeEnd []byte
	// StartRevision is the first revision to report; 0 means the next one.
	StartRevision int64
	PrevKV        bool
	Filters       []WatchFilter
	// Fragment splits a response larger than the stream's MaxResponseBytes
	// into several, all but the last marked Fragment.
	Fragment bool
	// ProgressNotify asks for a progress response (no events, the current
	// revision) after every ProgressNotifyInterval without events.
	ProgressNotify bool
}

// WatchStreamOptions configures a WatchStream.
type WatchStreamOptions struct {
	// MaxResponseBytes bounds fragmented responses (etcd:
	// --max-request-bytes, 1.5 MiB by default).
	MaxResponseBytes int
	// ProgressNotifyInterval is the period of progress notifications
	// (etcd: 10 minutes).
	ProgressNotifyInterval time.Duration
}

// watchChanBuf is the number of responses a stream buffers before its
// watchers fall back to catching up from the store (etcd: chanBufLen).
const watchChanBuf = 128

// watchBatchMaxRevs bounds the revisions one catch-up step reads (etcd:
// watchBatchMaxRevs).
const watchBatchMaxRevs = 1000

type watcher struct {
	ws       *WatchStream
	id       int64
	key, end string // end "" with single false: to the last key
	single   bool
	minRev   int64 // next revision to deliver
	prevKV   bool
	noPut    bool
	noDelete bool
	fragment bool
	progress bool // progress notifications wanted
	quiet    bool // no events sent since the last progress tick; sendLoop only
	synced   bool
	victim   *watchResp // undelivered events of one revision (etcd's victim batch)
}

func (w *watcher) contains(k string) bool {
	if w.single {
		return k == w.key
	}
	return k >= w.key && (w.end == "" || k < w.end)
}

// watchHub is the watchable part of a Store. Its state is guarded by the
// store's mu: notify runs under the write lock, catch-up under the read lock
// plus hub.mu.
type watchHub struct {
	s        *Store
	mu       sync.Mutex // guards the sets below against concurrent syncs
	n        atomic.Int64
	singles  map[string]map[*watcher]struct{}
	ranges   map[*watcher]struct{}
	unsynced map[*watcher]struct{}
	victims  map[*watcher]struct{}
	streams  map[*WatchStream]struct{} // every open stream, for HandOver
	kick     chan struct{}
	started  bool
}

func newWatchHub(s *Store) *watchHub {
	return &watchHub{s: s, singles: make(map[string]map[*watcher]struct{}),
		ranges: make(map[*watcher]struct{}), unsynced: make(map[*watcher]struct{}),
		victims: make(map[*watcher]struct{}), streams: make(map[*WatchStream]struct{}), kick: make(chan struct{}, 1)}
}

func (h *watchHub) active() bool { return h.n.Load() > 0 }

func (h *watchHub) addSynced(w *watcher) {
	w.synced = true
	if w.single {
		m := h.singles[w.key]
		if m == nil {
			m = make(map[*watcher]struct{})
			h.singles[w.key] = m
		}
		m[w] = struct{}{}
		return
	}
	h.ranges[w] = struct{}{}
}

func (h *watchHub) removeSynced(w *watcher) {
	w.synced = false
	if w.single {
		if m := h.singles[w.key]; m != nil {
			delete(m, w)
			if len(m) == 0 {
				delete(h.singles, w.key)
			}
		}
		return
	}
	delete(h.ranges, w)
}

func (h *watchHub) remove(w *watcher) {
	if w.synced {
		h.removeSynced(w)
	} else {
		delete(h.unsynced, w)
		delete(h.victims, w)
	}
	h.n.Add(-1)
}

func (h *watchHub) has(w *watcher) bool {
	if w.synced {
		return true
	}
	_, u := h.unsynced[w]
	_, v := h.victims[w]
	return u || v
}

func (h *watchHub) kickSync() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// notify delivers the events of revision rev to the synced watchers;
// REQUIRES s.mu held for writing.
func (h *watchHub) notify(rev int64, evs []*mvccpb.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	per := make(map[*watcher][]*mvccpb.Event)
	for _, ev := range evs {
		k := bstr(ev.Kv.Key)
		for w := range h.singles[k] {
			if w.minRev <= rev {
				per[w] = append(per[w], ev)
			}
		}
		for w := range h.ranges {
			if w.minRev <= rev && w.contains(k) {
				per[w] = append(per[w], ev)
			}
		}
	}
	for w, wevs := range per {
		r := watchResp{id: w.id, events: wevs, rev: rev}
		if w.ws.send(r) {
			continue
		}
		// The stream is full: keep the batch aside (as etcd's victims) and
		// catch up from the store after it is delivered.
		h.removeSynced(w)
		w.victim = &r
		w.minRev = rev + 1
		h.victims[w] = struct{}{}
		h.startSync()
	}
}

func (h *watchHub) startSync() {
	if !h.started {
		h.started = true
		go h.syncLoop()
	}
	h.kickSync()
}

// syncLoop catches unsynced watchers up, every 100ms or when kicked.
func (h *watchHub) syncLoop() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-h.s.stopc:
			return
		case <-h.kick:
		case <-t.C:
		}
		for h.syncOnce() {
		}
	}
}

// syncOnce runs one catch-up step for every unsynced watcher; it reports
// whether some watcher still has history to read and can take it now.
func (h *watchHub) syncOnce() bool {
	s := h.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	cur, compact := s.currentRev, s.compactRev
	for w := range h.victims {
		if !w.ws.send(*w.victim) {
			continue
		}
		w.victim = nil
		delete(h.victims, w)
		if w.minRev > cur {
			h.addSynced(w)
		} else {
			h.unsynced[w] = struct{}{}
		}
	}
	if len(h.unsynced) == 0 {
		return false
	}
	v := s.b.View()
	defer v.Release()
	again := false
	for w := range h.unsynced {
		if w.minRev < compact {
			if w.ws.send(watchResp{id: w.id, compactRev: compact, rev: cur}) {
				// the stream forgets the watcher once it sent this
				delete(h.unsynced, w)
				h.n.Add(-1)
			}
			continue
		}
		if w.minRev > cur {
			delete(h.unsynced, w)
			h.addSynced(w)
			continue
		}
		maxRev := min(cur, w.minRev+watchBatchMaxRevs-1)
		evs, err := s.historyEvents(v, w, w.minRev, maxRev)
		if err != nil {
			// corrupt store: end the watcher with the error
			if w.ws.send(watchResp{id: w.id, err: err, rev: cur}) {
				delete(h.unsynced, w)
				h.n.Add(-1)
			}
			continue
		}
		if len(evs) > 0 && !w.ws.send(watchResp{id: w.id, events: evs, rev: cur}) {
			continue // still full; try again later
		}
		w.minRev = maxRev + 1
		if w.minRev > cur {
			delete(h.unsynced, w)
			h.addSynced(w)
		} else {
			again = true
		}
	}
	return again
}

// historyEvents returns the events of w's keys with main revision in
// [from, to], in revision order, read through the index and the view.
func (s *Store) historyEvents(v *View, w *watcher, from, to int64) ([]*mvccpb.Event, error) {
	type hit struct {
		r   irev
		key string
	}
	var hits []hit
	collect := func(ki *keyIndex) bool {
		for _, r := range ki.revs() {
			if r.main >= from && r.main <= to {
				hits = append(hits, hit{r, ki.key})
			}
		}
		return true
	}
	if w.single {
		s.visit([]byte(w.key), nil, collect)
	} else {
		end := []byte(w.end)
		if w.end == "" {
			end = []byte{}
		}
		s.visit([]byte(w.key), end, collect)
	}
	sort.Slice(hits, func(i, j int) bool {
		a, b := hits[i].r, hits[j].r
		if a.main != b.main {
			return a.main < b.main
		}
		return a.sub&^tombBit < b.sub&^tombBit
	})
	evs := make([]*mvccpb.Event, 0, len(hits))
	var kb [RevBytesLen]byte
	var f kvFields
	for _, h := range hits {
		if h.r.tomb() {
			evs = append(evs, &mvccpb.Event{Type: mvccpb.Event_DELETE, Kv: &mvccpb.KeyValue{Key: []byte(h.key), ModRevision: h.r.main}})
			continue
		}
		k := AppendRevKey(kb[:0], h.r.rev(), false)
		val, ok := v.revValue(h.r.rev(), k)
		if !ok {
			return nil, s.corruptf([]byte(BucketKey), k, "revision in the key index is missing from the bucket")
		}
		if err := decodeKV(val, &f); err != nil {
			return nil, s.corruptErr([]byte(BucketKey), k, err)
		}
		evs = append(evs, &mvccpb.Event{Type: mvccpb.Event_PUT, Kv: f.toProto(false)})
	}
	return evs, nil
}

type watchResp struct {
	id         int64
	events     []*mvccpb.Event
	rev        int64
	compactRev int64
	progress   bool
	err        error
}

// WatchStream multiplexes watchers onto one channel of etcd WatchResponses,
// as a gRPC Watch stream does: prev_kv, filters and fragmentation are applied
// on the way out.
type WatchStream struct {
	s        *Store // changed only by HandOver, under the old store's lock and mu
	in       chan watchResp
	out      chan *pb.WatchResponse
	maxBytes int
	mu       sync.Mutex
	watchers map[int64]*watcher
	nextID   int64
	closed   bool
	donec    chan struct{}
	closec   chan struct{}
}

// NewWatchStream opens a stream whose fragmented responses stay under
// maxResponseBytes (0: 1.5 MiB), with etcd's 10-minute progress interval.
func (s *Store) NewWatchStream(maxResponseBytes int) *WatchStream {
	return s.NewWatchStreamOptions(WatchStreamOptions{MaxResponseBytes: maxResponseBytes})
}

// NewWatchStreamOptions opens a stream configured by o.
func (s *Store) NewWatchStreamOptions(o WatchStreamOptions) *WatchStream {
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = 3 << 19
	}
	if o.ProgressNotifyInterval <= 0 {
		o.ProgressNotifyInterval = 10 * time.Minute
	}
	// A store handed over to another (a received snapshot) passes new
	// streams on to it.
	s.mu.Lock()
	for s.next != nil {
		n := s.next
		s.mu.Unlock()
		s = n
		s.mu.Lock()
	}
	ws := &WatchStream{s: s, in: make(chan watchResp, watchChanBuf), out: make(chan *pb.WatchResponse),
		maxBytes: o.MaxResponseBytes, watchers: make(map[int64]*watcher), donec: make(chan struct{}), closec: make(chan struct{})}
	s.hub.mu.Lock()
	s.hub.streams[ws] = struct{}{}
	s.hub.mu.Unlock()
	s.mu.Unlock()
	go ws.sendLoop(o.ProgressNotifyInterval)
	return ws
}

// store is the store the stream is on now.
func (ws *WatchStream) store() *Store {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.s
}

// lockStore locks the stream's store for writing and returns it. HandOver
// moves a stream while it holds the old store's lock, so the store read
// again once locked is the one to use. Lock order: store, then stream.
func (ws *WatchStream) lockStore() *Store {
	for {
		s := ws.store()
		s.mu.Lock()
		if ws.store() == s {
			return s
		}
		s.mu.Unlock()
	}
}

// rlockStore is lockStore for reading.
func (ws *WatchStream) rlockStore() *Store {
	for {
		s := ws.store()
		s.mu.RLock()
		if ws.store() == s {
			return s
		}
		s.mu.RUnlock()
	}
}

// Chan returns the responses. It is closed after Close.
func (ws *WatchStream) Chan() <-chan *pb.WatchResponse { return ws.out }

// send queues a response without blocking; false if the stream is full.
func (ws *WatchStream) send(r watchResp) bool {
	select {
	case ws.in <- r:
		return true
	default:
		return false
	}
}

func (ws *WatchStream) forget(id int64) {
	ws.mu.Lock()
	delete(ws.watchers, id)
	ws.mu.Unlock()
}

// Watch adds a watcher and returns its ID. Events from StartRevision on
// (compacted: one response with CompactRevision set, then the watcher is
// gone) arrive on Chan.
func (ws *WatchStream) Watch(o WatchOptions) (int64, error) {
	if len(o.Key) == 0 {
		return 0, ErrEmptyKey
	}
	end := mkGteRange(o.RangeEnd)
	w := &watcher{ws: ws, key: string(o.Key), prevKV: o.PrevKV, fragment: o.Fragment, progress: o.ProgressNotify}
	switch {
	case end == nil:
		w.single = true
	case len(end) > 0:
		if bytes.Compare(o.Key, end) >= 0 {
			return 0, ErrEmptyWatcherRange
		}
		w.end = string(end)
	}
	for _, f := range o.Filters {
		switch f {
		case FilterNoPut:
			w.noPut = true
		case FilterNoDelete:
			w.noDelete = true
		}
	}
	ws.mu.Lock()
	if ws.closed {
		ws.mu.Unlock()
		return 0, ErrStreamClosed
	}
	w.id = ws.nextID
	ws.nextID++
	ws.watchers[w.id] = w
	ws.mu.Unlock()

	s := ws.lockStore()
	defer s.mu.Unlock()
	h := s.hub
	if s.closed {
		ws.forget(w.id)
		return 0, ErrClosed
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n.Add(1)
	if o.StartRevision <= 0 || o.StartRevision > s.currentRev {
		w.minRev = s.currentRev + 1
		if o.StartRevision > w.minRev {
			w.minRev = o.StartRevision
		}
		h.addSynced(w)
	} else {
		w.minRev = o.StartRevision
		h.unsynced[w] = struct{}{}
		h.startSync()
	}
	return w.id, nil
}

// Cancel removes a watcher.
func (ws *WatchStream) Cancel(id int64) error {
	ws.mu.Lock()
	w := ws.watchers[id]
	delete(ws.watchers, id)
	ws.mu.Unlock()
	if w == nil {
		return ErrWatcherNotExist
	}
	s := ws.lockStore()
	defer s.mu.Unlock()
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.has(w) {
		h.remove(w)
	}
	return nil
}

// RequestProgress sends a response with no events and the current
// revision for watcher id if it has seen every revision (etcd answers only
// for synced watchers).
func (ws *WatchStream) RequestProgress(id int64) {
	ws.mu.Lock()
	w := ws.watchers[id]
	ws.mu.Unlock()
	if w == nil {
		return
	}
	s := ws.rlockStore()
	defer s.mu.RUnlock()
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.synced {
		ws.send(watchResp{id: id, rev: s.currentRev, progress: true})
	}
}

// Close cancels every watcher of the stream and closes Chan.
func (ws *WatchStream) Close() {
	ws.mu.Lock()
	if ws.closed {
		ws.mu.Unlock()
		return
	}
	ws.closed = true
	ids := make([]int64, 0, len(ws.watchers))
	for id := range ws.watchers {
		ids = append(ids, id)
	}
	ws.mu.Unlock()
	for _, id := range ids {
		_ = ws.Cancel(id)
	}
	s := ws.lockStore()
	s.hub.mu.Lock()
	delete(s.hub.streams, ws)
	s.hub.mu.Unlock()
	s.mu.Unlock()
	close(ws.closec)
	<-ws.donec
}

// sendLoop turns internal responses into etcd WatchResponses, and asks for
// progress notifications of quiet watchers every interval (as etcd's gRPC
// watch server does).
func (ws *WatchStream) sendLoop(interval time.Duration) {
	defer close(ws.donec)
	defer close(ws.out)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		var r watchResp
		select {
		case r = <-ws.in:
		case <-tick.C:
			ws.mu.Lock()
			var quiet []int64
			for id, w := range ws.watchers {
				if w.progress && w.quiet {
					quiet = append(quiet, id)
				}
				w.quiet = true
			}
			ws.mu.Unlock()
			for _, id := range quiet {
				ws.RequestProgress(id)
			}
			continue
		case <-ws.closec:
			return
		}
		ws.mu.Lock()
		w := ws.watchers[r.id]
		ws.mu.Unlock()
		if w == nil {
			continue // cancelled
		}
		if r.compactRev != 0 || r.err != nil {
			ws.forget(r.id) // the last response of this watcher
		}
		wr := &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: r.rev}, WatchId: r.id}
		if r.compactRev != 0 {
			wr.CompactRevision, wr.Canceled = r.compactRev, true
			wr.CancelReason = ErrCompacted.Error()
		}
		if r.err != nil {
			wr.Canceled, wr.CancelReason = true, r.err.Error()
		}
		{
			for _, ev := range r.events {
				if (ev.Type == mvccpb.Event_PUT && w.noPut) || (ev.Type == mvccpb.Event_DELETE && w.noDelete) {
					continue
				}
				if w.prevKV && !ev.IsCreate() {
					ev = proto.CloneOf(ev)
					if resp, err := ws.store().Range(&pb.RangeRequest{Key: ev.Kv.Key, Revision: ev.Kv.ModRevision - 1}); err == nil && len(resp.Kvs) > 0 {
						ev.PrevKv = resp.Kvs[0]
					}
				}
				wr.Events = append(wr.Events, ev)
			}
			if len(r.events) > 0 && len(wr.Events) == 0 {
				continue // everything filtered
			}
			if len(wr.Events) > 0 {
				ws.mu.Lock()
				w.quiet = false
				ws.mu.Unlock()
			}
		}
		if w.fragment {
			if !ws.sendFragments(wr) {
				return
			}
			continue
		}
		select {
		case ws.out <- wr:
		case <-ws.closec:
			return
		}
	}
}

// sendFragments is etcd's sendFragments.
func (ws *WatchStream) sendFragments(wr *pb.WatchResponse) bool {
	put := func(r *pb.WatchResponse) bool {
		select {
		case ws.out <- r:
			return true
		case <-ws.closec:
			return false
		}
	}
	if proto.Size(wr) < ws.maxBytes || len(wr.Events) < 2 {
		return put(wr)
	}
	idx := 0
	for {
		cur := &pb.WatchResponse{Header: wr.Header, WatchId: wr.WatchId, CompactRevision: wr.CompactRevision,
			Canceled: wr.Canceled, CancelReason: wr.CancelReason, Fragment: true}
		for _, ev := range wr.Events[idx:] {
			cur.Events = append(cur.Events, ev)
			if len(cur.Events) > 1 && proto.Size(cur) >= ws.maxBytes {
				cur.Events = cur.Events[:len(cur.Events)-1]
				break
			}
			idx++
		}
		if idx == len(wr.Events) {
			cur.Fragment = false
		}
		if !put(cur) {
			return false
		}
		if !cur.Fragment {
			return true
		}
	}
}

// RequestProgressAll is etcd's watchStream.RequestProgressAll, for a gRPC
// WatchProgressRequest. If every watcher of the stream is synced and the
// current revision has reached the start revision its client asked for
// (startRev, by watcher ID; 0 for "now"), one progress response with the
// current revision is queued, in order with the events, on the watcher
// with the lowest ID, which is returned; the caller presents it on behalf
// of all watchers (etcd: watch ID -1). Otherwise nothing is sent.
func (ws *WatchStream) RequestProgressAll(startRev map[int64]int64) (via int64, sent bool) {
	ws.mu.Lock()
	ws2 := make([]*watcher, 0, len(ws.watchers))
	for _, w := range ws.watchers {
		ws2 = append(ws2, w)
	}
	ws.mu.Unlock()
	if len(ws2) == 0 {
		return -1, false
	}
	s := ws.rlockStore()
	defer s.mu.RUnlock()
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	via = ws2[0].id
	for _, w := range ws2 {
		if !w.synced || s.currentRev < startRev[w.id] {
			return -1, false
		}
		via = min(via, w.id)
	}
	return via, ws.send(watchResp{id: via, rev: s.currentRev, progress: true})
}

// HandOver moves the store's watch streams, with their watchers, to next
// (a store opened on the db of a snapshot received from the leader) and
// closes s, as etcd's watchableStore.Restore keeps its watchers across a
// snapshot: a synced watcher becomes unsynced and catches up on next from
// the revision it waits for (or hears that it was compacted there); an
// unsynced one goes on catching up on next; undelivered events stay
// queued. Streams opened on s afterwards open on next.
func (s *Store) HandOver(next *Store) error {
	if next == s {
		return errors.New("mvcc: a store cannot be handed over to itself")
	}
	s.mu.Lock()
	if s.closed || s.next != nil {
		s.mu.Unlock()
		return ErrClosed
	}
	next.mu.Lock()
	h, nh := s.hub, next.hub
	h.mu.Lock()
	nh.mu.Lock()
	for ws := range h.streams {
		ws.mu.Lock()
		ws.s = next
		ws.mu.Unlock()
		nh.streams[ws] = struct{}{}
	}
	unsync := func(w *watcher) {
		w.synced = false
		nh.unsynced[w] = struct{}{}
	}
	for _, m := range h.singles {
		for w := range m {
			unsync(w)
		}
	}
	for w := range h.ranges {
		unsync(w)
	}
	for w := range h.unsynced {
		nh.unsynced[w] = struct{}{}
	}
	for w := range h.victims {
		nh.victims[w] = struct{}{}
	}
	if n := h.n.Swap(0); n > 0 {
		nh.n.Add(n)
		nh.startSync()
	}
	h.singles, h.ranges = map[string]map[*watcher]struct{}{}, map[*watcher]struct{}{}
	h.unsynced, h.victims = map[*watcher]struct{}{}, map[*watcher]struct{}{}
	h.streams = map[*WatchStream]struct{}{}
	s.next = next
	nh.mu.Unlock()
	h.mu.Unlock()
	next.mu.Unlock()
	s.mu.Unlock()
	return s.Close()
}
