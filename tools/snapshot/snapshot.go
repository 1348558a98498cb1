// Package snapshot is `etckit snapshot`: save, status and restore of etcd
// db snapshots, with the behaviour of `etcdctl snapshot save` and
// `etcdutl snapshot status|restore` (FORMATS.md §6), plus what operators
// keep asking for:
//
//	etckit snapshot save FILE --endpoints HOST:PORT   stream Maintenance.Snapshot from a running
//	                                                  etcd or etckit; the sha256 trailer is checked,
//	                                                  the file written to FILE.part, fsynced, renamed
//	etckit snapshot save FILE --data-dir DIR          offline: one bbolt read transaction of
//	                                                  DIR/member/snap/db, plus the sha256 trailer
//	etckit snapshot status FILE [-w simple|table|json|fields] [--etcdutl]
//	                                                  etcdutl's hash, revision, total keys, size and
//	                                                  version, plus compact revision, user keys and
//	                                                  tombstones apart, trailer present/matching,
//	                                                  HashKV and a page-structure check
//	etckit snapshot restore FILE --data-dir DIR --name N --initial-cluster C
//	        --initial-cluster-token T --initial-advertise-peer-urls U [--wal-dir W]
//	        [--skip-hash-check] [--bump-revision B --mark-compacted]
//	                                                  a new member directory, as etcdutl writes it
//	etckit snapshot restore --from-data-dir SRC (--to-index N | --to-revision R) --data-dir DIR ...
//	                                                  point-in-time: newest base at or below the
//	                                                  target plus the committed WAL entries after it
//	etckit snapshot restore FILE --initial-cluster C ... --print-plan
//	                                                  the commands that restore and start every member
//
// Exit status: 0 done, 1 the snapshot is damaged (status), 2 usage or I/O
// error or a refused restore.
package snapshot

import (
	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/vfs"
	"github.com/spf13/cobra"
)

// Config holds the commands' dependencies.
type Config struct {
	FS vfs.FS // default vfs.OS{}
}

// NewCommand returns `snapshot` with save, status and restore.
func NewCommand() *cobra.Command { return New(Config{}) }

// New returns `snapshot` with the given dependencies.
func New(cfg Config) *cobra.Command {
	if cfg.FS == nil {
		cfg.FS = vfs.OS{}
	}
	return cli.Group("snapshot", "Save, inspect and restore etcd db snapshots (etcdctl/etcdutl parity, point-in-time restore)",
		newSave(cfg), newStatus(cfg), newRestore(cfg))
}
