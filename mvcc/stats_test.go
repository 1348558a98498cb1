package mvcc

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestStatsKeys: Stats counts the keys that exist, as etcd's keys_total:
// a put of a new or deleted key adds one, a delete removes one, an
// overwrite and a compaction change nothing, and a reopened store counts
// the same.
func TestStatsKeys(t *testing.T) {
	s, path := openTestStore(t, Options{})
	keys := func(s *Store) int64 { return s.Stats().Keys }
	mustPut(t, s, "a", "1")
	mustPut(t, s, "b", "1")
	mustPut(t, s, "a", "2")
	if n := keys(s); n != 2 {
		t.Fatalf("after 3 puts of 2 keys: %d", n)
	}
	if _, err := s.DeleteRange(&pb.DeleteRangeRequest{Key: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteRange(&pb.DeleteRangeRequest{Key: []byte("a")}); err != nil { // nothing to delete
		t.Fatal(err)
	}
	if n := keys(s); n != 1 {
		t.Fatalf("after a delete: %d", n)
	}
	rev := mustPut(t, s, "a", "3")
	if _, err := s.Txn(&pb.TxnRequest{Success: []*pb.RequestOp{
		{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("c"), Value: []byte("1")}}},
		{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("b")}}},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(rev); err != nil {
		t.Fatal(err)
	}
	if n := keys(s); n != 2 {
		t.Fatalf("after put a, txn put c delete b, compaction: %d", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n := keys(r); n != 2 {
		t.Fatalf("reopened: %d", n)
	}
}
