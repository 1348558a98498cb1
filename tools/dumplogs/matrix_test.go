package dumplogs

// dump-logs over the WAL damage of the corruption matrix (issue 5; the
// classification itself is tested in walverify): each dump exits 1, its
// first problem names the damaged record's offset, and nothing panics, in
// the default and --raw modes.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/etckit/etckit/tools/cli"
	"github.com/etckit/etckit/tools/tooltest"
	"github.com/etckit/etckit/wal"
	"go.etcd.io/raft/v3/raftpb"
)

func safeRun(t *testing.T, args ...string) (r tooltest.Result) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("etckit dump-logs %v panicked: %v\n%s", args, p, debug.Stack())
		}
	}()
	return run(t, args...)
}

// firstProblem returns the first problem line of a dump (stderr in the
// default mode, an "Error:"/"ErrUnexpectedEOF" line of --raw).
func firstProblem(r tooltest.Result) string {
	for _, l := range strings.Split(r.Stderr, "\n") {
		if strings.HasPrefix(l, "etckit: problem: ") {
			return l
		}
	}
	for _, l := range strings.Split(r.Stdout, "\n") {
		if strings.Contains(l, "\tError: ") || strings.HasPrefix(l, "ErrUnexpectedEOF") {
			return l
		}
	}
	return ""
}

func TestMatrixDumpLogs(t *testing.T) {
	const (
		entry50  = 5128
		state57  = 5904
		entry113 = 23208
		state113 = 23288
	)
	for _, c := range []struct {
		name string
		edit func(b []byte) []byte
		off  int64 // the offset the first problem names
		torn bool
	}{
		{"bitflip-metadata", func(b []byte) []byte { b[16+20] ^= 0x10; return b }, 16, false},
		{"bitflip-snapshot", func(b []byte) []byte { b[56+18] ^= 0x10; return b }, 56, false},
		{"bitflip-entry", func(b []byte) []byte { b[entry50+33] ^= 0x10; return b }, entry50, false},
		{"bitflip-state", func(b []byte) []byte { b[state57+25] ^= 0x10; return b }, state57, false},
		{"bitflip-last-state", func(b []byte) []byte { b[state113+25] ^= 0x10; return b }, state113, false},
		{"truncated-last-entry", func(b []byte) []byte { return b[:entry113+40] }, entry113, true},
		{"truncated-last-state", func(b []byte) []byte { return b[:state113+8] }, state113, true},
		{"zeroed-sector-entry-58", func(b []byte) []byte { clear(b[12*512 : 13*512]); return b }, 5936, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := smallDir(t)
			seg := filepath.Join(dir, "member", "wal", seg0)
			b, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(seg, c.edit(bytes.Clone(b[:64<<10])), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{{dir}, {dir, "--raw"}, {dir, "-w", "json"}} {
				r := safeRun(t, args...)
				if r.Code != cli.ExitProblems {
					t.Errorf("%v: exit %d (err %v), want 1", args[1:], r.Code, r.Err)
				}
				if args[len(args)-1] == "json" {
					continue
				}
				p := firstProblem(r)
				class := "mid-log corruption"
				if c.torn {
					class = "torn tail"
				}
				want := fmt.Sprintf("%s at %s:%d", class, filepath.Join(dir, "member", "wal", seg0), c.off)
				if !strings.Contains(p, want) {
					t.Errorf("%v: first problem %q does not name %q", args[1:], p, want)
				}
			}
		})
	}
}

// TestMatrixDumpLogsMissingSegment: a WAL without its middle segment.
func TestMatrixDumpLogsMissingSegment(t *testing.T) {
	walDir := filepath.Join(t.TempDir(), "wal")
	w, err := wal.Create(walDir, []byte("\x08\x01\x10\x02"), wal.Options{SegmentSize: 16 << 10, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 40; i++ {
		term, idx, c := uint64(1), i, i
		e := &raftpb.Entry{Term: &term, Index: &idx, Data: bytes.Repeat([]byte{'x'}, 1500)}
		if err := w.Save(&raftpb.HardState{Term: &term, Commit: &c}, []*raftpb.Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(walDir, "*.wal"))
	if len(segs) < 3 {
		t.Fatalf("segments %v", segs)
	}
	if r := safeRun(t, "--wal-dir", walDir, "--entry-type", "Normal"); r.Code != cli.ExitOK {
		t.Fatalf("intact: exit %d %v\n%s", r.Code, r.Err, r.Stderr)
	}
	if err := os.Remove(segs[1]); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--wal-dir", walDir}, {"--wal-dir", walDir, "--raw"}} {
		r := safeRun(t, args...)
		msg := r.Stderr + r.Stdout
		if r.Err != nil {
			msg += r.Err.Error()
		}
		if r.Code != cli.ExitProblems && r.Code != cli.ExitUsage {
			t.Errorf("%v: exit %d", args, r.Code)
		}
		t.Logf("%v: exit %d: %s", args[2:], r.Code, firstLine(msg, filepath.Base(segs[2])))
		if !strings.Contains(msg, filepath.Base(segs[2])) {
			t.Errorf("%v: nothing names %s:\n%s", args, filepath.Base(segs[2]), msg)
		}
	}
}

func firstLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
