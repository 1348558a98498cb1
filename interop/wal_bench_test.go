package interop

import (
	"fmt"
	"path/filepath"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"

	etcdwal "go.etcd.io/etcd/server/v3/storage/wal"

	"github.com/etckit/etckit/wal"
)

// Benchmarks of etckit's wal next to etcd's, in the same process and the
// same temporary directory, named for benchstat (impl=etckit / impl=etcd).
//
//	cd interop && go test -run '^$' -bench 'BenchmarkWAL' -benchtime 2s -count 6 . | tee bench.txt
//	benchstat -col /impl bench.txt

type benchWAL interface {
	Save(st *raftpb.HardState, ents []*raftpb.Entry) error
	Close() error
}

var benchImpls = []struct {
	name   string
	create func(b *testing.B, dir string) benchWAL
}{
	{"etckit", func(b *testing.B, dir string) benchWAL {
		w, err := wal.Create(dir, []byte("bench"), wal.Options{})
		if err != nil {
			b.Fatal(err)
		}
		return w
	}},
	// etckit without zeroing ahead of the writer (wal/zero.go): what the
	// zeroing saves, on filesystems with unwritten extents.
	{"etckit-nozero", func(b *testing.B, dir string) benchWAL {
		w, err := wal.Create(dir, []byte("bench"), wal.Options{NoZeroAhead: true})
		if err != nil {
			b.Fatal(err)
		}
		return w
	}},
	{"etcd", func(b *testing.B, dir string) benchWAL {
		w, err := etcdwal.Create(zap.NewNop(), dir, []byte("bench"))
		if err != nil {
			b.Fatal(err)
		}
		return w
	}},
}

func BenchmarkWALSave(b *testing.B) {
	for _, size := range []int{100, 1024} {
		for _, batch := range []int{1, 10, 100, 1000} {
			for _, impl := range benchImpls {
				name := fmt.Sprintf("entry=%dB/batch=%d/impl=%s", size, batch, impl.name)
				b.Run(name, func(b *testing.B) {
					dir := filepath.Join(b.TempDir(), "wal")
					w := impl.create(b, dir)
					defer w.Close()
					data := make([]byte, size)
					for i := range data {
						data[i] = byte(i)
					}
					typ := raftpb.EntryNormal
					term := uint64(1)
					ents := make([]*raftpb.Entry, batch)
					idx := make([]uint64, batch)
					for i := range ents {
						ents[i] = &raftpb.Entry{Type: &typ, Term: &term, Index: &idx[i], Data: data}
					}
					var next, vote uint64 = 1, 1
					st := &raftpb.HardState{Term: &term, Vote: &vote, Commit: new(uint64)}
					b.SetBytes(int64(batch * size))
					b.ReportAllocs()
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						for j := range idx {
							idx[j] = next
							next++
						}
						*st.Commit = next - 1
						if err := w.Save(st, ents); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

// BenchmarkWALReadAll reads one full 64,000,000-byte segment of 1 KiB
// entries (written once by etckit; the bytes are etcd's) with each
// implementation.
func BenchmarkWALReadAll(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "wal")
	w, err := wal.Create(dir, []byte("bench"), wal.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 1024)
	typ := raftpb.EntryNormal
	term := uint64(1)
	var n uint64
	for len(w.Segments()) < 2 {
		ents := make([]*raftpb.Entry, 100)
		for i := range ents {
			n++
			ents[i] = &raftpb.Entry{Type: &typ, Term: &term, Index: new(n), Data: data}
		}
		if err := w.Save(&raftpb.HardState{Term: &term, Commit: new(n)}, ents); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	check := func(b *testing.B, got int) {
		if uint64(got) != n {
			b.Fatalf("read %d entries, wrote %d", got, n)
		}
	}
	b.Run("impl=etckit", func(b *testing.B) {
		b.SetBytes(wal.DefaultSegmentSize)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			r, err := wal.OpenForRead(dir, wal.Snapshot{}, wal.Options{})
			if err != nil {
				b.Fatal(err)
			}
			_, _, ents, err := r.ReadAll()
			if err != nil {
				b.Fatal(err)
			}
			check(b, len(ents))
			r.Close()
		}
	})
	b.Run("impl=etcd", func(b *testing.B) {
		b.SetBytes(wal.DefaultSegmentSize)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			r, err := etcdwal.OpenForRead(zap.NewNop(), dir, toWalpb(wal.Snapshot{}))
			if err != nil {
				b.Fatal(err)
			}
			_, _, ents, err := r.ReadAll()
			if err != nil {
				b.Fatal(err)
			}
			check(b, len(ents))
			r.Close()
		}
	})
}
