package mvcc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"time"
)

// KeyValueHash is the result of HashKV.
type KeyValueHash struct {
	Hash            uint32
	CompactRevision int64
	Revision        int64
}

const hashStorageMaxSize = 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// kvHasher is etcd's kvHasher.
type kvHasher struct {
	h          uint32
	compactRev int64
	rev        int64
	keep       map[Revision]struct{}
}

func newKVHasher(compactRev, rev int64, keep map[Revision]struct{}) *kvHasher {
	return &kvHasher{h: crc32.Update(0, castagnoli, []byte(BucketKey)), compactRev: compactRev, rev: rev, keep: keep}
}

func (h *kvHasher) write(k, v []byte) error {
	kr, tomb, err := ParseRevKey(k)
	if err != nil {
		return err
	}
	if kr.Main > h.rev {
		return nil
	}
	if kr.Main <= h.compactRev && len(h.keep) > 0 {
		if _, ok := h.keep[kr]; !ok {
			return nil
		}
	}
	if kr.Main == h.compactRev && tomb {
		return nil
	}
	h.h = crc32.Update(h.h, castagnoli, k)
	h.h = crc32.Update(h.h, castagnoli, v)
	return nil
}

func (h *kvHasher) sum() KeyValueHash {
	return KeyValueHash{Hash: h.h, CompactRevision: h.compactRev, Revision: h.rev}
}

// HashKV returns etcd's KV hash at rev (0: current revision) and the
// current revision: a hash recorded by a compaction at rev if there is one,
// else CRC-32C over the key bucket between the compact revision and rev.
func (s *Store) HashKV(rev int64) (KeyValueHash, int64, error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return KeyValueHash{}, 0, ErrClosed
	}
	compactRev, currentRev := s.compactRev, s.currentRev
	for _, h := range s.hashes {
		if h.Revision == rev {
			s.mu.RUnlock()
			return h, currentRev, nil
		}
	}
	if rev > 0 && rev < compactRev {
		s.mu.RUnlock()
		return KeyValueHash{}, 0, ErrCompacted
	} else if rev > 0 && rev > currentRev {
		s.mu.RUnlock()
		return KeyValueHash{}, currentRev, ErrFutureRev
	}
	if rev == 0 {
		rev = currentRev
	}
	keep := make(map[Revision]struct{})
	s.idx.ascend("", func(ki *keyIndex) bool {
		ki.keepForHash(rev, keep)
		return true
	})
	if err := s.b.ForceCommit(); err != nil {
		s.mu.RUnlock()
		return KeyValueHash{}, 0, err
	}
	v := s.b.Snapshot()
	s.mu.RUnlock()
	defer v.Release()
	h := newKVHasher(compactRev, rev, keep)
	if bk := v.KeyBucket(); bk != nil {
		c := bk.Cursor()
		for k, val := c.First(); k != nil; k, val = c.Next() {
			if err := h.write(k, val); err != nil {
				return KeyValueHash{}, 0, s.corruptErr([]byte(BucketKey), k, err)
			}
		}
	}
	return h.sum(), currentRev, nil
}

// Hashes returns the hashes recorded by the last compactions (at most 10).
func (s *Store) Hashes() []KeyValueHash {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]KeyValueHash(nil), s.hashes...)
}

// Compact compacts the store at rev: revisions older than the newest
// revision of each key at rev are removed from the index and the file. It
// returns when the physical compaction is done (ScheduleCompact returns
// before it). The request is persisted (meta/scheduledCompactRev) first, so
// an interrupted compaction resumes at the next Open.
func (s *Store) Compact(rev int64) error {
	c, err := s.ScheduleCompact(rev)
	if err != nil {
		return err
	}
	<-c.Done()
	return c.Err()
}

// Compaction is a scheduled compaction whose physical part (deleting the
// compacted revisions from the file) runs in the background.
type Compaction struct {
	Rev  int64
	done chan struct{}
	err  error
}

// Done is closed when the physical compaction has finished or failed.
func (c *Compaction) Done() <-chan struct{} { return c.done }

// Err is the physical compaction's error, once Done is closed.
func (c *Compaction) Err() error { return c.err }

// ScheduleCompact compacts the index at rev and persists the request
// (meta/scheduledCompactRev, committed), as etcd's Compact does: from its
// return, reads below rev answer ErrCompacted. The revisions are deleted
// from the file in the background, CompactionBatchLimit per write batch
// with CompactionSleepInterval between batches, so writers are never held
// up for the length of a large compaction; compactions run one after the
// other in the order they were scheduled. A storage error in the background
// is kept and returned by BackgroundErr.
func (s *Store) ScheduleCompact(rev int64) (*Compaction, error) {
	if s.b.ReadOnly() {
		return nil, ErrReadOnly
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if rev <= s.compactRev {
		s.mu.Unlock()
		return nil, ErrCompacted
	}
	if rev > s.currentRev {
		s.mu.Unlock()
		return nil, ErrFutureRev
	}
	prevCompleted, err := s.prevCompactionCompleted()
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	prev := s.compactRev
	keep, extra := s.compactIndex(rev)
	err = s.b.Write(func(w *WriteTx) error {
		w.Put([]byte(BucketMeta), []byte(MetaScheduledCompactRev), RevKey(Revision{Main: rev}, false))
		return nil
	})
	s.mu.Unlock()
	if err == nil {
		err = s.b.ForceCommit()
	}
	if err != nil {
		return nil, err
	}
	return s.enqueueCompaction(rev, func() error {
		return s.physicalCompact(rev, prev, keep, extra, prevCompleted)
	}), nil
}

// compactJob is a physical compaction waiting for the compaction worker.
type compactJob struct {
	c   *Compaction
	run func() error
}

// enqueueCompaction queues run behind the compactions scheduled before and
// starts the worker if it is idle.
func (s *Store) enqueueCompaction(rev int64, run func() error) *Compaction {
	c := &Compaction{Rev: rev, done: make(chan struct{})}
	s.cq.mu.Lock()
	defer s.cq.mu.Unlock()
	if s.cq.closed {
		c.err = ErrClosed
		close(c.done)
		return c
	}
	s.cq.jobs = append(s.cq.jobs, compactJob{c: c, run: run})
	if !s.cq.running {
		s.cq.running = true
		s.cq.wg.Add(1)
		go s.compactWorker()
	}
	return c
}

func (s *Store) compactWorker() {
	defer s.cq.wg.Done()
	for {
		s.cq.mu.Lock()
		if len(s.cq.jobs) == 0 {
			s.cq.running = false
			s.cq.mu.Unlock()
			return
		}
		j := s.cq.jobs[0]
		s.cq.jobs[0] = compactJob{}
		s.cq.jobs = s.cq.jobs[1:]
		s.cq.mu.Unlock()

		err := j.run()

		s.cq.mu.Lock()
		if err != nil && !errors.Is(err, ErrClosed) && s.cq.err == nil {
			s.cq.err = fmt.Errorf("mvcc: compaction at revision %d: %w", j.c.Rev, err)
		}
		if err == nil && j.c.Rev > s.cq.finished {
			s.cq.finished = j.c.Rev
		}
		close(s.cq.finishedc)
		s.cq.finishedc = make(chan struct{})
		s.cq.mu.Unlock()
		j.c.err = err
		close(j.c.done)
	}
}

// BackgroundErr is the first storage error of a background compaction;
// the store's file may be damaged and the member should stop.
func (s *Store) BackgroundErr() error {
	s.cq.mu.Lock()
	defer s.cq.mu.Unlock()
	return s.cq.err
}

// WaitCompacted waits until the physical compactions up to rev have
// finished (etcd's physical compaction request), or the store closes, a
// compaction fails or ctx ends.
func (s *Store) WaitCompacted(ctx context.Context, rev int64) error {
	for {
		s.cq.mu.Lock()
		finished, err, ch, closed := s.cq.finished, s.cq.err, s.cq.finishedc, s.cq.closed
		s.cq.mu.Unlock()
		switch {
		case finished >= rev:
			return nil
		case err != nil:
			return err
		case closed:
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// compactIndex applies the compaction to the index and returns the
// revisions <= rev to keep on disk (keep also feeds the compaction hash,
// extra does not; see keyIndex.compact); REQUIRES s.mu held.
func (s *Store) compactIndex(rev int64) (keep, extra map[Revision]struct{}) {
	s.compactRev = rev
	keep = make(map[Revision]struct{})
	extra = make(map[Revision]struct{})
	dead := 0
	s.idx.ascend("", func(ki *keyIndex) bool {
		ki.compact(rev, keep, extra)
		if ki.empty() {
			dead++
		}
		return true
	})
	s.idx.dead += dead
	if s.idx.dead > 0 && s.idx.dead*4 >= s.idx.count {
		s.idx.rebuild()
	}
	return keep, extra
}

func (s *Store) prevCompactionCompleted() (bool, error) {
	v := s.b.View()
	defer v.Release()
	sc, scOK := v.Get([]byte(BucketMeta), []byte(MetaScheduledCompactRev))
	fc, fcOK := v.Get([]byte(BucketMeta), []byte(MetaFinishedCompactRev))
	if scOK != fcOK {
		return false, nil
	}
	return bytes.Equal(revMainOf(sc), revMainOf(fc)), nil
}

func revMainOf(b []byte) []byte {
	if len(b) < 8 {
		return b
	}
	return b[:8]
}

// resumeCompaction schedules the physical part of a compaction that was
// scheduled but not finished when the file was last closed.
func (s *Store) resumeCompaction(rev int64) *Compaction {
	s.mu.Lock()
	prev := s.compactRev
	keep, extra := s.compactIndex(rev)
	s.mu.Unlock()
	return s.enqueueCompaction(rev, func() error {
		return s.physicalCompact(rev, prev, keep, extra, false)
	})
}

// physicalCompact deletes from the key bucket every revision <= rev not in
// keep, reading CompactionBatchLimit revisions per snapshot, and records
// finishedCompactRev with the last batch; then it records the compaction
// hash. The deletions go through the ordinary write batches (committed every
// BatchInterval or BatchLimit writes); the last batch is committed at once.
// No snapshot is held while writing, so a commit that must remap the file
// never waits for the compaction.
func (s *Store) physicalCompact(rev, prev int64, keep, extra map[Revision]struct{}, storeHash bool) error {
	select {
	case <-s.stopc:
		return ErrClosed
	default:
	}
	h := newKVHasher(prev, rev, keep)
	var stats CompactStats
	start := time.Now()
	end := binary.BigEndian.AppendUint64(nil, uint64(rev+1))
	limit := s.opts.CompactionBatchLimit
	var from []byte // resume after this key
	for {
		var dels [][]byte
		n := 0
		err := func() error {
			snap := s.b.Snapshot()
			defer snap.Release()
			bk := snap.KeyBucket()
			if bk == nil {
				return nil
			}
			c := bk.Cursor()
			var k, v []byte
			if from == nil {
				k, v = c.First()
			} else {
				k, v = c.Seek(from)
				if k != nil && bytes.Equal(k, from) {
					k, v = c.Next()
				}
			}
			for ; k != nil && bytes.Compare(k, end) < 0 && n < limit; k, v = c.Next() {
				n++
				r, _, err := ParseRevKey(k)
				if err != nil {
					return s.corruptErr([]byte(BucketKey), k, err)
				}
				_, kept := keep[r]
				if _, ok := extra[r]; !kept && !ok {
					dels = append(dels, bytes.Clone(k))
				}
				if err := h.write(k, v); err != nil {
					return s.corruptErr([]byte(BucketKey), k, err)
				}
				from = append(from[:0], k...)
			}
			return nil
		}()
		if err != nil {
			return err
		}
		last := n < limit
		stats.Keys += len(dels)
		wstart := time.Now()
		err = s.b.Write(func(w *WriteTx) error {
			for _, d := range dels {
				w.Delete([]byte(BucketKey), d)
			}
			if last {
				w.Put([]byte(BucketMeta), []byte(MetaFinishedCompactRev), RevKey(Revision{Main: rev}, false))
			}
			return nil
		})
		if err == nil && last {
			err = s.b.ForceCommit()
		}
		stats.Pauses = append(stats.Pauses, time.Since(wstart))
		if err != nil {
			return err
		}
		if last {
			break
		}
		if d := s.opts.CompactionSleepInterval; d > 0 {
			select {
			case <-time.After(d):
			case <-s.stopc:
				return ErrClosed
			}
		}
	}
	sum := h.sum()
	if s.opts.OnCompact != nil {
		stats.Total = time.Since(start)
		stats.Revision, stats.Hash = rev, sum.Hash
		s.opts.OnCompact(stats)
	}
	if storeHash {
		s.mu.Lock()
		s.hashes = append(s.hashes, sum)
		sort.Slice(s.hashes, func(i, j int) bool { return s.hashes[i].Revision < s.hashes[j].Revision })
		if len(s.hashes) > hashStorageMaxSize {
			s.hashes = s.hashes[len(s.hashes)-hashStorageMaxSize:]
		}
		s.mu.Unlock()
	}
	return nil
}
