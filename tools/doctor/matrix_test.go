package doctor

// The doctor's part of the corruption matrix (issue 5): WAL and db damage
// on copies of the small fixture, each with the finding (check, file,
// offset) and exit code it must get; a panic fails the test.

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/tools/tooltest"
)

func safeRun(t *testing.T, args ...string) (r tooltest.Result) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("etckit doctor %v panicked: %v\n%s", args, p, debug.Stack())
		}
	}()
	return run(t, args...)
}

// Pages and offsets of the small fixture (checked below against the
// bytes, so a new fixture fails loudly instead of testing nothing).
const (
	keyBranchPage = 7 // the key bucket's root, a branch page
	keyLeafPage   = 4 // its first leaf
	walSeg        = "0000000000000000-0000000000000000.wal"
	walEntry50    = 5128 // entry 50
	walEntry58    = 5936 // entry 58 (10 KB), sector 12 is inside it
	walState113   = 23288
)

func TestMatrixDoctor(t *testing.T) {
	for _, c := range []struct {
		name  string
		db    func(b []byte) []byte
		wal   func(b []byte) []byte
		wants []string // "<check> at <file>:<offset>" (file relative to member/)
	}{
		{name: "wal-bitflip-entry", wal: func(b []byte) []byte { b[walEntry50+33] ^= 0x10; return b },
			wants: []string{fmt.Sprintf("wal/crc at wal/%s:%d", walSeg, walEntry50), fmt.Sprintf("wal/commit at wal/%s:%d", walSeg, walEntry50)}},
		{name: "wal-truncated-last-record", wal: func(b []byte) []byte { return b[:walState113+16] },
			wants: []string{fmt.Sprintf("wal/frame at wal/%s:%d", walSeg, walState113), "consistent-index at snap/db"}},
		{name: "wal-zeroed-sector", wal: func(b []byte) []byte { clear(b[12*512 : 13*512]); return b },
			wants: []string{fmt.Sprintf("wal/crc at wal/%s:%d", walSeg, walEntry58), fmt.Sprintf("wal/commit at wal/%s:%d", walSeg, walEntry58)}},
		{name: "db-key-branch", db: zeroPage(keyBranchPage),
			wants: []string{fmt.Sprintf("bbolt-pages at snap/db:%d: page %d", keyBranchPage*4096, keyBranchPage)}},
		{name: "db-key-leaf", db: zeroPage(keyLeafPage),
			wants: []string{fmt.Sprintf("bbolt-pages at snap/db:%d: page %d", keyLeafPage*4096, keyLeafPage)}},
		{name: "db-meta-0", db: zeroPage(0), wants: []string{"bbolt-meta at snap/db:0: page 0"}},
		{name: "db-meta-1", db: zeroPage(1), wants: []string{"bbolt-meta at snap/db:4096: page 1", "bbolt at snap/db:4096"}},
		{name: "db-both-meta", db: func(b []byte) []byte { return zeroPage(1)(zeroPage(0)(b)) },
			wants: []string{"bbolt-pages at snap/db:0: page 0", "bbolt-pages at snap/db:4096: page 1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(small(t), "small")
			member := filepath.Join(dir, "member")
			dbPath := filepath.Join(member, "snap", "db")
			walPath := filepath.Join(member, "wal", walSeg)
			checkFixture(t, dbPath, walPath)
			for _, e := range []struct {
				path string
				edit func([]byte) []byte
			}{{dbPath, c.db}, {walPath, c.wal}} {
				if e.edit == nil {
					continue
				}
				b, err := os.ReadFile(e.path)
				if err != nil {
					t.Fatal(err)
				}
				if e.path == walPath {
					b = b[:64<<10] // keep the test fast; the tail is zeros
				}
				if err := os.WriteFile(e.path, e.edit(b), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			before := tooltest.HashDir(t, dir)
			r := safeRun(t, dir)
			if r.Code != cli.ExitProblems {
				t.Errorf("exit %d (err %v), want 1\n%s", r.Code, r.Err, r.Stdout)
			}
			out := strings.ReplaceAll(r.Stdout, member+"/", "")
			for _, w := range c.wants {
				if !strings.Contains(out, "error "+w) {
					t.Errorf("no %q:\n%s", "error "+w, out)
				}
			}
			tooltest.RequireUnchanged(t, dir, before)
		})
	}
}

func zeroPage(pg int) func([]byte) []byte {
	return func(b []byte) []byte { clear(b[pg*4096 : (pg+1)*4096]); return b }
}

func checkFixture(t *testing.T, dbPath, walPath string) {
	t.Helper()
	db, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	flags := func(pg int) uint16 { return binary.LittleEndian.Uint16(db[pg*4096+8:]) }
	if flags(keyBranchPage) != 0x01 || flags(keyLeafPage) != 0x02 ||
		binary.LittleEndian.Uint64(db[keyBranchPage*4096+16+8:]) != keyLeafPage {
		t.Fatalf("the fixture's db changed: page %d flags %#x, page %d flags %#x", keyBranchPage, flags(keyBranchPage), keyLeafPage, flags(keyLeafPage))
	}
	w, err := os.ReadFile(walPath)
	if err != nil {
		t.Fatal(err)
	}
	// Entry 58 is the 10 KB one: its length word holds more than 10,000.
	if n := binary.LittleEndian.Uint64(w[walEntry58:]) & 0xffffffffffff; n < 10000 {
		t.Fatalf("the fixture's WAL changed: frame at %d has length %d", walEntry58, n)
	}
}
