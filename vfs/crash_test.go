package vfs

import (
	"bytes"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
)

func mustWriteFile(t *testing.T, fsys FS, name string, data []byte, sync bool) File {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func mustSyncDir(t *testing.T, fsys FS, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := fsys.SyncDir(d); err != nil {
			t.Fatal(err)
		}
	}
}

var (
	keepNone = CrashOptions{KeepProb: 0}
	keepAll  = CrashOptions{KeepProb: 1}
)

func treeOf(t *testing.T, fsys FS) string {
	t.Helper()
	return strings.Join(dump(t, fsys, "/"), "\n")
}

func TestCrashUnsyncedEntryDisappears(t *testing.T) {
	m := NewCrashable()
	mustWriteFile(t, m, "/a", []byte("data"), true) // data synced, entry not
	if got := treeOf(t, m.CrashWith(keepAll)); got != "" {
		t.Errorf("crashed tree %q, want empty: / was never synced", got)
	}
}

func TestCrashSyncedSurvives(t *testing.T) {
	m := NewCrashable()
	mustWriteFile(t, m, "/a", []byte("data"), true)
	mustSyncDir(t, m, "/")
	if got, want := treeOf(t, m.CrashWith(keepNone)), `a "data"`; got != want {
		t.Errorf("crashed tree %q, want %q", got, want)
	}
}

func TestCrashUnsyncedDataEntrySynced(t *testing.T) {
	m := NewCrashable()
	mustWriteFile(t, m, "/a", []byte("data"), false)
	mustSyncDir(t, m, "/")
	if got, want := treeOf(t, m.CrashWith(keepNone)), `a ""`; got != want {
		t.Errorf("keep none: %q, want %q", got, want)
	}
	if got, want := treeOf(t, m.CrashWith(keepAll)), `a "data"`; got != want {
		t.Errorf("keep all: %q, want %q", got, want)
	}
}

func TestCrashRename(t *testing.T) {
	m := NewCrashable()
	m.MkdirAll("/d", 0o755)
	m.MkdirAll("/e", 0o755)
	mustWriteFile(t, m, "/d/a.tmp", []byte("v1"), true)
	mustSyncDir(t, m, "/", "/d", "/e")
	if err := m.Rename("/d/a.tmp", "/d/a"); err != nil {
		t.Fatal(err)
	}
	if got, want := treeOf(t, m.CrashWith(keepAll)), "d/\nd/a.tmp \"v1\"\ne/"; got != want {
		t.Errorf("rename without SyncDir:\n%s\nwant\n%s", got, want)
	}
	mustSyncDir(t, m, "/d")
	if got, want := treeOf(t, m.CrashWith(keepNone)), "d/\nd/a \"v1\"\ne/"; got != want {
		t.Errorf("rename with SyncDir:\n%s\nwant\n%s", got, want)
	}
	// Across directories, syncing only the target: the strict model keeps
	// both names, one inode.
	if err := m.Rename("/d/a", "/e/a"); err != nil {
		t.Fatal(err)
	}
	mustSyncDir(t, m, "/e")
	c := m.CrashWith(keepNone)
	if got, want := treeOf(t, c), "d/\nd/a \"v1\"\ne/\ne/a \"v1\""; got != want {
		t.Errorf("cross-directory rename, target synced:\n%s\nwant\n%s", got, want)
	}
	f, _ := c.OpenFile("/d/a", os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte("+"))
	if got := readAll(t, c, "/e/a"); string(got) != "v1+" {
		t.Errorf("the two names are not one inode: /e/a = %q", got)
	}
}

func TestCrashRemoveWithoutSyncDirComesBack(t *testing.T) {
	m := NewCrashable()
	mustWriteFile(t, m, "/a", []byte("old"), true)
	mustSyncDir(t, m, "/")
	m.Remove("/a")
	mustWriteFile(t, m, "/a", []byte("new"), true) // a new inode, entry not synced
	if got, want := treeOf(t, m.CrashWith(keepAll)), `a "old"`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestCrashMkdirAllNeedsParentSync(t *testing.T) {
	m := NewCrashable()
	m.MkdirAll("/x/y", 0o755)
	mustWriteFile(t, m, "/x/y/f", []byte("f"), true)
	mustSyncDir(t, m, "/x/y", "/x")
	if got := treeOf(t, m.CrashWith(keepAll)); got != "" {
		t.Errorf("got %q, want empty: / not synced", got)
	}
	mustSyncDir(t, m, "/")
	if got, want := treeOf(t, m.CrashWith(keepNone)), "x/\nx/y/\nx/y/f \"f\""; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestCrashTruncatePreallocateAreUnsynced(t *testing.T) {
	m := NewCrashable()
	synced := bytes.Repeat([]byte("s"), 2000)
	f := mustWriteFile(t, m, "/a", synced, true)
	mustSyncDir(t, m, "/")
	f.Truncate(100)
	if got := readAll(t, m.CrashWith(keepNone), "/a"); !bytes.Equal(got, synced) {
		t.Errorf("unsynced truncate, keep none: %q, want the synced 2000 bytes", got)
	}
	// The size change is lost but the first sector, changed by the
	// truncate, may be written back zero-padded past the new end.
	want := slices.Concat(synced[:100], make([]byte, SectorSize-100), synced[SectorSize:])
	if got := readAll(t, m.CrashWith(keepAll), "/a"); !bytes.Equal(got, want) {
		t.Errorf("unsynced truncate, keep all: %q, want %q", got, want)
	}
	f.Preallocate(1500)
	f.Datasync()
	want = append(bytes.Repeat([]byte("s"), 100), make([]byte, 1400)...)
	if got := readAll(t, m.CrashWith(keepNone), "/a"); !bytes.Equal(got, want) {
		t.Errorf("after truncate+preallocate+sync: %d bytes, want 100 's' then zeros to 1500", len(got))
	}
	f.Preallocate(4096)
	if got := readAll(t, m.CrashWith(keepNone), "/a"); len(got) != 1500 {
		t.Errorf("unsynced preallocate, keep none: %d bytes, want 1500", len(got))
	}
	if got := readAll(t, m.CrashWith(keepAll), "/a"); len(got) != 4096 {
		t.Errorf("unsynced preallocate, keep all: %d bytes, want 4096", len(got))
	}
}

func TestCrashResultIsCrashableAndUnlocked(t *testing.T) {
	m := NewCrashable()
	f := mustWriteFile(t, m, "/a", []byte("one"), true)
	mustSyncDir(t, m, "/")
	if err := f.TryLock(); err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("two"))
	c := m.CrashWith(keepAll)
	g, err := c.OpenFile("/a", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.TryLock(); err != nil {
		t.Errorf("crashed FS holds a lock: %v", err)
	}
	g.Write([]byte("XX")) // unsynced change on top of the survived state
	mustWriteFile(t, c, "/b", []byte("b"), true)
	if got, want := treeOf(t, c.CrashWith(keepNone)), `a "onetwo"`; got != want {
		t.Errorf("crash of crash: %q, want %q (survived state is durable)", got, want)
	}
	if got := readAll(t, f.(*memFile).fs, "/a"); string(got) != "onetwo" {
		t.Errorf("crash changed the original: %q", got)
	}
}

func TestCrashNewMemKeepsEverything(t *testing.T) {
	m := NewMem()
	m.MkdirAll("/d", 0o755)
	mustWriteFile(t, m, "/d/a", []byte("unsynced"), false)
	if got, want := treeOf(t, m.Crash(1)), "d/\nd/a \"unsynced\""; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// sectorState builds a file whose every sector has durable and different
// current content.
func sectorState(t *testing.T, sectors int) *MemFS {
	m := NewCrashable()
	f := mustWriteFile(t, m, "/f", bytes.Repeat([]byte{'d'}, sectors*SectorSize/2), true)
	mustSyncDir(t, m, "/")
	f.(*memFile).WriteAt(bytes.Repeat([]byte{'c'}, sectors*SectorSize), 0)
	return m
}

func TestCrashDeterministic(t *testing.T) {
	const seed = 42
	m := sectorState(t, 64)
	m.MkdirAll("/z", 0o755)
	mustWriteFile(t, m, "/z/g", bytes.Repeat([]byte{'g'}, 10*SectorSize), false)
	mustSyncDir(t, m, "/z", "/")
	a, b := treeOf(t, m.Crash(seed)), treeOf(t, m.Crash(seed))
	if a != b {
		t.Errorf("seed %d: two crashes differ", seed)
	}
	seen := map[string]bool{}
	for s := int64(0); s < 20; s++ {
		seen[treeOf(t, m.Crash(s))] = true
	}
	if len(seen) < 15 {
		t.Errorf("seeds 0..19 gave only %d distinct crashed states", len(seen))
	}
}

// TestCrashSectors checks the data rule against a reference model over
// random writes, truncates and syncs: every sector of the crashed file is
// whole, either durable (or zero past the durable length) or current, and
// the length is between the durable one and the current one.
func TestCrashSectors(t *testing.T) {
	for seed := uint64(1); seed <= 50; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		m := NewCrashable()
		f := mustWriteFile(t, m, "/f", nil, true)
		mustSyncDir(t, m, "/")
		var cur, durable []byte
		for range 20 {
			switch rng.IntN(4) {
			case 0, 1:
				off := rng.IntN(8 * SectorSize)
				p := make([]byte, rng.IntN(2*SectorSize)+1)
				for i := range p {
					p[i] = byte(rng.IntN(255) + 1)
				}
				f.(*memFile).WriteAt(p, int64(off))
				if end := off + len(p); end > len(cur) {
					cur = append(cur, make([]byte, end-len(cur))...)
				}
				copy(cur[off:], p)
			case 2:
				size := rng.IntN(8 * SectorSize)
				f.Truncate(int64(size))
				if size < len(cur) {
					cur = cur[:size]
				} else {
					cur = append(cur, make([]byte, size-len(cur))...)
				}
			case 3:
				f.Sync()
				durable = slices.Clone(cur)
			}
		}
		if got := readAll(t, m.CrashWith(keepNone), "/f"); !bytes.Equal(got, durable) {
			t.Fatalf("seed %d: keep none gives %d bytes, not the %d synced ones", seed, len(got), len(durable))
		}
		crashSeed := int64(seed) * 7
		got := readAll(t, m.Crash(crashSeed), "/f")
		if len(got) < len(durable) || len(got) > max(len(durable), len(cur)) {
			t.Fatalf("seed %d crash seed %d: length %d, durable %d, current %d", seed, crashSeed, len(got), len(durable), len(cur))
		}
		for off := 0; off < len(got); off += SectorSize {
			end := min(off+SectorSize, len(got))
			var old, now [SectorSize]byte
			sector(&old, durable, off)
			sector(&now, cur, off)
			ok := bytes.Equal(got[off:end], old[:end-off]) ||
				off < len(cur) && bytes.Equal(got[off:end], now[:end-off])
			if !ok {
				t.Fatalf("seed %d crash seed %d: sector at %d is neither durable nor current", seed, crashSeed, off)
			}
		}
	}
}

func TestCrashKeepExtremes(t *testing.T) {
	m := sectorState(t, 16)
	durable := bytes.Repeat([]byte{'d'}, 8*SectorSize)
	current := bytes.Repeat([]byte{'c'}, 16*SectorSize)
	for seed := int64(0); seed < 5; seed++ {
		if got := readAll(t, m.CrashWith(CrashOptions{Seed: seed, KeepProb: 0}), "/f"); !bytes.Equal(got, durable) {
			t.Errorf("seed %d keep 0: not the durable content", seed)
		}
		if got := readAll(t, m.CrashWith(CrashOptions{Seed: seed, KeepProb: 1}), "/f"); !bytes.Equal(got, current) {
			t.Errorf("seed %d keep 1: not the current content", seed)
		}
	}
}

// TestCrashDirectoryCycle: durable entries can form a cycle (a directory
// moved under its own durable child); the crash must still terminate.
func TestCrashDirectoryCycle(t *testing.T) {
	m := NewCrashable()
	m.MkdirAll("/a/b", 0o755)
	mustSyncDir(t, m, "/", "/a")
	if err := m.Rename("/a/b", "/b"); err != nil {
		t.Fatal(err)
	}
	if err := m.Rename("/a", "/b/a"); err != nil {
		t.Fatal(err)
	}
	mustSyncDir(t, m, "/b") // durable: / -> a -> b -> a
	if got, want := treeOf(t, m.Crash(1)), "a/\na/b/"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
