package cli

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"
)

// Dirs are the locations of a member's files, given by --data-dir and
// --wal-dir the same way in every command (etcd's layout; engine's package
// doc, "Layout"): the WAL is <data-dir>/member/wal unless --wal-dir names
// another directory, snapshots are in <data-dir>/member/snap and the backend
// is <data-dir>/member/snap/db.
type Dirs struct {
	DataDir string
	WALDir  string
}

// AddFlags registers --data-dir and --wal-dir.
func (d *Dirs) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&d.DataDir, "data-dir", "", "etcd data directory (holds member/wal and member/snap)")
	cmd.Flags().StringVar(&d.WALDir, "wal-dir", "", "WAL directory, when not <data-dir>/member/wal (etcd --wal-dir)")
}

// FromArgs takes the data directory from a single positional argument (as
// etcd-dump-logs does) when --data-dir is not given.
func (d *Dirs) FromArgs(args []string) error {
	switch {
	case len(args) == 0:
	case len(args) > 1:
		return Usage("too many arguments: %q", args)
	case d.DataDir != "" && d.DataDir != args[0]:
		return Usage("data directory given twice: --data-dir %q and argument %q", d.DataDir, args[0])
	default:
		d.DataDir = args[0]
	}
	return nil
}

// Wal returns the WAL directory.
func (d *Dirs) Wal() (string, error) {
	switch {
	case d.WALDir != "":
		return d.WALDir, nil
	case d.DataDir != "":
		return filepath.Join(d.DataDir, "member", "wal"), nil
	}
	return "", Usage("--data-dir or --wal-dir is required")
}

// Snap returns the snapshot directory, or "" when only --wal-dir was given.
func (d *Dirs) Snap() string {
	if d.DataDir == "" {
		return ""
	}
	return filepath.Join(d.DataDir, "member", "snap")
}

// DB returns the path of the backend file, or "" without --data-dir.
func (d *Dirs) DB() string {
	if d.DataDir == "" {
		return ""
	}
	return filepath.Join(d.DataDir, "member", "snap", "db")
}

// String describes the directories for messages.
func (d *Dirs) String() string {
	w, _ := d.Wal()
	return fmt.Sprintf("data-dir=%q wal-dir=%q", d.DataDir, w)
}
