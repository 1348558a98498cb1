package snap

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/vfs"
)

const (
	// DBSuffix is the suffix of db snapshot files received from a leader.
	DBSuffix = ".snap.db"
	// TrailerSize is the size of the SHA-256 trailer of a saved db snapshot.
	TrailerSize = sha256.Size
	// DBFileMode is the mode of db files (etcd's PrivateFileMode).
	DBFileMode fs.FileMode = 0o600

	trailerAlign = 512
)

var (
	// ErrNoTrailer is returned when a file has no SHA-256 trailer to check
	// (etcdutl restore: "snapshot missing hash").
	ErrNoTrailer = errors.New("snap: db snapshot has no sha256 trailer")
	// ErrDigestMismatch matches a db snapshot whose trailer is not the
	// SHA-256 of the bbolt image before it.
	ErrDigestMismatch = errors.New("snap: db snapshot sha256 mismatch")
)

// DBFileName returns the name of the db snapshot for a raft index:
// %016x.snap.db (16 hex digits, not decimal).
func DBFileName(index uint64) string { return fmt.Sprintf("%016x%s", index, DBSuffix) }

// ParseDBFileName parses a name of the exact form %016x.snap.db.
func ParseDBFileName(name string) (uint64, bool) {
	if len(name) != 16+len(DBSuffix) || !strings.HasSuffix(name, DBSuffix) {
		return 0, false
	}
	return parseHex16(name[:16])
}

// HasTrailer reports whether a db snapshot file of this size carries a
// SHA-256 trailer: etcd's rule is size % 512 == 32 (bbolt images are a
// whole number of pages, pages are a multiple of 512 bytes).
func HasTrailer(size int64) bool { return size%trailerAlign == TrailerSize }

// Verify checks the SHA-256 trailer of the db snapshot file at path. It
// returns ErrNoTrailer when the size says there is none, and a
// *corrupt.Error at the trailer's offset, naming both digests and matching
// ErrDigestMismatch, when it does not match. It only reads.
func Verify(fsys vfs.FS, path string) error {
	f, err := fsys.Open(path)
	if err != nil {
		return fmt.Errorf("snap: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("snap: %w", err)
	}
	size := fi.Size()
	if !HasTrailer(size) {
		return fmt.Errorf("%w: %s (size %d)", ErrNoTrailer, path, size)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size-TrailerSize)); err != nil {
		return fmt.Errorf("snap: reading %s: %w", path, err)
	}
	var trailer [TrailerSize]byte
	if _, err := f.ReadAt(trailer[:], size-TrailerSize); err != nil {
		return fmt.Errorf("snap: reading %s: %w", path, err)
	}
	return checkDigest(path, size-TrailerSize, h, trailer[:])
}

func checkDigest(path string, off int64, h hash.Hash, trailer []byte) error {
	sum := h.Sum(nil)
	if !bytes.Equal(sum, trailer) {
		return corrupt.New(path, off, corrupt.Damaged,
			fmt.Sprintf("sha256 trailer %s, image has %s", hex.EncodeToString(trailer), hex.EncodeToString(sum)),
			ErrDigestMismatch)
	}
	return nil
}

// CopyWithoutTrailer copies the bbolt image of the db snapshot src to dst
// (dropping the trailer), as `etcdutl snapshot restore` does: with a
// trailer, the image's digest must match unless skipHashCheck; without one,
// ErrNoTrailer unless skipHashCheck. dst is written through a temporary
// file (fsync, rename, directory fsync) with mode 0600 and is only created
// when the check passes. It returns the size of the image.
func CopyWithoutTrailer(fsys vfs.FS, src, dst string, skipHashCheck bool) (int64, error) {
	f, err := fsys.Open(src)
	if err != nil {
		return 0, fmt.Errorf("snap: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("snap: %w", err)
	}
	size := fi.Size()
	n := size
	if HasTrailer(size) {
		n = size - TrailerSize
	} else if !skipHashCheck {
		return 0, fmt.Errorf("%w: %s (size %d)", ErrNoTrailer, src, size)
	}
	check := HasTrailer(size) && !skipHashCheck
	err = writeFileAtomic(fsys, dst, DBFileMode, func(w io.Writer) error {
		h := sha256.New()
		var r io.Reader = io.NewSectionReader(f, 0, n)
		if check {
			r = io.TeeReader(r, h)
		}
		if _, err := io.Copy(w, r); err != nil {
			return err
		}
		if !check {
			return nil
		}
		var trailer [TrailerSize]byte
		if _, err := f.ReadAt(trailer[:], n); err != nil {
			return err
		}
		return checkDigest(src, n, h, trailer[:])
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// WriteWithTrailer writes the bbolt image read from r to path followed by
// its SHA-256, the file `etcdctl snapshot save` produces, through a
// temporary file (fsync, rename, directory fsync), mode 0600. The image
// must be a whole number of 512-byte sectors, or readers could not detect
// the trailer (etcdctl fails the same way). It returns the file size.
func WriteWithTrailer(fsys vfs.FS, path string, r io.Reader) (int64, error) {
	var n int64
	err := writeFileAtomic(fsys, path, DBFileMode, func(w io.Writer) error {
		h := sha256.New()
		var err error
		n, err = io.Copy(io.MultiWriter(w, h), r)
		if err != nil {
			return err
		}
		if n%trailerAlign != 0 {
			return fmt.Errorf("snap: image size %d is not a multiple of %d, a trailer would not be detectable", n, trailerAlign)
		}
		_, err = w.Write(h.Sum(nil))
		return err
	})
	if err != nil {
		return 0, err
	}
	return n + TrailerSize, nil
}

// SaveDB stores a db snapshot received from a leader as
// dir/%016x.snap.db (etcd's Snapshotter.SaveDBFrom): temporary file, fsync,
// rename, directory fsync, mode 0600. If the name already exists the new
// copy is dropped and the directory is fsynced again (a previous save may
// have crashed before its directory fsync). It returns the path and the
// number of bytes read from r.
func SaveDB(fsys vfs.FS, dir string, index uint64, r io.Reader) (string, int64, error) {
	path := filepath.Join(dir, DBFileName(index))
	if vfs.Exists(fsys, path) {
		n, err := io.Copy(io.Discard, r)
		if err != nil {
			return path, n, fmt.Errorf("snap: %w", err)
		}
		if err := fsys.SyncDir(dir); err != nil {
			return path, n, fmt.Errorf("snap: %w", err)
		}
		return path, n, nil
	}
	var n int64
	err := writeFileAtomic(fsys, path, DBFileMode, func(w io.Writer) error {
		var err error
		n, err = io.Copy(w, r)
		return err
	})
	return path, n, err
}

// PurgeDB deletes the oldest *.snap.db files in dir while more than keep
// remain (keep <= 0 disables). It returns the paths removed.
func PurgeDB(fsys vfs.FS, dir string, keep int) ([]string, error) {
	return purgeSuffix(fsys, dir, DBSuffix, keep)
}
