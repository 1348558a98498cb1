package engine

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etckit/etckit/snap"
)

// TestSaveSnapshotDBRefusesBadDBs: a db a leader sends is kept only if it
// is a bbolt file whose consistent_index and term are the snapshot's;
// garbage, a truncated file and a db of another index are refused and
// leave no file behind, so raft never hears of them.
func TestSaveSnapshotDBRefusesBadDBs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m1")
	e, err := Open(Options{Name: "m1", DataDir: dir, InitialCluster: "m1=http://127.0.0.1:2380", NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cc := NewConfTracker(nil)
	if err := e.Apply(committed(t, e), cc.Apply, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		appendNormal(t, e, cc, 2, put(uint64(i+1), "k", "v"))
	}
	ds, err := e.DBSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	var good bytes.Buffer
	if _, err := ds.WriteTo(&good); err != nil {
		t.Fatal(err)
	}
	ds.Release()
	if int64(good.Len()) != ds.Size {
		t.Fatalf("DBSnapshot wrote %d bytes, said %d", good.Len(), ds.Size)
	}
	snapDir := filepath.Join(dir, "member", "snap")
	for _, tc := range []struct {
		name        string
		db          []byte
		index, term uint64
		want        string
	}{
		{"garbage", bytes.Repeat([]byte("x"), 8192), ds.Index, ds.Term, "corrupt at offset"},
		{"truncated", good.Bytes()[:good.Len()/2], ds.Index, ds.Term, "truncated"},
		{"another index", good.Bytes(), ds.Index + 100, ds.Term, "the snapshot is at index"},
		{"another term", good.Bytes(), ds.Index, ds.Term + 1, "the snapshot is at index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.SaveSnapshotDB(bytes.NewReader(tc.db), tc.index, tc.term)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("saved: %v", err)
			}
			if _, serr := os.Stat(filepath.Join(snapDir, snap.DBFileName(tc.index))); !os.IsNotExist(serr) {
				t.Fatalf("a refused db was left behind: %v (error was %v)", serr, err)
			}
			t.Logf("refused: %v", err)
		})
	}
	n, err := e.SaveSnapshotDB(bytes.NewReader(good.Bytes()), ds.Index, ds.Term)
	if err != nil || n != int64(good.Len()) {
		t.Fatalf("the good db: %d bytes, %v", n, err)
	}
}
