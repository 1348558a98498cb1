package walverify

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/tools/tooltest"
	"github.com/etckit/etckit/vfs"
	"github.com/etckit/etckit/wal"
	"go.etcd.io/raft/v3/raftpb"
)

const seg0 = "0000000000000000-0000000000000000.wal"

// Offsets of records in the small fixture's segment, checked by
// TestSmallOffsets against a scan (so the damage tests hit what they mean).
const (
	offEntry50  = 5128  // entry 50 (put b=2)
	offState57  = 5904  // HardState commit=57
	offEntry58  = 5936  // entry 58 (put /small/big/10k, 10 KB value)
	offState58  = 16240 // HardState commit=58, right after entry 58
	offEntry113 = 23208 // entry 113, the last entry
	offState113 = 23288 // HardState commit=113, the last record
	dataEnd     = 23320 // end of the last record
)

func run(t *testing.T, args ...string) tooltest.Result {
	t.Helper()
	return tooltest.Run(t, NewCommand(), args...)
}

// small extracts the small fixture and returns its data dir.
func small(t *testing.T) string {
	t.Helper()
	return filepath.Join(fixture.Extract(t, "etcd-3.6.16/small.tar.gz"), "small")
}

// damaged returns a copy of the small fixture whose segment is cut to size
// bytes (the tail still zero-filled, as a preallocated segment is) and then
// changed by edit.
func damaged(t *testing.T, size int64, edit func(b []byte) []byte) (dataDir, segPath string) {
	t.Helper()
	dir := small(t)
	p := filepath.Join(dir, "member", "wal", seg0)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b = b[:size]
	if edit != nil {
		b = edit(b)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, p
}

func TestSmallOffsets(t *testing.T) {
	dir := small(t)
	want := map[int64]string{offEntry50: "entry 50", offState57: "state 57", offEntry58: "entry 58", offState58: "state 58", offEntry113: "entry 113", offState113: "state 113"}
	got := map[int64]string{}
	var end int64
	err := wal.Scan(filepath.Join(dir, "member", "wal"), wal.ScanOptions{}, func(pos wal.Position, rec wal.Record) error {
		end = pos.Offset + 8 + int64(len(rec.Data)) // approximate; checked below
		switch rec.Type {
		case wal.EntryType:
			e, err := wal.UnmarshalEntry(rec.Data)
			if err != nil {
				return err
			}
			got[pos.Offset] = "entry " + strconv.FormatUint(e.GetIndex(), 10)
		case wal.StateType:
			s, err := wal.UnmarshalHardState(rec.Data)
			if err != nil {
				return err
			}
			got[pos.Offset] = "state " + strconv.FormatUint(s.GetCommit(), 10)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for off, w := range want {
		if got[off] != w {
			t.Errorf("offset %d: %q, want %q", off, got[off], w)
		}
	}
	if end > dataEnd || end < offState113 {
		t.Errorf("data ends near %d, want %d", end, dataEnd)
	}
}

func TestVerifyCleanFixtureGolden(t *testing.T) {
	dir := small(t)
	// Relative paths keep the golden output independent of the temporary
	// directory.
	t.Chdir(filepath.Dir(dir))
	before := tooltest.HashDir(t, dir)
	for _, c := range []struct{ name, format string }{{"simple", "simple"}, {"table", "table"}, {"json", "json"}} {
		r := run(t, "verify", "--data-dir", "small", "-w", c.format)
		if r.Code != 0 || r.Stderr != "" {
			t.Fatalf("%s: code %d err %v stderr %q", c.name, r.Code, r.Err, r.Stderr)
		}
		tooltest.Golden(t, "wal-verify/small."+c.name+".txt", r.Stdout)
	}
	// repair of a clean log: nothing to do, nothing written.
	for _, args := range [][]string{{"repair", dir, "--dry-run"}, {"repair", dir}, {"repair", dir, "--truncate-uncommitted-crc-tail"}} {
		r := run(t, args...)
		if r.Code != 0 || !strings.Contains(r.Stdout, "none: the log has no damaged record") {
			t.Fatalf("%v: code %d out %q", args, r.Code, r.Stdout)
		}
	}
	tooltest.RequireUnchanged(t, dir, before)
}

func finding(t *testing.T, r *Report, class, file string, off int64) Finding {
	t.Helper()
	for _, f := range r.Findings {
		if f.Class == class && f.File == file && f.Offset == off {
			return f
		}
	}
	t.Fatalf("no %q finding at %s:%d; findings:\n%s", class, file, off, dumpFindings(r))
	return Finding{}
}

func dumpFindings(r *Report) string {
	var b strings.Builder
	for _, f := range r.Findings {
		b.WriteString(f.String() + "\n")
	}
	return b.String()
}

func TestBitFlipMidLog(t *testing.T) {
	dir, seg := damaged(t, 64<<10, func(b []byte) []byte { b[offEntry50+20] ^= 0x10; return b })
	before := tooltest.HashDir(t, dir)
	rep, err := Verify(nil, filepath.Join(dir, "member", "wal"), filepath.Join(dir, "member", "snap"))
	if err != nil {
		t.Fatal(err)
	}
	f := finding(t, rep, ClassMidLog, seg, offEntry50)
	if f.Check != "crc" || f.Severity != SevError {
		t.Errorf("finding %v", f)
	}
	loss := finding(t, rep, ClassCommittedLoss, seg, offEntry50)
	if !strings.Contains(loss.Detail, "entries 50..113") {
		t.Errorf("loss finding %q", loss.Detail)
	}
	if rep.Damage == nil || rep.Damage.ValidAfter == 0 {
		t.Errorf("damage %+v: want valid records after it", rep.Damage)
	}
	r := run(t, "verify", dir)
	if r.Code != cli.ExitProblems || !strings.Contains(r.Stdout, "error mid-log corruption (crc) at "+seg+":5128") {
		t.Errorf("code %d out:\n%s", r.Code, r.Stdout)
	}
	tooltest.Golden(t, "wal-verify/bitflip.txt", tooltest.Normalize(r.Stdout, dir))
	for _, args := range [][]string{{"repair", dir}, {"repair", dir, "--truncate-uncommitted-crc-tail"}, {"repair", dir, "--dry-run"}} {
		r = run(t, args...)
		if r.Code != cli.ExitProblems || !strings.Contains(r.Stdout, "refuse") {
			t.Errorf("%v: code %d out %q", args, r.Code, r.Stdout)
		}
	}
	tooltest.RequireUnchanged(t, dir, before)
}

func TestZeroedSectorAtTail(t *testing.T) {
	// The log ends after entry 58 (10 KB), one of whose sectors never
	// reached the disk: etcd's torn-write rule.
	dir, seg := damaged(t, 64<<10, func(b []byte) []byte {
		clear(b[offState58:])
		clear(b[6144:6656])
		return b
	})
	orig, _ := os.ReadFile(seg)
	rep, err := Verify(nil, filepath.Join(dir, "member", "wal"), "")
	if err != nil {
		t.Fatal(err)
	}
	f := finding(t, rep, ClassTornTail, seg, offEntry58)
	if f.Severity != SevError {
		t.Errorf("finding %v", f)
	}
	for _, f := range rep.Findings {
		if f.Class == ClassCommittedLoss || f.Class == ClassMidLog {
			t.Errorf("unexpected finding %v", f)
		}
	}
	testRepair(t, dir, seg, orig, offEntry58, nil, 57)
}

func TestTruncatedTail(t *testing.T) {
	dir, seg := damaged(t, offEntry113+30, nil)
	orig, _ := os.ReadFile(seg)
	rep, err := Verify(nil, filepath.Join(dir, "member", "wal"), "")
	if err != nil {
		t.Fatal(err)
	}
	finding(t, rep, ClassTornTail, seg, offEntry113)
	r := run(t, "verify", "--wal-dir", filepath.Join(dir, "member", "wal"), "-w", "json")
	if r.Code != cli.ExitProblems {
		t.Fatalf("code %d", r.Code)
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(r.Stdout, "\n", 2)[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first["kind"] != "finding" || first["class"] != ClassTornTail || first["offset"] != float64(offEntry113) || first["file"] != seg {
		t.Errorf("first JSON line %v", first)
	}
	testRepair(t, dir, seg, orig, offEntry113, nil, 112)
}

func TestCRCTailBeyondCommit(t *testing.T) {
	// The last record (entry 113) fails its CRC and no HardState commits
	// it: truncating it loses nothing raft committed, but only with the flag.
	dir, seg := damaged(t, offState113, func(b []byte) []byte { b[offEntry113+30] ^= 1; return b })
	orig, _ := os.ReadFile(seg)
	rep, err := Verify(nil, filepath.Join(dir, "member", "wal"), "")
	if err != nil {
		t.Fatal(err)
	}
	finding(t, rep, ClassMidLog, seg, offEntry113)
	before := tooltest.HashDir(t, dir)
	r := run(t, "repair", dir)
	if r.Code != cli.ExitProblems || !strings.Contains(r.Stdout, "--truncate-uncommitted-crc-tail") {
		t.Fatalf("without the flag: code %d out %q", r.Code, r.Stdout)
	}
	tooltest.RequireUnchanged(t, dir, before)
	testRepair(t, dir, seg, orig, offEntry113, []string{"--truncate-uncommitted-crc-tail"}, 112)
}

// testRepair checks dry-run (writes nothing), repair (backup equal to the
// original, segment truncated at cut), and that verify is clean after it,
// with the log ending at entry lastIndex.
func testRepair(t *testing.T, dir, seg string, orig []byte, cut int64, extra []string, lastIndex uint64) {
	t.Helper()
	before := tooltest.HashDir(t, dir)
	r := run(t, append([]string{"repair", dir, "--dry-run"}, extra...)...)
	if r.Code != cli.ExitProblems || !strings.Contains(r.Stdout, "dry run: truncate-") || !strings.Contains(r.Stdout, "to "+strconv.FormatInt(cut, 10)+" bytes") {
		t.Fatalf("dry run: code %d out %q err %v", r.Code, r.Stdout, r.Err)
	}
	tooltest.RequireUnchanged(t, dir, before)

	r = run(t, append([]string{"repair", dir}, extra...)...)
	if r.Code != 0 || !strings.Contains(r.Stdout, "verify after repair: ok") {
		t.Fatalf("repair: code %d out %q err %v", r.Code, r.Stdout, r.Err)
	}
	backup, err := os.ReadFile(seg + ".broken")
	if err != nil || !bytes.Equal(backup, orig) {
		t.Fatalf("backup differs from the original (err %v)", err)
	}
	fi, err := os.Stat(seg)
	if err != nil || fi.Size() != cut {
		t.Fatalf("segment size %v (err %v), want %d", fi.Size(), err, cut)
	}
	cur, _ := os.ReadFile(seg)
	if !bytes.Equal(cur, orig[:cut]) {
		t.Fatal("segment is not the original cut at the damage")
	}
	rep, err := Verify(nil, filepath.Join(dir, "member", "wal"), "")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Problems() != 0 || rep.LastIndex != lastIndex {
		t.Fatalf("after repair: last index %d, findings:\n%s", rep.LastIndex, dumpFindings(rep))
	}
	// etckit's own reader agrees: the repaired log opens for writing.
	w, err := wal.Open(filepath.Join(dir, "member", "wal"), wal.Snapshot{}, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, st, ents, err := w.ReadAll()
	w.Close()
	if err != nil || len(ents) != int(lastIndex) || st.GetCommit() != lastIndex {
		t.Fatalf("ReadAll after repair: %d entries, commit %d, err %v", len(ents), st.GetCommit(), err)
	}
}

func TestTornTailFollowedByValidFrames(t *testing.T) {
	// A zeroed sector inside entry 58 with the rest of the log intact: the
	// zero-sector rule calls it torn, but valid records follow.
	dir, seg := damaged(t, 64<<10, func(b []byte) []byte { clear(b[6144:6656]); return b })
	rep, err := Verify(nil, filepath.Join(dir, "member", "wal"), "")
	if err != nil {
		t.Fatal(err)
	}
	finding(t, rep, ClassTornTail, seg, offEntry58)
	finding(t, rep, ClassCommittedLoss, seg, offEntry58)
	r := run(t, "repair", dir)
	if r.Code != cli.ExitProblems || !strings.Contains(r.Stdout, "refuse") {
		t.Fatalf("code %d out %q", r.Code, r.Stdout)
	}
	// A frame the scan cannot read past (length beyond the file) followed
	// by nothing: probeAfter finds nothing.
	if n, err := probeAfter(vfs.OS{}, seg, offEntry58); err != nil || n == 0 {
		t.Errorf("probeAfter = %d, %v; want the records after entry 58", n, err)
	}
}

func TestBrokenAndOrphanSnap(t *testing.T) {
	dir := small(t)
	snapDir := filepath.Join(dir, "member", "snap")
	vs := []uint64{0x2e1259d415f2a040}
	idx, term := uint64(50), uint64(2)
	p, err := snap.Save(vfs.OS{}, snapDir, &raftpb.Snapshot{Data: []byte("{}"), Metadata: &raftpb.SnapshotMetadata{
		ConfState: &raftpb.ConfState{Voters: vs}, Index: &idx, Term: &term}})
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, "verify", dir)
	if r.Code != 0 || !strings.Contains(r.Stdout, "info snapshot (snap-orphan) at "+p) {
		t.Fatalf("orphan: code %d out:\n%s", r.Code, r.Stdout)
	}
	b, _ := os.ReadFile(p)
	b[len(b)-3] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, rerr := snap.Read(vfs.OS{}, p)
	want := "error snapshot (snap-file) at " + p + ":"
	r = run(t, "verify", dir)
	if r.Code != cli.ExitProblems || !strings.Contains(r.Stdout, want) {
		t.Fatalf("broken: code %d (read error %v) out:\n%s", r.Code, rerr, r.Stdout)
	}
}

func TestSegmentSequenceGap(t *testing.T) {
	dir := t.TempDir()
	walDir := filepath.Join(dir, "wal")
	w, err := wal.Create(walDir, []byte("\x08\x01\x10\x02"), wal.Options{SegmentSize: 4096, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 40; i++ {
		term, idx := uint64(1), i
		e := &raftpb.Entry{Term: &term, Index: &idx, Data: bytes.Repeat([]byte{'x'}, 300)}
		c := i
		if err := w.Save(&raftpb.HardState{Term: &term, Commit: &c}, []*raftpb.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	names, _ := vfs.OS{}.ReadDirNames(walDir)
	var segs []string
	for _, n := range names {
		if strings.HasSuffix(n, ".wal") {
			segs = append(segs, n)
		}
	}
	if len(segs) < 3 {
		t.Fatalf("want >= 3 segments, have %v", segs)
	}
	r := run(t, "verify", "--wal-dir", walDir)
	if r.Code != 0 {
		t.Fatalf("clean multi-segment log: code %d out:\n%s", r.Code, r.Stdout)
	}
	if err := os.Remove(filepath.Join(walDir, segs[1])); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(nil, walDir, "")
	if err != nil {
		t.Fatal(err)
	}
	finding(t, rep, ClassInconsistency, filepath.Join(walDir, segs[2]), -1)
	r = run(t, "verify", "--wal-dir", walDir)
	if r.Code != cli.ExitProblems || !strings.Contains(r.Stdout, "segment-sequence") {
		t.Fatalf("code %d out:\n%s", r.Code, r.Stdout)
	}
}

func TestUsageAndIOErrors(t *testing.T) {
	for _, args := range [][]string{
		{"verify"},                             // no directory
		{"verify", "/nonexistent/etckit/data"}, // I/O error
		{"verify", "-w", "yaml", "/tmp"},       // bad format
		{"verify", "a", "b"},                   // too many arguments
		{"repair"},                             // no directory
		{"frobnicate"},                         // unknown subcommand
		{},                                     // no subcommand
	} {
		r := run(t, args...)
		if r.Code != cli.ExitUsage {
			t.Errorf("%v: code %d (err %v), want 2", args, r.Code, r.Err)
		}
	}
}

// TestRepairRefusesLockedSegment: a segment locked as etcd locks it (a
// running member) is never truncated, and the error names the holder.
func TestRepairRefusesLockedSegment(t *testing.T) {
	dir, seg := damaged(t, offEntry113+30, nil)
	f, err := vfs.OS{}.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.TryLock(); err != nil {
		t.Fatal(err)
	}
	before := tooltest.HashDir(t, dir)
	r := run(t, "repair", dir)
	if r.Code != cli.ExitUsage || !strings.Contains(r.Err.Error(), "is locked") || !strings.Contains(r.Err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("code %d err %v", r.Code, r.Err)
	}
	tooltest.RequireUnchanged(t, dir, before)
}

func TestHardStateGoesBack(t *testing.T) {
	walDir := filepath.Join(t.TempDir(), "wal")
	w, err := wal.Create(walDir, []byte("\x08\x01\x10\x02"), wal.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	u := func(v uint64) *uint64 { return &v }
	for i, hs := range []*raftpb.HardState{{Term: u(2), Commit: u(1)}, {Term: u(2), Commit: u(2)}, {Term: u(1), Commit: u(1)}} {
		e := &raftpb.Entry{Term: u(2), Index: u(uint64(i + 1))}
		if err := w.Save(hs, []*raftpb.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	rep, err := Verify(nil, walDir, "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range rep.Findings {
		if f.Check == "hardstate" {
			got = append(got, f.Detail)
		}
	}
	if strings.Join(got, "; ") != "term goes back from 2 to 1; commit goes back from 2 to 1" {
		t.Errorf("findings: %q", got)
	}
}
