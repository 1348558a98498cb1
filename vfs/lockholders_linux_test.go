package vfs

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestParseProcLocks(t *testing.T) {
	in := `1: FLOCK  ADVISORY  WRITE 1234 08:01:131090 0 EOF
1: -> FLOCK  ADVISORY  WRITE 1235 08:01:131090 0 EOF
2: POSIX  ADVISORY  READ 99 08:01:131091 0 EOF
3: OFDLCK ADVISORY  WRITE -1 08:01:131090 0 EOF
4: FLOCK  ADVISORY  WRITE 77 09:01:131090 0 EOF
`
	h, ofd := parseProcLocks(bufio.NewScanner(strings.NewReader(in)), 8, 1, 131090)
	if len(h) != 1 || h[0].PID != 1234 || h[0].Lock != "FLOCK WRITE" || !ofd {
		t.Fatalf("%+v %v", h, ofd)
	}
}

func TestLockHoldersOfOwnFlock(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if h := LockHolders(p); len(h) != 0 {
		t.Errorf("unlocked file: %v", h)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat("/proc/locks"); err != nil {
		t.Skip(err)
	}
	h := LockHolders(p)
	if len(h) != 1 || h[0].PID != os.Getpid() || h[0].Lock != "FLOCK WRITE" {
		t.Errorf("holders %v", h)
	}
}
