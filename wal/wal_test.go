package wal

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/vfs"
)

func u64(v uint64) *uint64 { return &v }

func ent(term, index uint64, data []byte) *raftpb.Entry {
	t := raftpb.EntryNormal
	return &raftpb.Entry{Type: &t, Term: u64(term), Index: u64(index), Data: data}
}

func hs(term, vote, commit uint64) *raftpb.HardState {
	return &raftpb.HardState{Term: u64(term), Vote: u64(vote), Commit: u64(commit)}
}

// TestFormatVector checks the byte-level example of the package doc ("A
// fresh WAL"): a fresh WAL created with metadata "somedata".
func TestFormatVector(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	w, err := Create(dir, []byte("somedata"), Options{SegmentSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, SegmentName(0, 0)))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := hex.DecodeString("0400000000000084" + "0804100000000000" +
		"1200000000000086" + "08011085d4fda0071a08736f6d6564617461" + "000000000000" +
		"0e00000000000082" + "08051080db81c1011a0408001000" + "0000")
	if !bytes.Equal(got[:len(want)], want) {
		t.Fatalf("first bytes\n got %x\nwant %x", got[:len(want)], want)
	}
	if len(got) != 4096 || !allZero(got[len(want):]) {
		t.Fatalf("segment is %d bytes; want 4096 with zeros after the records", len(got))
	}
	// Nothing but the WAL dir is left behind (no .tmp dir, no pipeline file).
	names, _ := vfs.OS{}.ReadDirNames(filepath.Dir(dir))
	if len(names) != 1 || names[0] != "wal" {
		t.Fatalf("parent holds %v", names)
	}
	seg, _ := vfs.OS{}.ReadDirNames(dir)
	if len(seg) != 1 {
		t.Fatalf("wal dir holds %v", seg)
	}
}

func TestSaveReadAllAcrossSegments(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	opts := Options{SegmentSize: 8192}
	w, err := Create(dir, []byte("meta"), opts)
	if err != nil {
		t.Fatal(err)
	}
	var want []*raftpb.Entry
	for i := uint64(1); i <= 300; i++ {
		e := ent(1+i/100, i, bytes.Repeat([]byte{byte(i)}, int(i%97)))
		if i%10 == 0 {
			e.Data = nil
		}
		want = append(want, e)
		if err := w.Save(hs(1+i/100, 1, i), []*raftpb.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	names, _ := segmentNames(vfs.OS{}, dir)
	if len(names) < 3 {
		t.Fatalf("want several segments, got %v", names)
	}
	for _, write := range []bool{false, true} {
		var r *WAL
		if write {
			r, err = Open(dir, Snapshot{}, opts)
		} else {
			r, err = OpenForRead(dir, Snapshot{}, opts)
		}
		if err != nil {
			t.Fatal(err)
		}
		md, st, ents, err := r.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if string(md) != "meta" || st.GetTerm() != 4 || st.GetCommit() != 300 || st.GetVote() != 1 {
			t.Fatalf("metadata %q state %v", md, st)
		}
		if len(ents) != len(want) {
			t.Fatalf("%d entries, want %d", len(ents), len(want))
		}
		for i := range want {
			if !entryEqual(ents[i], want[i]) {
				t.Fatalf("entry %d: got %v want %v", i, ents[i], want[i])
			}
		}
		if write {
			// Appending continues the chain after reopening.
			if err := r.Save(hs(4, 1, 301), []*raftpb.Entry{ent(4, 301, []byte("x"))}); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	r, err := OpenForRead(dir, Snapshot{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, _, ents, err := r.ReadAll()
	if err != nil || len(ents) != 301 || string(ents[300].Data) != "x" {
		t.Fatalf("after append: %d entries, err %v", len(ents), err)
	}
}

func entryEqual(a, b *raftpb.Entry) bool {
	return a.GetType() == b.GetType() && a.GetTerm() == b.GetTerm() && a.GetIndex() == b.GetIndex() &&
		bytes.Equal(a.Data, b.Data) && (a.Data == nil) == (b.Data == nil)
}

func TestOverwriteByIndex(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	w, err := Create(dir, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*raftpb.Entry{ent(1, 1, nil), ent(1, 2, nil), ent(1, 3, []byte("old")), ent(1, 4, nil)} {
		if err := w.Save(hs(1, 0, 0), []*raftpb.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Save(hs(2, 0, 2), []*raftpb.Entry{ent(2, 3, []byte("new"))}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	r, _ := OpenForRead(dir, Snapshot{}, Options{})
	defer r.Close()
	_, _, ents, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 3 || string(ents[2].Data) != "new" || ents[2].GetTerm() != 2 {
		t.Fatalf("got %v", ents)
	}
}

func TestSnapshotStart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	w, _ := Create(dir, nil, Options{})
	for i := uint64(1); i <= 10; i++ {
		w.Save(hs(1, 0, i), []*raftpb.Entry{ent(1, i, nil)})
	}
	cs := &raftpb.ConfState{Voters: []uint64{1}}
	if err := w.SaveSnapshot(Snapshot{Index: 5, Term: 1, ConfState: cs}); err != nil {
		t.Fatal(err)
	}
	if err := w.SaveSnapshot(Snapshot{Index: 6, Term: 1}); err == nil {
		t.Fatal("a snapshot without ConfState was accepted")
	}
	w.Close()
	r, _ := OpenForRead(dir, Snapshot{Index: 5, Term: 1}, Options{})
	_, _, ents, err := r.ReadAll()
	r.Close()
	if err != nil || len(ents) != 5 || ents[0].GetIndex() != 6 {
		t.Fatalf("ents %v err %v", ents, err)
	}
	r, _ = OpenForRead(dir, Snapshot{Index: 5, Term: 2}, Options{})
	_, _, _, err = r.ReadAll()
	r.Close()
	if !errors.Is(err, ErrSnapshotMismatch) {
		t.Fatalf("want ErrSnapshotMismatch, got %v", err)
	}
	r, _ = OpenForRead(dir, Snapshot{Index: 7, Term: 1}, Options{})
	_, _, _, err = r.ReadAll()
	r.Close()
	if !errors.Is(err, ErrSnapshotNotFound) {
		t.Fatalf("want ErrSnapshotNotFound, got %v", err)
	}
	snaps, err := ValidSnapshotEntries(dir, Options{})
	if err != nil || len(snaps) != 2 || snaps[1].Index != 5 || len(snaps[1].ConfState.GetVoters()) != 1 {
		t.Fatalf("snaps %v err %v", snaps, err)
	}
	st, err := Verify(dir, Snapshot{Index: 5, Term: 1}, Options{})
	if err != nil || st.GetCommit() != 10 {
		t.Fatalf("verify: %v %v", st, err)
	}
}

func TestLockExcludesSecondWriter(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	w, err := Create(dir, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Snapshot{}, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second writer: %v", err)
	}
	if _, err := Repair(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("repair of a held WAL: %v", err)
	}
	// Readers do not need the lock.
	r, err := OpenForRead(dir, Snapshot{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	w.Close()
	w2, err := Open(dir, Snapshot{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w2.Close()
}

func TestTornTailRepair(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	w, _ := Create(dir, []byte("m"), Options{})
	for i := uint64(1); i <= 20; i++ {
		w.Save(hs(1, 0, i), []*raftpb.Entry{ent(1, i, bytes.Repeat([]byte("d"), 600))})
	}
	w.Close()
	path := filepath.Join(dir, SegmentName(0, 0))
	b, _ := os.ReadFile(path)
	// Find the last entry's frame and zero a sector inside it.
	var last Position
	Scan(dir, ScanOptions{}, func(p Position, r Record) error {
		if r.Type == EntryType {
			last = p
		}
		return nil
	})
	sector := (last.Offset/512 + 1) * 512
	clear(b[sector : sector+512])
	os.WriteFile(path, b, 0o600)

	r, _ := Open(dir, Snapshot{}, Options{})
	_, _, _, err := r.ReadAll()
	r.Close()
	if !errors.Is(err, corrupt.ErrTornTail) {
		t.Fatalf("want torn tail, got %v", err)
	}
	ce := corrupt.As(err)
	if ce.Path != path || ce.Offset != last.Offset {
		t.Fatalf("error names %s@%d, want %s@%d", ce.Path, ce.Offset, path, last.Offset)
	}
	rep, err := Repair(dir, Options{})
	if err != nil || !rep.Repaired() || rep.TruncatedAt != last.Offset || rep.BackupPath != path+".broken" {
		t.Fatalf("repair: %v %+v", err, rep)
	}
	backup, _ := os.ReadFile(rep.BackupPath)
	if !bytes.Equal(backup, b) {
		t.Fatal("backup differs from the segment before repair")
	}
	r, _ = Open(dir, Snapshot{}, Options{})
	_, _, ents, err := r.ReadAll()
	if err != nil || len(ents) != 19 {
		t.Fatalf("after repair: %d entries, %v", len(ents), err)
	}
	r.Close()
	rep, err = Repair(dir, Options{})
	if err != nil || rep.Repaired() {
		t.Fatalf("second repair: %v %+v", err, rep)
	}

	// A second torn tail: the first backup is kept, the new one gets a new name.
	b2, _ := os.ReadFile(path)
	clear(b2[last.Offset-512 : last.Offset])
	os.WriteFile(path, b2, 0o600)
	rep, err = Repair(dir, Options{})
	if err != nil || !rep.Repaired() || rep.BackupPath != path+".broken.1" {
		t.Fatalf("repair of a second tear: %v %+v", err, rep)
	}
	if first, _ := os.ReadFile(path + ".broken"); !bytes.Equal(first, b) {
		t.Fatal("the first backup was overwritten")
	}
}

func TestMidLogCorruptionRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	w, _ := Create(dir, []byte("m"), Options{})
	for i := uint64(1); i <= 20; i++ {
		w.Save(hs(1, 0, i), []*raftpb.Entry{ent(1, i, []byte("payload"))})
	}
	w.Close()
	var fifth Position
	n := 0
	Scan(dir, ScanOptions{}, func(p Position, r Record) error {
		if r.Type == EntryType {
			if n++; n == 5 {
				fifth = p
			}
		}
		return nil
	})
	path := filepath.Join(dir, fifth.Segment)
	b, _ := os.ReadFile(path)
	b[fifth.Offset+20] ^= 0x40 // inside the entry's data
	os.WriteFile(path, b, 0o600)
	before := append([]byte(nil), b...)

	for _, write := range []bool{true, false} {
		open := OpenForRead
		if write {
			open = Open
		}
		r, _ := open(dir, Snapshot{}, Options{})
		_, _, _, err := r.ReadAll()
		r.Close()
		if !errors.Is(err, corrupt.ErrMidLog) || !errors.Is(err, ErrCRCMismatch) {
			t.Fatalf("write=%v: want mid-log crc mismatch, got %v", write, err)
		}
		if ce := corrupt.As(err); ce.Offset != fifth.Offset {
			t.Fatalf("offset %d, want %d", ce.Offset, fifth.Offset)
		}
	}
	if _, err := Repair(dir, Options{}); !errors.Is(err, corrupt.ErrMidLog) {
		t.Fatalf("repair must refuse mid-log corruption, got %v", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("a refused repair changed the segment")
	}
	if _, err := os.Stat(path + ".broken"); !os.IsNotExist(err) {
		t.Fatal("a refused repair wrote a backup")
	}
}
