package mvcc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/corrupt"
	bolt "go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

func openTestStore(t testing.TB, opts Options) (*Store, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "db")
	s, err := Open(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, p
}

func mustPut(t testing.TB, s *Store, k, v string) int64 {
	t.Helper()
	resp, err := s.Put(&pb.PutRequest{Key: []byte(k), Value: []byte(v)})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func TestRevKey(t *testing.T) {
	k := RevKey(Revision{Main: 0x0102030405060708, Sub: 9}, false)
	want := []byte{1, 2, 3, 4, 5, 6, 7, 8, '_', 0, 0, 0, 0, 0, 0, 0, 9}
	if !bytes.Equal(k, want) {
		t.Fatalf("%x", k)
	}
	r, tomb, err := ParseRevKey(append(k, 't'))
	if err != nil || !tomb || r != (Revision{0x0102030405060708, 9}) {
		t.Fatal(r, tomb, err)
	}
	for _, bad := range [][]byte{k[:16], append(bytes.Clone(k), 'x'), append(append([]byte{}, k[:8]...), append([]byte{'-'}, k[9:]...)...),
		RevKey(Revision{Main: -1}, false)} {
		if _, _, err := ParseRevKey(bad); err == nil {
			t.Errorf("%x accepted", bad)
		}
	}
}

func FuzzMVCCKey(f *testing.F) {
	f.Add(RevKey(Revision{Main: 2}, false))
	f.Add(RevKey(Revision{Main: 81, Sub: 3}, true))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, tomb, err := ParseRevKey(b)
		if err != nil {
			return
		}
		if got := RevKey(r, tomb); !bytes.Equal(got, b) {
			t.Fatalf("round trip %x -> %x", b, got)
		}
	})
}

func FuzzDecodeKeyValue(f *testing.F) {
	f.Add(EncodeKeyValue(&mvccpb.KeyValue{Key: []byte("a"), Value: []byte("b"), CreateRevision: 2, ModRevision: 3, Version: 2, Lease: 7}))
	f.Add([]byte{0x0a, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		kv, err := DecodeKeyValue(b)
		ref := &mvccpb.KeyValue{}
		rerr := proto.Unmarshal(b, ref)
		if (err == nil) != (rerr == nil) {
			t.Fatalf("ours %v, protobuf-go %v", err, rerr)
		}
		// protobuf-go keeps unknown fields; etcd never reads them
		ref.ProtoReflect().SetUnknown(nil)
		if err == nil && !proto.Equal(kv, ref) {
			t.Fatalf("ours %v, protobuf-go %v", kv, ref)
		}
	})
}

// The hand-written codec writes what protobuf-go writes.
func TestKeyValueEncoding(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		kv := &mvccpb.KeyValue{CreateRevision: r.Int64N(1 << uint(r.IntN(63))), ModRevision: r.Int64N(1 << 40),
			Version: r.Int64N(100), Lease: r.Int64() - r.Int64()}
		if i%3 > 0 {
			kv.Key = fmt.Appendf(nil, "key-%d", i)
		}
		if i%4 > 0 {
			kv.Value = bytes.Repeat([]byte{byte(i)}, r.IntN(300))
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(kv)
		if err != nil {
			t.Fatal(err)
		}
		if got := EncodeKeyValue(kv); !bytes.Equal(got, want) {
			t.Fatalf("%v: %x, protobuf-go %x", kv, got, want)
		}
		back, err := DecodeKeyValue(want)
		if err != nil || !proto.Equal(back, kv) {
			t.Fatalf("decode %v: %v %v", kv, back, err)
		}
	}
}

func TestFirstRevisionIsTwo(t *testing.T) {
	s, _ := openTestStore(t, Options{})
	if s.Rev() != 1 {
		t.Fatalf("fresh rev %d", s.Rev())
	}
	if rev := mustPut(t, s, "a", "1"); rev != 2 {
		t.Fatalf("first write at %d", rev)
	}
	resp, err := s.Range(&pb.RangeRequest{Key: []byte("a")})
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != 2 || resp.Kvs[0].Version != 1 {
		t.Fatal(resp, err)
	}
}

func TestRequestErrors(t *testing.T) {
	s, _ := openTestStore(t, Options{MaxTxnOps: 4})
	mustPut(t, s, "a", "1")
	put := func(k string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k)}}}
	}
	cases := []struct {
		name string
		run  func() error
		want error
	}{
		{"range empty key", func() error { _, err := s.Range(&pb.RangeRequest{}); return err }, ErrEmptyKey},
		{"put empty key", func() error { _, err := s.Put(&pb.PutRequest{}); return err }, ErrEmptyKey},
		{"delete empty key", func() error { _, err := s.DeleteRange(&pb.DeleteRangeRequest{}); return err }, ErrEmptyKey},
		{"future", func() error { _, err := s.Range(&pb.RangeRequest{Key: []byte("a"), Revision: 3}); return err }, ErrFutureRev},
		{"lease", func() error { _, err := s.Put(&pb.PutRequest{Key: []byte("a"), Lease: 5}); return err }, ErrLeaseNotFound},
		{"ignore value on missing key", func() error {
			_, err := s.Put(&pb.PutRequest{Key: []byte("zz"), IgnoreValue: true})
			return err
		}, ErrKeyNotFound},
		{"too many ops", func() error {
			_, err := s.Txn(&pb.TxnRequest{Success: []*pb.RequestOp{put("1"), put("2"), put("3"), put("4"), put("5")}})
			return err
		}, ErrTooManyOps},
		{"duplicate key", func() error {
			_, err := s.Txn(&pb.TxnRequest{Success: []*pb.RequestOp{put("1"), put("1")}})
			return err
		}, ErrDuplicateKey},
		{"put under delete", func() error {
			_, err := s.Txn(&pb.TxnRequest{Success: []*pb.RequestOp{put("b/1"), {Request: &pb.RequestOp_RequestDeleteRange{
				RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("b/"), RangeEnd: []byte("b0")}}}}})
			return err
		}, ErrDuplicateKey},
		{"compact future", func() error { return s.Compact(10) }, ErrFutureRev},
	}
	for _, c := range cases {
		if err := c.run(); err != c.want {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if err := s.Compact(2); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(2); err != ErrCompacted {
		t.Fatalf("compact again: %v", err)
	}
	if _, err := s.Range(&pb.RangeRequest{Key: []byte("a"), Revision: 1}); err != ErrCompacted {
		t.Fatalf("range below compaction: %v", err)
	}
	if s.Rev() != 2 {
		t.Fatalf("failed requests moved the revision to %d", s.Rev())
	}
}

// Reads see writes that are not committed yet, without waiting for one.
func TestReadsSeePendingWrites(t *testing.T) {
	s, _ := openTestStore(t, Options{Backend: BackendOptions{BatchInterval: time.Hour, BatchLimit: 1 << 30}})
	commits := s.Backend().Commits()
	for i := range 50 {
		mustPut(t, s, fmt.Sprintf("k%02d", i), fmt.Sprint(i))
	}
	resp, err := s.Range(&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	if err != nil || len(resp.Kvs) != 50 || string(resp.Kvs[49].Value) != "49" {
		t.Fatal(resp, err)
	}
	if s.Backend().Commits() != commits {
		t.Fatalf("a read committed")
	}
	// a commit in the middle changes nothing for readers
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	resp2, err := s.Range(&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	if err != nil || !proto.Equal(resp, resp2) {
		t.Fatal(resp2, err)
	}
}

// BatchLimit pending writes trigger a commit.
func TestBatchLimitCommits(t *testing.T) {
	s, p := openTestStore(t, Options{Backend: BackendOptions{BatchInterval: time.Hour, BatchLimit: 10}})
	for i := range 100 {
		mustPut(t, s, fmt.Sprintf("k%02d", i), "v")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(p, Options{Backend: BackendOptions{ReadOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Rev() != 101 {
		t.Fatalf("rev %d after reopen", s2.Rev())
	}
}

func TestReadOnlyReportsLockHolder(t *testing.T) {
	_, p := openTestStore(t, Options{})
	_, err := Open(p, Options{Backend: BackendOptions{ReadOnly: true, Timeout: 50 * time.Millisecond}})
	var le *LockedError
	if !errors.As(err, &le) {
		t.Fatalf("%v", err)
	}
	if !errors.Is(err, bolt.ErrTimeout) {
		t.Fatalf("not a timeout: %v", err)
	}
	if _, statErr := os.Stat("/proc/locks"); statErr == nil {
		if len(le.Holders) == 0 || !strings.Contains(le.Error(), fmt.Sprintf("pid %d ", os.Getpid())) {
			t.Fatalf("holder not named: %v", err)
		}
	}
	t.Log(err)
}

func TestReadOnlyRefusesWrites(t *testing.T) {
	s := openSmall(t, true)
	if _, err := s.Put(&pb.PutRequest{Key: []byte("a")}); err != ErrReadOnly {
		t.Fatal(err)
	}
	if err := s.Compact(90); err != ErrReadOnly {
		t.Fatal(err)
	}
	if _, err := s.Lessor().Grant(1, 10); err != ErrReadOnly {
		t.Fatal(err)
	}
}

// A compaction interrupted after scheduledCompactRev was committed is
// finished by the next Open.
func TestInterruptedCompactionResumes(t *testing.T) {
	s, p := openTestStore(t, Options{})
	for i := range 20 {
		mustPut(t, s, "a", fmt.Sprint(i))
		mustPut(t, s, fmt.Sprintf("b%d", i), "x")
	}
	if _, err := s.DeleteRange(&pb.DeleteRangeRequest{Key: []byte("b0")}); err != nil {
		t.Fatal(err)
	}
	want, _, err := s.HashKV(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// crash right after scheduling a compaction at 30
	db, err := bolt.Open(p, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(BucketMeta)).Put([]byte(MetaScheduledCompactRev), RevKey(Revision{Main: 30}, false))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s2, err := Open(p, Options{CompactionBatchLimit: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.CompactRev() != 30 {
		t.Fatalf("compact rev %d", s2.CompactRev())
	}
	// The physical part resumes in the background.
	if err := s2.WaitCompacted(context.Background(), 30); err != nil {
		t.Fatal(err)
	}
	v := s2.Backend().View()
	fc, ok := v.Get([]byte(BucketMeta), []byte(MetaFinishedCompactRev))
	v.Release()
	if !ok || !bytes.Equal(fc, RevKey(Revision{Main: 30}, false)) {
		t.Fatalf("finishedCompactRev %x", fc)
	}
	// revisions of "a" below 30 are gone from the file
	n := 0
	snap := s2.Backend().Snapshot()
	_ = snap.Tx().Bucket([]byte(BucketKey)).ForEach(func(k, _ []byte) error { n++; return nil })
	snap.Release()
	if n >= 41 {
		t.Fatalf("%d revisions left", n)
	}
	got, _, err := s2.HashKV(0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash == want.Hash || got.CompactRevision != 30 {
		t.Logf("hash before %+v after %+v", want, got)
	}
	resp, err := s2.Range(&pb.RangeRequest{Key: []byte("a"), Revision: 30})
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal(resp, err)
	}
}

func TestCorruptValueIsAnError(t *testing.T) {
	s, p := openTestStore(t, Options{})
	mustPut(t, s, "a", "1")
	s.Close()
	db, err := bolt.Open(p, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := RevKey(Revision{Main: 3}, false)
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(BucketKey)).Put(bad, []byte{0x0a, 0x7f}) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(p, Options{})
	ce := corrupt.As(err)
	if ce == nil || ce.Path != p || !strings.Contains(err.Error(), `bucket "key" key `+fmt.Sprintf("%x", bad)) {
		t.Fatalf("%v", err)
	}

	db, _ = bolt.Open(p, 0o600, nil)
	_ = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(BucketKey))
		_ = b.Delete(bad)
		return b.Put([]byte("short"), nil)
	})
	db.Close()
	if _, err := Open(p, Options{}); corrupt.As(err) == nil || !strings.Contains(err.Error(), "length 5") {
		t.Fatalf("%v", err)
	}
}

func TestLeasePersistence(t *testing.T) {
	now := time.Unix(1000, 0)
	s, p := openTestStore(t, Options{Now: func() time.Time { return now }})
	le := s.Lessor()
	if _, err := le.Grant(7, 60); err != nil {
		t.Fatal(err)
	}
	if _, err := le.Grant(7, 60); err != ErrLeaseExists {
		t.Fatal(err)
	}
	if _, err := le.Grant(8, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(&pb.PutRequest{Key: []byte("x"), Lease: 7}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(&pb.PutRequest{Key: []byte("y"), Lease: 8}); err != nil {
		t.Fatal(err)
	}
	if err := le.Checkpoint(7, 42, true); err != nil {
		t.Fatal(err)
	}
	le.Promote(0)
	st, _ := le.TimeToLive(7, true)
	if st.TTL != 42 || st.GrantedTTL != 60 || len(st.Keys) != 1 {
		t.Fatalf("%+v", st)
	}
	now = now.Add(10 * time.Second)
	if ids := le.Expired(); len(ids) != 1 || ids[0] != 8 {
		t.Fatalf("expired %v", ids)
	}
	if err := le.Revoke(8); err != nil {
		t.Fatal(err)
	}
	if resp, _ := s.Range(&pb.RangeRequest{Key: []byte("y")}); len(resp.Kvs) != 0 {
		t.Fatal("revoke left the key")
	}
	s.Close()
	db, err := bolt.Open(p, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(BucketLease))
		if got := b.Get(leaseKey(7)); !bytes.Equal(got, []byte{0x08, 7, 0x10, 60, 0x18, 42}) {
			t.Errorf("lease 7 stored as %x", got)
		}
		if b.Get(leaseKey(8)) != nil {
			t.Error("revoked lease still stored")
		}
		return nil
	})
	db.Close()
	s2, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	st, err = s2.Lessor().TimeToLive(7, true)
	if err != nil || len(st.Keys) != 1 || string(st.Keys[0]) != "x" {
		t.Fatalf("%+v %v", st, err)
	}
	l, _ := s2.Lessor().Lookup(7)
	if l.RemainingTTL != 42 || l.TTL != 60 {
		t.Fatalf("%+v", l)
	}
}

// The B-tree against a sorted slice, through inserts and rebuilds.
func TestIndexTree(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var tr indexTree
	ref := map[string]bool{}
	for round := range 5 {
		for range 5000 {
			k := fmt.Sprintf("%06d", r.IntN(20000))
			if tr.get(k) == nil {
				tr.insert(keyIndex{key: k, h: []irev{{main: 2}, {main: 2}}})
				ref[k] = true
			}
		}
		if round%2 == 1 {
			// empty a third of the keys, then rebuild
			tr.ascend("", func(ki *keyIndex) bool {
				if r.IntN(3) == 0 {
					ki.h = nil
					delete(ref, ki.key)
				}
				return true
			})
			tr.rebuild()
		}
		var want []string
		for k := range ref {
			want = append(want, k)
		}
		sort.Strings(want)
		var got []string
		tr.ascend("", func(ki *keyIndex) bool { got = append(got, ki.key); return true })
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("round %d: %d keys, want %d", round, len(got), len(want))
		}
		from := fmt.Sprintf("%06d", r.IntN(20000))
		i := sort.SearchStrings(want, from)
		n := 0
		tr.ascend(from, func(ki *keyIndex) bool {
			if ki.key != want[i+n] {
				t.Fatalf("ascend from %s: %s, want %s", from, ki.key, want[i+n])
			}
			n++
			return n < 100
		})
		for _, k := range want {
			if tr.get(k) == nil {
				t.Fatalf("get %s", k)
			}
		}
	}
}

// Readers and writers run concurrently with frequent commits (run with
// -race): every read sees a consistent prefix of the writes.
func TestConcurrentReadWriteCommit(t *testing.T) {
	s, _ := openTestStore(t, Options{Backend: BackendOptions{BatchInterval: time.Millisecond, BatchLimit: 7}})
	const writers, perWriter = 3, 300
	done := make(chan error, writers+2)
	for w := range writers {
		go func() {
			for i := range perWriter {
				if _, err := s.Put(&pb.PutRequest{Key: fmt.Appendf(nil, "w%d", w), Value: fmt.Append(nil, i)}); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 2 {
		go func() {
			last := int64(0)
			for range 500 {
				resp, err := s.Range(&pb.RangeRequest{Key: []byte("w"), RangeEnd: []byte("x")})
				if err != nil {
					done <- err
					return
				}
				if resp.Header.Revision < last {
					done <- fmt.Errorf("revision went back from %d to %d", last, resp.Header.Revision)
					return
				}
				last = resp.Header.Revision
				var sum int64
				for _, kv := range resp.Kvs {
					sum += kv.Version
				}
				if sum != resp.Header.Revision-1 {
					done <- fmt.Errorf("at revision %d the versions add up to %d", resp.Header.Revision, sum)
					return
				}
			}
			done <- nil
		}()
	}
	for range writers + 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if s.Rev() != 1+writers*perWriter {
		t.Fatalf("rev %d", s.Rev())
	}
}

// etcd panics applying this transaction (the from-key delete escapes its
// duplicate-key check, then the put finds no previous value); we reject it
// before writing anything.
func TestTxnIgnoreValueAfterFromKeyDelete(t *testing.T) {
	s, _ := openTestStore(t, Options{})
	mustPut(t, s, "k", "v")
	r := &pb.TxnRequest{Success: []*pb.RequestOp{
		{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte{0}}}},
		{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("k"), IgnoreValue: true}}},
	}}
	if err := ValidateTxn(r, 128); err != nil {
		t.Fatalf("etcd's checks accept it, ours must too: %v", err)
	}
	if _, err := s.Txn(r); err != ErrKeyNotFound {
		t.Fatalf("%v", err)
	}
	if s.Rev() != 2 {
		t.Fatalf("rev %d", s.Rev())
	}
}

// With a small initial mmap, commits must grow the mapping many times while
// readers, snapshots (HashKV) and a compaction are active; bbolt's remap
// waits for every read transaction, so this hangs if any of them can wait on
// a commit.
func TestRemapWithConcurrentReaders(t *testing.T) {
	s, _ := openTestStore(t, Options{Backend: BackendOptions{InitialMmapSize: -1, BatchInterval: time.Millisecond, BatchLimit: 50},
		CompactionBatchLimit: 64, CompactionSleepInterval: -1})
	stop := make(chan struct{})
	errc := make(chan error, 3)
	go func() { // readers
		for {
			select {
			case <-stop:
				errc <- nil
				return
			default:
			}
			if _, err := s.Range(&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l"), Limit: 10}); err != nil {
				errc <- err
				return
			}
		}
	}()
	go func() { // long snapshots
		for {
			select {
			case <-stop:
				errc <- nil
				return
			default:
			}
			if _, _, err := s.HashKV(0); err != nil {
				errc <- err
				return
			}
		}
	}()
	val := bytes.Repeat([]byte("v"), 2000)
	for i := range 4000 {
		if _, err := s.Put(&pb.PutRequest{Key: fmt.Appendf(nil, "k%04d", i%500), Value: val}); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 {
			if err := s.Compact(s.Rev() - 100); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	st := s.Backend().DB().Stats()
	t.Logf("rev %d, %d commits, %d free pages", s.Rev(), s.Backend().Commits(), st.FreePageN)
}

// A from-key delete and a put of the same key in one Txn give the key a
// tombstone and a new generation at the same main revision. etcd's
// compaction at that revision deletes the new generation's revision from the
// file while its index keeps it (etcd then dies on "range failed to find
// revision pair"); ours keeps it and still hashes as etcd does.
func TestCompactSameMainTombstoneAndPut(t *testing.T) {
	s, _ := openTestStore(t, Options{CompactionSleepInterval: -1})
	mustPut(t, s, "k", "old") // 2
	r := &pb.TxnRequest{Success: []*pb.RequestOp{
		{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte{0}}}},
		{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("k"), Value: []byte("new")}}},
	}}
	if err := ValidateTxn(r, 128); err != nil {
		t.Fatalf("etcd's checks accept it: %v", err)
	}
	if _, err := s.Txn(r); err != nil { // 3: tombstone (3,0), put (3,1)
		t.Fatal(err)
	}
	if err := s.Compact(3); err != nil {
		t.Fatal(err)
	}
	for _, rev := range []int64{0, 3} {
		resp, err := s.Range(&pb.RangeRequest{Key: []byte("k"), Revision: rev})
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "new" {
			t.Fatalf("rev %d: %v %v", rev, resp, err)
		}
	}
	if _, _, err := s.HashKV(0); err != nil {
		t.Fatal(err)
	}
}

// Requests built in process with nil parts are rejected, not dereferenced.
func TestNilRequestParts(t *testing.T) {
	s, _ := openTestStore(t, Options{})
	if _, err := s.Range(nil); err != ErrEmptyKey {
		t.Fatal(err)
	}
	if _, err := s.Put(nil); err != ErrEmptyKey {
		t.Fatal(err)
	}
	if _, err := s.DeleteRange(nil); err != ErrEmptyKey {
		t.Fatal(err)
	}
	for _, r := range []*pb.TxnRequest{
		nil,
		{Compare: []*pb.Compare{nil}},
		{Success: []*pb.RequestOp{nil}},
		{Success: []*pb.RequestOp{{}}},
		{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestTxn{}}}},
		{Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{}}}},
	} {
		if _, err := s.Txn(r); err == nil {
			t.Fatalf("%v accepted", r)
		}
	}
}

// TestCompactionRunsInBackground: ScheduleCompact returns once the index is
// compacted and the schedule committed; writes go on while the physical
// compaction pauses between batches (here for an hour); Close interrupts
// it, and the next Open finishes it.
func TestCompactionRunsInBackground(t *testing.T) {
	p := filepath.Join(t.TempDir(), "db")
	s, err := Open(p, Options{CompactionBatchLimit: 2, CompactionSleepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		mustPut(t, s, "a", fmt.Sprint(i))
	}
	c, err := s.ScheduleCompact(15)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Range(&pb.RangeRequest{Key: []byte("a"), Revision: 10}); err != ErrCompacted {
		t.Fatalf("range below the compaction: %v, want ErrCompacted", err)
	}
	if rev := mustPut(t, s, "a", "after"); rev != 22 {
		t.Fatalf("put during the compaction: revision %d", rev)
	}
	select {
	case <-c.Done():
		t.Fatalf("physical compaction finished in spite of its pauses: %v", c.Err())
	default:
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if c.Err() != ErrClosed {
		t.Fatalf("interrupted compaction: %v, want ErrClosed", c.Err())
	}

	s, err = Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.WaitCompacted(context.Background(), 15); err != nil {
		t.Fatal(err)
	}
	n := 0
	snap := s.Backend().Snapshot()
	_ = snap.Tx().Bucket([]byte(BucketKey)).ForEach(func(k, _ []byte) error { n++; return nil })
	snap.Release()
	if n != 8 { // puts at 2..21 and 22: 15 is kept, 2..14 are gone
		t.Fatalf("%d revisions in the key bucket after the resumed compaction, want 8", n)
	}
	if err := s.BackgroundErr(); err != nil {
		t.Fatal(err)
	}
}
