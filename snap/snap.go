package snap

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/vfs"
)

// Wire format and naming constants: never change.
const (
	// Suffix is the suffix of v2 snapshot files.
	Suffix = ".snap"
	// BrokenSuffix is appended to a .snap file by Quarantine.
	BrokenSuffix = ".broken"
	// TempPrefix starts the name of every temporary file this package
	// writes; etcd deletes snap/tmp* at boot.
	TempPrefix = "tmp"

	// DefaultMaxSnapshots is etcd's --max-snapshots default: Purge keeps
	// this many .snap files.
	DefaultMaxSnapshots = 5

	// MaxFileSize bounds the size of a .snap file that Read accepts. etcd
	// has no limit; a v3.5 store with many v2 keys is the largest real case,
	// far below this.
	MaxFileSize = 1 << 30

	// FileMode is the mode .snap files are created with (before umask), as
	// etcd does.
	FileMode fs.FileMode = 0o666

	fieldCRC  = 1 // snappb.snapshot.crc, varint
	fieldData = 2 // snappb.snapshot.data, bytes
)

var (
	// ErrNoSnapshot is returned when no loadable snapshot fits.
	ErrNoSnapshot = errors.New("snap: no available snapshot")
	// ErrEmptySnapshot matches a file that is empty, or whose crc is 0 or
	// whose data is empty (etcd rejects those too).
	ErrEmptySnapshot = errors.New("snap: empty snapshot")
	// ErrCRCMismatch matches a file whose data does not match its crc.
	ErrCRCMismatch = errors.New("snap: crc mismatch")

	crcTable = crc32.MakeTable(crc32.Castagnoli)
)

// Point identifies a snapshot by the (term, index) of its metadata. It is
// the snap package's view of a WAL snapshot record; the engine converts.
type Point struct {
	Term, Index uint64
}

// Less orders points by term, then index (the order of their file names).
func (p Point) Less(q Point) bool {
	if p.Term != q.Term {
		return p.Term < q.Term
	}
	return p.Index < q.Index
}

// FileName returns the .snap file name of p: %016x-%016x.snap.
func (p Point) FileName() string {
	return fmt.Sprintf("%016x-%016x%s", p.Term, p.Index, Suffix)
}

func (p Point) String() string { return fmt.Sprintf("term=%d index=%d", p.Term, p.Index) }

// PointOf returns the (term, index) of a snapshot's metadata.
func PointOf(s *raftpb.Snapshot) Point {
	return Point{Term: s.GetMetadata().GetTerm(), Index: s.GetMetadata().GetIndex()}
}

// ParseFileName parses a name of the exact form %016x-%016x.snap (lower-case
// hex). Anything else, including *.snap.broken and temporary files, is
// rejected.
func ParseFileName(name string) (Point, bool) {
	const n = 16 + 1 + 16 + len(Suffix)
	if len(name) != n || name[16] != '-' || !strings.HasSuffix(name, Suffix) {
		return Point{}, false
	}
	term, ok1 := parseHex16(name[:16])
	index, ok2 := parseHex16(name[17:33])
	if !ok1 || !ok2 {
		return Point{}, false
	}
	return Point{Term: term, Index: index}, true
}

func parseHex16(s string) (uint64, bool) {
	if len(s) != 16 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 16, 64)
	return v, err == nil
}

// MarshalSnapshot returns the raftpb.Snapshot bytes exactly as etcd writes
// them (gogoproto rules, see the package doc): metadata, conf_state, index,
// term and auto_leave are always present, voters etc. are unpacked, data is
// present iff non-nil. Unknown fields of s are not written.
func MarshalSnapshot(s *raftpb.Snapshot) []byte {
	md := s.GetMetadata()
	cs := md.GetConfState()
	var c []byte
	for _, f := range []struct {
		num protowire.Number
		ids []uint64
	}{{1, cs.GetVoters()}, {2, cs.GetLearners()}, {3, cs.GetVotersOutgoing()}, {4, cs.GetLearnersNext()}} {
		for _, id := range f.ids {
			c = protowire.AppendTag(c, f.num, protowire.VarintType)
			c = protowire.AppendVarint(c, id)
		}
	}
	c = protowire.AppendTag(c, 5, protowire.VarintType)
	c = protowire.AppendVarint(c, protowire.EncodeBool(cs.GetAutoLeave()))

	var m []byte
	m = protowire.AppendTag(m, 1, protowire.BytesType)
	m = protowire.AppendBytes(m, c)
	m = protowire.AppendTag(m, 2, protowire.VarintType)
	m = protowire.AppendVarint(m, md.GetIndex())
	m = protowire.AppendTag(m, 3, protowire.VarintType)
	m = protowire.AppendVarint(m, md.GetTerm())

	data := s.GetData()
	b := make([]byte, 0, len(data)+len(m)+16)
	if data != nil {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, data)
	}
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, m)
	return b
}

// Encode returns the bytes of the .snap file for s, identical to what
// etcd's Snapshotter.SaveSnap writes.
func Encode(s *raftpb.Snapshot) []byte {
	return EncodeEnvelope(MarshalSnapshot(s))
}

// EncodeEnvelope wraps an already marshalled raftpb.Snapshot in the
// snappb envelope {crc, data}.
func EncodeEnvelope(data []byte) []byte {
	crc := crc32.Update(0, crcTable, data)
	b := make([]byte, 0, len(data)+16)
	b = protowire.AppendTag(b, fieldCRC, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(crc))
	b = protowire.AppendTag(b, fieldData, protowire.BytesType)
	b = protowire.AppendBytes(b, data)
	return b
}

// DecodeEnvelope parses the snappb envelope in b and checks the CRC. It
// returns the raftpb.Snapshot bytes (a sub-slice of b) and their offset in
// b. path only names the file in errors. Every failure is a *corrupt.Error;
// empty files and crc 0 also match ErrEmptySnapshot, a bad crc
// ErrCRCMismatch. Like etcd (proto.Unmarshal), it skips unknown fields, and
// the last occurrence of a repeated field wins.
func DecodeEnvelope(path string, b []byte) (data []byte, dataOff int64, err error) {
	if len(b) == 0 {
		return nil, 0, corrupt.New(path, 0, corrupt.Damaged, "empty file", ErrEmptySnapshot)
	}
	var (
		crc     uint32
		haveCRC bool
		off     int
	)
	for off < len(b) {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return nil, 0, wireErr(path, off, "bad field tag", n)
		}
		switch {
		case num == fieldCRC && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b[off+n:])
			if m < 0 {
				return nil, 0, wireErr(path, off, "bad crc field", m)
			}
			crc, haveCRC = uint32(v), true
			n += m
		case num == fieldData && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b[off+n:])
			if m < 0 {
				return nil, 0, wireErr(path, off, "bad data field", m)
			}
			data, dataOff = v, int64(off+n+m-len(v))
			n += m
		default:
			m := protowire.ConsumeFieldValue(num, typ, b[off+n:])
			if m < 0 {
				return nil, 0, wireErr(path, off, fmt.Sprintf("bad field %d (wire type %d)", num, typ), m)
			}
			n += m
		}
		off += n
	}
	if len(data) == 0 || !haveCRC || crc == 0 {
		return nil, 0, corrupt.New(path, dataOff, corrupt.Damaged, "empty snapshot (crc 0 or no data)", ErrEmptySnapshot)
	}
	if got := crc32.Update(0, crcTable, data); got != crc {
		return nil, 0, corrupt.New(path, dataOff, corrupt.Damaged,
			fmt.Sprintf("crc mismatch: file says %#08x, data has %#08x", crc, got), ErrCRCMismatch)
	}
	return data, dataOff, nil
}

func wireErr(path string, off int, reason string, code int) error {
	return corrupt.New(path, int64(off), corrupt.Damaged, reason, protowire.ParseError(code))
}

// Decode parses a whole .snap file image. path only names the file in
// errors; see DecodeEnvelope for the errors.
func Decode(path string, b []byte) (*raftpb.Snapshot, error) {
	data, off, err := DecodeEnvelope(path, b)
	if err != nil {
		return nil, err
	}
	s := new(raftpb.Snapshot)
	if err := proto.Unmarshal(data, s); err != nil {
		return nil, corrupt.New(path, off, corrupt.Damaged, "undecodable raftpb.Snapshot", err)
	}
	return s, nil
}

// Read reads and decodes the .snap file at path. It only reads.
func Read(fsys vfs.FS, path string) (*raftpb.Snapshot, error) {
	b, err := readFile(fsys, path, MaxFileSize)
	if err != nil {
		return nil, err
	}
	return Decode(path, b)
}

// readFile reads a whole file whose size must not exceed limit.
func readFile(fsys vfs.FS, path string, limit int64) ([]byte, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return nil, fmt.Errorf("snap: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("snap: %w", err)
	}
	size := fi.Size()
	if size > limit {
		return nil, fmt.Errorf("snap: %s: size %d exceeds the limit of %d bytes", path, size, limit)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("snap: reading %s: %w", path, err)
	}
	return b, nil
}

// Save writes s as dir/%016x-%016x.snap with the bytes etcd writes (see
// Encode): to a temporary file first, fsynced, renamed into place, then the
// directory is fsynced. (etcd writes the final name directly; the bytes are
// the same, the temporary name only makes a power loss leave either no file
// or the whole file.) A snapshot with index 0 is refused: etcd skips those
// silently. It returns the path written.
func Save(fsys vfs.FS, dir string, s *raftpb.Snapshot) (string, error) {
	p := PointOf(s)
	if p.Index == 0 {
		return "", errors.New("snap: refusing to save a snapshot with index 0")
	}
	path := filepath.Join(dir, p.FileName())
	if err := writeFileAtomic(fsys, path, FileMode, func(w io.Writer) error {
		_, err := w.Write(Encode(s))
		return err
	}); err != nil {
		return "", err
	}
	return path, nil
}

// tempPath returns the temporary name used while writing path.
func tempPath(path string) string {
	return filepath.Join(filepath.Dir(path), TempPrefix+filepath.Base(path)+".part")
}

// writeFileAtomic writes path through a temporary file: write, fsync,
// close, rename, fsync the directory. On failure the temporary file is
// removed and path is untouched.
func writeFileAtomic(fsys vfs.FS, path string, perm fs.FileMode, write func(io.Writer) error) (err error) {
	tmp := tempPath(path)
	f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("snap: %w", err)
	}
	defer func() {
		if err != nil {
			_ = fsys.Remove(tmp)
			err = fmt.Errorf("snap: writing %s: %w", path, err)
		}
	}()
	if err = write(f); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err = fsys.Rename(tmp, path); err != nil {
		return err
	}
	return fsys.SyncDir(filepath.Dir(path))
}

// List returns the points of the well-formed .snap file names in dir,
// newest first. It only reads the directory.
func List(fsys vfs.FS, dir string) ([]Point, error) {
	names, err := fsys.ReadDirNames(dir)
	if err != nil {
		return nil, fmt.Errorf("snap: %w", err)
	}
	var ps []Point
	for _, n := range names {
		if p, ok := ParseFileName(n); ok {
			ps = append(ps, p)
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[j].Less(ps[i]) })
	return ps, nil
}

// LoadNewest returns the newest snapshot in dir whose (term, index) is one
// of valid (the WAL's valid snapshot records), trying files newest first.
// Files that fail to load are skipped and their errors (each naming the
// file) returned in skipped; nothing in dir is changed — the caller decides
// whether to Quarantine them: those matching corrupt.ErrCorrupt are
// damaged, others are I/O errors (etcd renames both). It returns
// ErrNoSnapshot when none fits.
func LoadNewest(fsys vfs.FS, dir string, valid []Point) (s *raftpb.Snapshot, p Point, skipped []error, err error) {
	set := make(map[Point]bool, len(valid))
	for _, v := range valid {
		set[v] = true
	}
	return LoadNewestMatching(fsys, dir, func(p Point) bool { return set[p] })
}

// LoadNewestMatching is LoadNewest with a predicate; match == nil accepts
// every snapshot (etcd's Snapshotter.Load).
//
// Candidates are chosen by file name; a file whose metadata differs from
// its name is reported in skipped. (etcd reads every *.snap and matches on
// the metadata only; for files etcd wrote, name and metadata agree.)
func LoadNewestMatching(fsys vfs.FS, dir string, match func(Point) bool) (*raftpb.Snapshot, Point, []error, error) {
	ps, err := List(fsys, dir)
	if err != nil {
		return nil, Point{}, nil, err
	}
	var skipped []error
	for _, p := range ps {
		if match != nil && !match(p) {
			continue
		}
		path := filepath.Join(dir, p.FileName())
		s, err := Read(fsys, path)
		if err == nil && PointOf(s) != p {
			err = corrupt.New(path, 0, corrupt.Damaged,
				fmt.Sprintf("metadata (%v) does not match the file name", PointOf(s)), nil)
		}
		if err != nil {
			skipped = append(skipped, err)
			continue
		}
		return s, p, skipped, nil
	}
	return nil, Point{}, skipped, ErrNoSnapshot
}

// Quarantine renames a .snap file that failed to load to <path>.broken and
// fsyncs the directory, as etcd's loader does. Only a server calls it;
// offline tools never do.
func Quarantine(fsys vfs.FS, path string) error {
	if err := fsys.Rename(path, path+BrokenSuffix); err != nil {
		return fmt.Errorf("snap: quarantine: %w", err)
	}
	if err := fsys.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("snap: quarantine: %w", err)
	}
	return nil
}

// Purge deletes the oldest *.snap files in dir while more than keep remain
// (names in lexical order, as etcd's purge loop does; *.snap.broken and
// *.snap.db do not match). keep <= 0 disables purging, like
// --max-snapshots=0. It returns the paths removed.
func Purge(fsys vfs.FS, dir string, keep int) ([]string, error) {
	return purgeSuffix(fsys, dir, Suffix, keep)
}

func purgeSuffix(fsys vfs.FS, dir, suffix string, keep int) ([]string, error) {
	if keep <= 0 {
		return nil, nil
	}
	names, err := fsys.ReadDirNames(dir)
	if err != nil {
		return nil, fmt.Errorf("snap: purge: %w", err)
	}
	var match []string
	for _, n := range names {
		if strings.HasSuffix(n, suffix) && !strings.HasPrefix(n, TempPrefix) {
			match = append(match, n)
		}
	}
	sort.Strings(match)
	var removed []string
	for i := 0; i < len(match)-keep; i++ {
		p := filepath.Join(dir, match[i])
		if err := fsys.Remove(p); err != nil {
			return removed, fmt.Errorf("snap: purge: %w", err)
		}
		removed = append(removed, p)
	}
	if len(removed) > 0 {
		if err := fsys.SyncDir(dir); err != nil {
			return removed, fmt.Errorf("snap: purge: %w", err)
		}
	}
	return removed, nil
}
