//go:build !linux

package mvcc

const boltMmapFlags = 0
