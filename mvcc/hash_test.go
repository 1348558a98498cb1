package mvcc

import (
	"errors"
	"fmt"
	"testing"

	bolt "go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestHashKeyBucketIsHashKV: the hash read from the key bucket alone (the
// offline tools') equals the store's HashKV at every revision, across a
// compaction and deletes.
func TestHashKeyBucketIsHashKV(t *testing.T) {
	s, _ := openTestStore(t, Options{})
	for i := 0; i < 30; i++ {
		mustPut(t, s, fmt.Sprintf("k%d", i%7), fmt.Sprintf("v%d", i))
		if i%5 == 4 {
			if _, err := s.DeleteRange(&pb.DeleteRangeRequest{Key: []byte(fmt.Sprintf("k%d", i%7))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Compact(15); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	compact, current := s.CompactRev(), s.Rev()
	// (At the compact revision itself the store answers the hash it
	// recorded before compacting.)
	for rev := compact + 1; rev <= current; rev++ {
		want, _, err := s.HashKV(rev)
		if err != nil {
			t.Fatal(err)
		}
		var got KeyValueHash
		err = s.Backend().DB().View(func(tx *bolt.Tx) error {
			var err error
			got, err = HashKeyBucket(tx.Bucket([]byte(BucketKey)), compact, rev, nil)
			return err
		})
		if err != nil || got != want {
			t.Errorf("rev %d: key bucket %+v (%v), HashKV %+v", rev, got, err, want)
		}
	}
}

// TestHashKeyBucketBadPair: a pair that is no revision is a *PairError.
func TestHashKeyBucketBadPair(t *testing.T) {
	s, _ := openTestStore(t, Options{})
	mustPut(t, s, "a", "b")
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	err := s.Backend().DB().Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte(BucketKey)).Put([]byte("bad"), []byte("x")); err != nil {
			return err
		}
		_, err := HashKeyBucket(tx.Bucket([]byte(BucketKey)), 0, 10, nil)
		var pe *PairError
		if !errors.As(err, &pe) || string(pe.Key) != "bad" {
			t.Errorf("err %v", err)
		}
		return errors.New("roll back")
	})
	if err == nil {
		t.Fatal("no rollback")
	}
}

func TestDecodeMetaUint64(t *testing.T) {
	if n, err := DecodeMetaUint64(MetaTerm, []byte{0, 0, 0, 0, 0, 0, 1, 2}); n != 258 || err != nil {
		t.Errorf("%d %v", n, err)
	}
	for _, v := range [][]byte{{}, {1, 2}, make([]byte, 9)} {
		if _, err := DecodeMetaUint64(MetaConsistentIndex, v); err == nil {
			t.Errorf("%d bytes accepted", len(v))
		}
	}
}
