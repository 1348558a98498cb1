// Command etckit is the etckit toolkit's command line: it mounts the
// offline tools, which live in tools/... as library packages, and maps
// their errors to the exit status (0 clean, 1 problems found, 2 usage or
// I/O error; see tools/cli).
package main

import (
	"fmt"
	"os"

	"github.com/etckit/etckit/server"
	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/tools/doctor"
	"github.com/etckit/etckit/tools/dumpdb"
	"github.com/etckit/etckit/tools/dumplogs"
	"github.com/etckit/etckit/tools/snapshot"
	"github.com/etckit/etckit/tools/walverify"
	"github.com/spf13/cobra"
)

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "etckit",
		Short:         "Serve, read, check and repair etcd data directories byte for byte",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
	}
	// `etckit --version` prints what `etcd --version` does (etckit is
	// etcd 3.7.3 to its clients), as `etckit serve --version`.
	version := root.Flags().Bool("version", false, "Print the version and exit.")
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		if *version {
			server.PrintVersion(cmd.OutOrStdout())
			return nil
		}
		return cmd.Help()
	}
	root.AddCommand(server.NewCommand())
	root.AddCommand(dumplogs.NewCommand())
	root.AddCommand(walverify.NewCommand())
	root.AddCommand(snapshot.NewCommand())
	root.AddCommand(dumpdb.NewCommand())
	root.AddCommand(doctor.NewCommand())
	return root
}

func main() {
	root := newRoot()
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		// etcd's flags also come with one dash (Go's flag package).
		root.SetArgs(append([]string{"serve"}, server.NormalizeArgs(os.Args[2:])...))
	}
	err := root.Execute()
	if err != nil {
		fmt.Fprintln(os.Stderr, "etckit:", err)
	}
	os.Exit(cli.Code(err))
}
