package mvcc

import (
	"bytes"
	"encoding/binary"
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
	return &kvHasher{h: crc32.Update(0, castagnoli, BucketKey), compactRev: compactRev, rev: rev, keep: keep}
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
				return KeyValueHash{}, 0, s.corruptErr(BucketKey, k, err)
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
// returns when the physical compaction is done. The request is persisted
// (meta/scheduledCompactRev) first, so an interrupted compaction resumes at
// the next Open.
func (s *Store) Compact(rev int64) error {
	if s.b.ReadOnly() {
		return ErrReadOnly
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if rev <= s.compactRev {
		s.mu.Unlock()
		return ErrCompacted
	}
	if rev > s.currentRev {
		s.mu.Unlock()
		return ErrFutureRev
	}
	prevCompleted, err := s.prevCompactionCompleted()
	if err != nil {
		s.mu.Unlock()
		return err
	}
	prev := s.compactRev
	keep, extra := s.compactIndex(rev)
	err = s.b.Write(func(w *WriteTx) error {
		w.Put(BucketMeta, MetaScheduledCompactRev, RevKey(Revision{Main: rev}, false))
		return nil
	})
	s.mu.Unlock()
	if err == nil {
		err = s.b.ForceCommit()
	}
	if err != nil {
		return err
	}
	return s.physicalCompact(rev, prev, keep, extra, prevCompleted)
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
	sc, scOK := v.Get(BucketMeta, MetaScheduledCompactRev)
	fc, fcOK := v.Get(BucketMeta, MetaFinishedCompactRev)
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

// resumeCompaction finishes a compaction that was scheduled but not
// finished when the file was last closed.
func (s *Store) resumeCompaction(rev int64) error {
	s.mu.Lock()
	prev := s.compactRev
	keep, extra := s.compactIndex(rev)
	s.mu.Unlock()
	return s.physicalCompact(rev, prev, keep, extra, false)
}

// physicalCompact deletes from the key bucket every revision <= rev not in
// keep, reading CompactionBatchLimit revisions per snapshot, and records
// finishedCompactRev with the last batch; then it records the compaction
// hash. The deletions go through the ordinary write batches (committed every
// BatchInterval or BatchLimit writes); the last batch is committed at once.
// No snapshot is held while writing, so a commit that must remap the file
// never waits for the compaction.
func (s *Store) physicalCompact(rev, prev int64, keep, extra map[Revision]struct{}, storeHash bool) error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	h := newKVHasher(prev, rev, keep)
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
					return s.corruptErr(BucketKey, k, err)
				}
				_, kept := keep[r]
				if _, ok := extra[r]; !kept && !ok {
					dels = append(dels, bytes.Clone(k))
				}
				if err := h.write(k, v); err != nil {
					return s.corruptErr(BucketKey, k, err)
				}
				from = append(from[:0], k...)
			}
			return nil
		}()
		if err != nil {
			return err
		}
		last := n < limit
		err = s.b.Write(func(w *WriteTx) error {
			for _, d := range dels {
				w.Delete(BucketKey, d)
			}
			if last {
				w.Put(BucketMeta, MetaFinishedCompactRev, RevKey(Revision{Main: rev}, false))
			}
			return nil
		})
		if err == nil && last {
			err = s.b.ForceCommit()
		}
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
	if storeHash {
		s.mu.Lock()
		s.hashes = append(s.hashes, h.sum())
		sort.Slice(s.hashes, func(i, j int) bool { return s.hashes[i].Revision < s.hashes[j].Revision })
		if len(s.hashes) > hashStorageMaxSize {
			s.hashes = s.hashes[len(s.hashes)-hashStorageMaxSize:]
		}
		s.mu.Unlock()
	}
	return nil
}
