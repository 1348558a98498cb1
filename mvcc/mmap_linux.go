//go:build linux

package mvcc

import "syscall"

// etcd populates the mapping at open on Linux (backend/config_linux.go).
const boltMmapFlags = syscall.MAP_POPULATE
