package vfs

import (
	"bufio"
	"strings"
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
