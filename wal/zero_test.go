package wal

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"go.etcd.io/raft/v3/raftpb"
	"golang.org/x/sys/unix"
)

// TestZeroAheadSameBytes writes one random sequence of Saves, Cuts and
// snapshots (entries from 1 byte to 1 MiB, so the writer overtakes the
// zeroer and waits for it) twice on the OS filesystem, with and without
// zeroing ahead, and requires identical segment files and identical
// ReadAll results: zeroing must never touch a byte the writer wrote.
func TestZeroAheadSameBytes(t *testing.T) {
	const seed = 20261121
	t.Logf("seed %d", seed)
	write := func(noZero bool) string {
		rng := rand.New(rand.NewSource(seed))
		dir := filepath.Join(t.TempDir(), "wal")
		w, err := Create(dir, []byte("zero-ahead"), Options{SegmentSize: 8 << 20, NoZeroAhead: noZero})
		if err != nil {
			t.Fatal(err)
		}
		if !noZero && w.tw.z == nil {
			t.Skip("the temporary directory's filesystem has no vfs.ZeroWriter files")
		}
		idx := uint64(0)
		for i := 0; i < 400; i++ {
			var ents []*raftpb.Entry
			for j := rng.Intn(6); j > 0; j-- {
				size := 1 + rng.Intn(2000)
				if rng.Intn(20) == 0 {
					size = 1 + rng.Intn(1<<20)
				}
				data := make([]byte, size)
				rng.Read(data)
				idx++
				ents = append(ents, ent(1, idx, data))
			}
			if err := w.Save(hs(1, 1, idx), ents); err != nil {
				t.Fatal(err)
			}
			switch rng.Intn(50) {
			case 0:
				if err := w.Cut(); err != nil {
					t.Fatal(err)
				}
			case 1:
				if err := w.SaveSnapshot(Snapshot{Index: idx, Term: 1, ConfState: &raftpb.ConfState{Voters: []uint64{1}}}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	a, b := write(true), write(false)
	na, _ := os.ReadDir(a)
	nb, _ := os.ReadDir(b)
	if len(na) != len(nb) || len(na) < 3 {
		t.Fatalf("segments: %d without zeroing, %d with", len(na), len(nb))
	}
	for i := range na {
		if na[i].Name() != nb[i].Name() {
			t.Fatalf("segment %d: %s without zeroing, %s with", i, na[i].Name(), nb[i].Name())
		}
		x, err := os.ReadFile(filepath.Join(a, na[i].Name()))
		if err != nil {
			t.Fatal(err)
		}
		y, err := os.ReadFile(filepath.Join(b, nb[i].Name()))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			t.Fatalf("segment %s differs with zeroing ahead", na[i].Name())
		}
	}
	r, err := OpenForRead(b, Snapshot{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, _, ents, err := r.ReadAll(); err != nil || len(ents) == 0 {
		t.Fatalf("ReadAll: %d entries, %v", len(ents), err)
	}
}

// TestZeroAheadConvertsExtents checks, with FIEMAP, that the space just
// ahead of the records is written (zeroed) with zeroing ahead and still
// unwritten (preallocated only) without it.
func TestZeroAheadConvertsExtents(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("FIEMAP is Linux's")
	}
	unwrittenAhead := func(noZero bool) (from, to int64, unwritten bool) {
		dir := filepath.Join(t.TempDir(), "wal")
		w, err := Create(dir, []byte("zero-ahead"), Options{NoZeroAhead: noZero})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		data := bytes.Repeat([]byte{7}, 300)
		for i := uint64(1); i <= 2000; i++ {
			if err := w.Save(hs(1, 1, i), []*raftpb.Entry{ent(1, i, data)}); err != nil {
				t.Fatal(err)
			}
		}
		if z := w.tw.z; z != nil {
			settle(z)
		}
		from = alignUp(w.tw.off, pageBytes)
		to = from + zeroLookahead/2
		unwritten, ok := fiemapUnwritten(t, w.tail().f.(interface{ Fd() uintptr }).Fd(), from, to)
		if !ok {
			t.Skip("FIEMAP is not supported here")
		}
		return from, to, unwritten
	}
	from, to, u := unwrittenAhead(true)
	if !u {
		t.Skipf("without zeroing, [%d, %d) is not reported unwritten: this filesystem has no unwritten extents", from, to)
	}
	from, to, u = unwrittenAhead(false)
	if u {
		t.Fatalf("with zeroing ahead, [%d, %d) still has unwritten extents", from, to)
	}
}

// fiemapUnwritten reports whether [from, to) of the file has an extent
// flagged FIEMAP_EXTENT_UNWRITTEN (after syncing the file).
func fiemapUnwritten(t *testing.T, fd uintptr, from, to int64) (unwritten, ok bool) {
	const (
		fsIocFiemap      = 0xC020660B
		fiemapFlagSync   = 0x1
		extentUnwritten  = 0x800
		maxExtents       = 64
		fiemapHeaderSize = 32
		extentSize       = 56
	)
	buf := make([]byte, fiemapHeaderSize+maxExtents*extentSize)
	le := func(off int, v uint64, n int) {
		for i := 0; i < n; i++ {
			buf[off+i] = byte(v >> (8 * i))
		}
	}
	get := func(off, n int) uint64 {
		var v uint64
		for i := n - 1; i >= 0; i-- {
			v = v<<8 | uint64(buf[off+i])
		}
		return v
	}
	le(0, uint64(from), 8)
	le(8, uint64(to-from), 8)
	le(16, fiemapFlagSync, 4)
	le(24, maxExtents, 4)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, fsIocFiemap, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		t.Logf("FIEMAP: %v", errno)
		return false, false
	}
	n := int(get(20, 4))
	if n == 0 {
		t.Logf("FIEMAP mapped no extents in [%d, %d)", from, to)
		return false, false
	}
	for i := 0; i < n; i++ {
		e := fiemapHeaderSize + i*extentSize
		if get(e+40, 4)&extentUnwritten != 0 {
			return true, true
		}
	}
	return false, true
}

// TestZeroAheadPausesForLargeSyncs: when each sync carries more than
// zeroMaxPerSync on average, zeroing would double the bytes written for
// little gain, so it stops keeping ahead; small syncs keep it going.
func TestZeroAheadPausesForLargeSyncs(t *testing.T) {
	w, err := Create(filepath.Join(t.TempDir(), "wal"), []byte("zero-ahead"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	z := w.tw.z
	if z == nil {
		t.Skip("the temporary directory's filesystem has no vfs.ZeroWriter files")
	}
	small := bytes.Repeat([]byte{1}, 1000)
	idx := uint64(0)
	for i := 0; i < 50; i++ {
		idx++
		if err := w.Save(hs(1, 1, idx), []*raftpb.Entry{ent(1, idx, small)}); err != nil {
			t.Fatal(err)
		}
	}
	z.mu.Lock()
	wanted, perSync := z.wanted(), z.perSync
	z.mu.Unlock()
	if !wanted {
		t.Fatalf("zeroing paused after 1 KB syncs (average %d bytes per sync)", perSync)
	}
	big := bytes.Repeat([]byte{2}, 1<<20)
	for i := 0; i < 30; i++ {
		idx++
		if err := w.Save(hs(1, 1, idx), []*raftpb.Entry{ent(1, idx, big)}); err != nil {
			t.Fatal(err)
		}
	}
	z.mu.Lock()
	wanted, perSync = z.wanted(), z.perSync
	behind := z.zeroed < z.claimed
	z.mu.Unlock()
	if wanted || !behind {
		t.Fatalf("after 1 MiB syncs (average %d bytes per sync): zeroing wanted %v, behind the writer %v", perSync, wanted, behind)
	}
}

// settle waits until the zeroer has zeroed all it means to.
func settle(z *zeroAhead) {
	for {
		z.mu.Lock()
		_, _, pending := z.nextPiece()
		z.mu.Unlock()
		if !pending {
			return
		}
		select {
		case z.kick <- struct{}{}:
		default:
		}
		time.Sleep(time.Millisecond)
	}
}
