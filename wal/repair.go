package wal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/vfs"
)

// RepairReport says what Repair did.
type RepairReport struct {
	// Segment is the path of the newest segment, which Repair examined.
	Segment string
	// Cause is the torn tail that was found; nil when the log was intact.
	Cause *corrupt.Error
	// OriginalSize and TruncatedAt are the segment's size before and after.
	OriginalSize int64
	TruncatedAt  int64
	// BackupPath is the full copy of the segment written before truncating:
	// <segment>.broken, as etcd names it, or <segment>.broken.N if that
	// exists already (an earlier backup is never overwritten).
	BackupPath string
}

// Repaired reports whether Repair changed the log.
func (r RepairReport) Repaired() bool { return r.Cause != nil }

func (r RepairReport) String() string {
	if !r.Repaired() {
		return fmt.Sprintf("%s: intact, nothing to repair", r.Segment)
	}
	return fmt.Sprintf("%s: torn tail at offset %d (%s); truncated from %d to %d bytes; backup at %s",
		r.Segment, r.Cause.Offset, r.Cause.Reason, r.OriginalSize, r.TruncatedAt, r.BackupPath)
}

// Repair fixes a torn tail, the damage a crash during an unsynced write can
// leave: it decodes the newest segment and, if its last record is torn,
// first writes a full backup (<segment>.broken, synced, its directory entry
// synced) and then truncates the segment after its last valid record.
// Anything else, mid-log corruption above all, is returned as an error and
// nothing is changed. The segment is try-locked, so a WAL in use by a
// running etcd or etckit is refused.
func Repair(dir string, opts Options) (RepairReport, error) {
	opts = opts.withDefaults()
	fsys := opts.FS
	names, err := segmentNames(fsys, dir)
	if err != nil {
		return RepairReport{}, fmt.Errorf("wal: %w", err)
	}
	if len(names) == 0 {
		return RepairReport{}, fmt.Errorf("%w in %s", ErrFileNotFound, dir)
	}
	path := filepath.Join(dir, names[len(names)-1])
	rep := RepairReport{Segment: path}
	f, err := fsys.OpenFile(path, os.O_RDWR, fileMode)
	if err != nil {
		return rep, fmt.Errorf("wal: %w", err)
	}
	defer f.Close()
	if err := lockSegment(f); err != nil {
		return rep, err
	}
	fi, err := f.Stat()
	if err != nil {
		return rep, fmt.Errorf("wal: %w", err)
	}
	rep.OriginalSize = fi.Size()
	d := newDecoder([]*segReader{{name: names[len(names)-1], path: path, f: f, size: fi.Size()}})
	var rec Record
	for {
		_, _, err = d.next(&rec)
		if err != nil {
			break
		}
	}
	if errors.Is(err, io.EOF) {
		rep.TruncatedAt = rep.OriginalSize
		return rep, nil
	}
	cause := corrupt.As(err)
	if cause == nil || cause.Kind != corrupt.TornTail {
		return rep, fmt.Errorf("wal: %s cannot be repaired by truncation: %w", path, err)
	}
	backup, err := backupName(opts, path)
	if err != nil {
		return rep, err
	}
	if err := copyFile(opts, path, backup); err != nil {
		return rep, err
	}
	rep.BackupPath = backup
	off := d.lastOffset()
	if err := f.Truncate(off); err != nil {
		return rep, fmt.Errorf("wal: truncate %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return rep, fmt.Errorf("wal: fsync %s: %w", path, err)
	}
	rep.Cause = cause
	rep.TruncatedAt = off
	return rep, nil
}

// backupName is <segment>.broken, etcd's name, or <segment>.broken.N when
// an earlier repair's backup is there: a backup is never overwritten.
func backupName(opts Options, path string) (string, error) {
	name := path + ".broken"
	for n := 1; vfs.Exists(opts.FS, name); n++ {
		if n > 1000 {
			return "", fmt.Errorf("wal: too many backups of %s", path)
		}
		name = fmt.Sprintf("%s.broken.%d", path, n)
	}
	return name, nil
}

// copyFile writes a durable full copy of src (open as f) to dst.
func copyFile(opts Options, src, dst string) error {
	fsys := opts.FS
	in, err := fsys.Open(src)
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	defer in.Close()
	out, err := fsys.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fileMode)
	if err != nil {
		return fmt.Errorf("wal: create backup: %w", err)
	}
	_, cerr := io.Copy(out, in)
	if cerr == nil {
		cerr = out.Sync()
	}
	if err := out.Close(); cerr == nil {
		cerr = err
	}
	if cerr == nil {
		cerr = fsys.SyncDir(filepath.Dir(dst))
	}
	if cerr != nil {
		return fmt.Errorf("wal: backup %s to %s: %w", src, dst, cerr)
	}
	return nil
}
