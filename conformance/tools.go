//go:build tools

// Package conformance runs etcd's own test suite (go.etcd.io/etcd/tests/v3)
// with `etckit serve` as the framework's etcd binary; see run.sh and
// CONFORMANCE.md. The imports keep the binaries the suite needs in go.mod:
// etcd (its mixed-version cases run it beside etckit), etcdctl and etcdutl,
// and the modules tests/e2e needs beyond tests/common (its failpoint
// package, for CONFORMANCE_PKGS=go.etcd.io/etcd/tests/v3/e2e).
package conformance

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/etcdutl/v3"
	_ "go.etcd.io/etcd/server/v3"
	_ "go.etcd.io/etcd/tests/v3/common"
	_ "go.etcd.io/etcd/tests/v3/robustness/failpoint"
)
