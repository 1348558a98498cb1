//go:build !linux

package vfs

// LockHolders names the processes holding a lock on path; only Linux is
// supported, elsewhere it returns nil.
func LockHolders(path string) []LockHolder { return nil }
