//go:build tools

package interop

// etcdctl 3.7.3 is built from this module by the auth tests (etcdctl37 in
// etcdctl37_test.go); the import keeps it, and its dependencies, in go.mod.
import _ "go.etcd.io/etcd/etcdctl/v3"
