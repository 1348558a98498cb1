//go:build !linux

package robustness

import "syscall"

// memberProcAttr: elsewhere a member outlives a test binary killed before
// its cleanups ran.
func memberProcAttr() *syscall.SysProcAttr { return nil }
