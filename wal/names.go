package wal

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/etckit/etckit/vfs"
)

// SegmentName returns the file name of the segment with sequence number seq
// whose first entry has raft index index: %016x-%016x.wal.
func SegmentName(seq, index uint64) string {
	return fmt.Sprintf("%016x-%016x.wal", seq, index)
}

// ParseSegmentName parses a segment file name. It accepts exactly the names
// SegmentName produces (etcd's Sscanf also accepts a few malformed ones,
// which etcd itself never writes).
func ParseSegmentName(name string) (seq, index uint64, err error) {
	if len(name) != 16+1+16+4 || name[16] != '-' || !strings.HasSuffix(name, ".wal") {
		return 0, 0, fmt.Errorf("wal: bad segment name %q", name)
	}
	seq, err1 := strconv.ParseUint(name[:16], 16, 64)
	index, err2 := strconv.ParseUint(name[17:33], 16, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("wal: bad segment name %q", name)
	}
	return seq, index, nil
}

// segmentNames lists the segment names in dir, sorted (lexical order is
// numeric order). Other files are ignored.
func segmentNames(fsys vfs.FS, dir string) ([]string, error) {
	names, err := fsys.ReadDirNames(dir)
	if err != nil {
		return nil, err
	}
	out := names[:0]
	for _, n := range names {
		if _, _, err := ParseSegmentName(n); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// Exist reports whether dir holds at least one segment.
func Exist(fsys vfs.FS, dir string) bool {
	names, err := segmentNames(fsys, dir)
	return err == nil && len(names) > 0
}

// selectSegments returns the segments to read for a snapshot at index: from
// the last one whose start index is <= index to the newest. The sequence
// numbers must increase by one (etcd skips the comparison when the previous
// number is 0, and so do we, to accept what etcd accepts).
func selectSegments(fsys vfs.FS, dir string, index uint64) ([]string, error) {
	names, err := segmentNames(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w in %s", ErrFileNotFound, dir)
	}
	start := -1
	for i := len(names) - 1; i >= 0; i-- {
		_, idx, _ := ParseSegmentName(names[i])
		if index >= idx {
			start = i
			break
		}
	}
	if start < 0 {
		return nil, fmt.Errorf("wal: no segment in %s holds index %d (oldest is %s)", dir, index, names[0])
	}
	names = names[start:]
	var last uint64
	for i, n := range names {
		seq, _, _ := ParseSegmentName(n)
		if i > 0 && last != 0 && seq != last+1 {
			return nil, fmt.Errorf("wal: segment sequence is broken in %s: %s follows %s", dir, n, names[i-1])
		}
		last = seq
	}
	return names, nil
}
