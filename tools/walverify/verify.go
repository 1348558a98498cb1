// Package walverify is `etckit wal verify` and `etckit wal repair`.
//
// # verify
//
// Verify streams every record of every segment (wal.Scanner, continuing
// past CRC errors) and checks:
//
//   - segment names parse, sequence numbers increase by one, and each
//     segment's start index follows the last index of the one before;
//   - every segment starts with a CRC record and then a metadata record, and
//     all metadata records are equal;
//   - the CRC chain (each mismatch, cut-short or undecodable record is a
//     finding at its segment and byte offset);
//   - HardState: term and commit never decrease;
//   - entry indexes are contiguous (raft's overwrite rule allowed, but an
//     overwrite of an entry a HardState had already committed is a finding);
//   - snapshot records against the .snap files in member/snap: the newest
//     committed snapshot record must have its file, files must load, a file
//     without a record is an orphan (info);
//   - after a torn record, whether valid-looking frames follow (then the
//     zero-sector heuristic may have judged mid-log damage as a torn tail).
//
// Each finding has a class: "torn tail" (a crash during the last unsynced
// write; wal repair fixes it), "mid-log corruption" (never repaired
// silently), "loss of committed entries" (truncating at the damage would drop
// entries a HardState says were committed), "inconsistency" or
// "snapshot". Severities: error and warning are problems (exit 1), info is
// not.
//
// # Output
//
// simple: one line per finding, "<severity> <class> (<check>) at
// <file>:<offset>: <detail>" (no ":<offset>" for whole-file findings), then
// "name: value" summary lines ending with "result: ok" or "result: N
// problems". table: the same as two tables. json: one object per line,
// {"kind":"finding","severity","class","check","file","offset" (-1 for a
// whole file),"detail"} per finding, then {"kind":"summary","wal_dir",
// "snap_dir","segments","records","entries","first_index","last_index",
// "term","vote","commit","node_id","cluster_id","snapshot_records",
// "snap_files","problems","result"}. repair prints {"kind":"plan","action"
// (none|truncate-torn-tail|truncate-crc-tail|refuse),"dry_run","segment",
// "size","truncate_at","backup","reason"} and, after repairing,
// {"kind":"repaired","result","verify"}.
//
// Exit codes: verify 0 clean (info findings only), 1 problems, 2 usage or
// I/O; repair 0 nothing to do or repaired and clean, 1 refused or (with
// --dry-run) repairable damage present, 2 usage, I/O or lock errors.
//
// # repair
//
// Repair only ever truncates the newest segment after writing a full backup
// next to it (<segment>.broken). By default it fixes a torn tail, through
// wal.Repair (etcd's own rule). With --truncate-uncommitted-crc-tail it also
// truncates a tail whose records fail the CRC check, when the damage is in
// the newest segment, nothing valid follows it, and every entry from the
// truncation point on is beyond the last commit index any HardState
// recorded (so raft never considered those entries committed). Everything
// else is refused with the reason. --dry-run prints the plan and writes
// nothing.
package walverify

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/vfs"
	"github.com/etckit/etckit/wal"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// Finding classes.
const (
	ClassTornTail      = "torn tail"
	ClassMidLog        = "mid-log corruption"
	ClassCommittedLoss = "loss of committed entries"
	ClassInconsistency = "inconsistency"
	ClassSnapshot      = "snapshot"
)

// Severities.
const (
	SevError   = "error"
	SevWarning = "warning"
	SevInfo    = "info"
)

// Finding is one result of Verify.
type Finding struct {
	Severity string `json:"severity"`
	Class    string `json:"class"`
	Check    string `json:"check"`
	File     string `json:"file"`
	Offset   int64  `json:"offset"` // -1 when the finding is about a whole file
	Detail   string `json:"detail"`
}

// Problem reports whether f counts as a problem (exit code 1).
func (f Finding) Problem() bool { return f.Severity != SevInfo }

func (f Finding) String() string {
	loc := f.File
	if f.Offset >= 0 {
		loc = fmt.Sprintf("%s:%d", f.File, f.Offset)
	}
	return fmt.Sprintf("%s %s (%s) at %s: %s", f.Severity, f.Class, f.Check, loc, f.Detail)
}

// Damage is the first point where the log cannot be trusted.
type Damage struct {
	Segment string // base name
	Path    string
	Offset  int64 // offset of the damaged frame
	Kind    corrupt.Kind
	Reason  string
	// LastSegment reports whether the damage is in the newest segment.
	LastSegment bool
	// LastGoodIndex is the index of the last entry before the damage.
	LastGoodIndex uint64
	// ValidAfter counts records after the damaged one that decoded (for
	// a CRC failure, records the scan read past it; for a frame the
	// scan stopped at, valid-looking frames found by probing the bytes).
	ValidAfter int
	// CommitAfter is the highest HardState commit read after the damage
	// (from records whose CRC could not be checked), 0 if none.
	CommitAfter uint64
}

// Report is the result of Verify.
type Report struct {
	WALDir, SnapDir string
	Findings        []Finding
	Segments        []string
	Records         int
	Entries         int
	FirstIndex      uint64 // first entry index seen (0: none)
	LastIndex       uint64 // last entry index after the overwrite rule
	Term, Vote      uint64 // last HardState
	Commit          uint64 // last HardState commit
	MaxCommit       uint64 // highest commit of any HardState
	SnapshotRecords []wal.Snapshot
	SnapFiles       []snap.Point
	NodeID          uint64
	ClusterID       uint64
	// Damage is the first damage found, nil when the CRC chain is intact
	// and every frame decodes.
	Damage *Damage
}

// Problems counts the findings that are problems.
func (r *Report) Problems() int {
	n := 0
	for _, f := range r.Findings {
		if f.Problem() {
			n++
		}
	}
	return n
}

type verifier struct {
	fsys     vfs.FS
	r        *Report
	progress func(segment string, offset int64)
}

func (v *verifier) add(sev, class, check, file string, off int64, format string, args ...any) {
	v.r.Findings = append(v.r.Findings, Finding{Severity: sev, Class: class, Check: check, File: file, Offset: off, Detail: fmt.Sprintf(format, args...)})
}

func classOf(k corrupt.Kind) string {
	if k == corrupt.TornTail {
		return ClassTornTail
	}
	return ClassMidLog
}

// Verify checks the WAL in walDir and, when snapDir is not "", the .snap
// files against the WAL's snapshot records. It only reads. The error is
// non-nil only for I/O errors and a missing WAL; damage is in the report.
func Verify(fsys vfs.FS, walDir, snapDir string) (*Report, error) {
	return VerifyWithProgress(fsys, walDir, snapDir, nil)
}

// VerifyWithProgress is Verify calling progress (when not nil) with the
// position of each record it reads.
func VerifyWithProgress(fsys vfs.FS, walDir, snapDir string, progress func(segment string, offset int64)) (*Report, error) {
	if fsys == nil {
		fsys = vfs.OS{}
	}
	r := &Report{WALDir: walDir, SnapDir: snapDir}
	v := &verifier{fsys: fsys, r: r, progress: progress}
	if err := v.checkNames(); err != nil {
		return nil, err
	}
	if len(r.Segments) == 0 {
		return nil, fmt.Errorf("wal verify: %w in %s", wal.ErrFileNotFound, walDir)
	}
	if err := v.scan(); err != nil {
		return nil, err
	}
	if snapDir != "" {
		v.checkSnapshots()
	}
	return r, nil
}

func (v *verifier) checkNames() error {
	names, err := v.fsys.ReadDirNames(v.r.WALDir)
	if err != nil {
		return fmt.Errorf("wal verify: %w", err)
	}
	var prevSeq uint64
	for _, n := range names {
		p := filepath.Join(v.r.WALDir, n)
		seq, _, err := wal.ParseSegmentName(n)
		switch {
		case err == nil:
		case strings.HasSuffix(n, ".tmp"):
			continue
		case strings.HasSuffix(n, ".wal.broken"):
			v.add(SevInfo, ClassInconsistency, "segment-name", p, -1, "backup of a repaired segment (etcd and etckit ignore it)")
			continue
		case strings.HasSuffix(n, ".wal"):
			v.add(SevWarning, ClassInconsistency, "segment-name", p, -1, "name does not parse as %%016x-%%016x.wal; etcd ignores this file")
			continue
		default:
			continue
		}
		if len(v.r.Segments) > 0 && seq != prevSeq+1 {
			v.add(SevError, ClassInconsistency, "segment-sequence", p, -1, "sequence number %d follows %d (a segment is missing; etcd refuses to open the WAL)", seq, prevSeq)
		}
		prevSeq = seq
		v.r.Segments = append(v.r.Segments, n)
	}
	return nil
}

func (v *verifier) scan() error {
	r := v.r
	sc, err := wal.NewScanner(r.WALDir, wal.ScanOptions{FS: v.fsys, ContinueOnCRCError: true})
	if err != nil {
		return fmt.Errorf("wal verify: %w", err)
	}
	defer sc.Close()
	var (
		metadata     []byte
		curSeg       string
		segRecords   int
		seen         = map[string]bool{}
		last         uint64 // last entry index (overwrite rule applied)
		haveEntry    bool
		lastIndexW   uint64 // etcd's "last index": entry index, raised by snapshot records
		desync       bool   // after a CRC failure, until the next CRC record
		desyncCount  int
		term, commit uint64
		haveState    bool
		skipGap      bool // the entry before was too damaged to know its index
	)
	path := func(seg string) string { return filepath.Join(r.WALDir, seg) }
	for sc.Next() {
		pos, rec := sc.Position(), sc.Record()
		r.Records++
		if v.progress != nil {
			v.progress(pos.Segment, pos.Offset)
		}
		if pos.Segment != curSeg {
			if desyncCount > 0 {
				v.add(SevInfo, ClassMidLog, "crc", path(curSeg), -1, "%d more records after the first CRC failure could not be checked (the chain is broken)", desyncCount)
			}
			curSeg, segRecords, desyncCount = pos.Segment, 0, 0
			seen[curSeg] = true
			if _, idx, err := wal.ParseSegmentName(curSeg); err == nil && haveEntry && curSeg != r.Segments[0] && idx != lastIndexW+1 {
				v.add(SevWarning, ClassInconsistency, "segment-start-index", path(curSeg), -1, "segment name says its first index is %d, but the previous segment ends at index %d", idx, lastIndexW)
			}
		}
		segRecords++
		if segRecords == 1 && rec.Type != wal.CRCType {
			v.add(SevError, ClassInconsistency, "segment-header", path(curSeg), pos.Offset, "segment starts with a %s record, not a CRC record", rec.Type)
		}
		if segRecords == 2 && rec.Type != wal.MetadataType {
			v.add(SevError, ClassInconsistency, "segment-header", path(curSeg), pos.Offset, "second record is a %s record, not metadata", rec.Type)
		}
		damagedHere := false
		if rerr := sc.RecordErr(); rerr != nil {
			c := corrupt.As(rerr)
			if r.Damage != nil {
				r.Damage.ValidAfter++ // decodable, though its CRC cannot be checked
			}
			if desync {
				desyncCount++
			} else if c != nil {
				desync, damagedHere = true, true
				v.add(SevError, classOf(c.Kind), "crc", c.Path, c.Offset, "%s", c.Reason)
				if r.Damage == nil {
					r.Damage = &Damage{Segment: pos.Segment, Path: c.Path, Offset: c.Offset, Kind: c.Kind, Reason: c.Reason,
						LastSegment: pos.Segment == r.Segments[len(r.Segments)-1], LastGoodIndex: last}
				}
			}
		} else if r.Damage != nil {
			r.Damage.ValidAfter++
		}
		if rec.Type == wal.CRCType {
			desync = false
		}
		if damagedHere {
			// The record's data is known to be wrong: no further checks on
			// it, but keep the index sequence going past it.
			if e, err := wal.UnmarshalEntry(rec.Data); rec.Type == wal.EntryType && err == nil {
				last, haveEntry = e.GetIndex(), true
			} else if rec.Type == wal.EntryType {
				skipGap = true
			}
			continue
		}
		switch rec.Type {
		case wal.MetadataType:
			if metadata == nil {
				metadata = append([]byte{}, rec.Data...)
				var m pb.Metadata
				if err := proto.Unmarshal(rec.Data, &m); err == nil {
					r.NodeID, r.ClusterID = m.GetNodeID(), m.GetClusterID()
				} else {
					v.add(SevError, ClassInconsistency, "metadata", path(curSeg), pos.Offset, "undecodable metadata: %v", err)
				}
			} else if string(metadata) != string(rec.Data) {
				v.add(SevError, ClassInconsistency, "metadata", path(curSeg), pos.Offset, "metadata differs from the first segment's (%v)", wal.ErrMetadataConflict)
			}
		case wal.StateType:
			st, err := wal.UnmarshalHardState(rec.Data)
			if err != nil {
				v.add(SevError, ClassMidLog, "hardstate", path(curSeg), pos.Offset, "undecodable HardState: %v", err)
				continue
			}
			if r.Damage != nil {
				r.Damage.CommitAfter = max(r.Damage.CommitAfter, st.GetCommit())
			}
			if haveState && st.GetTerm() < term {
				v.add(SevError, ClassInconsistency, "hardstate", path(curSeg), pos.Offset, "term goes back from %d to %d", term, st.GetTerm())
			}
			if haveState && st.GetCommit() < commit {
				v.add(SevError, ClassInconsistency, "hardstate", path(curSeg), pos.Offset, "commit goes back from %d to %d", commit, st.GetCommit())
			}
			haveState = true
			term, commit = st.GetTerm(), st.GetCommit()
			r.Term, r.Vote, r.Commit = st.GetTerm(), st.GetVote(), st.GetCommit()
			r.MaxCommit = max(r.MaxCommit, commit)
		case wal.SnapshotType:
			sn, err := wal.UnmarshalSnapshot(rec.Data)
			if err != nil {
				v.add(SevError, ClassMidLog, "snapshot-record", path(curSeg), pos.Offset, "undecodable snapshot record: %v", err)
				continue
			}
			r.SnapshotRecords = append(r.SnapshotRecords, sn)
			lastIndexW = max(lastIndexW, sn.Index)
			if !haveEntry || sn.Index > last {
				// Entries restart after a snapshot.
				last, haveEntry = sn.Index, true
			}
		case wal.EntryType:
			e, err := wal.UnmarshalEntry(rec.Data)
			if err != nil {
				v.add(SevError, ClassMidLog, "entry", path(curSeg), pos.Offset, "undecodable entry: %v", err)
				continue
			}
			r.Entries++
			i := e.GetIndex()
			lastIndexW = i
			if r.FirstIndex == 0 {
				r.FirstIndex = i
			}
			switch {
			case !haveEntry:
			case i > last+1 && !skipGap:
				v.add(SevError, ClassInconsistency, "index", path(curSeg), pos.Offset, "entry %d follows entry %d: entries %d..%d are missing", i, last, last+1, i-1)
			case i <= last && i <= commit:
				v.add(SevError, ClassInconsistency, "index", path(curSeg), pos.Offset, "entry %d overwrites an entry already committed (commit %d)", i, commit)
			}
			last, haveEntry, skipGap = i, true, false
		case wal.CRCType:
		default:
			v.add(SevError, ClassMidLog, "record-type", path(curSeg), pos.Offset, "unknown record type %d", rec.Type)
		}
	}
	if desyncCount > 0 {
		v.add(SevInfo, ClassMidLog, "crc", path(curSeg), -1, "%d more records after the first CRC failure could not be checked (the chain is broken)", desyncCount)
	}
	r.LastIndex = last
	if err := sc.Err(); err != nil {
		c := corrupt.As(err)
		if c == nil {
			return fmt.Errorf("wal verify: %w", err)
		}
		pos := sc.Position()
		v.add(SevError, classOf(c.Kind), "frame", c.Path, c.Offset, "%s", c.Reason)
		if r.Damage == nil {
			r.Damage = &Damage{Segment: pos.Segment, Path: c.Path, Offset: c.Offset, Kind: c.Kind, Reason: c.Reason,
				LastSegment: pos.Segment == r.Segments[len(r.Segments)-1], LastGoodIndex: last}
		}
		if after, commit, err := wal.ProbeAfter(v.fsys, c.Path, c.Offset); err == nil && after > 0 {
			if r.Damage.Offset == c.Offset {
				r.Damage.ValidAfter += after
				r.Damage.CommitAfter = max(r.Damage.CommitAfter, commit)
			}
			v.add(SevWarning, classOf(c.Kind), "data-after-damage", c.Path, c.Offset,
				"%d valid-looking records follow the damaged record: %s", after, map[bool]string{
					true:  "the zero-sector heuristic may have judged mid-log corruption as a torn tail; do not truncate without looking",
					false: "truncating here would drop them"}[c.Kind == corrupt.TornTail])
		}
	}
	for _, s := range r.Segments {
		if !seen[s] && (r.Damage == nil || s < r.Damage.Segment) {
			v.add(SevError, ClassInconsistency, "segment-header", filepath.Join(r.WALDir, s), 0, "segment holds no records (starts with a zero length word)")
		}
	}
	if d := r.Damage; d != nil {
		committed := max(r.MaxCommit, d.CommitAfter)
		if committed > d.LastGoodIndex {
			v.add(SevError, ClassCommittedLoss, "commit", d.Path, d.Offset,
				"the last valid entry before the damage is %d but a HardState commits %d: truncating here would lose committed entries %d..%d",
				d.LastGoodIndex, committed, d.LastGoodIndex+1, committed)
		}
	} else if haveState && commit > last && r.Entries > 0 {
		v.add(SevError, ClassCommittedLoss, "commit", filepath.Join(r.WALDir, r.Segments[len(r.Segments)-1]), -1,
			"HardState commits %d but the log ends at entry %d", commit, last)
	}
	return nil
}

// probeAfter counts the frames after the frame at off that decode as
// records (wal.ProbeAfter).
func probeAfter(fsys vfs.FS, path string, off int64) (int, error) {
	n, _, err := wal.ProbeAfter(fsys, path, off)
	return n, err
}

func (v *verifier) checkSnapshots() {
	r := v.r
	names, err := v.fsys.ReadDirNames(r.SnapDir)
	if err != nil {
		v.add(SevWarning, ClassSnapshot, "snap-dir", r.SnapDir, -1, "cannot list the snapshot directory: %v", err)
		return
	}
	files := map[snap.Point]bool{}
	for _, n := range names {
		p, ok := snap.ParseFileName(n)
		if !ok {
			continue
		}
		path := filepath.Join(r.SnapDir, n)
		sn, err := snap.Read(v.fsys, path)
		if err != nil {
			off := int64(-1)
			if c := corrupt.As(err); c != nil {
				off = c.Offset
			}
			v.add(SevError, ClassSnapshot, "snap-file", path, off, "does not load: %v (etcd renames it to .broken at boot)", err)
			continue
		}
		if got := snap.PointOf(sn); got != p {
			v.add(SevError, ClassSnapshot, "snap-file", path, -1, "metadata says term %d index %d, the name says term %d index %d", got.Term, got.Index, p.Term, p.Index)
		}
		files[p] = true
		r.SnapFiles = append(r.SnapFiles, p)
	}
	records := map[snap.Point]bool{}
	var newest *wal.Snapshot
	for i, s := range r.SnapshotRecords {
		records[snap.Point{Term: s.Term, Index: s.Index}] = true
		if s.Index > 0 && s.Index <= r.MaxCommit && (newest == nil || s.Index > newest.Index) {
			newest = &r.SnapshotRecords[i]
		}
	}
	for _, s := range r.SnapshotRecords {
		p := snap.Point{Term: s.Term, Index: s.Index}
		if s.Index == 0 || files[p] {
			continue
		}
		if newest != nil && s.Index == newest.Index {
			v.add(SevWarning, ClassSnapshot, "snap-missing", filepath.Join(r.SnapDir, p.FileName()), -1,
				"the newest committed WAL snapshot record (term %d index %d) has no .snap file; etcd will start from an older snapshot", s.Term, s.Index)
		} else if s.Index <= r.MaxCommit {
			v.add(SevInfo, ClassSnapshot, "snap-missing", filepath.Join(r.SnapDir, p.FileName()), -1,
				"no .snap file for the WAL snapshot record term %d index %d (purged)", s.Term, s.Index)
		}
	}
	pts := make([]snap.Point, 0, len(files))
	for p := range files {
		pts = append(pts, p)
	}
	slices.SortFunc(pts, func(a, b snap.Point) int {
		if a.Less(b) {
			return -1
		}
		if b.Less(a) {
			return 1
		}
		return 0
	})
	for _, p := range pts {
		if !records[p] {
			v.add(SevInfo, ClassSnapshot, "snap-orphan", filepath.Join(r.SnapDir, p.FileName()), -1,
				"no WAL snapshot record for this file (orphan: etcd never loads it)")
		}
	}
}
