package robustness

import "syscall"

// memberProcAttr makes a member die with the test binary (SIGKILL when
// its parent goes), so a test binary killed before its cleanups ran (a
// timeout, an interrupt) leaves no member running.
func memberProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
