package dumpdb

import (
	"errors"
	"fmt"

	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/tools/cli"
	bolt "go.etcd.io/bbolt"
)

// HashKVError is a HashKV request etcd refuses (compacted or future
// revision).
type HashKVError struct {
	Rev, CompactRev, CurrentRev int64
	Err                         error
}

func (e *HashKVError) Error() string {
	return fmt.Sprintf("--rev %d: %v (compacted at %d, current revision %d)", e.Rev, e.Err, e.CompactRev, e.CurrentRev)
}

func (e *HashKVError) Unwrap() error { return e.Err }

// HashKV computes etcd's HashKV at rev (0: the current revision) straight
// from the key bucket, without etcd's key index (mvcc.HashKeyBucket).
// This is the value a (re)started etcd answers; a server that compacted
// at rev itself answers the hash it recorded then, which is the same
// unless the compaction was interrupted.
func HashKV(db *bolt.DB, path string, rev int64, progress ...func(done int64)) (mvcc.KeyValueHash, error) {
	var res mvcc.KeyValueHash
	var done int64
	tick := func(k, v []byte) {
		done += int64(len(k) + len(v))
		if len(progress) > 0 {
			progress[0](done)
		}
	}
	err := safe(func() error {
		return db.View(func(tx *bolt.Tx) error {
			compact := metaRev(tx, []byte(mvcc.MetaFinishedCompactRev))
			current := max(int64(1), compact, metaRev(tx, []byte(mvcc.MetaScheduledCompactRev)))
			b := tx.Bucket([]byte(mvcc.BucketKey))
			if b != nil {
				c := b.Cursor()
				for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
					if r, _, err := mvcc.ParseRevKey(k); err == nil {
						current = max(current, r.Main)
						break
					}
				}
			}
			switch {
			case rev > 0 && rev < compact:
				return &HashKVError{Rev: rev, CompactRev: compact, CurrentRev: current, Err: mvcc.ErrCompacted}
			case rev > current:
				return &HashKVError{Rev: rev, CompactRev: compact, CurrentRev: current, Err: mvcc.ErrFutureRev}
			case rev == 0:
				rev = current
			}
			var err error
			res, err = mvcc.HashKeyBucket(b, compact, rev, tick)
			var pe *mvcc.PairError
			if errors.As(err, &pe) {
				p := Problem{File: path, Offset: PairOffset(db, tx, path, fileSize(path), "key", pe.Key, pe.Value), Bucket: "key", Key: pe.Key, Detail: pe.Err.Error()}
				return &cli.ExitError{Code: cli.ExitProblems, Err: fmt.Errorf("%s", p)}
			}
			return err
		})
	})
	return res, err
}
