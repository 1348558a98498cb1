package dumpdb

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/mvcc/boltfile"
	"github.com/etckit/etckit/tools/cli"
	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"
)

// ---- hash

// DBHash is etcd's whole-db hash (mvcc.DBHash): with excludeMeta (the Hash
// RPC and etcd-dump-db hash) meta/term, meta/consistent_index and
// meta/storageVersion are left out; without (etcdutl snapshot status)
// nothing is.
func DBHash(db *bolt.DB, excludeMeta bool, progress ...func(done int64)) (uint32, error) {
	var h uint32
	var done int64
	err := safe(func() error {
		return db.View(func(tx *bolt.Tx) error {
			var err error
			h, err = mvcc.DBHash(tx, excludeMeta, func(_, k, v []byte) error {
				done += int64(len(k) + len(v))
				if len(progress) > 0 {
					progress[0](done)
				}
				return nil
			})
			return err
		})
	})
	return h, err
}

func newHash() *cobra.Command {
	var c common
	var all bool
	cmd := &cobra.Command{
		Use:   "hash [PATH]",
		Short: "Print the whole-db hash (etcd-dump-db hash; --all: etcdutl snapshot status' hash)",
		Long: `Print CRC-32C over every bucket (etcd-dump-db hash and the Hash RPC leave out
meta/term, meta/consistent_index and meta/storageVersion; --all leaves out
nothing, as etcdutl snapshot status). Unlike HashKV this hash differs between
healthy members; use hashkv to compare members.`,
		Args:          cobra.MaximumNArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			db, path, err := c.openArgs(cmd, args)
			if err != nil {
				return err
			}
			defer db.Close()
			prog := cli.NewProgress(cmd.ErrOrStderr(), "hash", fileSize(path))
			h, err := DBHash(db, !all, prog.Update)
			prog.Done()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			switch c.format.Value {
			case cli.JSON:
				return cli.JSONLine(w, (&cli.Object{}).Set("kind", "hash").Set("db_path", path).Set("hash", h).Set("all", all))
			case cli.Table:
				return cli.WriteTable(w, []string{"DB PATH", "HASH"}, [][]string{{path, strconv.FormatUint(uint64(h), 10)}})
			}
			_, err = fmt.Fprintf(w, "db path: %s\nHash: %d\n", path, h)
			return err
		},
	}
	c.add(cmd)
	cmd.Flags().BoolVar(&all, "all", false, "hash every pair (etcdutl snapshot status) instead of leaving out meta's term, consistent_index and storageVersion")
	return cmd
}

// ---- stats

// Stats are the page statistics of a db file.
type Stats struct {
	FileSize      int64
	PageSize      int
	HighWater     int64 // pages up to bbolt's high-water mark (meta pgid)
	MetaPages     int64 // 2
	FreelistPages int64 // 0 when the freelist is not persisted (etcd: NoFreelistSync)
	TreePages     int64 // branch + leaf pages of every bucket, overflow included
	FreePages     int64 // HighWater - meta - freelist - tree: free or pending
	TailPages     int64 // pages of the file past the high-water mark (grown, never used)
	Fragmentation float64
	// PredictedSize approximates the file after a defrag: the used pages
	// (meta, tree) times the page size. bbolt's compact refills pages to
	// etcd's fill percent 0.9, so the real size can differ by a few pages
	// per bucket.
	PredictedSize int64
	TxID          uint64
	Buckets       []BucketInfo
}

// DBStats computes the page statistics of db (at path).
func DBStats(db *bolt.DB, path string) (*Stats, error) {
	s := &Stats{FileSize: fileSize(path), PageSize: db.Info().PageSize, MetaPages: 2}
	bs, err := Buckets(db)
	if err != nil {
		return nil, err
	}
	s.Buckets = bs
	err = safe(func() error {
		return db.View(func(tx *bolt.Tx) error {
			s.HighWater = tx.Size() / int64(s.PageSize)
			st := tx.Cursor().Bucket().Stats()
			s.TreePages = int64(st.BranchPageN + st.BranchOverflowN + st.LeafPageN + st.LeafOverflowN)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if f, err := os.Open(path); err == nil {
		if m, ok, _ := boltfile.ReadMeta(f, s.FileSize); ok {
			s.TxID = m.TxID
			if m.Freelist != boltfile.NoFreelist && int64(m.Freelist) < s.HighWater {
				if h, err := boltfile.ReadHeader(f, s.PageSize, m.Freelist); err == nil {
					s.FreelistPages = 1 + int64(h.Overflow)
				}
			}
		}
		f.Close()
	}
	s.FreePages = max(0, s.HighWater-s.MetaPages-s.FreelistPages-s.TreePages)
	s.TailPages = max(0, s.FileSize/int64(s.PageSize)-s.HighWater)
	if s.HighWater > 0 {
		s.Fragmentation = float64(s.FreePages) / float64(s.HighWater)
	}
	s.PredictedSize = (s.MetaPages + s.FreelistPages + s.TreePages) * int64(s.PageSize)
	return s, nil
}

func newStats() *cobra.Command {
	var c common
	cmd := &cobra.Command{
		Use:   "stats [PATH]",
		Short: "Print page statistics: pages used and free, fragmentation, predicted size after defrag",
		Long: `Print the db's page statistics: file size, page size, pages up to bbolt's
high-water mark split into meta, freelist, bucket tree (branch+leaf+overflow)
and free (on the freelist or pending), the pages past the high-water mark,
fragmentation (free / high-water pages) and the predicted size after a defrag
(used pages x page size; an approximation: bbolt's compact refills pages at
etcd's fill percent), then the buckets.`,
		Args:          cobra.MaximumNArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			db, path, err := c.openArgs(cmd, args)
			if err != nil {
				return err
			}
			defer db.Close()
			s, err := DBStats(db, path)
			if err != nil {
				return err
			}
			return printStats(cmd.OutOrStdout(), c.format.Value, s)
		},
	}
	c.add(cmd)
	return cmd
}

func printStats(w io.Writer, f cli.Format, s *Stats) error {
	if f == cli.JSON {
		o := (&cli.Object{}).Set("kind", "stats").Set("file_size", s.FileSize).Set("page_size", s.PageSize).Set("txid", s.TxID)
		o.Set("high_water_pages", s.HighWater).Set("meta_pages", s.MetaPages).Set("freelist_pages", s.FreelistPages)
		o.Set("tree_pages", s.TreePages).Set("free_pages", s.FreePages).Set("tail_pages", s.TailPages)
		o.Set("fragmentation", fmt.Sprintf("%.4f", s.Fragmentation)).Set("predicted_size_after_defrag", s.PredictedSize)
		if err := cli.JSONLine(w, o); err != nil {
			return err
		}
		for _, b := range s.Buckets {
			o := (&cli.Object{}).Set("kind", "bucket").Set("name", b.Name).Set("keys", b.Keys).Set("bytes", b.Bytes).Set("pages", b.Pages).Set("inuse", b.Inuse)
			if err := cli.JSONLine(w, o); err != nil {
				return err
			}
		}
		return nil
	}
	rows := [][]string{
		{"file size", strconv.FormatInt(s.FileSize, 10)},
		{"page size", strconv.Itoa(s.PageSize)},
		{"txid", strconv.FormatUint(s.TxID, 10)},
		{"pages (high-water mark)", strconv.FormatInt(s.HighWater, 10)},
		{"meta pages", strconv.FormatInt(s.MetaPages, 10)},
		{"freelist pages", strconv.FormatInt(s.FreelistPages, 10)},
		{"bucket tree pages", strconv.FormatInt(s.TreePages, 10)},
		{"free pages", strconv.FormatInt(s.FreePages, 10)},
		{"pages past high-water mark", strconv.FormatInt(s.TailPages, 10)},
		{"fragmentation", fmt.Sprintf("%.1f%% (free / high-water pages)", 100*s.Fragmentation)},
		{"predicted size after defrag", fmt.Sprintf("%d (approximate: used pages x page size)", s.PredictedSize)},
	}
	if f == cli.Table {
		if err := cli.WriteTable(w, []string{"STAT", "VALUE"}, rows); err != nil {
			return err
		}
		var br [][]string
		for _, b := range s.Buckets {
			br = append(br, []string{b.Name, strconv.Itoa(b.Keys), strconv.FormatInt(b.Bytes, 10), strconv.Itoa(b.Pages), strconv.Itoa(b.Inuse)})
		}
		return cli.WriteTable(w, []string{"BUCKET", "KEYS", "BYTES", "PAGES", "INUSE"}, br)
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%s: %s\n", r[0], r[1])
	}
	for _, b := range s.Buckets {
		fmt.Fprintf(w, "bucket %s: keys=%d bytes=%d pages=%d inuse=%d\n", b.Name, b.Keys, b.Bytes, b.Pages, b.Inuse)
	}
	return nil
}
