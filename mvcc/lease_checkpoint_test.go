package mvcc

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// ckptHarness is a store with a fake clock and a checkpointer that records
// each batch and applies it, as the raft round trip does on every member.
type ckptHarness struct {
	t       *testing.T
	s       *Store
	le      *Lessor
	mu      sync.Mutex
	now     time.Time
	batches [][]LeaseCheckpoint
	fail    error
	persist bool
}

func newCkptHarness(t *testing.T, interval time.Duration) *ckptHarness {
	h := &ckptHarness{t: t, now: time.Unix(1_000_000, 0), persist: true}
	h.s, _ = openTestStore(t, Options{
		Now:                     h.clock,
		MinLeaseTTL:             1,
		LeaseCheckpointInterval: interval,
		LeaseCheckpointer: func(_ context.Context, cps []LeaseCheckpoint) error {
			h.mu.Lock()
			fail := h.fail
			if fail == nil {
				h.batches = append(h.batches, slices.Clone(cps))
			}
			h.mu.Unlock()
			if fail != nil {
				return fail
			}
			for _, c := range cps {
				if err := h.le.Checkpoint(c.ID, c.RemainingTTL, h.persist); err != nil {
					return err
				}
			}
			return nil
		},
	})
	h.le = h.s.Lessor()
	return h
}

func (h *ckptHarness) clock() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.now
}

func (h *ckptHarness) advance(d time.Duration) {
	h.mu.Lock()
	h.now = h.now.Add(d)
	h.mu.Unlock()
}

// run is one round of the server's checkpoint loop; it returns the batches
// it sent, each sorted by ID.
func (h *ckptHarness) run() [][]LeaseCheckpoint {
	h.mu.Lock()
	h.batches = nil
	h.mu.Unlock()
	h.le.CheckpointScheduled()
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.batches
	for _, b := range out {
		slices.SortFunc(b, func(x, y LeaseCheckpoint) int { return int(x.ID - y.ID) })
	}
	return out
}

func (h *ckptHarness) grant(id, ttl int64) {
	h.t.Helper()
	if _, err := h.le.Grant(id, ttl); err != nil {
		h.t.Fatal(err)
	}
}

func (h *ckptHarness) ttl(id int64) int64 {
	h.t.Helper()
	st, err := h.le.TimeToLive(id, false)
	if err != nil {
		h.t.Fatal(err)
	}
	return st.TTL
}

func (h *ckptHarness) stored(id int64) LeaseRecord {
	h.t.Helper()
	v := h.s.Backend().View()
	defer v.Release()
	b, ok := v.Get([]byte(BucketLease), leaseKey(id))
	if !ok {
		h.t.Fatalf("lease %d not in the lease bucket", id)
	}
	rec, err := UnmarshalLeaseRecord(b)
	if err != nil {
		h.t.Fatal(err)
	}
	return rec
}

func ckpts(pairs ...int64) []LeaseCheckpoint {
	var out []LeaseCheckpoint
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, LeaseCheckpoint{ID: pairs[i], RemainingTTL: pairs[i+1]})
	}
	return out
}

// TestLeaseCheckpointSchedule: which leases etcd's lessor checkpoints and
// when — only those granted (or promoted) with a remaining TTL above the
// interval in whole seconds, one interval later, with the remaining TTL
// rounded up; an applied checkpoint schedules the next one while it is
// still above the interval.
func TestLeaseCheckpointSchedule(t *testing.T) {
	h := newCkptHarness(t, 10*time.Second)
	h.le.Promote(0)
	h.grant(1, 5)  // below the interval: never
	h.grant(2, 10) // equal: never (etcd wants more than the interval)
	h.grant(3, 11)
	h.grant(4, 60)
	h.advance(9 * time.Second)
	if b := h.run(); len(b) != 0 {
		t.Fatalf("checkpoints before the interval: %v", b)
	}
	h.advance(500 * time.Millisecond)
	h.grant(5, 100) // due at 19.5s
	h.advance(500 * time.Millisecond)
	if b := h.run(); !slices.Equal(b[0], ckpts(3, 1, 4, 50)) || len(b) != 1 {
		t.Fatalf("at 10s: %v", b)
	}
	if r := h.stored(4); r != (LeaseRecord{ID: 4, TTL: 60, RemainingTTL: 50}) {
		t.Fatalf("lease 4 stored as %+v", r)
	}
	// The lessor's expiry is not touched by a checkpoint: the leader's
	// TimeToLive goes on counting down.
	if got := h.ttl(4); got != 50 {
		t.Fatalf("TimeToLive(4) = %d", got)
	}
	h.advance(9500 * time.Millisecond)
	// 4 was rescheduled (50 > 10) for 20s; 3 was not (1 <= 10); 5 is due at
	// 19.5s with exactly 90 left (109.5s - 19.5s).
	if b := h.run(); len(b) != 1 || !slices.Equal(b[0], ckpts(5, 90)) {
		t.Fatalf("at 19.5s: %v", b)
	}
	h.advance(500 * time.Millisecond)
	if b := h.run(); len(b) != 1 || !slices.Equal(b[0], ckpts(4, 40)) {
		t.Fatalf("at 20s: %v", b)
	}
	// An expired lease, and a revoked one, are dropped from the schedule.
	h.advance(40 * time.Second) // 4 expires at 60s, 5's next is at 29.5s
	if err := h.le.Revoke(5); err != nil {
		t.Fatal(err)
	}
	if b := h.run(); len(b) != 0 {
		t.Fatalf("at 60s: %v", b)
	}
}

// TestLeaseCheckpointSkipsFullTTL: a checkpoint whose remaining TTL is not
// below the granted TTL is not sent (a lease promoted with an extension
// longer than the interval).
func TestLeaseCheckpointSkipsFullTTL(t *testing.T) {
	h := newCkptHarness(t, 2*time.Second)
	h.grant(1, 30)
	h.le.Promote(5 * time.Second)
	h.advance(2 * time.Second)
	if b := h.run(); len(b) != 0 {
		t.Fatalf("remaining 33 >= 30 sent: %v", b)
	}
	h.advance(10 * time.Second) // no longer scheduled: etcd pops and drops it
	if b := h.run(); len(b) != 0 {
		t.Fatalf("%v", b)
	}
}

// TestLeaseCheckpointFollowerAndPromote: a follower schedules nothing (its
// leases never expire); Promote schedules every lease from its
// checkpointed remaining TTL and starts it from there; Demote drops the
// schedule.
func TestLeaseCheckpointFollowerAndPromote(t *testing.T) {
	h := newCkptHarness(t, 10*time.Second)
	h.grant(1, 100)
	h.grant(2, 100)
	h.grant(3, 100)
	if err := h.le.Checkpoint(2, 40, true); err != nil {
		t.Fatal(err)
	}
	if err := h.le.Checkpoint(3, 8, true); err != nil { // 8 <= 10: not rescheduled
		t.Fatal(err)
	}
	h.advance(time.Minute)
	if b := h.run(); len(b) != 0 {
		t.Fatalf("a follower checkpointed: %v", b)
	}
	h.le.Promote(1500 * time.Millisecond)
	// TimeToLive truncates (101.5 -> 101), a checkpoint rounds up (91.5 -> 92).
	if a, b, c := h.ttl(1), h.ttl(2), h.ttl(3); a != 101 || b != 41 || c != 9 {
		t.Fatalf("after Promote: TTLs %d %d %d, want 101 41 9", a, b, c)
	}
	h.advance(10 * time.Second)
	if b := h.run(); len(b) != 1 || !slices.Equal(b[0], ckpts(1, 92, 2, 32)) {
		t.Fatalf("after Promote: %v", b)
	}
	h.le.Demote()
	h.advance(10 * time.Second)
	h.le.CheckpointScheduled()
	h.le.Promote(0)
	h.advance(5 * time.Second)
	if b := h.run(); len(b) != 0 {
		t.Fatalf("the demoted schedule survived: %v", b)
	}
}

// TestLeaseCheckpointBatches: at most 1000 checkpoints per entry, batches
// until a short one; a failing checkpointer stops the round.
func TestLeaseCheckpointBatches(t *testing.T) {
	h := newCkptHarness(t, time.Second)
	h.le.Promote(0)
	for id := int64(1); id <= 2500; id++ {
		h.grant(id, 100)
	}
	h.advance(time.Second)
	b := h.run()
	if len(b) != 3 || len(b[0]) != 1000 || len(b[1]) != 1000 || len(b[2]) != 500 {
		t.Fatalf("batches of %d", lens(b))
	}
	seen := map[int64]bool{}
	for _, x := range b {
		for _, c := range x {
			if c.RemainingTTL != 99 || seen[c.ID] {
				t.Fatalf("checkpoint %+v", c)
			}
			seen[c.ID] = true
		}
	}
	// Exactly 1000 due: a full batch, then an empty look that sends nothing.
	h2 := newCkptHarness(t, time.Second)
	h2.le.Promote(0)
	for id := int64(1); id <= 1000; id++ {
		h2.grant(id, 100)
	}
	h2.advance(time.Second)
	if b := h2.run(); len(b) != 1 || len(b[0]) != 1000 {
		t.Fatalf("batches of %d", lens(b))
	}
	// A failure ends the round; what it popped is gone, as in etcd.
	h.advance(time.Second)
	h.fail = errors.New("not leader")
	if b := h.run(); len(b) != 0 {
		t.Fatalf("%v", b)
	}
	h.fail = nil
	if b := h.run(); len(b) != 2 || len(b[0])+len(b[1]) != 1500 {
		t.Fatalf("after a failure: batches of %d", lens(b))
	}
}

func lens(b [][]LeaseCheckpoint) []int {
	var n []int
	for _, x := range b {
		n = append(n, len(x))
	}
	return n
}

// TestLeaseCheckpointRenew: with checkpoints on, renewing a lease with a
// checkpointed TTL first records a checkpoint of 0 (so the renewal
// survives a leader change), then restarts the full TTL; without a
// checkpointed TTL nothing is recorded. A failed checkpoint fails the
// renewal.
func TestLeaseCheckpointRenew(t *testing.T) {
	h := newCkptHarness(t, 10*time.Second)
	h.le.Promote(0)
	h.grant(1, 60)
	h.grant(2, 60)
	h.advance(10 * time.Second)
	if b := h.run(); len(b) != 1 || !slices.Equal(b[0], ckpts(1, 50, 2, 50)) {
		t.Fatalf("%v", b)
	}
	h.batches = nil
	if ttl, err := h.le.Renew(1); err != nil || ttl != 60 {
		t.Fatalf("Renew = %d, %v", ttl, err)
	}
	if !slices.Equal(h.batches[0], ckpts(1, 0)) || len(h.batches) != 1 {
		t.Fatalf("renew recorded %v", h.batches)
	}
	if got := h.ttl(1); got != 60 {
		t.Fatalf("TTL after renew %d", got)
	}
	if r := h.stored(1); r != (LeaseRecord{ID: 1, TTL: 60}) {
		t.Fatalf("stored %+v", r)
	}
	h.batches = nil
	if _, err := h.le.Renew(1); err != nil || len(h.batches) != 0 {
		t.Fatalf("second renew: %v, recorded %v", err, h.batches)
	}
	h.fail = ErrNotPrimary
	if ttl, err := h.le.Renew(2); !errors.Is(err, ErrNotPrimary) || ttl != -1 {
		t.Fatalf("Renew with a failing checkpointer = %d, %v", ttl, err)
	}
	if got := h.ttl(2); got != 50 {
		t.Fatalf("a failed renewal restarted the TTL: %d", got)
	}
	if _, err := h.le.Renew(99); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatal(err)
	}
}

// TestLeaseRenewWithoutCheckpoints: with checkpoints off, a renewal leaves
// a checkpointed remaining TTL (applied from another leader's entries) in
// memory and in the bucket, and restarts from it, as etcd's lessor does.
func TestLeaseRenewWithoutCheckpoints(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s, _ := openTestStore(t, Options{Now: func() time.Time { return now }, MinLeaseTTL: 1})
	le := s.Lessor()
	if _, err := le.Grant(1, 60); err != nil {
		t.Fatal(err)
	}
	if err := le.Checkpoint(1, 30, true); err != nil {
		t.Fatal(err)
	}
	le.Promote(0)
	now = now.Add(10 * time.Second)
	if ttl, err := le.Renew(1); err != nil || ttl != 60 {
		t.Fatalf("Renew = %d, %v", ttl, err)
	}
	st, _ := le.TimeToLive(1, false)
	l, _ := le.Lookup(1)
	if st.TTL != 30 || l.RemainingTTL != 30 {
		t.Fatalf("TTL %d remaining %d", st.TTL, l.RemainingTTL)
	}
	le.CheckpointScheduled() // no checkpointer: nothing, no panic
}

// TestLeaseCheckpointPersistFlag: a checkpoint applied with persist=false
// (cluster version below 3.6, no LeaseCheckpointPersist) changes memory
// only; the lease bucket keeps etcd's bytes.
func TestLeaseCheckpointPersistFlag(t *testing.T) {
	h := newCkptHarness(t, 10*time.Second)
	h.grant(1, 60)
	before := h.stored(1)
	if err := h.le.Checkpoint(1, 20, false); err != nil {
		t.Fatal(err)
	}
	if r := h.stored(1); r != before {
		t.Fatalf("persist=false stored %+v", r)
	}
	if l, _ := h.le.Lookup(1); l.RemainingTTL != 20 {
		t.Fatalf("remaining %d", l.RemainingTTL)
	}
	if err := h.le.Checkpoint(1, 20, true); err != nil {
		t.Fatal(err)
	}
	v := h.s.Backend().View()
	got, _ := v.Get([]byte(BucketLease), leaseKey(1))
	v.Release()
	if !bytes.Equal(got, []byte{0x08, 1, 0x10, 60, 0x18, 20}) {
		t.Fatalf("stored %x", got)
	}
	if err := h.le.Checkpoint(42, 20, true); err != nil { // unknown lease: no error, as etcd
		t.Fatal(err)
	}
}

// TestLeaseTimeToLiveExpired: TimeToLive truncates as etcd's
// int64(Remaining().Seconds()): an expired lease not yet revoked reads 0,
// then negative.
func TestLeaseTimeToLiveExpired(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s, _ := openTestStore(t, Options{Now: func() time.Time { return now }, MinLeaseTTL: 1})
	le := s.Lessor()
	if _, err := le.Grant(1, 5); err != nil {
		t.Fatal(err)
	}
	le.Promote(0)
	for _, c := range []struct {
		at   time.Duration
		want int64
	}{{0, 5}, {1500 * time.Millisecond, 3}, {5 * time.Second, 0}, {5900 * time.Millisecond, 0}, {7 * time.Second, -2}} {
		now = time.Unix(1_000_000, 0).Add(c.at)
		if st, _ := le.TimeToLive(1, false); st.TTL != c.want {
			t.Errorf("at %v: TTL %d, want %d", c.at, st.TTL, c.want)
		}
	}
}

// TestLeasePromotePileUp: with 1000 leases or more, etcd's Promote lets at
// most 750 expire in each second and pushes the rest later (rescheduling
// their checkpoints).
func TestLeasePromotePileUp(t *testing.T) {
	h := newCkptHarness(t, 2*time.Second)
	for id := int64(1); id <= 1600; id++ {
		h.grant(id, 10)
	}
	h.le.Promote(0)
	byExpiry := map[time.Duration]int{}
	for id := int64(1); id <= 1600; id++ {
		l, _ := h.le.Lookup(id)
		d := l.expiry.Sub(h.now)
		switch {
		case d == 10*time.Second:
			byExpiry[10*time.Second]++
		case d > 11*time.Second && d <= 12*time.Second:
			byExpiry[11*time.Second]++
		case d > 12*time.Second && d <= 13*time.Second:
			byExpiry[12*time.Second]++
		default:
			t.Fatalf("lease %d expires in %v", id, d)
		}
	}
	// Lease 751 is pushed 751/750 s, lease 1500 exactly 2 s.
	if byExpiry[10*time.Second] != 750 || byExpiry[11*time.Second] != 750 || byExpiry[12*time.Second] != 100 {
		t.Fatalf("expiries %v", byExpiry)
	}
	// The pushed leases are in the schedule twice, but at 2 s their
	// remaining TTL rounds up to 10 or more (8 s + a push over 1 s): not
	// below the granted TTL, so only the 750 others are checkpointed.
	h.advance(2 * time.Second)
	n := 0
	for _, b := range h.run() {
		n += len(b)
	}
	if n != 750 {
		t.Fatalf("%d checkpoints", n)
	}
}
