package mvcc

import (
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/etckit/etckit/corrupt"
	bolt "go.etcd.io/bbolt"
)

// Options configures a Store. The zero value gives etcd's defaults.
type Options struct {
	Backend BackendOptions
	// CompactionBatchLimit is the number of revisions a physical compaction
	// deletes per bbolt transaction (etcd: 1000).
	CompactionBatchLimit int
	// CompactionSleepInterval is the pause between compaction batches
	// (etcd: 10ms). Negative means no pause.
	CompactionSleepInterval time.Duration
	// MaxTxnOps bounds the operations of one Txn (etcd: 128).
	MaxTxnOps int
	// Now is the clock of the lessor (default time.Now).
	Now func() time.Time
	// MinLeaseTTL is the smallest TTL a lease is granted with (etcd: 3 x
	// election timeout = 3s by default).
	MinLeaseTTL int64
	// LeaseCheckpointer turns on etcd's lease checkpoints (feature gate
	// LeaseCheckpoint): the primary lessor schedules a checkpoint for every
	// lease whose remaining TTL exceeds LeaseCheckpointInterval, and a
	// renewal clears a checkpointed TTL through it. Nil: off, as etcd's
	// default.
	LeaseCheckpointer LeaseCheckpointer
	// LeaseCheckpointInterval is etcd's config.ServerConfig
	// LeaseCheckpointInterval (default DefaultLeaseCheckpointInterval,
	// 5 minutes; etcd 3.6 and 3.7 have no flag for it).
	LeaseCheckpointInterval time.Duration
	// OnCompact, when set, is told of each finished physical compaction
	// (the server's metrics; mvcc knows no metrics library).
	OnCompact func(CompactStats)
}

// CompactStats is one physical compaction: the revisions deleted, the
// time each batch held the writers (its write and, for the last, the
// commit), and the whole time, pauses between batches included.
type CompactStats struct {
	Revision int64 // the compaction's revision
	Hash     uint32
	Keys     int
	Pauses   []time.Duration
	Total    time.Duration
}

func (o Options) withDefaults() Options {
	if o.CompactionBatchLimit <= 0 {
		o.CompactionBatchLimit = 1000
	}
	if o.CompactionSleepInterval == 0 {
		o.CompactionSleepInterval = 10 * time.Millisecond
	}
	if o.MaxTxnOps <= 0 {
		o.MaxTxnOps = 128
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MinLeaseTTL <= 0 {
		o.MinLeaseTTL = 3
	}
	return o
}

// Store is etcd's MVCC key-value store over a bbolt file.
type Store struct {
	opts Options
	b    *Backend

	// mu: writers hold it exclusively for one request; readers share it.
	mu         sync.RWMutex
	idx        indexTree
	currentRev int64
	compactRev int64 // -1 if never compacted
	live       int64 // keys that exist at currentRev (Stats)
	hashes     []KeyValueHash
	lessor     *Lessor
	hub        *watchHub
	closed     bool
	next       *Store // set by HandOver: the store that took the watch streams

	// cq runs physical compactions, one at a time, in schedule order.
	cq struct {
		mu        sync.Mutex
		jobs      []compactJob
		running   bool
		closed    bool
		wg        sync.WaitGroup // the worker
		finished  int64          // last compaction finished physically
		finishedc chan struct{}  // closed and replaced when one finishes
		err       error          // first storage error
	}
	stopc chan struct{}
}

// Open opens the store in the bbolt file at path (member/snap/db),
// rebuilding the key index from the key bucket and the leases from the lease
// bucket, and resuming an interrupted compaction (unless read-only).
func Open(path string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	b, err := OpenBackend(path, opts.Backend)
	if err != nil {
		return nil, err
	}
	s, err := newStore(b, opts)
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	return s, nil
}

func newStore(b *Backend, opts Options) (*Store, error) {
	s := &Store{opts: opts, b: b, currentRev: 1, compactRev: -1, stopc: make(chan struct{})}
	s.cq.finishedc = make(chan struct{})
	s.lessor = newLessor(s)
	s.hub = newWatchHub(s)
	if !b.ReadOnly() {
		// etcd creates key and meta at store creation, lease at lessor
		// creation, and commits at once.
		err := b.Write(func(w *WriteTx) error {
			w.ensureBucket([]byte(BucketKey))
			w.ensureBucket([]byte(BucketMeta))
			w.ensureBucket([]byte(BucketLease))
			return nil
		})
		if err == nil {
			err = b.ForceCommit()
		}
		if err != nil {
			return nil, err
		}
	}
	scheduled, err := s.restore()
	if err != nil {
		return nil, err
	}
	if scheduled != 0 && !b.ReadOnly() {
		s.resumeCompaction(scheduled)
	}
	return s, nil
}

// Backend returns the store's backend.
func (s *Store) Backend() *Backend { return s.b }

// Lessor returns the store's lessor.
func (s *Store) Lessor() *Lessor { return s.lessor }

func (s *Store) corruptf(bucket, key []byte, format string, args ...any) error {
	return corrupt.New(s.b.Path(), -1, corrupt.Damaged,
		fmt.Sprintf("bucket %q key %x: %s", bucket, key, fmt.Sprintf(format, args...)), nil)
}

func (s *Store) corruptErr(bucket, key []byte, err error) error {
	return corrupt.New(s.b.Path(), -1, corrupt.Damaged, fmt.Sprintf("bucket %q key %x", bucket, key), err)
}

// readCompactMeta reads a scheduled/finished compact revision.
func (s *Store) readCompactMeta(tx *bolt.Tx, name []byte) (int64, bool, error) {
	bk := tx.Bucket([]byte(BucketMeta))
	if bk == nil {
		return 0, false, nil
	}
	v := bk.Get(name)
	if len(v) == 0 {
		return 0, false, nil
	}
	r, _, err := ParseRevKey(v)
	if err != nil {
		return 0, false, s.corruptErr([]byte(BucketMeta), name, err)
	}
	return r.Main, true, nil
}

// restore rebuilds the index from one pass over the key bucket; it returns
// the scheduled compaction to resume, or 0.
func (s *Store) restore() (int64, error) {
	v := s.b.Snapshot()
	defer v.Release()
	tx := v.Tx()
	finished, found, err := s.readCompactMeta(tx, []byte(MetaFinishedCompactRev))
	if err != nil {
		return 0, err
	}
	if found {
		s.compactRev = finished
	}
	scheduled, _, err := s.readCompactMeta(tx, []byte(MetaScheduledCompactRev))
	if err != nil {
		return 0, err
	}

	keyToLease := make(map[string]int64)
	cur := int64(1)
	if bk := tx.Bucket([]byte(BucketKey)); bk != nil {
		c := bk.Cursor()
		var f kvFields
		var last *keyIndex
		for k, val := c.First(); k != nil; k, val = c.Next() {
			r, tomb, err := ParseRevKey(k)
			if err != nil {
				return 0, s.corruptErr([]byte(BucketKey), k, err)
			}
			if r.Main < cur {
				return 0, s.corruptf([]byte(BucketKey), k, "revision %d after %d", r.Main, cur)
			}
			cur = r.Main
			if err := decodeKV(val, &f); err != nil {
				return 0, s.corruptErr([]byte(BucketKey), k, err)
			}
			kstr := unsafe.String(unsafe.SliceData(f.key), len(f.key))
			ki := last
			if ki == nil || ki.key != kstr {
				ki = s.idx.get(kstr)
			}
			if ki == nil {
				ki = s.idx.insert(keyIndex{key: string(f.key)})
			}
			ki.restoreNext(r, tomb, f.create, f.ver)
			last = ki
			if tomb || f.lease == 0 {
				if len(keyToLease) > 0 {
					delete(keyToLease, kstr)
				}
			} else {
				keyToLease[ki.key] = f.lease
			}
		}
	}
	s.currentRev = cur
	s.live = 0
	s.idx.ascend("", func(ki *keyIndex) bool {
		if ki.live() {
			s.live++
		}
		return true
	})
	if s.currentRev < s.compactRev {
		s.currentRev = s.compactRev
	}
	if s.currentRev < scheduled {
		s.currentRev = scheduled
	}
	if scheduled <= s.compactRev {
		scheduled = 0
	}
	if err := s.lessor.restore(tx, keyToLease); err != nil {
		return 0, err
	}
	return scheduled, nil
}

// Rev returns the current revision.
func (s *Store) Rev() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.currentRev
}

// CompactRev returns the last compaction revision, -1 if none.
func (s *Store) CompactRev() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.compactRev
}

// SetConsistentIndex records the raft index and term of the last applied
// entry in the meta bucket, as etcd's commit hook does (term only if > 0,
// index never as 0).
// The keys every applied entry writes, as shared slices: converting the
// constants at each write would allocate (the batch keeps the key). They
// are never modified.
var (
	bucketMetaBytes          = []byte(BucketMeta)
	metaConsistentIndexBytes = []byte(MetaConsistentIndex)
	metaTermBytes            = []byte(MetaTerm)
)

func (s *Store) SetConsistentIndex(index, term uint64) error {
	return s.b.Write(func(w *WriteTx) error {
		if index > 0 {
			w.Put(bucketMetaBytes, metaConsistentIndexBytes, beUint64(index))
		}
		if term > 0 {
			w.Put(bucketMetaBytes, metaTermBytes, beUint64(term))
		}
		return nil
	})
}

// ConsistentIndex returns the meta bucket's consistent_index and term (0 if
// absent).
func (s *Store) ConsistentIndex() (index, term uint64, err error) {
	v := s.b.View()
	defer v.Release()
	for _, x := range []struct {
		k string
		p *uint64
	}{{MetaConsistentIndex, &index}, {MetaTerm, &term}} {
		val, ok := v.Get([]byte(BucketMeta), []byte(x.k))
		if !ok {
			continue
		}
		if *x.p, err = DecodeMetaUint64(x.k, val); err != nil {
			return 0, 0, s.corruptErr([]byte(BucketMeta), []byte(x.k), err)
		}
	}
	return index, term, nil
}

// DecodeMetaUint64 decodes the value of meta/consistent_index or meta/term:
// a big-endian uint64. The one rule for a bad length: a value that is not
// 8 bytes is damage, an error, never read as 0.
func DecodeMetaUint64(name string, v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, fmt.Errorf("mvcc: meta/%s has %d bytes, want 8", name, len(v))
	}
	return beToUint64(v), nil
}

// ReadConsistentIndex reads the meta bucket's consistent_index and term
// in tx (0 if absent), refusing values that are not 8 bytes
// (DecodeMetaUint64).
func ReadConsistentIndex(tx *bolt.Tx) (index, term uint64, err error) {
	b := tx.Bucket([]byte(BucketMeta))
	if b == nil {
		return 0, 0, nil
	}
	for _, x := range []struct {
		k string
		p *uint64
	}{{MetaConsistentIndex, &index}, {MetaTerm, &term}} {
		v := b.Get([]byte(x.k))
		if v == nil {
			continue
		}
		if *x.p, err = DecodeMetaUint64(x.k, v); err != nil {
			return 0, 0, err
		}
	}
	return index, term, nil
}

// Commit forces the pending writes to disk.
func (s *Store) Commit() error { return s.b.ForceCommit() }

// Close commits and closes the store.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stopc)
	s.mu.Unlock()
	// A running compaction stops at its next batch (stopc); it resumes at
	// the next Open.
	s.cq.mu.Lock()
	s.cq.closed = true
	s.cq.mu.Unlock()
	s.cq.wg.Wait()
	return s.b.Close()
}

func (w *WriteTx) ensureBucket(name []byte) {
	w.p.ops = append(w.p.ops, op{bucket: string(name), create: true})
}

func beUint64(v uint64) []byte {
	return []byte{byte(v >> 56), byte(v >> 48), byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

func beToUint64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}
