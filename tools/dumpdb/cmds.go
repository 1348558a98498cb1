package dumpdb

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"

	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/tools/cli"
	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// safe runs fn and turns a panic inside bbolt (it panics on some damaged
// pages, and a wild page pointer faults on the mmap) into an error.
func safe(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = &cli.ExitError{Code: cli.ExitProblems, Err: fmt.Errorf("bbolt failed reading a damaged page: %v", r)}
		}
	}()
	return fn()
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// ---- buckets

// BucketInfo describes one top-level bucket.
type BucketInfo struct {
	Name  string
	Keys  int
	Bytes int64 // key + value bytes
	Pages int   // branch + leaf pages, overflow included (0 for an inline bucket)
	Inuse int   // bytes used on those pages
}

// Buckets lists the top-level buckets of db in byte order.
func Buckets(db *bolt.DB) ([]BucketInfo, error) {
	var out []BucketInfo
	err := safe(func() error {
		return db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
				st := b.Stats()
				bi := BucketInfo{Name: string(name), Pages: st.BranchPageN + st.BranchOverflowN + st.LeafPageN + st.LeafOverflowN, Inuse: st.BranchInuse + st.LeafInuse}
				if err := b.ForEach(func(k, v []byte) error {
					bi.Keys++
					bi.Bytes += int64(len(k) + len(v))
					return nil
				}); err != nil {
					return err
				}
				out = append(out, bi)
				return nil
			})
		})
	})
	return out, err
}

func newBuckets() *cobra.Command {
	var c common
	cmd := &cobra.Command{
		Use:           "buckets [PATH]",
		Short:         "List the buckets with their key count, key+value bytes and pages (etcd-dump-db list-bucket)",
		Args:          cobra.MaximumNArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			db, _, err := c.openArgs(cmd, args)
			if err != nil {
				return err
			}
			defer db.Close()
			bs, err := Buckets(db)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			switch c.format.Value {
			case cli.JSON:
				for _, b := range bs {
					o := (&cli.Object{}).Set("kind", "bucket").Set("name", b.Name).Set("keys", b.Keys).Set("bytes", b.Bytes).Set("pages", b.Pages).Set("inuse", b.Inuse)
					if err := cli.JSONLine(w, o); err != nil {
						return err
					}
				}
			case cli.Table:
				var rows [][]string
				for _, b := range bs {
					rows = append(rows, []string{b.Name, strconv.Itoa(b.Keys), strconv.FormatInt(b.Bytes, 10), strconv.Itoa(b.Pages), strconv.Itoa(b.Inuse)})
				}
				return cli.WriteTable(w, []string{"BUCKET", "KEYS", "BYTES", "PAGES", "INUSE"}, rows)
			default:
				for _, b := range bs {
					fmt.Fprintf(w, "%s keys=%d bytes=%d pages=%d\n", b.Name, b.Keys, b.Bytes, b.Pages)
				}
			}
			return nil
		},
	}
	c.add(cmd)
	return cmd
}

// ---- iterate

func newIterate() *cobra.Command {
	var c common
	var limit int
	var decode, oldest bool
	cmd := &cobra.Command{
		Use:   "iterate BUCKET [PATH]",
		Short: "Print a bucket's pairs, newest key first (etcd-dump-db iterate-bucket); --decode for etcd-aware decoding",
		Long: `Print a bucket's pairs, newest (largest) key first as etcd-dump-db does, or
--oldest-first. Without --decode: key=%q, value=%q. With --decode the key
bucket shows revision and KeyValue, meta its fields by name, lease, auth,
authUsers and authRoles decoded (simple output equals etcd-dump-db's); json
and table also decode members and alarm. A value that does not decode is
printed raw and reported with its file offset (exit 1).`,
		Args:          cobra.RangeArgs(1, 2),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := c.dbPath(args[1:])
			if err != nil {
				return err
			}
			if limit < 0 {
				return cli.Usage("--limit must not be negative")
			}
			db, err := c.open(cmd, path)
			if err != nil {
				return err
			}
			defer db.Close()
			return iterate(cmd, db, path, args[0], limit, decode, oldest, c.format.Value)
		},
	}
	c.add(cmd)
	cmd.Flags().IntVar(&limit, "limit", 0, "print at most N pairs (0: all)")
	cmd.Flags().BoolVar(&decode, "decode", false, "decode values the etcd way (revision+KeyValue, meta fields, leases, auth, members)")
	cmd.Flags().BoolVar(&oldest, "oldest-first", false, "print in key order instead of newest first")
	return cmd
}

func iterate(cmd *cobra.Command, db *bolt.DB, path, bucket string, limit int, decode, oldest bool, format cli.Format) error {
	w := cmd.OutOrStdout()
	rep := &reporter{out: w, errw: cmd.ErrOrStderr(), format: format}
	size := fileSize(path)
	prog := cli.NewProgress(cmd.ErrOrStderr(), "iterate "+bucket, size)
	defer prog.Done()
	var rows [][]string
	err := safe(func() error {
		return db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte(bucket))
			if b == nil {
				return cli.Usage("bucket %q not found in %s", bucket, path)
			}
			c := b.Cursor()
			first, next := c.Last, c.Prev
			if oldest {
				first, next = c.First, c.Next
			}
			n := 0
			var done int64
			for k, v := first(); k != nil; k, v = next() {
				if limit > 0 && n >= limit {
					break
				}
				n++
				done += int64(len(k) + len(v))
				prog.Update(done)
				if v == nil && b.Bucket(k) != nil {
					if format == cli.JSON {
						o := (&cli.Object{}).Set("kind", "bucket").Set("bucket", bucket)
						setBytes(o, "name", k)
						if err := cli.JSONLine(w, o); err != nil {
							return err
						}
					} else {
						fmt.Fprintf(w, "bucket=%q\n", k)
					}
					continue
				}
				var d Decoded
				if decode {
					d = Decode(bucket, k, v)
				} else {
					d = raw(k, v, nil)
				}
				switch format {
				case cli.JSON:
					o := (&cli.Object{}).Set("kind", "kv").Set("bucket", bucket)
					for _, f := range d.JSON.Keys() {
						val, _ := d.JSON.Get(f)
						o.Set(f, val)
					}
					if err := cli.JSONLine(w, o); err != nil {
						return err
					}
				case cli.Table:
					rows = append(rows, []string{d.Key, d.Value})
				default:
					line := defaultLine(k, v)
					if decode {
						line = d.Etcd
					}
					if _, err := fmt.Fprintln(w, line); err != nil {
						return err
					}
				}
				if d.Err != nil {
					if err := rep.report(Problem{File: path, Offset: PairOffset(db, tx, path, size, bucket, k, v), Bucket: bucket, Key: k, Detail: d.Err.Error()}); err != nil {
						return err
					}
				}
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	if format == cli.Table {
		if err := cli.WriteTable(w, []string{"KEY", "VALUE"}, rows); err != nil {
			return err
		}
	}
	return rep.result("undecodable pairs")
}

// ---- keys

// prefixEnd is etcd's range end for a prefix ("\x00" for all keys).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

// KeysAt calls fn for every live key under prefix at revision rev (0: the
// current revision), in key order, paging through the store 1,000 keys at
// a time. It returns the revision used.
func KeysAt(s *mvcc.Store, prefix []byte, rev int64, keysOnly bool, fn func(kv *KV) error) (int64, error) {
	if rev == 0 {
		rev = s.Rev()
	}
	key, end := prefix, prefixEnd(prefix)
	if len(prefix) == 0 {
		key = []byte{0}
	}
	for {
		var resp *pb.RangeResponse
		err := safe(func() (err error) {
			resp, err = s.Range(&pb.RangeRequest{Key: key, RangeEnd: end, Revision: rev, Limit: 1000, KeysOnly: keysOnly})
			return err
		})
		if err != nil {
			return rev, err
		}
		for _, kv := range resp.GetKvs() {
			if err := fn(&KV{Key: kv.GetKey(), Create: kv.GetCreateRevision(), Mod: kv.GetModRevision(), Version: kv.GetVersion(), Lease: kv.GetLease(), Value: kv.GetValue()}); err != nil {
				return rev, err
			}
		}
		kvs := resp.GetKvs()
		if !resp.GetMore() || len(kvs) == 0 {
			return rev, nil
		}
		key = append(bytes.Clone(kvs[len(kvs)-1].GetKey()), 0)
	}
}

// KV is a live key at a revision.
type KV struct {
	Key                  []byte
	Create, Mod, Version int64
	Lease                int64
	Value                []byte
}

func (kv *KV) object() *cli.Object {
	o := (&cli.Object{}).Set("kind", "kv")
	setBytes(o, "key", kv.Key)
	o.Set("create_revision", kv.Create).Set("mod_revision", kv.Mod).Set("version", kv.Version).Set("lease", kv.Lease)
	setBytes(o, "value", kv.Value)
	if k, ok := DecodeK8s(kv.Value); ok {
		o.Set("k8s", k.object())
	}
	return o
}

func newKeys() *cobra.Command {
	var c common
	var rev int64
	var prefix string
	var keysOnly bool
	cmd := &cobra.Command{
		Use:           "keys [PATH]",
		Short:         "Print the keyspace at a revision (etcdctl get --prefix --rev, offline)",
		Args:          cobra.MaximumNArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := c.dbPath(args)
			if err != nil {
				return err
			}
			if rev < 0 {
				return cli.Usage("--rev must not be negative")
			}
			s, err := OpenStore(path, c.timeout, cmd.ErrOrStderr())
			if err != nil {
				return exitFor(err)
			}
			defer s.Close()
			if err := c.checkMeta(cmd, path); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			var rows [][]string
			n := 0
			at, err := KeysAt(s, []byte(prefix), rev, keysOnly, func(kv *KV) error {
				n++
				switch c.format.Value {
				case cli.JSON:
					return cli.JSONLine(w, kv.object())
				case cli.Table:
					rows = append(rows, []string{quote(kv.Key), strconv.FormatInt(kv.Create, 10), strconv.FormatInt(kv.Mod, 10), strconv.FormatInt(kv.Version, 10), fmt.Sprintf("%x", kv.Lease), quote(kv.Value) + k8sSuffix(kv.Value)})
					return nil
				}
				if keysOnly {
					_, err := fmt.Fprintln(w, quote(kv.Key))
					return err
				}
				_, err := fmt.Fprintf(w, "key=%s, create=%d, mod=%d, ver=%d, lease=%x, value=%s%s\n", quote(kv.Key), kv.Create, kv.Mod, kv.Version, kv.Lease, quote(kv.Value), k8sSuffix(kv.Value))
				return err
			})
			if err != nil {
				if errors.Is(err, mvcc.ErrCompacted) || errors.Is(err, mvcc.ErrFutureRev) {
					return cli.Usage("--rev %d: %v (compacted at %d, current revision %d)", rev, err, s.CompactRev(), s.Rev())
				}
				return err
			}
			switch c.format.Value {
			case cli.JSON:
				return cli.JSONLine(w, (&cli.Object{}).Set("kind", "summary").Set("revision", at).Set("current_revision", s.Rev()).Set("compact_revision", s.CompactRev()).Set("count", n))
			case cli.Table:
				return cli.WriteTable(w, []string{"KEY", "CREATE", "MOD", "VER", "LEASE", "VALUE"}, rows)
			}
			return nil
		},
	}
	c.add(cmd)
	cmd.Flags().Int64Var(&rev, "rev", 0, "revision (0: current)")
	cmd.Flags().StringVar(&prefix, "prefix", "", "only keys with this prefix")
	cmd.Flags().BoolVar(&keysOnly, "keys-only", false, "print only the keys")
	return cmd
}

// ---- history

// metaRev reads a compact revision from the meta bucket (-1 if absent).
func metaRev(tx *bolt.Tx, name []byte) int64 {
	if b := tx.Bucket([]byte(mvcc.BucketMeta)); b != nil {
		if r, _, err := mvcc.ParseRevKey(b.Get(name)); err == nil {
			return r.Main
		}
	}
	return -1
}

func newHistory() *cobra.Command {
	var c common
	var prefix bool
	cmd := &cobra.Command{
		Use:   "history KEY [PATH]",
		Short: "Print every revision of a key still in the db (puts and deletes), oldest first",
		Long: `Print every revision of KEY (with --prefix: of every key starting with KEY)
that the key bucket still holds, oldest first: revision, put or delete, value,
create/mod revision, version and lease. Revisions at or below the compact
revision are gone except the one each key kept. One streaming pass over the
key bucket.`,
		Args:          cobra.RangeArgs(1, 2),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := c.dbPath(args[1:])
			if err != nil {
				return err
			}
			db, err := c.open(cmd, path)
			if err != nil {
				return err
			}
			defer db.Close()
			want := []byte(args[0])
			w := cmd.OutOrStdout()
			rep := &reporter{out: w, errw: cmd.ErrOrStderr(), format: c.format.Value}
			size := fileSize(path)
			prog := cli.NewProgress(cmd.ErrOrStderr(), "history", size)
			defer prog.Done()
			var rows [][]string
			n := 0
			var compact, current int64 = -1, 1
			err = safe(func() error {
				return db.View(func(tx *bolt.Tx) error {
					compact = metaRev(tx, []byte(mvcc.MetaFinishedCompactRev))
					b := tx.Bucket([]byte(mvcc.BucketKey))
					if b == nil {
						return nil
					}
					var done int64
					cur := b.Cursor()
					for k, v := cur.First(); k != nil; k, v = cur.Next() {
						done += int64(len(k) + len(v))
						prog.Update(done)
						d := decodeKey(k, v)
						if d.Err != nil {
							if err := rep.report(Problem{File: path, Offset: PairOffset(db, tx, path, size, "key", k, v), Bucket: "key", Key: k, Detail: d.Err.Error()}); err != nil {
								return err
							}
						}
						r, _, perr := mvcc.ParseRevKey(k)
						if perr == nil {
							current = max(current, r.Main)
						}
						kv, kerr := mvcc.DecodeKeyValue(v)
						if perr != nil || kerr != nil {
							continue
						}
						if !bytes.Equal(kv.Key, want) && !(prefix && bytes.HasPrefix(kv.Key, want)) {
							continue
						}
						n++
						switch c.format.Value {
						case cli.JSON:
							o := (&cli.Object{}).Set("kind", "revision")
							for _, f := range d.JSON.Keys() {
								val, _ := d.JSON.Get(f)
								o.Set(f, val)
							}
							if err := cli.JSONLine(w, o); err != nil {
								return err
							}
						case cli.Table:
							rows = append(rows, []string{d.Key, d.Value})
						default:
							if _, err := fmt.Fprintln(w, d.Key+" "+d.Value); err != nil {
								return err
							}
						}
					}
					return nil
				})
			})
			if err != nil {
				return err
			}
			current = max(current, compact)
			switch c.format.Value {
			case cli.JSON:
				o := (&cli.Object{}).Set("kind", "summary")
				setBytes(o, "key", want)
				o.Set("prefix", prefix).Set("revisions", n).Set("compact_revision", compact).Set("current_revision", current)
				if err := cli.JSONLine(w, o); err != nil {
					return err
				}
			case cli.Table:
				if err := cli.WriteTable(w, []string{"REVISION", "CHANGE"}, rows); err != nil {
					return err
				}
				fallthrough
			default:
				fmt.Fprintf(w, "# %d revisions; compact revision %d, current revision %d\n", n, compact, current)
			}
			return rep.result("undecodable pairs")
		},
	}
	c.add(cmd)
	cmd.Flags().BoolVar(&prefix, "prefix", false, "KEY is a prefix: the history of every key under it")
	return cmd
}

// ---- hashkv

func newHashKV() *cobra.Command {
	var c common
	var rev int64
	cmd := &cobra.Command{
		Use:   "hashkv [PATH]",
		Short: "Print etcd's HashKV at a revision (equal to the HashKV RPC and etcdutl hashkv)",
		Long: `Print etcd's HashKV of the key bucket at --rev (0: current revision): CRC-32C
over the retained revisions between the compact revision and --rev, the value
etcd's corruption check compares between members. Computed from the key
bucket in two streaming passes (no key index in memory, only each key's
newest revision). -w json prints exactly
etcdutl hashkv's {"hash","hashRevision","compactRevision"}.`,
		Args:          cobra.MaximumNArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := c.dbPath(args)
			if err != nil {
				return err
			}
			if rev < 0 {
				return cli.Usage("--rev must not be negative")
			}
			db, err := c.open(cmd, path)
			if err != nil {
				return err
			}
			defer db.Close()
			// Two passes over the key bucket: the bar's total is twice the file.
			prog := cli.NewProgress(cmd.ErrOrStderr(), "hashkv", 2*fileSize(path))
			h, err := HashKV(db, path, rev, prog.Update)
			prog.Done()
			if err != nil {
				var he *HashKVError
				if errors.As(err, &he) {
					return cli.Usage("%v", he)
				}
				return err
			}
			return printHashKV(cmd.OutOrStdout(), c.format.Value, h)
		},
	}
	c.add(cmd)
	cmd.Flags().Int64Var(&rev, "rev", 0, "revision (0: current)")
	return cmd
}

func printHashKV(w io.Writer, f cli.Format, h mvcc.KeyValueHash) error {
	switch f {
	case cli.JSON:
		o := (&cli.Object{}).Set("hash", h.Hash).Set("hashRevision", h.Revision).Set("compactRevision", h.CompactRevision)
		return cli.JSONLine(w, o)
	case cli.Table:
		return cli.WriteTable(w, []string{"HASH", "HASH REVISION", "COMPACT REVISION"},
			[][]string{{strconv.FormatUint(uint64(h.Hash), 10), strconv.FormatInt(h.Revision, 10), strconv.FormatInt(h.CompactRevision, 10)}})
	}
	_, err := fmt.Fprintf(w, "hash: %d\nhash revision: %d\ncompact revision: %d\n", h.Hash, h.Revision, h.CompactRevision)
	return err
}
