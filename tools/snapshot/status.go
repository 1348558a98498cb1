package snapshot

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/mvcc/boltfile"
	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/vfs"
	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"
)

// Status is what `snapshot status` reports. The first five fields are
// etcdutl's (same JSON names and meaning; the package doc, "etcdutl's
// status"); the rest are etckit's.
type Status struct {
	Hash      uint32 `json:"hash"`     // CRC-32C over every bucket name and pair
	Revision  int64  `json:"revision"` // main revision of the last key-bucket entry
	TotalKey  int    `json:"totalKey"` // user keys whose last entry is not a tombstone
	TotalSize int64  `json:"totalSize"`
	Version   string `json:"version"` // meta/storageVersion

	Path     string
	FileSize int64
	// Trailer: "match", "mismatch" or "absent".
	Trailer                  string
	TrailerDetail            string
	KeyRevisions             int   // entries in the key bucket
	Tombstones               int   // tombstone entries among them
	DistinctKeys             int   // user keys with any revision in the bucket
	CompactRevision          int64 // meta/finishedCompactRev, -1 if none
	ScheduledCompactRevision int64
	ConsistentIndex, Term    uint64
	HashKV                   *mvcc.KeyValueHash
	HashKVErr                string
	// Problems are integrity failures (damaged pages, bbolt check errors,
	// trailer mismatch); each names the file and offset where known.
	Problems []string
}

func newStatus(cfg Config) *cobra.Command {
	var format cli.FormatFlag
	var etcdutl bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status FILE",
		Short: "Report a db snapshot's hash, revision, keys, size, version, trailer and HashKV (read-only)",
		Long: `Report what etcdutl snapshot status reports (hash = CRC-32C over every bucket,
revision, total keys, total size, storage version) and also: the compact
revision, key revisions, tombstones and distinct keys apart, whether a sha256
trailer exists and matches, the consistent index and term, HashKV, and a
check of the bbolt page structure that names the offset of any damage.
FILE may be an etcdctl/etckit snapshot or a member/snap/db. Read-only.
--etcdutl prints only etcdutl's fields, byte for byte as etcdutl does.
Exit status: 0 intact, 1 damaged, 2 usage or I/O error.`,
		Args:          cobra.ExactArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := ReadStatus(cfg.FS, args[0], timeout)
			if err != nil {
				return err
			}
			if err := printStatus(cmd.OutOrStdout(), format.Value, etcdutl, st); err != nil {
				return err
			}
			if n := len(st.Problems); n > 0 {
				return cli.Problems(n, "integrity problems")
			}
			return nil
		},
	}
	cli.AddFormatFlag(cmd, &format, cli.Simple, cli.Simple, cli.Table, cli.JSON, Fields)
	cmd.Flags().BoolVar(&etcdutl, "etcdutl", false, "print only etcdutl's fields, in etcdutl's format")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the file lock (a running member holds its db)")
	return cmd
}

// Fields is etcdutl's -w fields format: `"Name" : value` lines.
const Fields cli.Format = "fields"

// ReadStatus inspects the snapshot or db file at path without changing it.
func ReadStatus(fsys vfs.FS, path string, lockTimeout time.Duration) (*Status, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return nil, cli.Usage("snapshot status: %v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	st := &Status{Path: path, FileSize: fi.Size(), CompactRevision: -1, ScheduledCompactRevision: -1}
	image := st.FileSize
	if snap.HasTrailer(st.FileSize) {
		image -= snap.TrailerSize
		switch err := snap.Verify(fsys, path); {
		case err == nil:
			st.Trailer = "match"
		case errors.Is(err, snap.ErrDigestMismatch):
			st.Trailer, st.TrailerDetail = "mismatch", err.Error()
			st.Problems = append(st.Problems, "sha256 trailer mismatch: "+err.Error())
		default:
			return nil, err
		}
	} else {
		st.Trailer = "absent"
		st.TrailerDetail = "no sha256 trailer (size is not 512k+32): a db copied from a data dir; restore needs --skip-hash-check"
	}
	if cerr := boltfile.Check(f, image, boltfile.Options{Limit: 1}).First(path); cerr != nil {
		// bbolt would crash or misread on this file: stop here.
		st.Problems = append(st.Problems, "damaged bbolt image: "+cerr.Error())
		return st, nil
	}
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("snapshot status: %s is locked by a running member (waited %s): %w", path, lockTimeout, err)
		}
		return nil, fmt.Errorf("snapshot status: open %s: %w", path, err)
	}
	err = db.View(func(tx *bolt.Tx) error { return st.scan(tx) })
	_ = db.Close()
	if err != nil {
		return nil, err
	}
	if len(st.Problems) == 0 {
		st.hashKV(path)
	}
	return st, nil
}

// scan computes etcdutl's fields and the extras in one pass.
func (st *Status) scan(tx *bolt.Tx) error {
	for cerr := range tx.Check() {
		st.Problems = append(st.Problems, fmt.Sprintf("bbolt check: %s: %v", st.Path, cerr))
	}
	if len(st.Problems) > 0 {
		return nil
	}
	st.TotalSize = tx.Size()
	live := map[string]bool{}
	var err error
	st.Hash, err = mvcc.DBHash(tx, false, func(bucket, k, v []byte) error {
		if string(bucket) != mvcc.BucketKey {
			return nil
		}
		r, tomb, err := mvcc.ParseRevKey(k)
		if err != nil {
			return fmt.Errorf("snapshot status: %s: key bucket: %x is not a revision: %w", st.Path, k, err)
		}
		st.Revision = r.Main
		st.KeyRevisions++
		kv, err := mvcc.DecodeKeyValue(v)
		if err != nil {
			return fmt.Errorf("snapshot status: %s: key bucket revision %d_%d: %w", st.Path, r.Main, r.Sub, err)
		}
		if tomb {
			st.Tombstones++
		}
		live[string(kv.Key)] = !tomb
		return nil
	})
	if err != nil {
		return err
	}
	st.DistinctKeys = len(live)
	for _, ok := range live {
		if ok {
			st.TotalKey++
		}
	}
	if m := tx.Bucket([]byte(mvcc.BucketMeta)); m != nil {
		st.Version = string(m.Get([]byte(mvcc.MetaStorageVersion)))
		for _, x := range []struct {
			k []byte
			p *int64
		}{{[]byte(mvcc.MetaFinishedCompactRev), &st.CompactRevision}, {[]byte(mvcc.MetaScheduledCompactRev), &st.ScheduledCompactRevision}} {
			if v := m.Get(x.k); len(v) > 0 {
				if r, _, err := mvcc.ParseRevKey(v); err == nil {
					*x.p = r.Main
				}
			}
		}
	}
	if st.ConsistentIndex, st.Term, err = mvcc.ReadConsistentIndex(tx); err != nil {
		st.Problems = append(st.Problems, fmt.Sprintf("%s: %v", st.Path, err))
	}
	return nil
}

// hashKV computes etcd's HashKV at the current revision with the MVCC
// store, read-only.
func (st *Status) hashKV(path string) {
	s, err := mvcc.Open(path, mvcc.Options{Backend: mvcc.BackendOptions{ReadOnly: true}})
	if err != nil {
		st.HashKVErr = err.Error()
		return
	}
	defer s.Close()
	h, _, err := s.HashKV(0)
	if err != nil {
		st.HashKVErr = err.Error()
		return
	}
	st.HashKV = &h
}

// humanBytes is go-humanize's Bytes (SI units), which etcdutl prints.
func humanBytes(s uint64) string {
	if s < 10 {
		return fmt.Sprintf("%d B", s)
	}
	sizes := []string{"B", "kB", "MB", "GB", "TB", "PB", "EB"}
	e := math.Floor(math.Log(float64(s)) / math.Log(1000))
	val := math.Floor(float64(s)/math.Pow(1000, e)*10+0.5) / 10
	f := "%.0f %s"
	if val < 10 {
		f = "%.1f %s"
	}
	return fmt.Sprintf(f, val, sizes[int(e)])
}

func (st *Status) etcdutlRow() []string {
	return []string{fmt.Sprintf("%x", st.Hash), fmt.Sprint(st.Revision), fmt.Sprint(st.TotalKey), humanBytes(uint64(st.TotalSize)), st.Version}
}

var etcdutlHeader = []string{"HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE", "VERSION"}

// etcdTable renders a table as etcd's tools do (tablewriter 0.0.x with
// ALIGN_RIGHT): centred upper-case header, right-aligned cells.
func etcdTable(w io.Writer, header []string, rows [][]string) error {
	width := make([]int, len(header))
	for i, h := range header {
		width[i] = len(h)
		for _, r := range rows {
			width[i] = max(width[i], len(r[i]))
		}
	}
	var b strings.Builder
	sep := func() {
		b.WriteByte('+')
		for _, n := range width {
			b.WriteString(strings.Repeat("-", n+2) + "+")
		}
		b.WriteByte('\n')
	}
	sep()
	b.WriteByte('|')
	for i, h := range header {
		gap := width[i] - len(h)
		b.WriteString(" " + strings.Repeat(" ", gap/2) + h + strings.Repeat(" ", gap-gap/2) + " |")
	}
	b.WriteByte('\n')
	sep()
	for _, r := range rows {
		b.WriteByte('|')
		for i, c := range r {
			b.WriteString(" " + strings.Repeat(" ", width[i]-len(c)) + c + " |")
		}
		b.WriteByte('\n')
	}
	sep()
	_, err := io.WriteString(w, b.String())
	return err
}

func (st *Status) extraRows() [][]string {
	rows := [][]string{
		{"file", st.Path},
		{"file size", fmt.Sprintf("%d (%s)", st.FileSize, humanBytes(uint64(st.FileSize)))},
		{"sha256 trailer", st.Trailer},
	}
	if len(st.Problems) > 0 && st.TotalSize == 0 {
		for _, p := range st.Problems {
			rows = append(rows, []string{"problem", p})
		}
		return rows
	}
	rows = append(rows,
		[]string{"compact revision", strconv.FormatInt(st.CompactRevision, 10)},
		[]string{"key revisions", strconv.Itoa(st.KeyRevisions)},
		[]string{"live keys", strconv.Itoa(st.TotalKey)},
		[]string{"tombstones", strconv.Itoa(st.Tombstones)},
		[]string{"distinct keys", strconv.Itoa(st.DistinctKeys)},
		[]string{"consistent index", fmt.Sprintf("%d (term %d)", st.ConsistentIndex, st.Term)},
	)
	if st.ScheduledCompactRevision > st.CompactRevision {
		rows = append(rows, []string{"scheduled compaction", strconv.FormatInt(st.ScheduledCompactRevision, 10)})
	}
	if st.HashKV != nil {
		rows = append(rows, []string{"hashkv", fmt.Sprintf("%d (hash revision %d, compact revision %d)", st.HashKV.Hash, st.HashKV.Revision, st.HashKV.CompactRevision)})
	} else if st.HashKVErr != "" {
		rows = append(rows, []string{"hashkv", "error: " + st.HashKVErr})
	}
	for _, p := range st.Problems {
		rows = append(rows, []string{"problem", p})
	}
	return rows
}

func (st *Status) object() *cli.Object {
	o := (&cli.Object{}).Set("hash", st.Hash).Set("revision", st.Revision).Set("totalKey", st.TotalKey).
		Set("totalSize", st.TotalSize).Set("version", st.Version)
	o.Set("file", st.Path).Set("fileSize", st.FileSize).Set("trailer", st.Trailer)
	o.Set("compactRevision", st.CompactRevision).Set("scheduledCompactRevision", st.ScheduledCompactRevision)
	o.Set("keyRevisions", st.KeyRevisions).Set("liveKeys", st.TotalKey).Set("tombstones", st.Tombstones).Set("distinctKeys", st.DistinctKeys)
	o.Set("consistentIndex", st.ConsistentIndex).Set("term", st.Term)
	if st.HashKV != nil {
		o.Set("hashKV", (&cli.Object{}).Set("hash", st.HashKV.Hash).Set("hashRevision", st.HashKV.Revision).Set("compactRevision", st.HashKV.CompactRevision))
	} else {
		o.Set("hashKV", nil)
	}
	problems := st.Problems
	if problems == nil {
		problems = []string{}
	}
	return o.Set("problems", problems)
}

func printStatus(w io.Writer, f cli.Format, etcdutl bool, st *Status) error {
	damaged := st.TotalSize == 0 && len(st.Problems) > 0
	switch f {
	case Fields:
		var b strings.Builder
		if !damaged {
			fmt.Fprintln(&b, `"Hash" :`, st.Hash)
			fmt.Fprintln(&b, `"Revision" :`, st.Revision)
			fmt.Fprintln(&b, `"Keys" :`, st.TotalKey)
			fmt.Fprintln(&b, `"Size" :`, st.TotalSize)
			fmt.Fprintln(&b, `"Version" :`, st.Version)
		}
		if etcdutl {
			if damaged {
				return fmt.Errorf("snapshot status: %s", strings.Join(st.Problems, "; "))
			}
		} else {
			for _, r := range st.extraRows() {
				fmt.Fprintf(&b, "%q : %s\n", r[0], r[1])
			}
		}
		_, err := io.WriteString(w, b.String())
		return err
	case cli.JSON:
		if etcdutl {
			if damaged {
				return fmt.Errorf("snapshot status: %s", strings.Join(st.Problems, "; "))
			}
			return cli.JSONLine(w, (&cli.Object{}).Set("hash", st.Hash).Set("revision", st.Revision).
				Set("totalKey", st.TotalKey).Set("totalSize", st.TotalSize).Set("version", st.Version))
		}
		return cli.JSONLine(w, st.object())
	case cli.Table:
		if !damaged {
			if err := etcdTable(w, etcdutlHeader, [][]string{st.etcdutlRow()}); err != nil {
				return err
			}
		}
		if etcdutl {
			if damaged {
				return fmt.Errorf("snapshot status: %s", strings.Join(st.Problems, "; "))
			}
			return nil
		}
		return cli.WriteTable(w, []string{"FIELD", "VALUE"}, st.extraRows())
	}
	if !damaged {
		if _, err := fmt.Fprintln(w, strings.Join(st.etcdutlRow(), ", ")); err != nil {
			return err
		}
	}
	if etcdutl {
		if damaged {
			return fmt.Errorf("snapshot status: %s", strings.Join(st.Problems, "; "))
		}
		return nil
	}
	for _, r := range st.extraRows() {
		if _, err := fmt.Fprintf(w, "%s: %s\n", r[0], r[1]); err != nil {
			return err
		}
	}
	return nil
}
