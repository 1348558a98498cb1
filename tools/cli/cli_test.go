package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func TestCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
	}{
		{nil, 0},
		{Problems(3, "problems"), 1},
		{fmt.Errorf("wrapped: %w", Problems(1, "x")), 1},
		{Usage("bad"), 2},
		{errors.New("open: permission denied"), 2},
	} {
		if got := Code(c.err); got != c.code {
			t.Errorf("Code(%v) = %d, want %d", c.err, got, c.code)
		}
	}
	if got := Problems(3, "problems").Error(); got != "3 problems found" {
		t.Errorf("%q", got)
	}
}

func TestFormatFlag(t *testing.T) {
	cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
	var f FormatFlag
	AddFormatFlag(cmd, &f, Simple, Simple, JSON)
	cmd.SetArgs([]string{"-w", "json"})
	if err := cmd.Execute(); err != nil || f.Value != JSON {
		t.Fatalf("%v %v", err, f.Value)
	}
	if err := f.Set("table"); err == nil {
		t.Error("table accepted")
	}
}

func TestDirs(t *testing.T) {
	d := Dirs{DataDir: "/d"}
	if w, _ := d.Wal(); w != filepath.Join("/d", "member", "wal") || d.Snap() != "/d/member/snap" || d.DB() != "/d/member/snap/db" {
		t.Errorf("%q %q %q", w, d.Snap(), d.DB())
	}
	d.WALDir = "/w"
	if w, _ := d.Wal(); w != "/w" {
		t.Errorf("%q", w)
	}
	var e Dirs
	if _, err := e.Wal(); Code(err) != 2 {
		t.Errorf("no dir: %v", err)
	}
	if err := (&Dirs{DataDir: "/a"}).FromArgs([]string{"/b"}); Code(err) != 2 {
		t.Errorf("two dirs: %v", err)
	}
}

func TestObjectOrder(t *testing.T) {
	var b bytes.Buffer
	o := (&Object{}).Set("z", 1).Set("a", "<x>").Set("m", []int{1})
	o.Set("z", 2)
	if err := JSONLine(&b, o); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != `{"z":2,"a":"<x>","m":[1]}`+"\n" {
		t.Errorf("%s", got)
	}
}

func TestProgress(t *testing.T) {
	var b bytes.Buffer
	now := time.Unix(0, 0)
	p := &Progress{w: &b, label: "scan", total: 100 << 20, nowFunc: func() time.Time { return now }}
	p.start = now
	p.Update(10 << 20)
	if b.Len() != 0 {
		t.Fatalf("drawn before a second: %q", b.String())
	}
	now = now.Add(1500 * time.Millisecond)
	p.Update(50 << 20)
	if !strings.Contains(b.String(), " 50.0% 50/100 MB") {
		t.Fatalf("%q", b.String())
	}
	p.Done()
	if !strings.HasSuffix(b.String(), "\r") {
		t.Errorf("not cleared: %q", b.String())
	}
	// Not a terminal: never drawn.
	var buf bytes.Buffer
	q := NewProgress(&buf, "x", 1)
	q.Update(1)
	q.Done()
	if buf.Len() != 0 || IsTerminal(&buf) {
		t.Error("drawn on a buffer")
	}
}

func TestLockHolders(t *testing.T) {
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
	h := LockHolders(p)
	if len(h) != 1 || !strings.Contains(h[0], fmt.Sprintf("pid %d ", os.Getpid())) {
		t.Errorf("holders %v", h)
	}
}
