// Package doctor is `etckit doctor`: one read-only report across an etcd
// member's WAL, .snap files and bbolt db.
//
// # Checks
//
//   - wal: everything `etckit wal verify` checks (CRC chain, segments,
//     metadata, HardState, indexes, snapshot records against .snap files),
//     its findings folded in with the prefix "wal/";
//   - consistent-index: meta/consistent_index ≤ the last HardState's commit
//     (the db cannot have applied what raft never committed), and ≥ the
//     index of the newest valid WAL snapshot record (else etcd needs
//     snap/<index>.snap.db to boot); committed entries past it are reported
//     as the replay etcd will do at boot;
//   - term: meta/term ≤ the last HardState's term;
//   - membership: the members bucket against the newest loadable .snap's v2
//     membership, against meta/confState, and the WAL's member ID;
//   - bbolt-pages: the page tree walked with plain reads (dumpdb.CheckPages):
//     wild page ids, cycles, elements past their page, keys out of order,
//     each with its byte offset; a db with such pages is not read further,
//     since bbolt panics or recurses without end on them;
//   - bbolt-meta: a meta page bbolt rejects (magic, version, checksum),
//     at its offset; bbolt then reads the tree of the other one, which is
//     the state before the last commit when the damaged page was newer
//     (both rejected: bbolt-pages, the db is not read);
//   - bbolt: bbolt's own consistency check (Tx.Check), each error with the
//     page's byte offset;
//   - revisions: every key of the key bucket is a well-formed revision,
//     strictly increasing, its value decodes, a put's mod_revision is its
//     revision, create_revision ≤ mod_revision, version ≥ 1; the compact
//     revisions in meta are not beyond the last revision.
//   - lease, members: their values decode.
//
// With --replay the committed WAL entries past consistent_index are applied
// by the engine (engine.Apply) to a copy of the member (WAL, .snap files and
// db copied into a temporary directory outside the data directory, which is
// removed afterwards), and the state the server would reach is printed:
// consistent_index, revision, compact revision, HashKV, key count, members.
//
// # Output
//
// simple: one line per finding, "<severity> <check> at <file>[:<offset>]:
// <detail>", then "name: value" lines and "result: ok" or "result: N
// errors, M warnings". table: the same as tables. json: {"kind":"finding",
// "severity","check","file","offset" (-1: whole file),"detail"} per
// finding, {"kind":"replay",...} with --replay, then {"kind":"summary",...}.
//
// Severities: error (exit 1), warn (a problem, also exit 1) and info (not a
// problem). Exit 2 on usage or I/O errors, or when the db is locked by a
// running member past --timeout (the error names the holder).
package doctor

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/vfs"
	"github.com/spf13/cobra"
)

// Severities.
const (
	SevError = "error"
	SevWarn  = "warn"
	SevInfo  = "info"
)

// Finding is one result of the doctor.
type Finding struct {
	Severity string
	Check    string
	File     string
	Offset   int64 // -1: the whole file
	Detail   string
}

func (f Finding) String() string {
	loc := f.File
	if f.Offset >= 0 {
		loc = fmt.Sprintf("%s:%d", f.File, f.Offset)
	}
	return fmt.Sprintf("%s %s at %s: %s", f.Severity, f.Check, loc, f.Detail)
}

// Report is the doctor's result.
type Report struct {
	WALDir, SnapDir, DBPath string
	Findings                []Finding

	// From the WAL.
	HardStateTerm, HardStateCommit uint64
	LastIndex                      uint64
	NodeID, ClusterID              uint64
	SnapshotIndex, SnapshotTerm    uint64 // newest valid WAL snapshot record
	// From the db.
	ConsistentIndex, DBTerm uint64
	Revision, CompactRev    int64
	Keys                    int // revisions in the key bucket
	DBMembers, SnapMembers  []string
	SnapFile                string
	StorageVersion          string

	Replay *Replay
}

// Config holds the command's dependencies.
type Config struct {
	FS vfs.FS // the WAL and .snap files; default vfs.OS{}
}

// NewCommand returns `doctor`.
func NewCommand() *cobra.Command { return New(Config{}) }

// New returns `doctor` with the given dependencies.
func New(cfg Config) *cobra.Command {
	var dirs cli.Dirs
	var format cli.FormatFlag
	var timeout time.Duration
	var replay bool
	cmd := &cobra.Command{
		Use:   "doctor [data-dir]",
		Short: "Check a member's WAL, .snap files and db against each other (read-only); --replay shows the state after boot",
		Long: `One report across the WAL, the .snap files and the bbolt db: the WAL checks
of wal verify, consistent_index against the HardState commit and the newest
WAL snapshot, the db term against the HardState term, membership in the .snap
against the members bucket and confState, bbolt's consistency check and the
key bucket's revisions. Read-only. With --replay the committed WAL entries
past consistent_index are applied to a temporary copy and the resulting state
is printed. Exit status: 0 clean (info only), 1 errors or warnings, 2 usage
or I/O error.`,
		Args:          cobra.MaximumNArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := dirs.FromArgs(args); err != nil {
				return err
			}
			if dirs.DataDir == "" {
				return cli.Usage("--data-dir is required (the db and .snap files live there)")
			}
			rep, err := Diagnose(dirs, Options{Timeout: timeout, Replay: replay, Progress: cmd.ErrOrStderr(), FS: cfg.FS})
			if err != nil {
				return err
			}
			if err := printReport(cmd.OutOrStdout(), format.Value, rep); err != nil {
				return err
			}
			if e, w := rep.counts(); e+w > 0 {
				return cli.Problems(e+w, "problems")
			}
			return nil
		},
	}
	dirs.AddFlags(cmd)
	cli.AddFormatFlag(cmd, &format, cli.Simple, cli.Simple, cli.Table, cli.JSON)
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for bbolt's file lock (0: forever)")
	cmd.Flags().BoolVar(&replay, "replay", false, "apply the committed WAL entries past consistent_index to a temporary copy and print the resulting state")
	return cmd
}

func (r *Report) counts() (errs, warns int) {
	for _, f := range r.Findings {
		switch f.Severity {
		case SevError:
			errs++
		case SevWarn:
			warns++
		}
	}
	return errs, warns
}

func (r *Report) verdict() string {
	e, w := r.counts()
	if e+w == 0 {
		return "ok"
	}
	return fmt.Sprintf("%d errors, %d warnings", e, w)
}

func offsetText(off int64) string {
	if off < 0 {
		return "-"
	}
	return strconv.FormatInt(off, 10)
}

func (r *Report) summaryRows() [][]string {
	rows := [][]string{
		{"wal dir", r.WALDir},
		{"db", r.DBPath},
		{"member", fmt.Sprintf("node=%x cluster=%x", r.NodeID, r.ClusterID)},
		{"hard state", fmt.Sprintf("term=%d commit=%d (last index %d)", r.HardStateTerm, r.HardStateCommit, r.LastIndex)},
		{"wal snapshot", fmt.Sprintf("term=%d index=%d", r.SnapshotTerm, r.SnapshotIndex)},
		{"db consistent index", fmt.Sprintf("%d (term %d)", r.ConsistentIndex, r.DBTerm)},
		{"db revision", fmt.Sprintf("%d (compact revision %d, %d revisions stored)", r.Revision, r.CompactRev, r.Keys)},
		{"db members", strings.Join(r.DBMembers, ",")},
	}
	if r.SnapFile != "" {
		rows = append(rows, []string{"snap members", fmt.Sprintf("%s (%s)", strings.Join(r.SnapMembers, ","), r.SnapFile)})
	}
	if p := r.Replay; p != nil {
		what := fmt.Sprintf("%d entries applied (%d..%d) on a copy", p.Applied, p.From, p.To)
		if p.Applied == 0 {
			what = "nothing to apply: every committed entry is in the db"
		}
		rows = append(rows,
			[]string{"replay", what},
			[]string{"after replay", fmt.Sprintf("consistent index %d, revision %d, compact revision %d, %d keys, hashkv %d, members %s",
				p.ConsistentIndex, p.Revision, p.CompactRev, p.Keys, p.Hash, strings.Join(p.Members, ","))})
	}
	return append(rows, []string{"result", r.verdict()})
}

func printReport(w io.Writer, f cli.Format, r *Report) error {
	switch f {
	case cli.JSON:
		for _, x := range r.Findings {
			o := (&cli.Object{}).Set("kind", "finding").Set("severity", x.Severity).Set("check", x.Check).Set("file", x.File).Set("offset", x.Offset).Set("detail", x.Detail)
			if err := cli.JSONLine(w, o); err != nil {
				return err
			}
		}
		if p := r.Replay; p != nil {
			o := (&cli.Object{}).Set("kind", "replay").Set("applied", p.Applied).Set("from", p.From).Set("to", p.To)
			o.Set("consistent_index", p.ConsistentIndex).Set("revision", p.Revision).Set("compact_revision", p.CompactRev)
			o.Set("keys", p.Keys).Set("hash", p.Hash).Set("members", nonNil(p.Members))
			if err := cli.JSONLine(w, o); err != nil {
				return err
			}
		}
		e, wn := r.counts()
		o := (&cli.Object{}).Set("kind", "summary").Set("wal_dir", r.WALDir).Set("snap_dir", r.SnapDir).Set("db", r.DBPath)
		o.Set("node_id", fmt.Sprintf("%x", r.NodeID)).Set("cluster_id", fmt.Sprintf("%x", r.ClusterID))
		o.Set("hard_state_term", r.HardStateTerm).Set("hard_state_commit", r.HardStateCommit).Set("last_index", r.LastIndex)
		o.Set("snapshot_index", r.SnapshotIndex).Set("snapshot_term", r.SnapshotTerm)
		o.Set("consistent_index", r.ConsistentIndex).Set("db_term", r.DBTerm).Set("revision", r.Revision).Set("compact_revision", r.CompactRev)
		o.Set("db_members", nonNil(r.DBMembers)).Set("snap_members", nonNil(r.SnapMembers)).Set("snap_file", r.SnapFile)
		o.Set("errors", e).Set("warnings", wn).Set("result", r.verdict())
		return cli.JSONLine(w, o)
	case cli.Table:
		if len(r.Findings) > 0 {
			var rows [][]string
			for _, x := range r.Findings {
				rows = append(rows, []string{x.Severity, x.Check, x.File, offsetText(x.Offset), x.Detail})
			}
			if err := cli.WriteTable(w, []string{"SEVERITY", "CHECK", "FILE", "OFFSET", "DETAIL"}, rows); err != nil {
				return err
			}
		}
		return cli.WriteTable(w, []string{"MEMBER", "VALUE"}, r.summaryRows())
	}
	for _, x := range r.Findings {
		if _, err := fmt.Fprintln(w, x.String()); err != nil {
			return err
		}
	}
	for _, row := range r.summaryRows() {
		fmt.Fprintf(w, "%s: %s\n", row[0], row[1])
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
