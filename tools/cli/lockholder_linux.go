package cli

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockHolders names the processes holding a lock on path (Linux: the
// /proc/locks entries for the file's device and inode; an OFD lock, which
// etcd's WAL uses, has no pid there, so processes with the file open are
// listed instead). It is best effort: nil when nothing is found.
func LockHolders(path string) []string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil
	}
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), st.Ino)
	f, err := os.Open("/proc/locks")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	ofd := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		// 1: FLOCK ADVISORY WRITE 1234 08:01:131090 0 EOF
		if len(fl) < 6 || fl[5] != want {
			continue
		}
		if fl[4] == "-1" {
			ofd = true
			continue
		}
		if pid, err := strconv.Atoi(fl[4]); err == nil {
			out = append(out, describePID(pid, fl[1]+" "+fl[3]))
		}
	}
	if ofd {
		abs, _ := filepath.Abs(path)
		out = append(out, openers(abs)...)
	}
	return out
}

func describePID(pid int, lock string) string {
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return fmt.Sprintf("pid %d (%s) holds a %s lock", pid, strings.TrimSpace(string(comm)), lock)
}

// openers lists the processes that have path open.
func openers(path string) []string {
	procs, _ := os.ReadDir("/proc")
	var out []string
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if t, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && t == path {
				out = append(out, describePID(pid, "OFD WRITE")+" (or has the file open)")
				break
			}
		}
	}
	return out
}
