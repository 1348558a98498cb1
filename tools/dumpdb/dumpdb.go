// Package dumpdb is `etckit dump-db`: etcd-dump-db's bucket listing and
// decoding, plus the keyspace at a revision, the history of a key, HashKV,
// the whole-db hash, page statistics and a revision-by-revision diff of two
// members' dbs. Every subcommand only reads: bbolt is opened read-only (a
// shared flock) with --timeout (default 10s as etcd-dump-db, 0 waits
// forever); when a running server holds the lock the error names the holder.
//
// # Path
//
// Every subcommand takes the db as --data-dir (<dir>/member/snap/db) or as a
// positional PATH: a path whose name ends in "db" is the db file itself,
// anything else a data directory, as etcd-dump-db does. --wal-dir is accepted
// for symmetry with the other tools and ignored.
//
// # Subcommands
//
//	buckets [PATH]                 buckets with key count, key+value bytes, pages
//	iterate BUCKET [PATH]          pairs, newest key first (--oldest-first, --limit N, --decode)
//	keys [PATH] --rev R            the keyspace at revision R (0: current), --prefix P, --keys-only
//	history KEY [PATH]             every retained revision of KEY (--prefix: of every key under it)
//	hashkv [PATH] --rev R          etcd's HashKV (equal to the HashKV RPC and etcdutl hashkv)
//	hash [PATH]                    etcd-dump-db hash (whole-db CRC-32C; --all: snapshot status' variant)
//	stats [PATH]                   pages used/free, fragmentation, predicted size after defrag
//	diff A B                       first revision where two members' dbs diverge, and the keys that differ
//
// # Output (-w simple|table|json)
//
// simple prints what etcd-dump-db prints where it has an equivalent
// (iterate with and without --decode is byte-identical to iterate-bucket,
// plus " <k8s apiVersion kind namespace/name>" after Kubernetes protobuf
// values; hash prints "db path:" and "Hash:"). table renders the same rows
// as tables. json prints one object per line with stable field names and a
// "kind" field (kv, bucket, revision, key, problem, summary, ...), except
// hashkv, whose json is exactly etcdutl's {"hash","hashRevision",
// "compactRevision"}. Bytes that are valid UTF-8 are JSON strings; others are
// in a <field>_base64 field.
//
// # Problems and exit codes
//
// A value that does not decode is printed raw (Go-quoted) and reported with
// the db file, the byte offset of the key in the file, the bucket and the key
// (on stderr in simple/table, as a "problem" object in json); the dump goes
// on and the command exits 1 at the end. diff exits 1 when the dbs differ.
// Before bbolt reads anything, the page tree is walked with plain reads
// (CheckPages); a wild page id, a cycle or an element past its page would
// make bbolt panic or recurse until it runs out of memory, so such a db is
// refused with each damaged page and its offset (exit 1); `etckit doctor`
// lists them all. A meta page bbolt rejects is named on stderr with its
// offset and the command exits 1 after its output (bbolt reads the other
// meta page, as etcd would; that is the state before the last commit when
// the damaged page was the newer one); with both rejected the db is
// refused (exit 1).
// Usage errors, I/O errors and a lock that is not released in time exit 2.
package dumpdb

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/tools/cli"
	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Config holds the commands' dependencies (none yet: bbolt always goes
// through the operating system).
type Config struct{}

// NewCommand returns `dump-db` with its subcommands.
func NewCommand() *cobra.Command { return New(Config{}) }

// New returns `dump-db` with the given dependencies.
func New(cfg Config) *cobra.Command {
	return cli.Group("dump-db", "Inspect an etcd member's bbolt db (read-only): buckets, keys, history, HashKV, stats, diff",
		newBuckets(), newIterate(), newKeys(), newHistory(), newHashKV(), newHash(), newStats(), newDiff())
}

// common are the flags every subcommand has.
type common struct {
	dirs        cli.Dirs
	timeout     time.Duration
	format      cli.FormatFlag
	damagedMeta int // meta pages bbolt rejected, in the dbs opened
}

// open opens the db read-only with the command's --timeout and a progress
// bar on its stderr. A rejected meta page (bbolt reads the other one, as
// etcd would) is printed on stderr and makes the command exit 1 after its
// output.
func (c *common) open(cmd *cobra.Command, path string) (*bolt.DB, error) {
	db, err := OpenDBWithProgress(path, c.timeout, cmd.ErrOrStderr())
	if err != nil {
		return nil, err
	}
	if err := c.checkMeta(cmd, path); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// checkMeta prints the meta pages bbolt rejects in the db at path and
// makes the command exit 1 after its output when there are any.
func (c *common) checkMeta(cmd *cobra.Command, path string) error {
	probs, err := MetaProblems(path)
	if err != nil {
		return err
	}
	for _, p := range probs {
		c.damagedMeta++
		fmt.Fprintf(cmd.ErrOrStderr(), "etckit: %s: %s\n", path, p)
	}
	if c.damagedMeta > 0 {
		cmd.PostRunE = func(*cobra.Command, []string) error {
			return cli.Problems(c.damagedMeta, "damaged bbolt meta pages")
		}
	}
	return nil
}

// openArgs resolves the db from the arguments and opens it read-only.
func (c *common) openArgs(cmd *cobra.Command, args []string) (*bolt.DB, string, error) {
	path, err := c.dbPath(args)
	if err != nil {
		return nil, "", err
	}
	db, err := c.open(cmd, path)
	return db, path, err
}

func (c *common) add(cmd *cobra.Command) {
	c.dirs.AddFlags(cmd)
	cmd.Flags().DurationVar(&c.timeout, "timeout", 10*time.Second, "how long to wait for bbolt's file lock (0: forever)")
	cli.AddFormatFlag(cmd, &c.format, cli.Simple, cli.Simple, cli.Table, cli.JSON)
}

// dbPath resolves the db file from --data-dir or the positional path (a
// name ending in "db" is the file, anything else a data directory).
func (c *common) dbPath(args []string) (string, error) {
	switch {
	case len(args) > 1:
		return "", cli.Usage("too many arguments: %q", args)
	case len(args) == 1 && c.dirs.DataDir != "":
		return "", cli.Usage("db given twice: --data-dir %q and argument %q", c.dirs.DataDir, args[0])
	case len(args) == 1:
		return ResolvePath(args[0]), nil
	case c.dirs.DataDir != "":
		return c.dirs.DB(), nil
	}
	return "", cli.Usage("a db file or data directory is required (argument or --data-dir)")
}

// ResolvePath maps a path argument to the db file as etcd-dump-db does: a
// name ending in "db" is the file, anything else a data directory.
func ResolvePath(p string) string {
	if strings.HasSuffix(p, "db") {
		return p
	}
	return filepath.Join(p, "member", "snap", "db")
}

// lockedError explains a lock wait that timed out, naming the holders.
func lockedError(path string, timeout time.Duration) error {
	who := "another process (no holder found in /proc/locks)"
	if h := cli.LockHolders(path); len(h) > 0 {
		who = strings.Join(h, ", ")
	}
	return fmt.Errorf("%s is locked by %s; gave up after %v (a running etcd holds the db: stop it, or copy the file, or raise --timeout)", path, who, timeout)
}

// OpenDB opens the bbolt file read-only with a lock timeout (0: wait
// forever). The error names the lock holder when the wait times out. The
// page tree is checked first with plain reads (CheckPages): a db with
// damaged pages is refused with a *PagesError (exit 1), because bbolt
// panics or recurses without end on them.
func OpenDB(path string, timeout time.Duration) (*bolt.DB, error) {
	return OpenDBWithProgress(path, timeout, nil)
}

// OpenDBWithProgress is OpenDB drawing a progress bar for the page check on
// errw (only on a terminal, after a second).
func OpenDBWithProgress(path string, timeout time.Duration, errw io.Writer) (*bolt.DB, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s is a directory, not a db file", path)
	}
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, lockedError(path, timeout)
		}
		if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch) {
			// No valid meta page: damage (exit 1) named by offset, not
			// an I/O error.
			if probs, perr := MetaProblems(path); perr == nil && len(probs) > 0 {
				return nil, pagesError(path, probs)
			}
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	var prog *cli.Progress
	if errw != nil {
		prog = cli.NewProgress(errw, "checking pages", fi.Size())
		defer prog.Done()
	}
	probs, err := CheckPages(path, prog.Update)
	if err == nil && len(probs) > 0 {
		err = pagesError(path, probs)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// OpenStore opens the MVCC store read-only (for keys, hashkv), with the
// same lock handling as OpenDB.
func OpenStore(path string, timeout time.Duration, errw io.Writer) (*mvcc.Store, error) {
	db, err := OpenDBWithProgress(path, timeout, errw) // lock wait and page check
	if err != nil {
		return nil, err
	}
	db.Close()
	to := timeout
	if to == 0 {
		to = math.MaxInt64
	}
	// mvcc.Open panics inside bbolt on some damaged pages: safe turns that
	// into an error (the half-open backend is left to the process exit).
	var s *mvcc.Store
	err = safe(func() (err error) {
		s, err = mvcc.Open(path, mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true, Timeout: to, InitialMmapSize: -1}})
		return err
	})
	if err != nil {
		if cli.Code(err) == cli.ExitProblems {
			return nil, err
		}
		var le *mvcc.LockedError
		if errors.As(err, &le) || errors.Is(err, bolt.ErrTimeout) {
			return nil, lockedError(path, timeout)
		}
		return nil, problemErr{err}
	}
	return s, nil
}

// problemErr marks a damaged db found while opening the store: exit 1.
type problemErr struct{ err error }

func (p problemErr) Error() string { return p.err.Error() }
func (p problemErr) Unwrap() error { return p.err }

// exitFor turns a store error into an exit-code error: damage is 1.
func exitFor(err error) error {
	var p problemErr
	if errors.As(err, &p) {
		return &cli.ExitError{Code: cli.ExitProblems, Err: err}
	}
	return err
}

// FileOffset returns the byte offset in the db file of b, a slice a
// read-only bbolt transaction handed out (it points into bbolt's mmap), or
// -1 if b is not inside the mapping.
func FileOffset(db *bolt.DB, size int64, b []byte) int64 {
	if len(b) == 0 || db == nil {
		return -1
	}
	base := db.Info().Data
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if p < base || int64(p-base) >= size {
		return -1
	}
	return int64(p - base)
}

// PairOffset returns the byte offset in the db file (at path) of the pair
// (k, v) of a top-level bucket, or -1. Pairs of an inline bucket whose
// bytes bbolt copied (unaligned) are found next to the bucket's name in its
// parent page: in a leaf page a key is followed by its value.
func PairOffset(db *bolt.DB, tx *bolt.Tx, path string, size int64, bucket string, k, v []byte) int64 {
	if off := FileOffset(db, size, k); off >= 0 {
		return off
	}
	nk, _ := tx.Cursor().Seek([]byte(bucket))
	if string(nk) != bucket {
		return -1
	}
	start := FileOffset(db, size, nk)
	if start < 0 {
		return -1
	}
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	buf := make([]byte, min(2*int64(db.Info().PageSize), size-start))
	n, _ := f.ReadAt(buf, start)
	i := bytes.Index(buf[:n], append(bytes.Clone(k), v...))
	if i < 0 {
		return -1
	}
	return start + int64(i)
}

// Problem is one damaged item found while dumping.
type Problem struct {
	File   string
	Offset int64 // -1 when unknown
	Bucket string
	Key    []byte
	Detail string
}

func (p Problem) String() string {
	loc := p.File
	if p.Offset >= 0 {
		loc = fmt.Sprintf("%s:%d", p.File, p.Offset)
	}
	return fmt.Sprintf("problem at %s: bucket %q key %s: %s", loc, p.Bucket, quote(p.Key), p.Detail)
}

func (p Problem) object() *cli.Object {
	o := (&cli.Object{}).Set("kind", "problem").Set("file", p.File).Set("offset", p.Offset).Set("bucket", p.Bucket)
	setBytes(o, "key", p.Key)
	return o.Set("detail", p.Detail)
}

// reporter prints problems: on stderr for text formats, inline in json.
type reporter struct {
	out, errw io.Writer
	format    cli.Format
	n         int
}

func (r *reporter) report(p Problem) error {
	r.n++
	if r.format == cli.JSON {
		return cli.JSONLine(r.out, p.object())
	}
	_, err := fmt.Fprintln(r.errw, p.String())
	return err
}

func (r *reporter) result(what string) error {
	if r.n > 0 {
		return cli.Problems(r.n, what)
	}
	return nil
}
