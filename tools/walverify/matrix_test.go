package walverify

// The corruption matrix (issue 5): every kind of damage etcd's data
// directory meets on disk, applied to copies of the etcd 3.6.16 fixture
// (and to small multi-segment logs written with the wal package), each
// with the classification, offset and exit code it must get. No case may
// panic: the commands run under safeRun, which turns a panic into a test
// failure naming the case.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/tools/tooltest"
	"github.com/etckit/etckit/wal"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
)

// safeRun runs the wal command in-process; a panic fails the test.
func safeRun(t *testing.T, args ...string) (r tooltest.Result) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("etckit wal %v panicked: %v\n%s", args, p, debug.Stack())
		}
	}()
	return run(t, args...)
}

// safeVerify is Verify; a panic fails the test.
func safeVerify(t *testing.T, walDir, snapDir string) (rep *Report) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("Verify(%s) panicked: %v\n%s", walDir, p, debug.Stack())
		}
	}()
	rep, err := Verify(nil, walDir, snapDir)
	if err != nil {
		t.Fatalf("Verify(%s): %v", walDir, err)
	}
	return rep
}

// frame is one record of a segment as it lies in the file.
type frame struct {
	off, end int64 // the length word; the end of the padding
	data     int64 // offset of the record's data field (0 if none)
	typ      wal.RecordType
	crc      uint32
	payload  []byte // the record's data
	hasData  bool
}

// frames parses the frames of a segment up to the first zero length word
// (or a frame that does not parse) with plain reads.
func frames(t *testing.T, b []byte) []frame {
	t.Helper()
	var out []frame
	for off := int64(0); off+8 <= int64(len(b)); {
		lw := binary.LittleEndian.Uint64(b[off:])
		if lw == 0 {
			break
		}
		n, pad := int64(lw&^(0xff<<56)), int64(0)
		if lw&(1<<63) != 0 {
			pad = int64(lw>>56) & 7
		}
		end := off + 8 + n + pad
		if end > int64(len(b)) {
			break
		}
		f := frame{off: off, end: end}
		rec := b[off+8 : off+8+n]
		for pos := 0; pos < len(rec); {
			num, typ, l := protowire.ConsumeTag(rec[pos:])
			if l < 0 {
				t.Fatalf("frame at %d: bad tag", off)
			}
			pos += l
			switch {
			case typ == protowire.VarintType:
				v, l := protowire.ConsumeVarint(rec[pos:])
				if l < 0 {
					t.Fatalf("frame at %d: bad varint", off)
				}
				pos += l
				if num == 1 {
					f.typ = wal.RecordType(v)
				} else if num == 2 {
					f.crc = uint32(v)
				}
			case typ == protowire.BytesType && num == 3:
				v, l := protowire.ConsumeBytes(rec[pos:])
				if l < 0 {
					t.Fatalf("frame at %d: bad bytes", off)
				}
				f.data = off + 8 + int64(pos+l-len(v))
				f.payload, f.hasData = v, true
				pos += l
			default:
				t.Fatalf("frame at %d: unexpected field %d", off, num)
			}
		}
		out = append(out, f)
		off = end
	}
	return out
}

// encodeFrame is the frame of a record (etcd's encoder: type, crc, data).
func encodeFrame(typ wal.RecordType, crc uint32, data []byte, hasData bool) []byte {
	rec := protowire.AppendTag(nil, 1, protowire.VarintType)
	rec = protowire.AppendVarint(rec, uint64(typ))
	rec = protowire.AppendTag(rec, 2, protowire.VarintType)
	rec = protowire.AppendVarint(rec, uint64(crc))
	if hasData {
		rec = protowire.AppendTag(rec, 3, protowire.BytesType)
		rec = protowire.AppendBytes(rec, data)
	}
	pad := (8 - len(rec)%8) % 8
	lw := uint64(len(rec))
	if pad != 0 {
		lw |= uint64(0x80|pad) << 56
	}
	out := binary.LittleEndian.AppendUint64(nil, lw)
	out = append(out, rec...)
	return append(out, make([]byte, pad)...)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// reencode rewrites every segment of walDir with edit applied to the data
// of each record (edit gets the segment index) and the CRC chain
// recomputed, keeping each file's size: a log as etcd would have written
// it with those records.
func reencode(t *testing.T, walDir string, segs []string, edit func(seg int, typ wal.RecordType, data []byte) []byte) {
	t.Helper()
	var running uint32
	for i, name := range segs {
		p := filepath.Join(walDir, name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var out []byte
		for _, f := range frames(t, b) {
			if f.typ == wal.CRCType {
				out = append(out, encodeFrame(f.typ, running, nil, false)...)
				continue
			}
			d := f.payload
			if edit != nil {
				d = edit(i, f.typ, bytes.Clone(d))
			}
			running = crc32.Update(running, castagnoli, d)
			out = append(out, encodeFrame(f.typ, running, d, f.hasData)...)
		}
		if len(out) > len(b) {
			t.Fatalf("%s grew", name)
		}
		out = append(out, make([]byte, len(b)-len(out))...)
		if err := os.WriteFile(p, out, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// multiSegment writes a log of 40 entries of 1,500 bytes with a HardState
// each into 16 KiB segments (several segments, frames that span whole
// 512-byte sectors) and returns its directory and segment names.
func multiSegment(t *testing.T) (walDir string, segs []string) {
	t.Helper()
	walDir = filepath.Join(t.TempDir(), "wal")
	w, err := wal.Create(walDir, []byte("\x08\x01\x10\x02"), wal.Options{SegmentSize: 16 << 10, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 40; i++ {
		term, idx, c := uint64(1), i, i
		e := &raftpb.Entry{Term: &term, Index: &idx, Data: bytes.Repeat([]byte{byte('a' + i%26)}, 1500)}
		if err := w.Save(&raftpb.HardState{Term: &term, Commit: &c}, []*raftpb.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	names, err := filepath.Glob(filepath.Join(walDir, "*.wal"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		segs = append(segs, filepath.Base(n))
	}
	if len(segs) < 4 {
		t.Fatalf("want >= 4 segments, have %v", segs)
	}
	return walDir, segs
}

// want is an expected finding.
type want struct {
	class, check string
	file         string // base name of the segment
	off          int64
}

// check runs Verify and the verify command on walDir and compares.
func check(t *testing.T, walDir string, code int, wants []want, forbid ...string) *Report {
	t.Helper()
	rep := safeVerify(t, walDir, "")
	for _, w := range wants {
		ok := false
		for _, f := range rep.Findings {
			if f.Class == w.class && f.Check == w.check && filepath.Base(f.File) == w.file && f.Offset == w.off && f.Problem() {
				ok = true
			}
		}
		if !ok {
			t.Errorf("no %s (%s) finding at %s:%d; findings:\n%s", w.class, w.check, w.file, w.off, dumpFindings(rep))
		}
	}
	for _, f := range rep.Findings {
		for _, c := range forbid {
			if f.Class == c && f.Problem() {
				t.Errorf("unexpected finding %v", f)
			}
		}
	}
	r := safeRun(t, "verify", "--wal-dir", walDir)
	if r.Code != code {
		t.Errorf("wal verify: exit %d, want %d (err %v)\n%s", r.Code, code, r.Err, r.Stdout)
	}
	for _, w := range wants {
		loc := fmt.Sprintf("%s (%s) at %s:%d", w.class, w.check, filepath.Join(walDir, w.file), w.off)
		if w.off < 0 {
			loc = fmt.Sprintf("%s (%s) at %s: ", w.class, w.check, filepath.Join(walDir, w.file))
		}
		if !strings.Contains(r.Stdout, loc) {
			t.Errorf("wal verify does not print %q:\n%s", loc, r.Stdout)
		}
	}
	return rep
}

// repairs checks that wal repair fixes the damage and that verify is then
// clean with the log ending at entry last.
func repairs(t *testing.T, dataDir string, last uint64, extra ...string) {
	t.Helper()
	r := safeRun(t, append([]string{"repair", dataDir}, extra...)...)
	if r.Code != cli.ExitOK || !strings.Contains(r.Stdout, "verify after repair: ok") {
		t.Fatalf("repair: exit %d (err %v)\n%s", r.Code, r.Err, r.Stdout)
	}
	walDir := filepath.Join(dataDir, "member", "wal")
	rep := check(t, walDir, cli.ExitOK, nil)
	if rep.Problems() != 0 || rep.LastIndex != last {
		t.Errorf("after repair: last index %d (want %d), findings:\n%s", rep.LastIndex, last, dumpFindings(rep))
	}
}

// refuses checks that wal repair refuses and writes nothing.
func refuses(t *testing.T, dataDir string) {
	t.Helper()
	before := tooltest.HashDir(t, dataDir)
	r := safeRun(t, "repair", dataDir)
	if r.Code != cli.ExitProblems || !strings.Contains(r.Stdout, "refuse") {
		t.Errorf("repair: exit %d (err %v), want a refusal\n%s", r.Code, r.Err, r.Stdout)
	}
	tooltest.RequireUnchanged(t, dataDir, before)
}

// smallFrames returns the frames of the small fixture's segment.
func smallFrames(t *testing.T) []frame {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(small(t), "member", "wal", seg0))
	if err != nil {
		t.Fatal(err)
	}
	fs := frames(t, b)
	if len(fs) != 230 || fs[len(fs)-1].off != offState113 || fs[len(fs)-1].end != dataEnd {
		t.Fatalf("small fixture: %d frames, last at %d..%d", len(fs), fs[len(fs)-1].off, fs[len(fs)-1].end)
	}
	return fs
}

// TestMatrixBitFlip flips one bit in the middle of one record of each kind
// (the CRC record has no data: its stored CRC is flipped). A CRC failure
// without a zeroed sector is mid-log corruption by etcd's rule, also for
// the last record; the committed-loss finding names what truncating there
// would drop.
func TestMatrixBitFlip(t *testing.T) {
	fs := smallFrames(t)
	at := func(off int64) frame {
		for _, f := range fs {
			if f.off == off {
				return f
			}
		}
		t.Fatalf("no frame at %d", off)
		return frame{}
	}
	for _, c := range []struct {
		name     string
		off      int64 // the frame damaged
		loss     bool  // committed entries follow the damage
		repair   string
		wantAt   int64 // where the damage is reported (the frame, unless the chain says otherwise)
		lastGood uint64
	}{
		// The first segment's CRC record seeds the chain (etcd adopts
		// its value): the mismatch shows at the next record, the
		// metadata at 16.
		{name: "crc", off: 0, loss: true, wantAt: 16},
		{name: "metadata", off: 16, loss: true},
		{name: "snapshot", off: 56, loss: true},
		{name: "entry-first", off: 80, loss: true},
		{name: "entry-mid", off: offEntry50, loss: true},
		{name: "state-first", off: 208, loss: true},
		{name: "state-mid", off: offState57, loss: true},
		{name: "entry-last", off: offEntry113, loss: true},
		{name: "state-last", off: offState113, loss: false, repair: "--truncate-uncommitted-crc-tail", lastGood: 113},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := at(c.off)
			pos := f.off + 8 + 3 // the CRC varint of a record without data
			if f.hasData {
				pos = f.data + int64(len(f.payload))/2
			}
			t.Logf("%s record at %d: flip bit 4 of byte %d", f.typ, f.off, pos)
			dir, _ := damaged(t, 64<<10, func(b []byte) []byte { b[pos] ^= 0x10; return b })
			wantAt := c.off
			if c.wantAt != 0 {
				wantAt = c.wantAt
			}
			wants := []want{{ClassMidLog, "crc", seg0, wantAt}}
			forbid := []string{ClassTornTail}
			if c.loss {
				wants = append(wants, want{ClassCommittedLoss, "commit", seg0, wantAt})
			} else {
				forbid = append(forbid, ClassCommittedLoss)
			}
			check(t, filepath.Join(dir, "member", "wal"), cli.ExitProblems, wants, forbid...)
			if c.repair == "" {
				refuses(t, dir)
				return
			}
			repairs(t, dir, c.lastGood, c.repair)
		})
	}
}

// TestMatrixTruncation cuts the file at every 8-byte boundary inside the
// last record (the final HardState, and entry 113 when it is the last
// record): a frame cut short in the newest segment is a torn tail at the
// frame, which wal repair truncates; a cut at a frame boundary is a clean,
// shorter log.
func TestMatrixTruncation(t *testing.T) {
	for _, c := range []struct {
		name       string
		start, end int64
		last       uint64 // last entry after the repair
	}{
		{"state-113", offState113, dataEnd, 113},
		{"entry-113", offEntry113, offState113, 112},
	} {
		for cut := c.start; cut < c.end; cut += 8 {
			t.Run(fmt.Sprintf("%s/at=%d", c.name, cut), func(t *testing.T) {
				dir, _ := damaged(t, cut, nil)
				walDir := filepath.Join(dir, "member", "wal")
				if cut == c.start {
					// The file ends at a frame boundary: nothing is torn.
					rep := check(t, walDir, cli.ExitOK, nil, ClassTornTail, ClassMidLog)
					if c.name == "state-113" && rep.LastIndex != 113 {
						t.Errorf("last index %d", rep.LastIndex)
					}
					return
				}
				check(t, walDir, cli.ExitProblems, []want{{ClassTornTail, "frame", seg0, c.start}}, ClassMidLog, ClassCommittedLoss)
				repairs(t, dir, c.last)
			})
		}
	}
}

// TestMatrixZeroedSectors zeroes whole 512-byte sectors. In the newest
// segment a frame with an all-zero sector piece is a torn tail (etcd's
// rule); a zero length word ends the segment's data. In an older segment
// the same damage is mid-log corruption.
func TestMatrixZeroedSectors(t *testing.T) {
	fs := smallFrames(t)
	// first frame overlapping [lo, hi)
	overlapping := func(lo int64) frame {
		for _, f := range fs {
			if f.end > lo {
				return f
			}
		}
		t.Fatalf("no frame after %d", lo)
		return frame{}
	}
	for _, c := range []struct {
		name     string
		sector   int64 // sector number
		dropTail bool  // also zero everything after entry 58 (the log ends there)
		code     int
		check    string // "frame": the frame does not decode; "crc": it fails the CRC check
		loss     bool
		repair   bool
		last     uint64
	}{
		// The segment's first length word is zero: etcd reads an empty
		// segment; verify says so at offset 0 and repair refuses.
		{name: "sector-0", sector: 0, code: cli.ExitProblems},
		// Cuts the HardState at 496..528 after its length word: the
		// frame does not decode; 208 valid frames follow, their
		// HardStates commit entries the truncation would drop.
		{name: "sector-1", sector: 1, code: cli.ExitProblems, check: "frame", loss: true},
		{name: "inside-entry-58", sector: 12, code: cli.ExitProblems, check: "crc", loss: true},
		{name: "inside-entry-58-log-ends", sector: 12, dropTail: true, code: cli.ExitProblems, check: "crc", repair: true, last: 57},
		// The sector holding the end of the data: entries 111..113 and
		// the last HardStates; nothing committed is lost.
		{name: "last-data-sector", sector: dataEnd / 512, code: cli.ExitProblems, check: "crc", repair: true, last: 110},
		{name: "preallocated-tail", sector: 64, code: cli.ExitOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			lo, hi := c.sector*512, c.sector*512+512
			dir, _ := damaged(t, 64<<10, func(b []byte) []byte {
				if c.dropTail {
					clear(b[offState58:])
				}
				clear(b[lo:hi])
				return b
			})
			walDir := filepath.Join(dir, "member", "wal")
			if c.code == cli.ExitOK {
				check(t, walDir, cli.ExitOK, nil, ClassTornTail, ClassMidLog, ClassCommittedLoss)
				return
			}
			if c.check == "" {
				check(t, walDir, c.code, []want{{ClassInconsistency, "segment-header", seg0, 0}})
				refuses(t, dir)
				return
			}
			f := overlapping(lo)
			t.Logf("sector [%d,%d) hits the %s record at %d..%d", lo, hi, f.typ, f.off, f.end)
			wants := []want{{ClassTornTail, c.check, seg0, f.off}}
			forbid := []string{ClassMidLog}
			if c.loss {
				wants = append(wants, want{ClassCommittedLoss, "commit", seg0, f.off})
			} else {
				forbid = append(forbid, ClassCommittedLoss)
			}
			check(t, walDir, c.code, wants, forbid...)
			if c.repair {
				repairs(t, dir, c.last)
			} else if c.loss {
				refuses(t, dir)
			}
		})
	}
}

// TestMatrixZeroedSectorsMultiSegment: the torn rule applies to the newest
// segment only.
func TestMatrixZeroedSectorsMultiSegment(t *testing.T) {
	for _, c := range []struct {
		name  string
		seg   func(segs []string) int
		class string
	}{
		{"first-segment", func([]string) int { return 0 }, ClassMidLog},
		{"newest-segment", func(s []string) int { return len(s) - 1 }, ClassTornTail},
	} {
		t.Run(c.name, func(t *testing.T) {
			walDir, segs := multiSegment(t)
			name := segs[c.seg(segs)]
			p := filepath.Join(walDir, name)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			// The first entry frame that holds a whole sector.
			var hit frame
			var lo int64 = -1
			for _, f := range frames(t, b) {
				if s := (f.data + 511) / 512 * 512; f.typ == wal.EntryType && f.hasData && s+512 <= f.data+int64(len(f.payload)) {
					hit, lo = f, s
					break
				}
			}
			if lo < 0 {
				t.Fatalf("no entry frame spans a sector in %s", name)
			}
			clear(b[lo : lo+512])
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: sector [%d,%d) inside the entry at %d", name, lo, lo+512, hit.off)
			forbid := ClassTornTail
			if c.class == ClassTornTail {
				forbid = ClassMidLog
			}
			check(t, walDir, cli.ExitProblems, []want{{c.class, "crc", name, hit.off}, {ClassCommittedLoss, "commit", name, hit.off}}, forbid)
		})
	}
}

// TestMatrixLaterCRCRecord flips a bit of the stored CRC of the second
// segment's CRC record: a reader with a running CRC checks it, so the
// mismatch is mid-log corruption at offset 0 of that segment.
func TestMatrixLaterCRCRecord(t *testing.T) {
	walDir, segs := multiSegment(t)
	p := filepath.Join(walDir, segs[1])
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if f := frames(t, b)[0]; f.typ != wal.CRCType || f.crc == 0 {
		t.Fatalf("first record of %s: %s crc %#x", segs[1], f.typ, f.crc)
	}
	b[8+3] ^= 0x10 // first byte of the CRC varint
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	check(t, walDir, cli.ExitProblems, []want{{ClassMidLog, "crc", segs[1], 0}, {ClassCommittedLoss, "commit", segs[1], 0}}, ClassTornTail)
}

// TestMatrixMissingSegment removes a middle segment: the sequence gap is
// an error on the segment after it (etcd refuses to open such a WAL).
func TestMatrixMissingSegment(t *testing.T) {
	walDir, segs := multiSegment(t)
	check(t, walDir, cli.ExitOK, nil, ClassTornTail, ClassMidLog, ClassCommittedLoss, ClassInconsistency)
	if err := os.Remove(filepath.Join(walDir, segs[1])); err != nil {
		t.Fatal(err)
	}
	check(t, walDir, cli.ExitProblems, []want{{ClassInconsistency, "segment-sequence", segs[2], -1}})
}

// TestMatrixForeignMetadata gives the second segment metadata of another
// cluster, with the CRC chain recomputed so that only the metadata
// differs: a metadata conflict (etcd's ErrMetadataConflict) at its record.
func TestMatrixForeignMetadata(t *testing.T) {
	walDir, segs := multiSegment(t)
	orig := map[string][]byte{}
	for _, s := range segs {
		orig[s], _ = os.ReadFile(filepath.Join(walDir, s))
	}
	// The re-encoder reproduces etcd's bytes when nothing changes.
	reencode(t, walDir, segs, nil)
	for _, s := range segs {
		if b, _ := os.ReadFile(filepath.Join(walDir, s)); !bytes.Equal(b, orig[s]) {
			t.Fatalf("re-encoding %s changed it", s)
		}
	}
	reencode(t, walDir, segs, func(seg int, typ wal.RecordType, data []byte) []byte {
		if seg == 1 && typ == wal.MetadataType {
			return []byte("\x08\x01\x10\x03") // cluster 3 instead of 2
		}
		return data
	})
	b, _ := os.ReadFile(filepath.Join(walDir, segs[1]))
	meta := frames(t, b)[1]
	if meta.typ != wal.MetadataType {
		t.Fatalf("second record of %s is %s", segs[1], meta.typ)
	}
	check(t, walDir, cli.ExitProblems, []want{{ClassInconsistency, "metadata", segs[1], meta.off}}, ClassMidLog, ClassTornTail)
}
