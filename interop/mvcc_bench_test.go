package interop

import (
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	etcdmvcc "go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"

	"github.com/etckit/etckit/mvcc"
)

// Side-by-side benchmarks of etckit's mvcc and etcd 3.7.3's storage/mvcc on
// the same db content (see BENCHMARKS-mvcc.md). Only run with -bench.

var benchKeys = flag.Int("mvcc.benchkeys", 1_000_000, "keys in the MVCC benchmark dbs")

const benchSeed = 42

func benchKey(i int) []byte { return fmt.Appendf(nil, "/registry/bench/%08d", i) }

// genBenchDB writes a db with keys user keys, each put versions times, in a
// seeded random key order, exactly as etcd would have stored the puts
// (revision 2 onwards, one put per revision).
func genBenchDB(b *testing.B, path string, keys, versions int) int64 {
	b.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	r := rand.New(rand.NewPCG(benchSeed, 1))
	val := make([]byte, 64)
	rev := int64(1)
	for v := 0; v < versions; v++ {
		perm := r.Perm(keys)
		for start := 0; start < keys; start += 100_000 {
			err := db.Update(func(tx *bolt.Tx) error {
				bk, err := tx.CreateBucketIfNotExists([]byte(mvcc.BucketKey))
				if err != nil {
					return err
				}
				if _, err := tx.CreateBucketIfNotExists([]byte(mvcc.BucketMeta)); err != nil {
					return err
				}
				bk.FillPercent = 0.9
				for _, id := range perm[start:min(start+100_000, keys)] {
					rev++
					for i := range val {
						val[i] = byte('a' + (int(rev)+i)%26)
					}
					kv := mvcc.EncodeKeyValueFields(benchKey(id), int64(id)+2, rev, int64(v+1), val, 0)
					if err := bk.Put(mvcc.RevKey(mvcc.Revision{Main: rev}, false), kv); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	return rev
}

func copyFile(b *testing.B, src, dst string) {
	b.Helper()
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		b.Fatal(err)
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
}

// benchStores are the two implementations behind one interface.
type benchStore interface {
	put(*etcdserverpb.PutRequest) error
	rng(*etcdserverpb.RangeRequest) (int, error)
	txn(*etcdserverpb.TxnRequest) error
	compact(int64) error
	close()
}

type etckitBench struct{ s *mvcc.Store }

func (e etckitBench) put(r *etcdserverpb.PutRequest) error { _, err := e.s.Put(r); return err }
func (e etckitBench) rng(r *etcdserverpb.RangeRequest) (int, error) {
	resp, err := e.s.Range(r)
	if err != nil {
		return 0, err
	}
	return len(resp.Kvs), nil
}
func (e etckitBench) txn(r *etcdserverpb.TxnRequest) error { _, err := e.s.Txn(r); return err }
func (e etckitBench) compact(rev int64) error              { return e.s.Compact(rev) }
func (e etckitBench) close()                               { e.s.Close() }

type etcdBench struct{ e *etcdKV }

func (e etcdBench) put(r *etcdserverpb.PutRequest) error { _, err := e.e.put(r); return err }
func (e etcdBench) rng(r *etcdserverpb.RangeRequest) (int, error) {
	resp, err := e.e.rangeReq(r)
	if err != nil {
		return 0, err
	}
	return len(resp.Kvs), nil
}
func (e etcdBench) txn(r *etcdserverpb.TxnRequest) error { _, err := e.e.txn(r); return err }
func (e etcdBench) compact(rev int64) error              { return e.e.compact(rev) }
func (e etcdBench) close()                               { e.e.close() }

var impls = []string{"etckit", "etcd"}

// openBench opens a copy of src with impl. Both use etcd's defaults
// (100ms / 10,000-write batches, fsync on commit) except that compaction
// does not sleep between batches.
func openBench(b *testing.B, impl, src string) benchStore {
	b.Helper()
	p := filepath.Join(b.TempDir(), "db")
	copyFile(b, src, p)
	if impl == "etcd" {
		lg := zap.NewNop()
		be := backend.NewDefaultBackend(lg, p)
		le := lease.NewLessor(lg, be, v36cluster{}, lease.LessorConfig{MinLeaseTTL: testMinLeaseTTL})
		s := etcdmvcc.NewStore(lg, be, le, etcdmvcc.StoreConfig{CompactionSleepInterval: 1})
		return etcdBench{&etcdKV{lg: lg, be: be, le: le, s: s}}
	}
	s, err := mvcc.Open(p, mvcc.Options{CompactionSleepInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	return etckitBench{s}
}

func sharedDB(b *testing.B, versions int) (string, int64) {
	b.Helper()
	p := filepath.Join(b.TempDir(), "src.db")
	rev := genBenchDB(b, p, *benchKeys, versions)
	return p, rev
}

func BenchmarkMVCCPut(b *testing.B) {
	src, _ := sharedDB(b, 1)
	for _, impl := range impls {
		b.Run("keys=1M/impl="+impl, func(b *testing.B) {
			s := openBench(b, impl, src)
			defer s.close()
			r := rand.New(rand.NewPCG(benchSeed, 2))
			val := make([]byte, 64)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := s.put(&etcdserverpb.PutRequest{Key: benchKey(r.IntN(*benchKeys)), Value: val}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMVCCRange(b *testing.B) {
	src, _ := sharedDB(b, 1)
	// single: one key. range100: 100 consecutive keys. limit100: the first
	// 100 keys from a random key to the end of the keyspace; etcd's Range
	// still counts every key of the range (Count), so this walks the index.
	for _, shape := range []string{"single", "range100", "limit100"} {
		for _, impl := range impls {
			b.Run("keys=1M/"+shape+"/impl="+impl, func(b *testing.B) {
				s := openBench(b, impl, src)
				defer s.close()
				r := rand.New(rand.NewPCG(benchSeed, 3))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					i := r.IntN(*benchKeys - 100)
					req := &etcdserverpb.RangeRequest{Key: benchKey(i)}
					switch shape {
					case "range100":
						req.RangeEnd = benchKey(i + 100)
					case "limit100":
						req.RangeEnd, req.Limit = []byte("/registry/bench0"), 100
					}
					n, err := s.rng(req)
					if err != nil || n == 0 {
						b.Fatal(n, err)
					}
				}
			})
		}
	}
}

func BenchmarkMVCCTxn(b *testing.B) {
	src, _ := sharedDB(b, 1)
	for _, impl := range impls {
		b.Run("keys=1M/impl="+impl, func(b *testing.B) {
			s := openBench(b, impl, src)
			defer s.close()
			r := rand.New(rand.NewPCG(benchSeed, 4))
			val := make([]byte, 64)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				k := benchKey(r.IntN(*benchKeys))
				req := &etcdserverpb.TxnRequest{
					Compare: []*etcdserverpb.Compare{{Key: k, Target: etcdserverpb.Compare_VERSION,
						Result: etcdserverpb.Compare_GREATER, TargetUnion: &etcdserverpb.Compare_Version{Version: 0}}},
					Success: []*etcdserverpb.RequestOp{{Request: &etcdserverpb.RequestOp_RequestPut{RequestPut: &etcdserverpb.PutRequest{Key: k, Value: val}}}},
					Failure: []*etcdserverpb.RequestOp{{Request: &etcdserverpb.RequestOp_RequestRange{RequestRange: &etcdserverpb.RangeRequest{Key: k}}}},
				}
				if err := s.txn(req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMVCCCompact compacts 1M keys x 2 versions at the last revision,
// which deletes 1M revisions from the file; one compaction per iteration.
func BenchmarkMVCCCompact(b *testing.B) {
	src, rev := sharedDB(b, 2)
	for _, impl := range impls {
		b.Run("keys=1M/versions=2/impl="+impl, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				s := openBench(b, impl, src)
				b.StartTimer()
				if err := s.compact(rev); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				s.close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkMVCCOpen rebuilds the key index of 1M keys at open, and reports
// the heap an open store holds per key (mostly the key index). The heap is
// measured as the growth caused by opening one more store while the previous
// one is still open: etcd keeps its last store reachable from package-level
// metric hooks even after Close, so "after close" cannot be the baseline.
func BenchmarkMVCCOpen(b *testing.B) {
	src, _ := sharedDB(b, 1)
	for _, impl := range impls {
		b.Run("keys=1M/impl="+impl, func(b *testing.B) {
			open := func() benchStore {
				p := filepath.Join(b.TempDir(), "db")
				copyFile(b, src, p)
				b.StartTimer()
				defer b.StopTimer()
				if impl == "etcd" {
					lg := zap.NewNop()
					be := backend.NewDefaultBackend(lg, p)
					le := lease.NewLessor(lg, be, v36cluster{}, lease.LessorConfig{MinLeaseTTL: testMinLeaseTTL})
					st := etcdmvcc.NewStore(lg, be, le, etcdmvcc.StoreConfig{})
					return etcdBench{&etcdKV{lg: lg, be: be, le: le, s: st}}
				}
				st, err := mvcc.Open(p, mvcc.Options{})
				if err != nil {
					b.Fatal(err)
				}
				return etckitBench{st}
			}
			b.StopTimer()
			prev := open()
			var perKey float64
			b.ReportAllocs()
			b.ResetTimer()
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				s := open()
				runtime.GC()
				runtime.ReadMemStats(&after)
				perKey = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(*benchKeys)
				prev.close()
				prev = s
			}
			prev.close()
			b.ReportMetric(perKey, "heap-B/key")
		})
	}
}
