package snap

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/etckit/etckit/internal/fixture"
)

// The six .snap files of testdata/etcd-3.6.16/snapshot.tar.gz, oldest first.
var fixtureSnapNames = []string{
	"0000000000000002-00000000000003e9.snap",
	"0000000000000002-00000000000007d2.snap",
	"0000000000000002-0000000000000bbb.snap",
	"0000000000000002-0000000000000fa4.snap",
	"0000000000000002-000000000000138d.snap",
	"0000000000000002-0000000000001776.snap",
}

const (
	// copiesDir must not be named like the fixture folder: fixture.Root
	// looks for the nearest testdata/etcd-3.6.16 upwards.
	copiesDir        = "etcd-3.6.16-copies"
	restoredSnapName = "0000000000000001-0000000000000001.snap"
	fixtureMemberID  = 0x2e1259d415f2a040
)

// readTarFiles returns the regular files of a fixture tarball whose names
// satisfy keep, without writing the large ones (WAL, db) anywhere.
func readTarFiles(tb testing.TB, tarball string, keep func(string) bool) map[string][]byte {
	tb.Helper()
	f, err := os.Open(fixture.Path(tb, tarball))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		tb.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			tb.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg || !keep(h.Name) {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			tb.Fatal(err)
		}
		out[h.Name] = b
	}
}

// fixtureSnaps returns the six .snap files of snapshot.tar.gz by base name.
// They are read from byte-identical copies in snap/testdata/etcd-3.6.16-copies
// (small, and cheap to load in every fuzz worker), checked against the
// digests in testdata/etcd-3.6.16/snapshot/snapshot.sha256.txt;
// TestFixtureCopiesMatchTarballs compares them with the tarballs.
func fixtureSnaps(tb testing.TB) map[string][]byte {
	tb.Helper()
	want := sha256List(tb, "etcd-3.6.16/snapshot/snapshot.sha256.txt")
	out := map[string][]byte{}
	for _, name := range fixtureSnapNames {
		out[name] = readCopy(tb, name, want[name])
	}
	return out
}

// restoredSnap returns the .snap file etcdutl restore wrote.
func restoredSnap(tb testing.TB) []byte {
	tb.Helper()
	want := sha256List(tb, "etcd-3.6.16/snapshot-db/restored.sha256.txt")
	return readCopy(tb, restoredSnapName, want[restoredSnapName])
}

func sha256List(tb testing.TB, rel string) map[string]string {
	tb.Helper()
	sums, err := os.ReadFile(fixture.Path(tb, rel))
	if err != nil {
		tb.Fatal(err)
	}
	want := map[string]string{}
	for _, l := range strings.Split(string(sums), "\n") {
		if fs := strings.Fields(l); len(fs) == 2 {
			want[filepath.Base(fs[1])] = fs[0]
		}
	}
	return want
}

func readCopy(tb testing.TB, name, wantSum string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", copiesDir, name))
	if err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != wantSum {
		tb.Fatalf("snap/testdata/%s/%s: sha256 does not match the fixture's list", copiesDir, name)
	}
	return b
}

// writeSnapDir writes files into a new temporary directory.
func writeSnapDir(tb testing.TB, files map[string][]byte) string {
	tb.Helper()
	dir := tb.TempDir()
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// dirDigest returns name -> sha256 of every entry of dir, to prove that a
// read left the directory as it was.
func dirDigest(tb testing.TB, dir string) map[string]string {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			tb.Fatal(err)
		}
		s := sha256.Sum256(b)
		out[e.Name()] = hex.EncodeToString(s[:])
	}
	return out
}

func requireSameDigest(tb testing.TB, before, after map[string]string) {
	tb.Helper()
	var diffs []string
	for n, d := range before {
		if after[n] != d {
			diffs = append(diffs, "changed or removed: "+n)
		}
	}
	for n := range after {
		if _, ok := before[n]; !ok {
			diffs = append(diffs, "added: "+n)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		tb.Fatalf("directory changed: %v", diffs)
	}
}

// The copies in snap/testdata are the files in the fixture tarballs.
func TestFixtureCopiesMatchTarballs(t *testing.T) {
	copies := fixtureSnaps(t)
	copies[restoredSnapName] = restoredSnap(t)
	got := map[string][]byte{}
	for _, tb := range []string{"etcd-3.6.16/snapshot.tar.gz", "etcd-3.6.16/snapshot-restored.tar.gz"} {
		for n, b := range readTarFiles(t, tb, func(n string) bool { return strings.HasSuffix(n, ".snap") }) {
			got[filepath.Base(n)] = b
		}
	}
	if len(got) != len(copies) {
		t.Fatalf("tarballs hold %d .snap files, copies %d", len(got), len(copies))
	}
	for n, b := range copies {
		if !bytes.Equal(got[n], b) {
			t.Errorf("%s differs from the tarball", n)
		}
	}
}
