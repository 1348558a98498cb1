package walverify

import (
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/vfs"
	"github.com/spf13/cobra"
)

// Config holds the commands' dependencies.
type Config struct {
	FS vfs.FS // default vfs.OS{}
}

// NewCommand returns `wal` with `verify` and `repair`, on the operating
// system's filesystem.
func NewCommand() *cobra.Command { return New(Config{}) }

// New returns `wal` with the given dependencies.
func New(cfg Config) *cobra.Command {
	if cfg.FS == nil {
		cfg.FS = vfs.OS{}
	}
	return cli.Group("wal", "Check and repair an etcd member's write-ahead log", newVerify(cfg), newRepair(cfg))
}

func newVerify(cfg Config) *cobra.Command {
	var dirs cli.Dirs
	var format cli.FormatFlag
	cmd := &cobra.Command{
		Use:   "verify [data-dir]",
		Short: "Check the WAL (CRC chain, segments, metadata, HardState, indexes, snapshot files); read-only",
		Long: `Check every record of every WAL segment and the .snap files, and list each
finding with its file and byte offset, classified as torn tail, mid-log
corruption, loss of committed entries, inconsistency or snapshot.
Read-only. Exit status: 0 clean, 1 problems found, 2 usage or I/O error.`,
		Args:          cobra.MaximumNArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := dirs.FromArgs(args); err != nil {
				return err
			}
			walDir, err := dirs.Wal()
			if err != nil {
				return err
			}
			rep, err := verifyShowingProgress(cmd, cfg.FS, walDir, dirs.Snap())
			if err != nil {
				return err
			}
			if err := printReport(cmd.OutOrStdout(), format.Value, rep); err != nil {
				return err
			}
			if n := rep.Problems(); n > 0 {
				return cli.Problems(n, "problems")
			}
			return nil
		},
	}
	dirs.AddFlags(cmd)
	cli.AddFormatFlag(cmd, &format, cli.Simple, cli.Simple, cli.Table, cli.JSON)
	return cmd
}

// verifyShowingProgress runs Verify with a progress bar on stderr (shown
// only on a terminal, after a second).
func verifyShowingProgress(cmd *cobra.Command, fsys vfs.FS, walDir, snapDir string) (*Report, error) {
	starts, total := map[string]int64{}, int64(0)
	if names, err := fsys.ReadDirNames(walDir); err == nil {
		for _, n := range names {
			if fi, err := fsys.Stat(filepath.Join(walDir, n)); err == nil && strings.HasSuffix(n, ".wal") {
				starts[n] = total
				total += fi.Size()
			}
		}
	}
	p := cli.NewProgress(cmd.ErrOrStderr(), "wal verify", total)
	defer p.Done()
	return VerifyWithProgress(fsys, walDir, snapDir, func(seg string, off int64) { p.Update(starts[seg] + off) })
}

func offsetText(off int64) string {
	if off < 0 {
		return "-"
	}
	return strconv.FormatInt(off, 10)
}

// printReport prints the findings and a summary.
func printReport(w io.Writer, f cli.Format, r *Report) error {
	switch f {
	case cli.JSON:
		for _, x := range r.Findings {
			o := (&cli.Object{}).Set("kind", "finding").Set("severity", x.Severity).Set("class", x.Class).Set("check", x.Check)
			o.Set("file", x.File).Set("offset", x.Offset).Set("detail", x.Detail)
			if err := cli.JSONLine(w, o); err != nil {
				return err
			}
		}
		return cli.JSONLine(w, summaryObject(r))
	case cli.Table:
		rows := [][]string{}
		for _, x := range r.Findings {
			rows = append(rows, []string{x.Severity, x.Class, x.Check, x.File, offsetText(x.Offset), x.Detail})
		}
		if len(rows) > 0 {
			if err := cli.WriteTable(w, []string{"SEVERITY", "CLASS", "CHECK", "FILE", "OFFSET", "DETAIL"}, rows); err != nil {
				return err
			}
		}
		return cli.WriteTable(w, []string{"WAL", "VALUE"}, summaryRows(r))
	}
	for _, x := range r.Findings {
		if _, err := fmt.Fprintln(w, x.String()); err != nil {
			return err
		}
	}
	for _, row := range summaryRows(r) {
		fmt.Fprintf(w, "%s: %s\n", row[0], row[1])
	}
	return nil
}

func verdict(r *Report) string {
	if n := r.Problems(); n > 0 {
		return fmt.Sprintf("%d problems", n)
	}
	return "ok"
}

func summaryRows(r *Report) [][]string {
	rows := [][]string{
		{"wal dir", r.WALDir},
		{"segments", strconv.Itoa(len(r.Segments))},
		{"records", strconv.Itoa(r.Records)},
		{"entries", fmt.Sprintf("%d (index %d..%d)", r.Entries, r.FirstIndex, r.LastIndex)},
		{"hard state", fmt.Sprintf("term=%d vote=%x commit=%d", r.Term, r.Vote, r.Commit)},
		{"member", fmt.Sprintf("node=%x cluster=%x", r.NodeID, r.ClusterID)},
		{"snapshot records", strconv.Itoa(len(r.SnapshotRecords))},
	}
	if r.SnapDir != "" {
		rows = append(rows, []string{"snap files", strconv.Itoa(len(r.SnapFiles))})
	}
	return append(rows, []string{"result", verdict(r)})
}

func summaryObject(r *Report) *cli.Object {
	o := (&cli.Object{}).Set("kind", "summary").Set("wal_dir", r.WALDir).Set("snap_dir", r.SnapDir)
	o.Set("segments", r.Segments).Set("records", r.Records).Set("entries", r.Entries)
	o.Set("first_index", r.FirstIndex).Set("last_index", r.LastIndex)
	o.Set("term", r.Term).Set("vote", r.Vote).Set("commit", r.Commit)
	o.Set("node_id", r.NodeID).Set("cluster_id", r.ClusterID)
	o.Set("snapshot_records", len(r.SnapshotRecords)).Set("snap_files", len(r.SnapFiles))
	o.Set("problems", r.Problems()).Set("result", verdict(r))
	return o
}
