package wal

import (
	"errors"
	"io"

	"github.com/etckit/etckit/vfs"
)

// ScanOptions selects what a Scanner reads.
type ScanOptions struct {
	FS vfs.FS // default vfs.OS{}
	// FromIndex, when non-zero, starts at the segment that Open would start
	// at for a snapshot at this raft index; zero reads every segment.
	FromIndex uint64
	// ContinueOnCRCError keeps going after a complete record whose CRC does
	// not match: Next returns it, RecordErr says what is wrong, and the
	// scan continues with the following record (etcd-dump-logs --raw).
	ContinueOnCRCError bool
}

// Scanner streams every record of a WAL directory with its segment and
// byte offset. It holds one read buffer, never the log.
//
//	sc, err := wal.NewScanner(dir, wal.ScanOptions{})
//	for sc.Next() { use(sc.Position(), sc.Record()) }
//	err = sc.Err() // nil after a clean end; a *corrupt.Error for damage
type Scanner struct {
	segs   []*segReader
	dec    *decoder
	rec    Record
	pos    Position
	recErr error
	err    error
}

// NewScanner opens the segments of dir read-only.
func NewScanner(dir string, opts ScanOptions) (*Scanner, error) {
	fsys := opts.FS
	if fsys == nil {
		fsys = vfs.OS{}
	}
	var names []string
	var err error
	if opts.FromIndex == 0 {
		names, err = segmentNames(fsys, dir)
		if err == nil && len(names) == 0 {
			err = ErrFileNotFound
		}
	} else {
		names, err = selectSegments(fsys, dir, opts.FromIndex)
	}
	if err != nil {
		return nil, err
	}
	segs, err := openSegments(fsys, dir, names)
	if err != nil {
		return nil, err
	}
	d := newDecoder(segs)
	d.continueOnCRC = opts.ContinueOnCRCError
	return &Scanner{segs: segs, dec: d}, nil
}

// Next advances to the next record and reports whether there is one.
func (s *Scanner) Next() bool {
	if s.err != nil {
		return false
	}
	pos, ok, err := s.dec.next(&s.rec)
	s.pos, s.recErr = pos, nil
	if ok {
		s.recErr = err
		return true
	}
	if errors.Is(err, io.EOF) {
		err = nil
		s.err = io.EOF
		return false
	}
	s.err = err
	return false
}

// Record is the current record. Its Data is valid until the next call to Next.
func (s *Scanner) Record() Record { return s.rec }

// Position is where the current record (or the error) is.
func (s *Scanner) Position() Position { return s.pos }

// RecordErr is the CRC error of the current record when ContinueOnCRCError
// let the scan go on past it, or nil.
func (s *Scanner) RecordErr() error { return s.recErr }

// CRC is the running CRC after the current record.
func (s *Scanner) CRC() uint32 { return s.dec.lastCRC() }

// Err is the error that ended the scan; nil when it reached the end.
func (s *Scanner) Err() error {
	if errors.Is(s.err, io.EOF) {
		return nil
	}
	return s.err
}

// Close closes the segment files.
func (s *Scanner) Close() error { return closeSegments(s.segs) }

// Scan calls fn for every record of dir in order. Record data is valid only
// during the call. An error from fn stops the scan and is returned.
func Scan(dir string, opts ScanOptions, fn func(Position, Record) error) error {
	sc, err := NewScanner(dir, opts)
	if err != nil {
		return err
	}
	defer sc.Close()
	for sc.Next() {
		if err := fn(sc.Position(), sc.Record()); err != nil {
			return err
		}
	}
	return sc.Err()
}
