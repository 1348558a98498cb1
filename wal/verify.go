package wal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/etckit/etckit/corrupt"
)

// Verify reads the WAL in dir from the segment holding snap, without locks
// and without keeping entries: metadata equality, the CRC chain, record
// types, and that a snapshot record matches snap. It returns the last
// HardState. A torn tail is accepted (a writer would repair it); mid-log
// corruption is returned as a *corrupt.Error.
func Verify(dir string, snap Snapshot, opts Options) (*raftpb.HardState, error) {
	opts = opts.withDefaults()
	names, err := selectSegments(opts.FS, dir, snap.Index)
	if err != nil {
		return nil, err
	}
	segs, err := openSegments(opts.FS, dir, names)
	if err != nil {
		return nil, err
	}
	defer closeSegments(segs)
	state := &raftpb.HardState{}
	var metadata []byte
	var match bool
	err = readRecords(newDecoder(segs), func(pos Position, rec *Record) error {
		switch rec.Type {
		case MetadataType:
			if metadata != nil && !bytes.Equal(metadata, rec.Data) {
				return fmt.Errorf("%w (%s)", ErrMetadataConflict, pos)
			}
			if metadata == nil {
				metadata = bytes.Clone(rec.Data)
			}
		case CRCType, EntryType:
		case StateType:
			s, err := decodeStateRecord(dir, pos, rec.Data)
			if err != nil {
				return err
			}
			state = s
		case SnapshotType:
			s, err := decodeSnapshotRecord(dir, pos, rec.Data)
			if err != nil {
				return err
			}
			if s.Index == snap.Index {
				if s.Term != snap.Term {
					return fmt.Errorf("%w: record {index %d, term %d} vs {index %d, term %d} (%s)",
						ErrSnapshotMismatch, s.Index, s.Term, snap.Index, snap.Term, pos)
				}
				match = true
			}
		default:
			return unexpectedType(dir, pos, rec.Type)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !match {
		return nil, ErrSnapshotNotFound
	}
	return state, nil
}

// ValidSnapshotEntries reads every segment of dir (without locks) and
// returns the snapshot records whose index is at most the last HardState's
// commit: the snapshots a restarting member may load.
func ValidSnapshotEntries(dir string, opts Options) ([]Snapshot, error) {
	opts = opts.withDefaults()
	names, err := segmentNames(opts.FS, dir)
	if err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w in %s", ErrFileNotFound, dir)
	}
	segs, err := openSegments(opts.FS, dir, names)
	if err != nil {
		return nil, err
	}
	defer closeSegments(segs)
	var snaps []Snapshot
	var commit uint64
	err = readRecords(newDecoder(segs), func(pos Position, rec *Record) error {
		switch rec.Type {
		case SnapshotType:
			s, err := decodeSnapshotRecord(dir, pos, rec.Data)
			if err != nil {
				return err
			}
			snaps = append(snaps, s)
		case StateType:
			st, err := decodeStateRecord(dir, pos, rec.Data)
			if err != nil {
				return err
			}
			commit = st.GetCommit()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	n := 0
	for _, s := range snaps {
		if s.Index <= commit {
			snaps[n] = s
			n++
		}
	}
	return snaps[:n:n], nil
}

// readRecords calls fn for every record of a read-mode pass. A torn tail
// ends the pass like the end of the log: a writer would repair it, and
// nothing after it was ever acknowledged.
func readRecords(d *decoder, fn func(Position, *Record) error) error {
	var rec Record
	for {
		pos, _, err := d.next(&rec)
		if errors.Is(err, io.EOF) || errors.Is(err, corrupt.ErrTornTail) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(pos, &rec); err != nil {
			return err
		}
	}
}

// The payload decoders of the consumers: a record whose CRC is right but
// whose protobuf is not is mid-log corruption at that record.

func decodeStateRecord(dir string, pos Position, data []byte) (*raftpb.HardState, error) {
	s, err := UnmarshalHardState(data)
	if err != nil {
		return nil, corrupt.New(filepath.Join(dir, pos.Segment), pos.Offset, corrupt.MidLog, "undecodable hard state", err)
	}
	return s, nil
}

func decodeSnapshotRecord(dir string, pos Position, data []byte) (Snapshot, error) {
	s, err := UnmarshalSnapshot(data)
	if err != nil {
		return Snapshot{}, corrupt.New(filepath.Join(dir, pos.Segment), pos.Offset, corrupt.MidLog, "undecodable snapshot record", err)
	}
	return s, nil
}

func unexpectedType(dir string, pos Position, t RecordType) error {
	return corrupt.New(filepath.Join(dir, pos.Segment), pos.Offset, corrupt.MidLog, fmt.Sprintf("unexpected block type %d", int64(t)), nil)
}
