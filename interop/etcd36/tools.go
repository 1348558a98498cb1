//go:build tools

package etcd36

// The benchmarks build this program; the import keeps its module (and
// etcd 3.6's raft) in go.mod.
import _ "go.etcd.io/etcd/v3/tools/etcd-dump-logs"
