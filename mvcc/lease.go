package mvcc

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
)

// MaxLeaseTTL is etcd's largest lease TTL, in seconds.
const MaxLeaseTTL = 9000000000

// LeaseRecord is etcd's leasepb.Lease, the value of the lease bucket
// (proto3: ID = 1, TTL = 2, RemainingTTL = 3, all int64; zero fields
// omitted). The key is the ID as 8-byte big-endian.
type LeaseRecord struct {
	ID           int64
	TTL          int64
	RemainingTTL int64
}

// Marshal encodes the record as etcd stores it.
func (l LeaseRecord) Marshal() []byte {
	var b []byte
	for i, v := range []int64{l.ID, l.TTL, l.RemainingTTL} {
		if v != 0 {
			b = protowire.AppendTag(b, protowire.Number(i+1), protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(v))
		}
	}
	return b
}

// UnmarshalLeaseRecord decodes a lease bucket value.
func UnmarshalLeaseRecord(b []byte) (LeaseRecord, error) {
	var l LeaseRecord
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return l, fmt.Errorf("leasepb.Lease: %w", protowire.ParseError(n))
		}
		if !num.IsValid() {
			return l, fmt.Errorf("leasepb.Lease: invalid field number %d", num)
		}
		b = b[n:]
		if typ == protowire.VarintType && num >= 1 && num <= 3 {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return l, fmt.Errorf("leasepb.Lease field %d: %w", num, protowire.ParseError(m))
			}
			switch num {
			case 1:
				l.ID = int64(v)
			case 2:
				l.TTL = int64(v)
			case 3:
				l.RemainingTTL = int64(v)
			}
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return l, fmt.Errorf("leasepb.Lease field %d: %w", num, protowire.ParseError(m))
		}
		b = b[m:]
	}
	return l, nil
}

func leaseKey(id int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(id)) }

// Lease is a granted lease.
type Lease struct {
	ID           int64
	TTL          int64 // granted TTL in seconds (raised to MinLeaseTTL)
	RemainingTTL int64 // last checkpointed remaining TTL, 0 if none
	expiry       time.Time
	keys         map[string]struct{}
}

// Lessor keeps the leases of a Store, as etcd's lessor does, minus the
// timers: expiry is computed against Options.Now and reported by Expired;
// the caller (the server) decides to revoke. Its state is guarded by the
// store's lock.
type Lessor struct {
	s        *Store
	leases   map[int64]*Lease
	keyLeasM map[string]int64
	primary  bool
}

func newLessor(s *Store) *Lessor {
	return &Lessor{s: s, leases: make(map[int64]*Lease), keyLeasM: make(map[string]int64)}
}

func (le *Lessor) restore(tx *bolt.Tx, keyToLease map[string]int64) error {
	s := le.s
	if bk := tx.Bucket([]byte(BucketLease)); bk != nil {
		err := bk.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return s.corruptf([]byte(BucketLease), k, "key length %d, want 8", len(k))
			}
			rec, err := UnmarshalLeaseRecord(v)
			if err != nil {
				return s.corruptErr([]byte(BucketLease), k, err)
			}
			ttl := max(rec.TTL, s.opts.MinLeaseTTL)
			le.leases[rec.ID] = &Lease{ID: rec.ID, TTL: ttl, RemainingTTL: rec.RemainingTTL, keys: make(map[string]struct{})}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for k, id := range keyToLease {
		// etcd logs and skips a key whose lease is gone.
		_ = le.attach(id, k)
	}
	return nil
}

func (le *Lessor) exists(id int64) bool { _, ok := le.leases[id]; return ok }

func (le *Lessor) keyLease(key string) int64 {
	if len(le.keyLeasM) == 0 {
		return 0
	}
	return le.keyLeasM[key]
}

func (le *Lessor) attach(id int64, key string) error {
	l := le.leases[id]
	if l == nil {
		return ErrLeaseNotFound
	}
	l.keys[key] = struct{}{}
	le.keyLeasM[key] = id
	return nil
}

func (le *Lessor) detach(id int64, key string) {
	if l := le.leases[id]; l != nil {
		delete(l.keys, key)
	}
	delete(le.keyLeasM, key)
}

func (le *Lessor) persist(w *WriteTx, l *Lease) {
	w.Put([]byte(BucketLease), leaseKey(l.ID), LeaseRecord{ID: l.ID, TTL: l.TTL, RemainingTTL: l.RemainingTTL}.Marshal())
}

func (le *Lessor) refresh(l *Lease, extend time.Duration) {
	ttl := l.TTL
	if l.RemainingTTL > 0 {
		ttl = l.RemainingTTL
	}
	l.expiry = le.s.opts.Now().Add(extend + time.Duration(ttl)*time.Second)
}

// Grant creates lease id with ttl seconds, as etcd's lessor.Grant.
func (le *Lessor) Grant(id, ttl int64) (*Lease, error) {
	if id == 0 {
		return nil, ErrLeaseNotFound
	}
	if ttl > MaxLeaseTTL {
		return nil, ErrLeaseTTLTooLarge
	}
	var out *Lease
	err := le.s.write(func(t *txn) error {
		if _, ok := le.leases[id]; ok {
			return ErrLeaseExists
		}
		l := &Lease{ID: id, TTL: max(ttl, le.s.opts.MinLeaseTTL), keys: make(map[string]struct{})}
		if le.primary {
			le.refresh(l, 0)
		}
		le.leases[id] = l
		le.persist(t.w, l)
		c := *l
		out = &c
		return nil
	})
	return out, err
}

// Revoke deletes the lease and every key attached to it (in key order, in
// one write transaction), as etcd's lessor.Revoke.
func (le *Lessor) Revoke(id int64) error {
	return le.s.write(func(t *txn) error {
		l := le.leases[id]
		if l == nil {
			return ErrLeaseNotFound
		}
		keys := make([]string, 0, len(l.keys))
		for k := range l.keys {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			t.deleteRange([]byte(k), nil)
		}
		delete(le.leases, id)
		t.w.Delete([]byte(BucketLease), leaseKey(id))
		return nil
	})
}

// Checkpoint records the remaining TTL of a lease and persists it.
func (le *Lessor) Checkpoint(id, remainingTTL int64) error {
	return le.s.write(func(t *txn) error {
		if l, ok := le.leases[id]; ok {
			l.RemainingTTL = remainingTTL
			le.persist(t.w, l)
		}
		return nil
	})
}

// Renew restarts the TTL of a lease and returns it (etcd also clears a
// checkpointed remaining TTL).
func (le *Lessor) Renew(id int64) (int64, error) {
	var ttl int64
	err := le.s.write(func(t *txn) error {
		l := le.leases[id]
		if l == nil {
			return ErrLeaseNotFound
		}
		if l.RemainingTTL > 0 {
			l.RemainingTTL = 0
			le.persist(t.w, l)
		}
		le.refresh(l, 0)
		ttl = l.TTL
		return nil
	})
	return ttl, err
}

// Promote starts expiry: every lease expires extend plus its (remaining)
// TTL from now. Until then leases never expire (a follower's view).
func (le *Lessor) Promote(extend time.Duration) {
	le.s.mu.Lock()
	defer le.s.mu.Unlock()
	le.primary = true
	for _, l := range le.leases {
		le.refresh(l, extend)
	}
}

// Demote stops expiry, as on a follower: leases never expire until the
// next Promote.
func (le *Lessor) Demote() {
	le.s.mu.Lock()
	defer le.s.mu.Unlock()
	le.primary = false
	for _, l := range le.leases {
		l.expiry = time.Time{}
	}
}

// LeaseStatus is the answer of TimeToLive.
type LeaseStatus struct {
	ID         int64
	TTL        int64 // remaining seconds; -1 for an expired lease
	GrantedTTL int64
	Keys       [][]byte
}

// TimeToLive returns the remaining TTL, the granted TTL and (if keys) the
// attached keys in key order.
func (le *Lessor) TimeToLive(id int64, keys bool) (LeaseStatus, error) {
	le.s.mu.RLock()
	defer le.s.mu.RUnlock()
	l := le.leases[id]
	if l == nil {
		return LeaseStatus{}, ErrLeaseNotFound
	}
	st := LeaseStatus{ID: id, GrantedTTL: l.TTL, TTL: le.remainingSeconds(l)}
	if keys {
		for k := range l.keys {
			st.Keys = append(st.Keys, []byte(k))
		}
		sort.Slice(st.Keys, func(i, j int) bool { return string(st.Keys[i]) < string(st.Keys[j]) })
	}
	return st, nil
}

func (le *Lessor) remainingSeconds(l *Lease) int64 {
	if l.expiry.IsZero() {
		return int64(time.Duration(math.MaxInt64).Seconds())
	}
	d := l.expiry.Sub(le.s.opts.Now())
	if d <= 0 {
		return -1
	}
	return int64(d.Seconds())
}

// Leases returns the IDs of all leases, ascending.
func (le *Lessor) Leases() []int64 {
	le.s.mu.RLock()
	defer le.s.mu.RUnlock()
	ids := make([]int64, 0, len(le.leases))
	for id := range le.leases {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// Lookup returns a copy of the lease (without keys), or false.
func (le *Lessor) Lookup(id int64) (Lease, bool) {
	le.s.mu.RLock()
	defer le.s.mu.RUnlock()
	l := le.leases[id]
	if l == nil {
		return Lease{}, false
	}
	return Lease{ID: l.ID, TTL: l.TTL, RemainingTTL: l.RemainingTTL, expiry: l.expiry}, true
}

// Keys returns the keys attached to a lease, sorted; ok is false if there
// is no such lease.
func (le *Lessor) Keys(id int64) (keys []string, ok bool) {
	le.s.mu.RLock()
	defer le.s.mu.RUnlock()
	l := le.leases[id]
	if l == nil {
		return nil, false
	}
	keys = make([]string, 0, len(l.keys))
	for k := range l.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, true
}

// Expired returns the leases whose expiry has passed (only after Promote).
func (le *Lessor) Expired() []int64 {
	le.s.mu.RLock()
	defer le.s.mu.RUnlock()
	now := le.s.opts.Now()
	var ids []int64
	for id, l := range le.leases {
		if !l.expiry.IsZero() && !now.Before(l.expiry) {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}
