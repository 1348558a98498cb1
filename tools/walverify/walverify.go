// Package walverify is `etckit wal verify` and `etckit wal repair`.
package walverify

import "github.com/spf13/cobra"

// NewCommand returns `wal` with its verify and repair subcommands.
func NewCommand() *cobra.Command {
	return &cobra.Command{Use: "wal"}
}
