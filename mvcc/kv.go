package mvcc

import (
	"bytes"
	"math"
	"sort"
	"unsafe"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// txn is the state of one request: a read (w == nil) or a write.
type txn struct {
	s        *Store
	v        *View
	w        *WriteTx
	beginRev int64
	changes  int
	events   []*mvccpb.Event // for watchers, when there are any
}

// rev is the revision reads inside the request see.
func (t *txn) rev() int64 {
	if t.changes > 0 {
		return t.beginRev + 1
	}
	return t.beginRev
}

func bstr(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// visit calls fn for each key of [key, end) in the index as etcd's
// treeIndex.unsafeVisit does: end == nil is the single key, an empty non-nil
// end means "to the last key".
func (s *Store) visit(key, end []byte, fn func(ki *keyIndex) bool) {
	if end == nil {
		if ki := s.idx.get(bstr(key)); ki != nil && !ki.empty() {
			fn(ki)
		}
		return
	}
	ks, es := bstr(key), bstr(end)
	s.idx.ascend(ks, func(ki *keyIndex) bool {
		if len(es) > 0 && ki.key >= es {
			return false
		}
		return fn(ki)
	})
}

type rangeOpts struct {
	limit          int64
	rev            int64
	countOnly      bool
	fastKeysOnly   bool
	withTotalCount bool
}

// rangeKeys is etcd's storeTxnCommon.rangeKeys.
func (t *txn) rangeKeys(key, end []byte, ro rangeOpts) (kvs []*mvccpb.KeyValue, count int, curRev int64, err error) {
	s := t.s
	curRev = t.rev()
	rev := ro.rev
	if rev > curRev {
		return nil, -1, curRev, ErrFutureRev
	}
	if rev <= 0 {
		rev = curRev
	}
	if rev < s.compactRev {
		return nil, -1, 0, ErrCompacted
	}
	limit := int(ro.limit)
	if ro.countOnly {
		total := 0
		s.visit(key, end, func(ki *keyIndex) bool {
			if _, _, _, ok := ki.get(rev); ok {
				total++
			}
			return true
		})
		return nil, total, curRev, nil
	}
	if ro.fastKeysOnly {
		s.visit(key, end, func(ki *keyIndex) bool {
			reached := limit > 0 && len(kvs) >= limit
			if reached && !ro.withTotalCount {
				return false
			}
			if m, c, v, ok := ki.get(rev); ok {
				if !reached {
					kvs = append(kvs, &mvccpb.KeyValue{Key: []byte(ki.key), ModRevision: m.Main, CreateRevision: c, Version: v})
				}
				count++
			}
			return true
		})
		return kvs, count, curRev, nil
	}
	var revs []Revision
	s.visit(key, end, func(ki *keyIndex) bool {
		reached := limit > 0 && len(revs) >= limit
		if reached && !ro.withTotalCount {
			return false
		}
		if m, _, _, ok := ki.get(rev); ok {
			if !reached {
				revs = append(revs, m)
			}
			count++
		}
		return true
	})
	if len(revs) == 0 {
		return nil, count, curRev, nil
	}
	kvs = make([]*mvccpb.KeyValue, len(revs))
	var kb [RevBytesLen]byte
	var f kvFields
	for i, r := range revs {
		k := AppendRevKey(kb[:0], r, false)
		val, ok := t.v.revValue(r, k)
		if !ok {
			return nil, -1, curRev, s.corruptf([]byte(BucketKey), k, "revision in the key index is missing from the bucket")
		}
		if err := decodeKV(val, &f); err != nil {
			return nil, -1, curRev, s.corruptErr([]byte(BucketKey), k, err)
		}
		kvs[i] = f.toProto(false)
	}
	return kvs, count, curRev, nil
}

func rangeLimit(r *pb.RangeRequest) int64 {
	limit := r.Limit
	if !IsDefaultOrdering(r.SortTarget, r.SortOrder) || HasRevisionFilters(r) {
		limit = 0
	}
	if limit > 0 && limit < math.MaxInt64 {
		limit++
	}
	return limit
}

// IsDefaultOrdering reports whether keys come in the store's own order
// (by key, ascending), so that a range needs no sorting.
func IsDefaultOrdering(t pb.RangeRequest_SortTarget, o pb.RangeRequest_SortOrder) bool {
	return o == pb.RangeRequest_NONE || (t == pb.RangeRequest_KEY && o == pb.RangeRequest_ASCEND)
}

// HasRevisionFilters reports whether r filters keys by their create or
// mod revision, which a limit cannot be applied before.
func HasRevisionFilters(r *pb.RangeRequest) bool {
	return r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0
}

// mkGteRange maps the "\x00" range end (from key) to an empty non-nil end.
func mkGteRange(rangeEnd []byte) []byte {
	if len(rangeEnd) == 1 && rangeEnd[0] == 0 {
		return []byte{}
	}
	return rangeEnd
}

// executeRange is etcd's txn.executeRange.
// Without withTotalCount, the keys past the limit are not visited and
// Count is not the range's total.
func (t *txn) executeRange(r *pb.RangeRequest, withTotalCount bool) (*pb.RangeResponse, error) {
	ro := rangeOpts{
		limit:          rangeLimit(r),
		rev:            r.Revision,
		countOnly:      r.CountOnly,
		fastKeysOnly:   r.KeysOnly && r.SortTarget != pb.RangeRequest_VALUE,
		withTotalCount: withTotalCount,
	}
	kvs, count, rev, err := t.rangeKeys(r.Key, mkGteRange(r.RangeEnd), ro)
	if err != nil {
		return nil, err
	}
	prune := func(drop func(*mvccpb.KeyValue) bool) {
		j := 0
		for i := range kvs {
			kvs[j] = kvs[i]
			if !drop(kvs[i]) {
				j++
			}
		}
		kvs = kvs[:j]
	}
	if r.MaxModRevision != 0 {
		prune(func(kv *mvccpb.KeyValue) bool { return kv.ModRevision > r.MaxModRevision })
	}
	if r.MinModRevision != 0 {
		prune(func(kv *mvccpb.KeyValue) bool { return kv.ModRevision < r.MinModRevision })
	}
	if r.MaxCreateRevision != 0 {
		prune(func(kv *mvccpb.KeyValue) bool { return kv.CreateRevision > r.MaxCreateRevision })
	}
	if r.MinCreateRevision != 0 {
		prune(func(kv *mvccpb.KeyValue) bool { return kv.CreateRevision < r.MinCreateRevision })
	}
	order := r.SortOrder
	if r.SortTarget != pb.RangeRequest_KEY && order == pb.RangeRequest_NONE {
		order = pb.RangeRequest_ASCEND
	}
	if !IsDefaultOrdering(r.SortTarget, order) {
		var less func(a, b *mvccpb.KeyValue) bool
		switch r.SortTarget {
		case pb.RangeRequest_KEY:
			less = func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Key, b.Key) < 0 }
		case pb.RangeRequest_VERSION:
			less = func(a, b *mvccpb.KeyValue) bool { return a.Version-b.Version < 0 }
		case pb.RangeRequest_CREATE:
			less = func(a, b *mvccpb.KeyValue) bool { return a.CreateRevision-b.CreateRevision < 0 }
		case pb.RangeRequest_MOD:
			less = func(a, b *mvccpb.KeyValue) bool { return a.ModRevision-b.ModRevision < 0 }
		case pb.RangeRequest_VALUE:
			less = func(a, b *mvccpb.KeyValue) bool { return bytes.Compare(a.Value, b.Value) < 0 }
		default:
			return nil, ErrInvalidSortOption
		}
		// etcd uses sort.Sort (not stable); for equal elements the order is
		// that of sort.Sort on the same input, which we reproduce by using it.
		switch order {
		case pb.RangeRequest_ASCEND:
			sort.Sort(kvSorter{kvs, less})
		case pb.RangeRequest_DESCEND:
			sort.Sort(sort.Reverse(kvSorter{kvs, less}))
		}
	}
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: rev}}
	if r.Limit > 0 && len(kvs) > int(r.Limit) {
		kvs = kvs[:r.Limit]
		resp.More = true
	}
	resp.Count = int64(count)
	if kvs == nil {
		kvs = []*mvccpb.KeyValue{}
	}
	for _, kv := range kvs {
		if r.KeysOnly {
			kv.Value = nil
		}
	}
	resp.Kvs = kvs
	return resp, nil
}

type kvSorter struct {
	kvs  []*mvccpb.KeyValue
	less func(a, b *mvccpb.KeyValue) bool
}

func (s kvSorter) Len() int           { return len(s.kvs) }
func (s kvSorter) Swap(i, j int)      { s.kvs[i], s.kvs[j] = s.kvs[j], s.kvs[i] }
func (s kvSorter) Less(i, j int) bool { return s.less(s.kvs[i], s.kvs[j]) }

// put is etcd's storeTxnWrite.put.
func (t *txn) put(key, value []byte, leaseID int64) error {
	s := t.s
	rev := t.beginRev + 1
	c := rev
	var ver, oldLease int64
	ki := s.idx.get(bstr(key))
	if ki != nil {
		if _, created, v, ok := ki.get(rev); ok {
			c, ver = created, v
			oldLease = s.lessor.keyLease(bstr(key))
		}
	}
	ver++
	r := Revision{Main: rev, Sub: int64(t.changes)}
	val := appendKeyValue(make([]byte, 0, keyValueSize(key, c, rev, ver, value, leaseID)), key, c, rev, ver, value, leaseID)
	t.w.putRev(r, false, val)
	if ki == nil || !ki.live() {
		s.live++ // a key that did not exist now does (Stats)
	}
	if ki == nil {
		ki = s.idx.insert(keyIndex{key: string(key)})
	} else if ki.empty() {
		s.idx.dead--
	}
	ki.put(r)
	t.changes++
	if s.hub.active() {
		t.events = append(t.events, &mvccpb.Event{Type: mvccpb.Event_PUT, Kv: &mvccpb.KeyValue{
			Key: []byte(ki.key), CreateRevision: c, ModRevision: rev, Version: ver, Value: bytes.Clone(value), Lease: leaseID}})
	}
	if oldLease != leaseID {
		if oldLease != 0 {
			s.lessor.detach(oldLease, ki.key)
		}
		if leaseID != 0 {
			if err := s.lessor.attach(leaseID, ki.key); err != nil {
				return err
			}
		}
	}
	return nil
}

// deleteRange is etcd's storeTxnWrite.deleteRange.
func (t *txn) deleteRange(key, end []byte) int64 {
	s := t.s
	rrev := t.rev()
	var keys []*keyIndex
	s.visit(key, end, func(ki *keyIndex) bool {
		if _, _, _, ok := ki.get(rrev); ok {
			keys = append(keys, ki)
		}
		return true
	})
	for _, ki := range keys {
		t.delete(ki)
	}
	return int64(len(keys))
}

func (t *txn) delete(ki *keyIndex) {
	s := t.s
	r := Revision{Main: t.beginRev + 1, Sub: int64(t.changes)}
	kb := []byte(ki.key)
	t.w.putRev(r, true, appendKeyValue(make([]byte, 0, keyValueSize(kb, 0, 0, 0, nil, 0)), kb, 0, 0, 0, nil, 0))
	ki.tombstone(r)
	s.live--
	t.changes++
	if s.hub.active() {
		t.events = append(t.events, &mvccpb.Event{Type: mvccpb.Event_DELETE, Kv: &mvccpb.KeyValue{Key: kb, ModRevision: r.Main}})
	}
	if l := s.lessor.keyLease(ki.key); l != 0 {
		s.lessor.detach(l, ki.key)
	}
}
