package vfs

import "fmt"

// LockHolder is a process that holds a lock on a file (LockHolders).
type LockHolder struct {
	PID  int
	Comm string // the process's name
	Lock string // "FLOCK WRITE", "POSIX READ", "OFD WRITE", ...
	// Opener is set for an OFD lock, whose holder /proc/locks does not
	// name: the process has the file open and may hold it.
	Opener bool
}

func (h LockHolder) String() string {
	s := fmt.Sprintf("pid %d (%s) holds a %s lock", h.PID, h.Comm, h.Lock)
	if h.Opener {
		s += " (or has the file open)"
	}
	return s
}

// LockHolderNames is LockHolders as strings.
func LockHolderNames(path string) []string {
	var out []string
	for _, h := range LockHolders(path) {
		out = append(out, h.String())
	}
	return out
}
