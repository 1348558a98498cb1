package snap

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/vfs"
)

const (
	smallSnapshotDB = "etcd-3.6.16/snapshot-db/small-snapshot.db"
	// From snapshot-db/sha256-trailer-check.txt.
	smallSnapshotDigest = "b3950b2000ad51d491f6fc24db309dec3a37d345b8c1ea9e52f497768a2f6773"
	smallSnapshotImage  = 57344
)

func TestDBFileName(t *testing.T) {
	if got := DBFileName(0x2711); got != "0000000000002711.snap.db" {
		t.Errorf("DBFileName = %q", got)
	}
	for name, want := range map[string]uint64{"0000000000002711.snap.db": 0x2711, "ffffffffffffffff.snap.db": ^uint64(0)} {
		if got, ok := ParseDBFileName(name); !ok || got != want {
			t.Errorf("ParseDBFileName(%q) = %d, %v", name, got, ok)
		}
	}
	for _, name := range []string{"10001.snap.db", "0000000000002711.snap", "000000000000271G.snap.db", "db"} {
		if _, ok := ParseDBFileName(name); ok {
			t.Errorf("ParseDBFileName(%q) accepted", name)
		}
	}
}

func TestHasTrailer(t *testing.T) {
	for size, want := range map[int64]bool{0: false, 32: true, 512: false, 544: true, 57376: true, 57344: false, 4096 + 31: false} {
		if HasTrailer(size) != want {
			t.Errorf("HasTrailer(%d) != %v", size, want)
		}
	}
}

// small-snapshot.db (etcdctl snapshot save of etcd 3.6.16) verifies; a copy
// with any one flipped byte does not.
func TestDBVerifyFixture(t *testing.T) {
	src := fixture.Path(t, smallSnapshotDB)
	orig, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if len(orig) != smallSnapshotImage+TrailerSize || hex.EncodeToString(orig[smallSnapshotImage:]) != smallSnapshotDigest {
		t.Fatal("fixture is not what sha256-trailer-check.txt describes")
	}
	if err := Verify(vfs.OS{}, src); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(src)
	if !bytes.Equal(orig, after) {
		t.Fatal("Verify changed the fixture")
	}

	dir := t.TempDir()
	for _, off := range []int{0, 4096, smallSnapshotImage - 1, smallSnapshotImage, len(orig) - 1} {
		b := bytes.Clone(orig)
		b[off] ^= 0x01
		p := filepath.Join(dir, "flipped.db")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		err := Verify(vfs.OS{}, p)
		ce := corrupt.As(err)
		if ce == nil || !errors.Is(err, ErrDigestMismatch) || ce.Path != p || ce.Offset != smallSnapshotImage {
			t.Fatalf("flip at %d: %v", off, err)
		}
		if !strings.Contains(err.Error(), hex.EncodeToString(b[smallSnapshotImage:])) {
			t.Errorf("flip at %d: error does not name the trailer digest: %v", off, err)
		}
		sum := sha256.Sum256(b[:smallSnapshotImage])
		if !strings.Contains(err.Error(), hex.EncodeToString(sum[:])) {
			t.Errorf("flip at %d: error does not name the computed digest: %v", off, err)
		}
		// Restore-style copy refuses it and creates nothing.
		dst := filepath.Join(dir, "db")
		if _, err := CopyWithoutTrailer(vfs.OS{}, p, dst, false); !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("copy: %v", err)
		}
		if names, _ := (vfs.OS{}).ReadDirNames(dir); len(names) != 1 {
			t.Fatalf("copy left %v", names)
		}
	}
}

func TestDBStripAndWrite(t *testing.T) {
	src := fixture.Path(t, smallSnapshotDB)
	orig, _ := os.ReadFile(src)
	dir := t.TempDir()

	db := filepath.Join(dir, "db")
	n, err := CopyWithoutTrailer(vfs.OS{}, src, db, false)
	if err != nil || n != smallSnapshotImage {
		t.Fatalf("CopyWithoutTrailer = %d, %v", n, err)
	}
	img, _ := os.ReadFile(db)
	if !bytes.Equal(img, orig[:smallSnapshotImage]) {
		t.Fatal("stripped image differs")
	}
	if fi, _ := os.Stat(db); fi.Mode().Perm() != DBFileMode {
		t.Errorf("mode %v", fi.Mode())
	}
	// A bare db has no trailer: refused unless the check is skipped.
	if err := Verify(vfs.OS{}, db); !errors.Is(err, ErrNoTrailer) || corrupt.As(err) != nil {
		t.Errorf("Verify(bare) = %v", err)
	}
	if _, err := CopyWithoutTrailer(vfs.OS{}, db, filepath.Join(dir, "db2"), false); !errors.Is(err, ErrNoTrailer) {
		t.Errorf("copy bare = %v", err)
	}
	if n, err := CopyWithoutTrailer(vfs.OS{}, db, filepath.Join(dir, "db2"), true); err != nil || n != smallSnapshotImage {
		t.Errorf("copy bare, skip = %d, %v", n, err)
	}

	// Writing the image with a trailer gives etcdctl's file byte for byte.
	out := filepath.Join(dir, "saved.db")
	size, err := WriteWithTrailer(vfs.OS{}, out, bytes.NewReader(img))
	if err != nil || size != int64(len(orig)) {
		t.Fatalf("WriteWithTrailer = %d, %v", size, err)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, orig) {
		t.Fatal("WriteWithTrailer output differs from etcdctl's file")
	}
	if err := Verify(vfs.OS{}, out); err != nil {
		t.Fatal(err)
	}

	// An image that is not sector aligned is refused and leaves nothing.
	bad := filepath.Join(dir, "bad.db")
	if _, err := WriteWithTrailer(vfs.OS{}, bad, bytes.NewReader(img[:1000])); err == nil {
		t.Fatal("unaligned image accepted")
	}
	for _, n := range mustNames(t, dir) {
		if n == "bad.db" || strings.HasPrefix(n, TempPrefix) {
			t.Errorf("left %s", n)
		}
	}
}

func mustNames(t *testing.T, dir string) []string {
	t.Helper()
	names, err := vfs.OS{}.ReadDirNames(dir)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestSaveDBAndPurgeDB(t *testing.T) {
	fsys := vfs.NewMem()
	dir := "/d/member/snap"
	if err := fsys.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 7; i++ {
		p, n, err := SaveDB(fsys, dir, i*1000, strings.NewReader(strings.Repeat("x", int(i))))
		if err != nil || n != int64(i) || p != filepath.Join(dir, DBFileName(i*1000)) {
			t.Fatalf("SaveDB = %s, %d, %v", p, n, err)
		}
	}
	// Same index again: the existing file is kept.
	if _, _, err := SaveDB(fsys, dir, 1000, strings.NewReader("other")); err != nil {
		t.Fatal(err)
	}
	f, _ := fsys.Open(filepath.Join(dir, DBFileName(1000)))
	b := make([]byte, 10)
	n, _ := f.Read(b)
	f.Close()
	if string(b[:n]) != "x" {
		t.Fatalf("existing .snap.db overwritten: %q", b[:n])
	}
	removed, err := PurgeDB(fsys, dir, DefaultMaxSnapshots)
	if err != nil || len(removed) != 2 || removed[0] != filepath.Join(dir, DBFileName(1000)) {
		t.Fatalf("PurgeDB = %v, %v", removed, err)
	}
	if names := mustMemNames(t, fsys, dir); len(names) != 5 {
		t.Fatalf("left %v", names)
	}
}

func mustMemNames(t *testing.T, fsys vfs.FS, dir string) []string {
	t.Helper()
	names, err := fsys.ReadDirNames(dir)
	if err != nil {
		t.Fatal(err)
	}
	return names
}
