package engine

// The file helpers of the two restores.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/mvcc/boltfile"
	"github.com/etckit/etckit/vfs"
	bolt "go.etcd.io/bbolt"
)

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return filepath.Clean(p)
	}
	return a
}

func fileExists(fsys vfs.FS, p string) bool {
	fi, err := fsys.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// openSourceDB opens a source db read-only, refusing to wait long for a
// member that holds it.
func openSourceDB(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 10e9})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("engine: %s is locked by a running member (waited 10s): %w", path, err)
		}
		return nil, fmt.Errorf("engine: open %s: %w", path, err)
	}
	return db, nil
}

// checkDBFile walks the pages of a whole db file (boltfile.Check) and
// returns the first damage.
func checkDBFile(fsys vfs.FS, path string) error {
	rep, err := boltfile.CheckFile(fsys, path, boltfile.Options{Limit: 1})
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	if cerr := rep.First(path); cerr != nil {
		return cerr
	}
	return nil
}

func readConsistentIndex(fsys vfs.FS, path string) (uint64, error) {
	if err := checkDBFile(fsys, path); err != nil {
		return 0, fmt.Errorf("engine: point-in-time restore: base %s is damaged: %w", path, err)
	}
	db, err := openSourceDB(path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var ci uint64
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		if ci, _, err = mvcc.ReadConsistentIndex(tx); err != nil {
			return corrupt.New(path, -1, corrupt.Damaged, "meta bucket", err)
		}
		return nil
	})
	return ci, err
}

// copyDB writes a consistent copy of the db at src to dst (one read
// transaction, fsynced, mode 0600).
func copyDB(fsys vfs.FS, src, dst string) error {
	db, err := openSourceDB(src)
	if err != nil {
		return err
	}
	defer db.Close()
	f, err := fsys.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		_, err := tx.WriteTo(f)
		return err
	})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("engine: copy %s to %s: %w", src, dst, err)
	}
	return nil
}

// withCleanup runs fn and, if it fails, removes what the restore created.
func (p *restorePlan) withCleanup(fn func() error) error {
	_, dataErr := p.fs.Stat(p.o.DataDir)
	dataExisted := dataErr == nil
	walOutside := p.o.WALDir != ""
	err := fn()
	if err == nil {
		return nil
	}
	if dataExisted {
		_ = p.fs.RemoveAll(filepath.Join(p.o.DataDir, "member"))
	} else {
		_ = p.fs.RemoveAll(p.o.DataDir)
	}
	if walOutside {
		_ = p.fs.RemoveAll(p.walDir)
		_ = p.fs.RemoveAll(p.walDir + ".tmp")
	}
	return err
}

// emptyBucket deletes every key of a bucket, creating it if missing.
func emptyBucket(tx *bolt.Tx, name []byte) error {
	b, err := tx.CreateBucketIfNotExists(name)
	if err != nil {
		return err
	}
	var keys [][]byte
	if err := b.ForEach(func(k, _ []byte) error {
		keys = append(keys, slices.Clone(k))
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// damageOffset looks for the first structurally damaged bbolt page of a db
// image (see boltfile.Check) to say where a digest mismatch comes from.
func damageOffset(fsys vfs.FS, path string, imageSize int64) string {
	if imageSize <= 0 {
		return ""
	}
	f, err := fsys.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if cerr := boltfile.Check(f, imageSize, boltfile.Options{Limit: 1}).First(path); cerr != nil {
		return fmt.Sprintf("; first damage found at offset %d: %s", cerr.Offset, cerr.Reason)
	}
	return "; the page structure is intact, so the damage is inside key or value bytes (sha256 cannot say where)"
}
