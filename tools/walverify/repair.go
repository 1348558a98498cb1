package walverify

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/vfs"
	"github.com/etckit/etckit/wal"
	"github.com/spf13/cobra"
)

// Plan is what repair would do.
type Plan struct {
	Action string // "none", "truncate-torn-tail", "truncate-crc-tail", "refuse"
	// Segment is the path of the segment to truncate, TruncateAt its new
	// size, Size its current size, Backup the path of the full copy
	// written first.
	Segment    string
	TruncateAt int64
	Size       int64
	Backup     string
	Reason     string // why (or why not)
}

// PlanRepair decides what repair may do for a verified log.
// allowCRCTail enables truncating a CRC-broken tail beyond the commit index.
func PlanRepair(fsys vfs.FS, r *Report, allowCRCTail bool) Plan {
	d := r.Damage
	if d == nil {
		// No damaged frame, but a problem repair cannot fix (a segment
		// that starts with zeros, a missing segment, conflicting
		// metadata): refuse, so that "repair && start etcd" stops here.
		for _, f := range r.Findings {
			if f.Problem() {
				return Plan{Action: "refuse", Reason: fmt.Sprintf("no damaged tail to truncate, but the log has %d problems repair does not fix, the first: %s", r.Problems(), f)}
			}
		}
		return Plan{Action: "none", Reason: "the log has no damaged record"}
	}
	p := Plan{Segment: d.Path, TruncateAt: d.Offset, Backup: d.Path + ".broken"}
	if fi, err := fsys.Stat(d.Path); err == nil {
		p.Size = fi.Size()
	}
	committed := max(r.MaxCommit, d.CommitAfter)
	refuse := func(format string, args ...any) Plan {
		p.Action, p.Reason = "refuse", fmt.Sprintf(format, args...)
		return p
	}
	switch {
	case !d.LastSegment:
		return refuse("the damage at %s:%d is not in the newest segment: truncating would drop whole later segments of synced records (mid-log corruption; restore this member from a snapshot or re-add it)", d.Path, d.Offset)
	case committed > d.LastGoodIndex:
		return refuse("truncating at %s:%d would lose committed entries %d..%d (a HardState commits %d); restore this member from a snapshot or re-add it", d.Path, d.Offset, d.LastGoodIndex+1, committed, committed)
	case d.ValidAfter > 0:
		return refuse("%d valid-looking records follow the damaged record at %s:%d; this is not a torn tail, and truncating would drop them", d.ValidAfter, d.Path, d.Offset)
	case d.Kind == corrupt.TornTail:
		p.Action = "truncate-torn-tail"
		p.Reason = fmt.Sprintf("torn tail at %s:%d (%s): the record was never completely written", d.Path, d.Offset, d.Reason)
		return p
	case !allowCRCTail:
		return refuse("the record at %s:%d fails the CRC check and is not a torn write; it is the log's last record and its entries are beyond the commit index %d, so --truncate-uncommitted-crc-tail may truncate it", d.Path, d.Offset, committed)
	}
	if _, err := fsys.Stat(p.Backup); err == nil {
		return refuse("the backup %s already exists; move it away first", p.Backup)
	}
	p.Action = "truncate-crc-tail"
	p.Reason = fmt.Sprintf("CRC-broken tail at %s:%d (%s); every entry from there on is beyond the last commit index %d (last valid entry %d)", d.Path, d.Offset, d.Reason, committed, d.LastGoodIndex)
	return p
}

func newRepair(cfg Config) *cobra.Command {
	var dirs cli.Dirs
	var format cli.FormatFlag
	var dryRun, crcTail bool
	cmd := &cobra.Command{
		Use:   "repair [data-dir]",
		Short: "Truncate a torn (or, with a flag, CRC-broken uncommitted) tail of the WAL after writing a backup",
		Long: `Repair the newest WAL segment by truncating it after its last valid record,
after writing a full copy to <segment>.broken. By default only a torn tail (a
write cut short by a crash, etcd's own repair rule) is truncated. With
--truncate-uncommitted-crc-tail, a final record that fails the CRC check is
truncated too, but only if nothing valid follows it and every entry from there
on is beyond the last HardState commit index. Anything else is refused with
the reason. Stop etcd first: the segment is locked as etcd locks it.
Exit status: 0 nothing to do or repaired, 1 refused (problems remain), 2 usage or I/O error.`,
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
			rep, err := Verify(cfg.FS, walDir, "")
			if err != nil {
				return err
			}
			plan := PlanRepair(cfg.FS, rep, crcTail)
			out := cmd.OutOrStdout()
			if err := printPlan(out, format.Value, plan, dryRun); err != nil {
				return err
			}
			switch {
			case plan.Action == "none":
				return nil
			case plan.Action == "refuse":
				return &cli.ExitError{Code: cli.ExitProblems, Err: errors.New("repair refused: " + plan.Reason)}
			case dryRun:
				return cli.Problems(1, "repairable problems")
			}
			var res string
			switch plan.Action {
			case "truncate-torn-tail":
				rr, err := wal.Repair(walDir, wal.Options{FS: cfg.FS})
				if errors.Is(err, wal.ErrLocked) || errors.Is(err, vfs.ErrLocked) {
					return lockedError(plan.Segment, err)
				}
				if err != nil {
					return fmt.Errorf("wal repair: %w", err)
				}
				res = rr.String()
			case "truncate-crc-tail":
				if err := truncateWithBackup(cfg.FS, plan); err != nil {
					return err
				}
				res = fmt.Sprintf("%s: truncated from %d to %d bytes; backup at %s", plan.Segment, plan.Size, plan.TruncateAt, plan.Backup)
			}
			after, err := Verify(cfg.FS, walDir, "")
			if err != nil {
				return err
			}
			if err := printDone(out, format.Value, res, after); err != nil {
				return err
			}
			if after.Damage != nil {
				return cli.Problems(after.Problems(), "problems remaining after repair")
			}
			return nil
		},
	}
	dirs.AddFlags(cmd)
	cli.AddFormatFlag(cmd, &format, cli.Simple, cli.Simple, cli.Table, cli.JSON)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would be done and write nothing")
	cmd.Flags().BoolVar(&crcTail, "truncate-uncommitted-crc-tail", false, "also truncate a final CRC-broken record when everything from it on is beyond the commit index")
	return cmd
}

func printPlan(w io.Writer, f cli.Format, p Plan, dryRun bool) error {
	switch f {
	case cli.JSON:
		o := (&cli.Object{}).Set("kind", "plan").Set("action", p.Action).Set("dry_run", dryRun)
		o.Set("segment", p.Segment).Set("size", p.Size).Set("truncate_at", p.TruncateAt).Set("backup", p.Backup).Set("reason", p.Reason)
		return cli.JSONLine(w, o)
	case cli.Table:
		return cli.WriteTable(w, []string{"PLAN", "VALUE"}, [][]string{
			{"action", p.Action}, {"dry run", fmt.Sprint(dryRun)}, {"segment", p.Segment},
			{"truncate", fmt.Sprintf("%d -> %d bytes", p.Size, p.TruncateAt)}, {"backup", p.Backup}, {"reason", p.Reason}})
	}
	prefix := "plan"
	if dryRun {
		prefix = "dry run"
	}
	switch p.Action {
	case "none", "refuse":
		_, err := fmt.Fprintf(w, "%s: %s: %s\n", prefix, p.Action, p.Reason)
		return err
	}
	_, err := fmt.Fprintf(w, "%s: %s: copy %s to %s, then truncate it from %d to %d bytes\n%s: reason: %s\n",
		prefix, p.Action, p.Segment, p.Backup, p.Size, p.TruncateAt, prefix, p.Reason)
	return err
}

func printDone(w io.Writer, f cli.Format, res string, after *Report) error {
	if f == cli.JSON {
		return cli.JSONLine(w, (&cli.Object{}).Set("kind", "repaired").Set("result", res).Set("verify", verdict(after)))
	}
	_, err := fmt.Fprintf(w, "repaired: %s\nverify after repair: %s\n", res, verdict(after))
	return err
}

// truncateWithBackup copies the segment to the backup (synced, directory
// synced) and then truncates the segment, holding etcd's lock on it.
func truncateWithBackup(fsys vfs.FS, p Plan) error {
	f, err := fsys.OpenFile(p.Segment, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("wal repair: %w", err)
	}
	defer f.Close()
	if err := f.TryLock(); err != nil {
		return lockedError(p.Segment, err)
	}
	out, err := fsys.OpenFile(p.Backup, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("wal repair: create backup: %w", err)
	}
	_, cerr := io.Copy(out, io.NewSectionReader(f, 0, 1<<62))
	if cerr == nil {
		cerr = out.Sync()
	}
	if err := out.Close(); cerr == nil {
		cerr = err
	}
	if cerr == nil {
		cerr = fsys.SyncDir(filepath.Dir(p.Backup))
	}
	if cerr != nil {
		return fmt.Errorf("wal repair: backup %s: %w", p.Backup, cerr)
	}
	if err := f.Truncate(p.TruncateAt); err != nil {
		return fmt.Errorf("wal repair: truncate %s: %w", p.Segment, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("wal repair: fsync %s: %w", p.Segment, err)
	}
	return nil
}

// lockedError says that a segment is locked and, where the system tells,
// by whom.
func lockedError(path string, err error) error {
	msg := fmt.Sprintf("wal repair: %s is locked: %v; stop etcd first", path, err)
	if h := cli.LockHolders(path); len(h) > 0 {
		msg += " (" + strings.Join(h, "; ") + ")"
	}
	return errors.New(msg)
}
