// Package cli holds what every etckit offline tool shares: the -w/--write-out
// flag and its printers (tablewriter tables, JSON lines, simple text), the
// exit-code error that cmd/etckit maps to the process exit status, the
// --data-dir/--wal-dir resolution, and a progress bar on stderr.
//
// Exit codes (every tool):
//
//	0  clean: the command ran and found no problem
//	1  problems found (corruption, inconsistencies); the output lists each one
//	   with its file and byte offset
//	2  usage error or an I/O error that stopped the command
//
// Library code never calls os.Exit: commands return an *ExitError (or any
// other error, which means 2) from RunE and cmd/etckit calls Code.
//
// # Writing a tool (dump-db, doctor, ...)
//
//   - A package under tools/ exports NewCommand() *cobra.Command (and New(Config)
//     taking the vfs.FS), with RunE, SilenceUsage and SilenceErrors set, writing
//     to cmd.OutOrStdout() and cmd.ErrOrStderr() only. cmd/etckit adds it with
//     one AddCommand line.
//   - Dirs.AddFlags gives --data-dir/--wal-dir; Dirs.FromArgs accepts the data
//     dir as the positional argument; Dirs.Wal, Snap and DB resolve etcd's
//     layout.
//   - AddFormatFlag gives -w with Simple, Table and JSON; print tables with
//     NewTable/WriteTable, JSON with JSONLine of an *Object (ordered, stable
//     field names, one object per line; a "kind" field says what each line is).
//   - Report each problem with its file and byte offset and go on; return
//     Problems(n, ...) at the end (exit 1), Usage(...) for bad invocations.
//   - NewProgress(cmd.ErrOrStderr(), ...) for long scans: it draws only on a
//     terminal and only after a second.
//   - LockHolders(path) names who holds a lock (bbolt's flock, etcd's WAL
//     locks) for a "locked by pid N (etcd)" message.
//   - Test in-process with tools/tooltest: Run, Golden (testdata/golden,
//     rewritten with -update), HashDir/RequireUnchanged for read-only proofs.
package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	ExitOK       = 0
	ExitProblems = 1
	ExitUsage    = 2
)

// ExitError is an error that carries the process exit code.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// Problems returns the error a command returns after it has printed n
// problems (exit code 1). The message is a one-line summary.
func Problems(n int, what string) error {
	return &ExitError{Code: ExitProblems, Err: fmt.Errorf("%d %s found", n, what)}
}

// Usage wraps a usage error (exit code 2).
func Usage(format string, args ...any) error {
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

// Code maps an error returned by a command to the process exit code: nil is
// 0, an *ExitError its Code, anything else (flag parsing, I/O) 2.
func Code(err error) int {
	if err == nil {
		return ExitOK
	}
	var e *ExitError
	if errors.As(err, &e) {
		return e.Code
	}
	return ExitUsage
}

// IsProblems reports whether err only says that problems were found (the
// output already lists them), so a caller need not print it again.
func IsProblems(err error) bool { return Code(err) == ExitProblems }

// Group returns a parent command (wal, dump-db, snapshot) that only holds
// its subcommands: run alone it is a usage error (exit 2) naming them.
func Group(use, short string, subs ...*cobra.Command) *cobra.Command {
	names := make([]string, len(subs))
	for i, s := range subs {
		names[i] = s.Name()
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return Usage("%s: missing subcommand (%s)", use, strings.Join(names, ", "))
		},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.AddCommand(subs...)
	return cmd
}
