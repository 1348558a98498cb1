package cli

import "github.com/etckit/etckit/vfs"

// LockHolders names the processes holding a lock on path (vfs.LockHolders:
// /proc/locks on Linux, nil elsewhere). It is best effort: nil when nothing
// is found.
func LockHolders(path string) []string { return vfs.LockHolderNames(path) }
