package mvcc

import (
	"fmt"
	"hash/crc32"

	bolt "go.etcd.io/bbolt"
)

// PairError is a pair of a bucket that cannot be read as its schema says.
type PairError struct {
	Bucket     string
	Key, Value []byte
	Err        error
}

func (e *PairError) Error() string {
	return fmt.Sprintf("bucket %q key %x: %v", e.Bucket, e.Key, e.Err)
}

func (e *PairError) Unwrap() error { return e.Err }

// HashKeyBucket computes etcd's HashKV at rev from the key bucket b alone,
// without the key index (the package doc, "Hashes"), for a store compacted
// at compact: a first pass finds, for every user key, its newest revision at
// or below rev (the keep set is those that are not tombstones); the second
// feeds the hasher every pair, as Store.HashKV does with the index's keep
// set. This is the value a (re)started etcd answers. onPair (optional) is
// called with each pair read, for progress. A pair that is not a revision
// and a KeyValue is a *PairError.
func HashKeyBucket(b *bolt.Bucket, compact, rev int64, onPair func(k, v []byte)) (KeyValueHash, error) {
	type latest struct {
		rev  Revision
		tomb bool
	}
	tick := func(k, v []byte) {
		if onPair != nil {
			onPair(k, v)
		}
	}
	keep := map[string]latest{}
	if b != nil {
		c := b.Cursor()
		var f kvFields
		for k, v := c.First(); k != nil; k, v = c.Next() {
			r, tomb, err := ParseRevKey(k)
			if err != nil {
				return KeyValueHash{}, &PairError{Bucket: BucketKey, Key: k, Value: v, Err: err}
			}
			if r.Main > rev {
				break
			}
			tick(k, v)
			if err := decodeKV(v, &f); err != nil {
				return KeyValueHash{}, &PairError{Bucket: BucketKey, Key: k, Value: v, Err: err}
			}
			keep[string(f.key)] = latest{r, tomb}
		}
	}
	kept := map[Revision]struct{}{}
	for _, l := range keep {
		if !l.tomb {
			kept[l.rev] = struct{}{}
		}
	}
	h := newKVHasher(compact, rev, kept)
	if b != nil {
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			r, _, _ := ParseRevKey(k)
			if r.Main > rev {
				break
			}
			tick(k, v)
			if err := h.write(k, v); err != nil {
				return KeyValueHash{}, &PairError{Bucket: BucketKey, Key: k, Value: v, Err: err}
			}
		}
	}
	return h.sum(), nil
}

// DBHash is etcd's whole-db hash (the package doc, "Hashes"): CRC-32C over
// every bucket name and its pairs, in byte order. With excludeMeta (the Hash
// RPC, etcd-dump-db hash) meta/term, meta/consistent_index and
// meta/storageVersion are left out; without (etcdutl snapshot status)
// nothing is. onPair (optional) sees every pair read; its error stops the
// hash.
func DBHash(tx *bolt.Tx, excludeMeta bool, onPair func(bucket, k, v []byte) error) (uint32, error) {
	h := crc32.New(castagnoli)
	c := tx.Cursor()
	for name, _ := c.First(); name != nil; name, _ = c.Next() {
		b := tx.Bucket(name)
		if b == nil {
			continue
		}
		h.Write(name)
		isMeta := string(name) == BucketMeta
		if err := b.ForEach(func(k, v []byte) error {
			if excludeMeta && isMeta {
				switch string(k) {
				case MetaTerm, MetaConsistentIndex, MetaStorageVersion:
					return nil
				}
			}
			h.Write(k)
			h.Write(v)
			if onPair != nil {
				return onPair(name, k, v)
			}
			return nil
		}); err != nil {
			return 0, err
		}
	}
	return h.Sum32(), nil
}
