//go:build tools

package etcd36

// The benchmarks build etcd-dump-logs and the cluster tests etcd 3.6's
// server; the imports keep their modules (and etcd 3.6's raft) in go.mod.
import (
	_ "go.etcd.io/etcd/server/v3"
	_ "go.etcd.io/etcd/v3/tools/etcd-dump-logs"
)
