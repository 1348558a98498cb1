package mvcc

import (
	"container/heap"
	"context"
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

// Lease checkpoints, as etcd's lessor (server/lease/lessor.go): the primary
// proposes at most MaxLeaseCheckpointBatchSize checkpoints in one entry, and
// at most leaseCheckpointRate/2 entries each time it looks for due ones.
const (
	DefaultLeaseCheckpointInterval = 5 * time.Minute
	MaxLeaseCheckpointBatchSize    = 1000
	leaseCheckpointRate            = 1000
	// leaseRevokeRate is etcd's defaultLeaseRevokeRate (leases revoked
	// per second), which also shapes Promote.
	leaseRevokeRate = 1000
)

// LeaseCheckpoint is one entry of etcd's LeaseCheckpointRequest: the
// remaining TTL of a lease, in seconds (0 clears it).
type LeaseCheckpoint struct {
	ID           int64
	RemainingTTL int64
}

// LeaseCheckpointer records checkpoints in the consensus log (the server
// proposes a LeaseCheckpointRequest and waits for it to be applied), as
// etcd's lease.Checkpointer. Setting one (Options.LeaseCheckpointer) is
// etcd's feature gate LeaseCheckpoint.
type LeaseCheckpointer func(ctx context.Context, cps []LeaseCheckpoint) error

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
// the caller (the server) decides to revoke, and calls CheckpointScheduled
// to send the checkpoints that are due. Its state is guarded by the
// store's lock.
type Lessor struct {
	s        *Store
	leases   map[int64]*Lease
	keyLeasM map[string]int64
	primary  bool
	// cpHeap is etcd's leaseCheckpointHeap: when each lease is next due
	// for a checkpoint (a lease may be in it more than once, as in etcd).
	cpHeap checkpointQueue
}

// checkpointQueue is etcd's LeaseQueue: a min-heap by time.
type checkpointQueue []leaseAt

type leaseAt struct {
	id int64
	at time.Time
}

func (q checkpointQueue) Len() int           { return len(q) }
func (q checkpointQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q checkpointQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *checkpointQueue) Push(x any)        { *q = append(*q, x.(leaseAt)) }
func (q *checkpointQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

func (le *Lessor) checkpointInterval() time.Duration {
	if d := le.s.opts.LeaseCheckpointInterval; d > 0 {
		return d
	}
	return DefaultLeaseCheckpointInterval
}

// scheduleCheckpointIfNeeded is etcd's: with checkpoints on, a lease whose
// remaining TTL (the checkpointed one, else the granted TTL) is longer than
// the interval (in whole seconds) is due for one an interval from now.
func (le *Lessor) scheduleCheckpointIfNeeded(l *Lease) {
	if le.s.opts.LeaseCheckpointer == nil {
		return
	}
	iv := le.checkpointInterval()
	if l.remaining() > int64(iv.Seconds()) {
		heap.Push(&le.cpHeap, leaseAt{id: l.ID, at: le.s.opts.Now().Add(iv)})
	}
}

// remaining is etcd's getRemainingTTL: the checkpointed remaining TTL if
// set, else the granted TTL.
func (l *Lease) remaining() int64 {
	if l.RemainingTTL > 0 {
		return l.RemainingTTL
	}
	return l.TTL
}

// dueCheckpoints is etcd's findDueScheduledCheckpoints: it pops the due
// entries of the schedule, up to limit checkpoints, skipping leases that
// are gone or expired and those whose remaining TTL (rounded up) is not
// below the granted TTL.
func (le *Lessor) dueCheckpoints(limit int) []LeaseCheckpoint {
	if le.s.opts.LeaseCheckpointer == nil {
		return nil
	}
	now := le.s.opts.Now()
	var cps []LeaseCheckpoint
	for le.cpHeap.Len() > 0 && len(cps) < limit {
		if le.cpHeap[0].at.After(now) {
			return cps
		}
		lt := heap.Pop(&le.cpHeap).(leaseAt)
		l, ok := le.leases[lt.id]
		if !ok || !now.Before(l.expiry) {
			continue
		}
		rem := int64(math.Ceil(l.expiry.Sub(now).Seconds()))
		if rem >= l.TTL {
			continue
		}
		cps = append(cps, LeaseCheckpoint{ID: lt.id, RemainingTTL: rem})
	}
	return cps
}

// CheckpointScheduled is etcd's checkpointScheduledLeases, which its
// lessor runs every 500ms: while primary, it hands the due checkpoints to
// the checkpointer in batches of MaxLeaseCheckpointBatchSize, until a
// batch is short, the checkpointer fails, or leaseCheckpointRate/2 batches
// went out. Without a checkpointer it does nothing.
func (le *Lessor) CheckpointScheduled() {
	cp := le.s.opts.LeaseCheckpointer
	if cp == nil {
		return
	}
	for range leaseCheckpointRate / 2 {
		var cps []LeaseCheckpoint
		le.s.mu.Lock()
		if le.primary {
			cps = le.dueCheckpoints(MaxLeaseCheckpointBatchSize)
		}
		le.s.mu.Unlock()
		if len(cps) != 0 {
			if err := cp(context.Background(), cps); err != nil {
				return
			}
		}
		if len(cps) < MaxLeaseCheckpointBatchSize {
			return
		}
	}
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
	l.expiry = le.s.opts.Now().Add(extend + time.Duration(l.remaining())*time.Second)
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
		if le.primary {
			le.scheduleCheckpointIfNeeded(l)
		}
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

// Checkpoint applies a checkpoint, as etcd's lessor.Checkpoint: it sets
// the remaining TTL the next Promote starts the lease from (0: the full
// TTL), stores it in the lease bucket if persist (etcd: feature gate
// LeaseCheckpointPersist, or a cluster version of 3.6 or later), and, on
// the primary, schedules the lease's next checkpoint. The lease's expiry
// is left alone. A missing lease is no error.
func (le *Lessor) Checkpoint(id, remainingTTL int64, persist bool) error {
	return le.s.write(func(t *txn) error {
		if l, ok := le.leases[id]; ok {
			l.RemainingTTL = remainingTTL
			if persist {
				le.persist(t.w, l)
			}
			if le.primary {
				le.scheduleCheckpointIfNeeded(l)
			}
		}
		return nil
	})
}

// Renew restarts the TTL of a lease and returns the granted TTL, as etcd's
// lessor.Renew: with checkpoints on and a checkpointed remaining TTL set,
// it first records a checkpoint of 0 through the checkpointer (so the
// renewal is not undone by the next leader), and fails if that fails.
// Without checkpoints the remaining TTL is left as it is (and the renewal
// restarts from it, as in etcd).
func (le *Lessor) Renew(id int64) (int64, error) {
	cp := le.s.opts.LeaseCheckpointer
	le.s.mu.RLock()
	l := le.leases[id]
	if l == nil {
		le.s.mu.RUnlock()
		return -1, ErrLeaseNotFound
	}
	clearRemaining := cp != nil && l.RemainingTTL > 0
	le.s.mu.RUnlock()
	if clearRemaining {
		if err := cp(context.Background(), []LeaseCheckpoint{{ID: id, RemainingTTL: 0}}); err != nil {
			return -1, err
		}
	}
	le.s.mu.Lock()
	defer le.s.mu.Unlock()
	// The lease may have been revoked meanwhile.
	if l = le.leases[id]; l == nil {
		return -1, ErrLeaseNotFound
	}
	le.refresh(l, 0)
	return l.TTL, nil
}

// Promote starts expiry, as etcd's lessor.Promote: every lease expires
// extend plus its remaining TTL (the checkpointed one, else the granted
// TTL) from now, and is scheduled for a checkpoint; with 1000 leases or
// more, expiries that pile up are spread out. Until then leases never
// expire (a follower's view).
func (le *Lessor) Promote(extend time.Duration) {
	le.s.mu.Lock()
	defer le.s.mu.Unlock()
	le.primary = true
	for _, l := range le.leases {
		le.refresh(l, extend)
		le.scheduleCheckpointIfNeeded(l)
	}
	if len(le.leases) < leaseRevokeRate {
		return // no possibility of lease pile-up
	}
	// etcd spreads the expiries so that no second sees more than 3/4 of
	// its revoke rate expire: within each one-second window of expiries,
	// the leases beyond that many are pushed later (and scheduled for a
	// checkpoint once more, as etcd does).
	now := le.s.opts.Now()
	leases := make([]*Lease, 0, len(le.leases))
	for _, l := range le.leases {
		leases = append(leases, l)
	}
	sort.Slice(leases, func(i, j int) bool { return leases[i].expiry.Before(leases[j].expiry) })
	baseWindow := leases[0].expiry.Sub(now)
	nextWindow := baseWindow + time.Second
	expires := 0
	target := (3 * leaseRevokeRate) / 4
	for _, l := range leases {
		remaining := l.expiry.Sub(now)
		if remaining > nextWindow {
			baseWindow = remaining
			nextWindow = baseWindow + time.Second
			expires = 1
			continue
		}
		expires++
		if expires <= target {
			continue
		}
		rateDelay := float64(time.Second) * (float64(expires) / float64(target))
		// Leases n seconds ahead of the window's base are pushed n
		// seconds less.
		rateDelay -= float64(remaining - baseWindow)
		delay := time.Duration(rateDelay)
		nextWindow = baseWindow + delay
		le.refresh(l, delay+extend)
		le.scheduleCheckpointIfNeeded(l)
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
	le.cpHeap = nil
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

// remainingSeconds is what etcd's TimeToLive answers:
// int64(Remaining().Seconds()), truncated toward zero, so an expired lease
// not yet revoked reads 0 or less.
func (le *Lessor) remainingSeconds(l *Lease) int64 {
	if l.expiry.IsZero() {
		return int64(time.Duration(math.MaxInt64).Seconds())
	}
	return int64(l.expiry.Sub(le.s.opts.Now()).Seconds())
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
