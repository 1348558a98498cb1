// Package snapshot is `etckit snapshot`: save, status and restore of etcd
// db snapshots, with the behaviour of `etcdctl snapshot save` and
// `etcdutl snapshot status|restore` (restore: engine's package doc,
// "Restore"; status: "etcdutl's status" below), plus what operators
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
//
// # etcdutl's status
//
// etcdutl opens the file read-only with bbolt (a SHA-256 trailer does not
// bother it), fails on any bbolt consistency-check error, and reports five
// values, which Status repeats under the same JSON names:
//
//	hash       the whole-db hash with nothing left out (mvcc's package
//	           doc, "Hashes")
//	revision   main revision of the key bucket's last key, 0 when empty
//	totalKey   user keys whose newest entry is not a tombstone (3.6; 3.5
//	           counted every pair of every bucket)
//	totalSize  the bbolt transaction's size (high-water page × page size)
//	version    meta/storageVersion, "" when missing (3.6 only)
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
