package interop

import (
	"errors"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	etcdwal "go.etcd.io/etcd/server/v3/storage/wal"

	"github.com/etckit/etckit/wal"
)

// TestWALLocksExcludeEtcd: a WAL that etcd's wal package holds open for
// writing cannot be opened for writing (or repaired) by etckit, and the
// reverse; both use the same kind of file lock.
func TestWALLocksExcludeEtcd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	ew, err := etcdwal.Create(zap.NewNop(), dir, []byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wal.Open(dir, wal.Snapshot{}, wal.Options{}); !errors.Is(err, wal.ErrLocked) {
		t.Fatalf("etckit opened a WAL etcd holds: %v", err)
	}
	if _, err := wal.Repair(dir, wal.Options{}); !errors.Is(err, wal.ErrLocked) {
		t.Fatalf("etckit repaired a WAL etcd holds: %v", err)
	}
	// Reading needs no lock, as with etcd.
	r, err := wal.OpenForRead(dir, wal.Snapshot{}, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if err := ew.Close(); err != nil {
		t.Fatal(err)
	}

	ow, err := wal.Open(dir, wal.Snapshot{}, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := ow.ReadAll(); err != nil {
		t.Fatal(err)
	}
	if _, err := etcdwal.Open(zap.NewNop(), dir, toWalpb(wal.Snapshot{})); err == nil {
		t.Fatal("etcd opened a WAL etckit holds")
	}
	if err := ow.Close(); err != nil {
		t.Fatal(err)
	}
	ew2, err := etcdwal.Open(zap.NewNop(), dir, toWalpb(wal.Snapshot{}))
	if err != nil {
		t.Fatalf("etcd cannot open the WAL after etckit closed it: %v", err)
	}
	ew2.Close()
}
