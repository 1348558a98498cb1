package dumpdb

import (
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
	"github.com/etckit/etckit/mvcc"
	"github.com/etckit/etckit/tools/cli"
	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"
)

// revGroup is one main revision of a key bucket: its fingerprint (xxhash
// of every revision key and value of the revision, in sub order) and its
// pairs (slices into the read transaction's mmap).
type revGroup struct {
	main  int64
	fp    uint64
	pairs [][2][]byte
}

// keyState is a live key at the latest common revision.
type keyState struct {
	create, mod, ver, lease int64
	vh                      uint64
	preview                 []byte // the value's first bytes
	size                    int
}

const previewLen = 48

// side is one db of a diff, streamed once in revision order.
type side struct {
	path          string
	db            *bolt.DB
	size          int64
	cur           *bolt.Cursor
	k, v          []byte
	compact, last int64
	upTo          int64 // build the keyspace up to this revision
	keys          map[string]keyState
	bytes         int64
	problems      []Problem
	started       bool
}

func (s *side) advance() {
	if !s.started {
		s.k, s.v = s.cur.First()
		s.started = true
		return
	}
	s.k, s.v = s.cur.Next()
}

// next returns the next revision group (ok false at the end). Pairs whose
// key does not parse are reported and skipped.
func (s *side) next() (g revGroup, ok bool) {
	if !s.started {
		s.advance()
	}
	d := xxhash.New()
	for s.k != nil {
		r, tomb, err := mvcc.ParseRevKey(s.k)
		if err != nil {
			s.problems = append(s.problems, Problem{File: s.path, Offset: FileOffset(s.db, s.size, s.k), Bucket: "key", Key: s.k, Detail: err.Error()})
			s.advance()
			continue
		}
		if ok && r.Main != g.main {
			break
		}
		if !ok {
			g.main, ok = r.Main, true
		}
		d.Write(s.k)
		d.Write(s.v)
		s.bytes += int64(len(s.k) + len(s.v))
		g.pairs = append(g.pairs, [2][]byte{s.k, s.v})
		if r.Main <= s.upTo {
			s.apply(r.Main, tomb, s.k, s.v)
		}
		s.advance()
	}
	g.fp = d.Sum64()
	return g, ok
}

// apply replays one pair into the keyspace.
func (s *side) apply(main int64, tomb bool, k, v []byte) {
	kv, err := mvcc.DecodeKeyValue(v)
	if err != nil {
		s.problems = append(s.problems, Problem{File: s.path, Offset: FileOffset(s.db, s.size, k), Bucket: "key", Key: k, Detail: err.Error()})
		return
	}
	if tomb {
		delete(s.keys, string(kv.Key))
		return
	}
	p := kv.Value
	if len(p) > previewLen {
		p = p[:previewLen]
	}
	s.keys[string(kv.Key)] = keyState{create: kv.CreateRevision, mod: main, ver: kv.Version, lease: kv.Lease, vh: xxhash.Sum64(kv.Value), preview: p, size: len(kv.Value)}
}

// Divergence is the first revision at which two dbs differ.
type Divergence struct {
	Revision int64
	Reason   string // "differs", "only in a", "only in b"
	A, B     []string
}

// KeyDiff is a key whose state differs at the latest common revision.
type KeyDiff struct {
	Key  []byte
	A, B *keyState
}

// DiffResult is the outcome of Diff.
type DiffResult struct {
	A, B               *side
	From, To           int64 // revisions compared (From..To)
	First              *Divergence
	DivergentRevisions int
	Keys               []KeyDiff
	Problems           []Problem
}

// Differ reports whether the dbs differ.
func (r *DiffResult) Differ() bool { return r.First != nil || len(r.Keys) > 0 }

func describePairs(pairs [][2][]byte) []string {
	var out []string
	for _, p := range pairs {
		d := decodeKey(p[0], p[1])
		out = append(out, d.Key+" "+d.Value)
	}
	return out
}

func openSide(tx *bolt.Tx, db *bolt.DB, path string) *side {
	s := &side{path: path, db: db, size: fileSize(path), compact: metaRev(tx, []byte(mvcc.MetaFinishedCompactRev)), last: 1, keys: map[string]keyState{}}
	b := tx.Bucket([]byte(mvcc.BucketKey))
	if b == nil {
		s.cur = nil
		return s
	}
	s.cur = b.Cursor()
	for k, _ := s.cur.Last(); k != nil; k, _ = s.cur.Prev() {
		if r, _, err := mvcc.ParseRevKey(k); err == nil {
			s.last = r.Main
			break
		}
	}
	s.last = max(s.last, s.compact)
	return s
}

// Diff compares the key buckets of two dbs in one streaming pass over each:
// revisions above the larger compact revision are compared by fingerprint
// up to the latest common revision (the smaller current revision), and the
// keyspaces at that revision are compared key by key.
func Diff(dbA, dbB *bolt.DB, pathA, pathB string, progress func(done int64)) (*DiffResult, error) {
	res := &DiffResult{}
	err := safe(func() error {
		return dbA.View(func(txA *bolt.Tx) error {
			return dbB.View(func(txB *bolt.Tx) error {
				a, b := openSide(txA, dbA, pathA), openSide(txB, dbB, pathB)
				res.A, res.B = a, b
				res.From = max(a.compact, b.compact, 1) + 1
				res.To = min(a.last, b.last)
				a.upTo, b.upTo = res.To, res.To
				var ga, gb revGroup
				oka, okb := false, false
				nextA := func() {
					oka = false
					if a.cur != nil {
						ga, oka = a.next()
					}
				}
				nextB := func() {
					okb = false
					if b.cur != nil {
						gb, okb = b.next()
					}
				}
				nextA()
				nextB()
				diverge := func(rev int64, reason string, pa, pb [][2][]byte) {
					res.DivergentRevisions++
					if res.First == nil {
						res.First = &Divergence{Revision: rev, Reason: reason, A: describePairs(pa), B: describePairs(pb)}
					}
				}
				for oka || okb {
					if progress != nil {
						progress(a.bytes + b.bytes)
					}
					switch {
					case oka && okb && ga.main == gb.main:
						if ga.main >= res.From && ga.main <= res.To && ga.fp != gb.fp {
							diverge(ga.main, "differs", ga.pairs, gb.pairs)
						}
						nextA()
						nextB()
					case oka && (!okb || ga.main < gb.main):
						if ga.main >= res.From && ga.main <= res.To {
							diverge(ga.main, "only in a", ga.pairs, nil)
						}
						nextA()
					default:
						if gb.main >= res.From && gb.main <= res.To {
							diverge(gb.main, "only in b", nil, gb.pairs)
						}
						nextB()
					}
				}
				res.Problems = append(append(res.Problems, a.problems...), b.problems...)
				var names []string
				for k := range a.keys {
					names = append(names, k)
				}
				for k := range b.keys {
					if _, ok := a.keys[k]; !ok {
						names = append(names, k)
					}
				}
				slices.Sort(names)
				for _, k := range names {
					sa, inA := a.keys[k]
					sb, inB := b.keys[k]
					if inA && inB && sa.mod == sb.mod && sa.create == sb.create && sa.ver == sb.ver && sa.lease == sb.lease && sa.vh == sb.vh {
						continue
					}
					kd := KeyDiff{Key: []byte(k)}
					if inA {
						kd.A = &sa
					}
					if inB {
						kd.B = &sb
					}
					res.Keys = append(res.Keys, kd)
				}
				return nil
			})
		})
	})
	return res, err
}

func stateText(s *keyState) string {
	if s == nil {
		return "absent"
	}
	v := quote(s.preview)
	if s.size > len(s.preview) {
		v += fmt.Sprintf("...(%d bytes)", s.size)
	}
	return fmt.Sprintf("mod=%d create=%d ver=%d lease=%x value=%s", s.mod, s.create, s.ver, s.lease, v)
}

func stateObject(s *keyState) any {
	if s == nil {
		return nil
	}
	o := (&cli.Object{}).Set("mod_revision", s.mod).Set("create_revision", s.create).Set("version", s.ver).Set("lease", s.lease)
	o.Set("value_xxhash", strconv.FormatUint(s.vh, 16)).Set("value_size", s.size)
	setBytes(o, "value_prefix", s.preview)
	return o
}

func newDiff() *cobra.Command {
	var c common
	cmd := &cobra.Command{
		Use:   "diff A B",
		Short: "Compare two members' dbs: the first revision where they diverge and the keys that differ",
		Long: `Compare the key buckets of two members' dbs (each a db file or a data
directory), the etcd v3.5 data-inconsistency case. One streaming pass over
each db computes a fingerprint per main revision (xxhash of its revision keys
and values); revisions above the larger compact revision and up to the
latest common revision (the smaller current revision) are compared, and the
first that differs or exists on one side only is shown with its changes.
Then the keys whose state (value, mod/create revision, version, lease)
differs at the latest common revision are listed. A member that is only
behind is not a divergence. Exit 1 when the dbs differ.`,
		Args:          cobra.ExactArgs(2),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			pa, pb := ResolvePath(args[0]), ResolvePath(args[1])
			dbA, err := c.open(cmd, pa)
			if err != nil {
				return err
			}
			defer dbA.Close()
			dbB, err := c.open(cmd, pb)
			if err != nil {
				return err
			}
			defer dbB.Close()
			prog := cli.NewProgress(cmd.ErrOrStderr(), "diff", fileSize(pa)+fileSize(pb))
			res, err := Diff(dbA, dbB, pa, pb, prog.Update)
			prog.Done()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			rep := &reporter{out: w, errw: cmd.ErrOrStderr(), format: c.format.Value}
			for _, p := range res.Problems {
				if err := rep.report(p); err != nil {
					return err
				}
			}
			if err := printDiff(w, c.format.Value, res); err != nil {
				return err
			}
			if res.Differ() {
				return cli.Problems(res.DivergentRevisions+len(res.Keys), "differences")
			}
			return rep.result("undecodable pairs")
		},
	}
	c.add(cmd)
	return cmd
}

func verdictDiff(r *DiffResult) string {
	if r.Differ() {
		return "differ"
	}
	return "same"
}

func printDiff(w io.Writer, f cli.Format, r *DiffResult) error {
	sides := []struct {
		name string
		s    *side
	}{{"a", r.A}, {"b", r.B}}
	switch f {
	case cli.JSON:
		for _, sd := range sides {
			o := (&cli.Object{}).Set("kind", "db").Set("side", sd.name).Set("path", sd.s.path).Set("current_revision", sd.s.last).Set("compact_revision", sd.s.compact)
			if err := cli.JSONLine(w, o); err != nil {
				return err
			}
		}
		if d := r.First; d != nil {
			o := (&cli.Object{}).Set("kind", "divergence").Set("revision", d.Revision).Set("reason", d.Reason).Set("a", nonNil(d.A)).Set("b", nonNil(d.B))
			if err := cli.JSONLine(w, o); err != nil {
				return err
			}
		}
		for _, k := range r.Keys {
			o := (&cli.Object{}).Set("kind", "key")
			setBytes(o, "key", k.Key)
			o.Set("a", stateObject(k.A)).Set("b", stateObject(k.B))
			if err := cli.JSONLine(w, o); err != nil {
				return err
			}
		}
		first := int64(0)
		if r.First != nil {
			first = r.First.Revision
		}
		o := (&cli.Object{}).Set("kind", "summary").Set("compared_from", r.From).Set("compared_to", r.To).Set("first_divergent_revision", first)
		o.Set("divergent_revisions", r.DivergentRevisions).Set("differing_keys", len(r.Keys)).Set("result", verdictDiff(r))
		return cli.JSONLine(w, o)
	case cli.Table:
		var rows [][]string
		for _, sd := range sides {
			rows = append(rows, []string{sd.name, sd.s.path, strconv.FormatInt(sd.s.last, 10), strconv.FormatInt(sd.s.compact, 10)})
		}
		if err := cli.WriteTable(w, []string{"SIDE", "PATH", "CURRENT REVISION", "COMPACT REVISION"}, rows); err != nil {
			return err
		}
		if d := r.First; d != nil {
			var dr [][]string
			for _, s := range d.A {
				dr = append(dr, []string{strconv.FormatInt(d.Revision, 10), d.Reason, "a", s})
			}
			for _, s := range d.B {
				dr = append(dr, []string{strconv.FormatInt(d.Revision, 10), d.Reason, "b", s})
			}
			if err := cli.WriteTable(w, []string{"FIRST DIVERGENT REVISION", "REASON", "SIDE", "CHANGE"}, dr); err != nil {
				return err
			}
		}
		if len(r.Keys) > 0 {
			var kr [][]string
			for _, k := range r.Keys {
				kr = append(kr, []string{quote(k.Key), stateText(k.A), stateText(k.B)})
			}
			if err := cli.WriteTable(w, []string{"KEY AT " + strconv.FormatInt(r.To, 10), "A", "B"}, kr); err != nil {
				return err
			}
		}
		_, err := fmt.Fprintf(w, "result: %s\n", verdictDiff(r))
		return err
	}
	for _, sd := range sides {
		fmt.Fprintf(w, "%s: %s (current revision %d, compact revision %d)\n", sd.name, sd.s.path, sd.s.last, sd.s.compact)
	}
	fmt.Fprintf(w, "compared revisions %d..%d (above the larger compact revision, up to the latest common revision)\n", r.From, r.To)
	if r.A.last != r.B.last {
		behind, ahead := "b", "a"
		if r.A.last < r.B.last {
			behind, ahead = "a", "b"
		}
		fmt.Fprintf(w, "%s is behind %s by %d revisions (not a divergence)\n", behind, ahead, max(r.A.last, r.B.last)-r.To)
	}
	if d := r.First; d != nil {
		fmt.Fprintf(w, "first divergent revision: %d (%s)\n", d.Revision, d.Reason)
		for _, s := range d.A {
			fmt.Fprintf(w, "  a %s\n", s)
		}
		for _, s := range d.B {
			fmt.Fprintf(w, "  b %s\n", s)
		}
		fmt.Fprintf(w, "divergent revisions: %d\n", r.DivergentRevisions)
	} else {
		fmt.Fprintln(w, "first divergent revision: none")
	}
	fmt.Fprintf(w, "keys that differ at revision %d: %d\n", r.To, len(r.Keys))
	for _, k := range r.Keys {
		fmt.Fprintf(w, "  %s: a %s | b %s\n", quote(k.Key), stateText(k.A), stateText(k.B))
	}
	_, err := fmt.Fprintf(w, "result: %s\n", verdictDiff(r))
	return err
}
