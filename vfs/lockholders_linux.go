package vfs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockHolders names the processes that hold a lock on the file at path, from
// /proc/locks (the entries for the file's device and inode; waiters are left
// out). An OFD lock, which etcd's WAL uses, has no pid there, so the
// processes that have the file open are listed instead. Best effort: nil
// when nothing is found or on systems without /proc/locks.
func LockHolders(path string) []LockHolder {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return nil
	}
	defer f.Close()
	holders, ofd := parseProcLocks(bufio.NewScanner(f), unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)), st.Ino)
	if ofd {
		abs, _ := filepath.Abs(path)
		holders = append(holders, openers(abs)...)
	}
	return holders
}

// parseProcLocks reads /proc/locks lines
//
//	1: FLOCK  ADVISORY  WRITE 1234 08:01:131090 0 EOF
//	1: -> FLOCK  ADVISORY  WRITE 1235 08:01:131090 0 EOF   (a waiter)
//
// and returns the holders of locks on the file (major:minor:inode, the
// device in hex); ofd is true when an OFD lock (pid -1) is among them.
func parseProcLocks(sc *bufio.Scanner, major, minor uint32, ino uint64) (holders []LockHolder, ofd bool) {
	want := fmt.Sprintf("%02x:%02x:%d", major, minor, ino)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 6 || fl[1] == "->" || fl[5] != want {
			continue
		}
		if fl[4] == "-1" {
			ofd = true
			continue
		}
		if pid, err := strconv.Atoi(fl[4]); err == nil {
			holders = append(holders, LockHolder{PID: pid, Comm: comm(pid), Lock: fl[1] + " " + fl[3]})
		}
	}
	return holders, ofd
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// openers lists the processes that have path open.
func openers(path string) []LockHolder {
	procs, _ := os.ReadDir("/proc")
	var out []LockHolder
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if t, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && t == path {
				out = append(out, LockHolder{PID: pid, Comm: comm(pid), Lock: "OFD WRITE", Opener: true})
				break
			}
		}
	}
	return out
}
