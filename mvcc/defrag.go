package mvcc

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Online defragmentation (additive: nothing here changes the other files).
//
// etcd's backend.defrag rewrites the db compactly and swaps it in while the
// member keeps serving: every bucket is copied, in key order, into
// db.tmp.<random> next to the db with fill percent 0.9 and a commit every
// 10,000 keys (the package doc, "Defragment"), the old file is closed and
// the copy renamed over it. The copy holds exactly the committed key/value
// pairs, so everything the Store keeps in memory (key index, revisions,
// watchers, lessor) stays valid: only the bbolt handle under the Backend
// changes.

// DefragLimit is etcd's defragLimit: keys copied per tmp-db transaction.
const DefragLimit = 10000

// DefragStats describes one defragmentation.
type DefragStats struct {
	SizeBefore, SizeAfter int64 // file sizes in bytes
	Took                  time.Duration
}

// Defrag rewrites the db file compactly and swaps it in under the running
// backend. While it runs, writes (Backend.Write) and new read views wait, as
// in etcd; snapshots taken before it keep reading the old file, which is
// closed when the last of them is released. The pending batch is committed
// first, so the copy holds every write made before the call.
func (b *Backend) Defrag() (DefragStats, error) {
	var st DefragStats
	if b.opts.ReadOnly {
		return st, ErrReadOnly
	}
	if b.closed.Load() {
		return st, ErrClosed
	}
	start := time.Now()
	if err := b.ForceCommit(); err != nil {
		return st, err
	}
	b.commitMu.Lock()
	defer b.commitMu.Unlock()
	if b.commitErr != nil {
		return st, b.commitErr
	}
	if b.closed.Load() {
		return st, ErrClosed
	}
	b.txMu.Lock()
	defer b.txMu.Unlock()
	// Writes that arrived between ForceCommit and txMu stay in the pending
	// batch: reads see them there, and the next commit writes them into the
	// new file.
	st.SizeBefore = b.rtx.tx.Size()

	dir := filepath.Dir(b.path)
	tmp, err := os.CreateTemp(dir, "db.tmp.*")
	if err != nil {
		return st, fmt.Errorf("mvcc: defrag: %w", err)
	}
	tmpPath := tmp.Name()
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmpPath)
		return st, fmt.Errorf("mvcc: defrag: %w", err)
	}
	tbo := b.boltOptions()
	tbo.InitialMmapSize = 0 // the copy is written once; bbolt's default mapping grows as needed
	tmpdb, err := bolt.Open(tmpPath, 0o600, tbo)
	if err != nil {
		_ = os.Remove(tmpPath)
		return st, fmt.Errorf("mvcc: defrag: open %s: %w", tmpPath, err)
	}
	if err := defragCopy(b.db, tmpdb, DefragLimit); err != nil {
		_ = tmpdb.Close()
		_ = os.Remove(tmpPath)
		return st, fmt.Errorf("mvcc: defrag: copy into %s: %w", tmpPath, err)
	}
	if err := tmpdb.Close(); err != nil {
		_ = os.Remove(tmpPath)
		return st, fmt.Errorf("mvcc: defrag: close %s: %w", tmpPath, err)
	}
	if err := os.Rename(tmpPath, b.path); err != nil {
		_ = os.Remove(tmpPath)
		return st, fmt.Errorf("mvcc: defrag: rename %s: %w", tmpPath, err)
	}
	syncDir(dir)
	newdb, err := bolt.Open(b.path, 0o600, b.boltOptions())
	if err != nil {
		// The file under b.path is the copy, but this backend still
		// holds the old (now unlinked) inode: committing there would lose
		// the writes. Stop committing; the member must restart.
		b.commitErr = fmt.Errorf("mvcc: defrag: reopen %s: %w", b.path, err)
		return st, b.commitErr
	}
	old, oldRtx := b.db, b.rtx
	b.db = newdb
	b.rtx = nil
	if err := b.renewReadTx(); err != nil {
		b.commitErr = err
		b.db, b.rtx = old, oldRtx
		_ = newdb.Close()
		return st, err
	}
	b.pageSize = int64(newdb.Info().PageSize)
	var fileSize int64
	if fi, err := os.Stat(b.path); err == nil {
		fileSize = fi.Size()
	}
	b.mapped = boltMmapSize(max(fileSize, int64(b.boltOptions().InitialMmapSize)), b.pageSize)
	st.SizeAfter = b.rtx.tx.Size()
	// Snapshots of the old file may still be open (a Snapshot stream, a
	// compaction pass); the old handle closes after the last of them.
	oldRtx.release()
	go func() {
		<-oldRtx.done
		_ = old.Close()
	}()
	st.Took = time.Since(start)
	return st, nil
}

// boltOptions are the bbolt options OpenBackend uses.
func (b *Backend) boltOptions() *bolt.Options {
	bo := &bolt.Options{
		Timeout:        b.opts.Timeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		NoSync:         b.opts.NoSync,
		MmapFlags:      boltMmapFlags,
	}
	if b.opts.InitialMmapSize > 0 {
		bo.InitialMmapSize = int(b.opts.InitialMmapSize)
	}
	return bo
}

// defragCopy is etcd's defragdb: every bucket, in order, every key in
// order, fill percent 0.9, a new write transaction every limit keys.
func defragCopy(odb, tmpdb *bolt.DB, limit int) (err error) {
	tmptx, err := tmpdb.Begin(true)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && tmptx != nil {
			_ = tmptx.Rollback()
		}
	}()
	tx, err := odb.Begin(false)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	c := tx.Cursor()
	count := 0
	for name, _ := c.First(); name != nil; name, _ = c.Next() {
		src := tx.Bucket(name)
		if src == nil {
			return fmt.Errorf("cannot defrag bucket %q", name)
		}
		dst, err := tmptx.CreateBucketIfNotExists(name)
		if err != nil {
			return err
		}
		dst.FillPercent = 0.9
		err = src.ForEach(func(k, v []byte) error {
			if v == nil {
				return fmt.Errorf("bucket %q: nested bucket %q is not supported", name, k)
			}
			count++
			if count > limit {
				if err := tmptx.Commit(); err != nil {
					return err
				}
				next, err := tmpdb.Begin(true)
				if err != nil {
					tmptx = nil
					return err
				}
				tmptx = next
				dst = tmptx.Bucket(name)
				dst.FillPercent = 0.9
				count = 0
			}
			return dst.Put(k, v)
		})
		if err != nil {
			return err
		}
	}
	return tmptx.Commit()
}

func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}
