// Package etcd36 measures etckit's offline WAL tools against etcd 3.6's
// etcd-dump-logs (go.etcd.io/etcd/v3/tools/etcd-dump-logs) on the same
// files. It is a module of its own because etcd-dump-logs 3.6 needs raft
// 3.6 while etckit uses raft 3.7: both tools are built as binaries (etckit
// from the product module at ../.., etcd-dump-logs from this module) and
// run as processes, so wall time and peak RSS compare like for like. The
// benchmark WAL is written by ./walgen, a third small module that uses
// etckit's wal package.
//
//	cd interop/etcd36 && go test -run '^$' -bench . -count 5 -benchtime 3x
package etcd36
