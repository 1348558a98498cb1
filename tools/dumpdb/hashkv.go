package dumpdb

import (
	"fmt"
	"hash/crc32"

	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/tools/cli"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
)

// userKey returns field 1 (key) of a stored mvccpb.KeyValue without
// decoding the rest.
func userKey(v []byte) ([]byte, error) {
	var key []byte
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return nil, fmt.Errorf("mvccpb.KeyValue: %w", protowire.ParseError(n))
		}
		v = v[n:]
		if num == 1 && typ == protowire.BytesType {
			b, m := protowire.ConsumeBytes(v)
			if m < 0 {
				return nil, fmt.Errorf("mvccpb.KeyValue key: %w", protowire.ParseError(m))
			}
			key = b
			v = v[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, v)
		if m < 0 {
			return nil, fmt.Errorf("mvccpb.KeyValue field %d: %w", num, protowire.ParseError(m))
		}
		v = v[m:]
	}
	return key, nil
}

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

type latest struct {
	rev  mvcc.Revision
	tomb bool
}

// HashKV computes etcd's HashKV at rev (0: the current revision) straight
// from the key bucket, in two streaming passes and without etcd's key
// index (FORMATS §4.11): the first finds, for every user key, its newest
// revision at or below rev (the keep set is those that are not
// tombstones); the second feeds CRC-32C with the bucket name and every
// pair with revision ≤ rev, skipping pairs at or below the compact
// revision that are not kept, and a tombstone at the compact revision.
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
			size := fileSize(path)
			bad := func(k, v []byte, err error) error {
				return &cli.ExitError{Code: cli.ExitProblems, Err: fmt.Errorf("%s", Problem{File: path, Offset: PairOffset(db, tx, path, size, "key", k, v), Bucket: "key", Key: k, Detail: err.Error()})}
			}
			keep := map[string]latest{}
			if b != nil {
				c := b.Cursor()
				for k, v := c.First(); k != nil; k, v = c.Next() {
					r, tomb, err := mvcc.ParseRevKey(k)
					if err != nil {
						return bad(k, v, err)
					}
					if r.Main > rev {
						break
					}
					tick(k, v)
					uk, err := userKey(v)
					if err != nil {
						return bad(k, v, err)
					}
					keep[string(uk)] = latest{r, tomb}
				}
			}
			kept := map[mvcc.Revision]bool{}
			for _, l := range keep {
				if !l.tomb {
					kept[l.rev] = true
				}
			}
			h := crc32.Update(0, crc32.MakeTable(crc32.Castagnoli), []byte(mvcc.BucketKey))
			table := crc32.MakeTable(crc32.Castagnoli)
			if b != nil {
				c := b.Cursor()
				for k, v := c.First(); k != nil; k, v = c.Next() {
					r, tomb, _ := mvcc.ParseRevKey(k)
					if r.Main > rev {
						break
					}
					tick(k, v)
					if r.Main <= compact && len(kept) > 0 && !kept[r] {
						continue
					}
					if r.Main == compact && tomb {
						continue
					}
					h = crc32.Update(h, table, k)
					h = crc32.Update(h, table, v)
				}
			}
			res = mvcc.KeyValueHash{Hash: h, CompactRevision: compact, Revision: rev}
			return nil
		})
	})
	return res, err
}
