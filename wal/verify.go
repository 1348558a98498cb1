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
	d := newDecoder(segs)
	state := &raftpb.HardState{}
	var metadata []byte
	var match bool
	var rec Record
	for {
		pos, _, err := d.next(&rec)
		if errors.Is(err, io.EOF) || errors.Is(err, corrupt.ErrTornTail) {
			break
		}
		if err != nil {
			return nil, err
		}
		path := filepath.Join(dir, pos.Segment)
		switch rec.Type {
		case MetadataType:
			if metadata != nil && !bytes.Equal(metadata, rec.Data) {
				return nil, fmt.Errorf("%w (%s)", ErrMetadataConflict, pos)
			}
			if metadata == nil {
				metadata = bytes.Clone(rec.Data)
			}
		case CRCType, EntryType:
		case StateType:
			if state, err = UnmarshalHardState(rec.Data); err != nil {
				return nil, corrupt.New(path, pos.Offset, corrupt.MidLog, "undecodable hard state", err)
			}
		case SnapshotType:
			s, err := UnmarshalSnapshot(rec.Data)
			if err != nil {
				return nil, corrupt.New(path, pos.Offset, corrupt.MidLog, "undecodable snapshot record", err)
			}
			if s.Index == snap.Index {
				if s.Term != snap.Term {
					return nil, fmt.Errorf("%w: record {index %d, term %d} vs {index %d, term %d} (%s)",
						ErrSnapshotMismatch, s.Index, s.Term, snap.Index, snap.Term, pos)
				}
				match = true
			}
		default:
			return nil, corrupt.New(path, pos.Offset, corrupt.MidLog, fmt.Sprintf("unexpected block type %d", int64(rec.Type)), nil)
		}
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
	return validSnapshots(newDecoder(segs), dir)
}

func validSnapshots(d *decoder, dir string) ([]Snapshot, error) {
	var snaps []Snapshot
	var commit uint64
	var rec Record
	for {
		pos, _, err := d.next(&rec)
		if errors.Is(err, io.EOF) || errors.Is(err, corrupt.ErrTornTail) {
			break
		}
		if err != nil {
			return nil, err
		}
		switch rec.Type {
		case SnapshotType:
			s, err := UnmarshalSnapshot(rec.Data)
			if err != nil {
				return nil, corrupt.New(filepath.Join(dir, pos.Segment), pos.Offset, corrupt.MidLog, "undecodable snapshot record", err)
			}
			snaps = append(snaps, s)
		case StateType:
			st, err := UnmarshalHardState(rec.Data)
			if err != nil {
				return nil, corrupt.New(filepath.Join(dir, pos.Segment), pos.Offset, corrupt.MidLog, "undecodable hard state", err)
			}
			commit = st.GetCommit()
		}
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
