package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/tools/tooltest"
)

// TestMain lets the test binary act as etckit (ETCKIT_RUN_MAIN=1), so the
// exit codes of the real process are tested without building it.
func TestMain(m *testing.M) {
	if os.Getenv("ETCKIT_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func etckit(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "ETCKIT_RUN_MAIN=1")
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestExitCodes(t *testing.T) {
	dir := filepath.Join(fixture.Extract(t, "etcd-3.6.16/small.tar.gz"), "small")
	before := tooltest.HashDir(t, dir)
	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"dump-logs", dir, "--end-index", "3"}, 0, "Entry types (Normal,ConfigChange) count is : 2"},
		{[]string{"wal", "verify", "--data-dir", dir}, 0, "result: ok"},
		{[]string{"wal", "repair", dir, "--dry-run"}, 0, "dry run: none"},
		{[]string{"dump-logs", "--entry-type", "Nope", dir}, 2, ""},
		{[]string{"wal", "verify", "/nonexistent/etckit"}, 2, ""},
		{[]string{"nope"}, 2, ""},
		{[]string{"--version"}, 0, "etcd Version: 3.7.3\nGit SHA: etckit\nGo Version: go"},
		{[]string{"serve", "--version"}, 0, "etcd Version: 3.7.3\nGit SHA: etckit\nGo Version: go"},
		{[]string{"serve", "-version"}, 0, "etcd Version: 3.7.3\nGit SHA: etckit\nGo Version: go"},
	} {
		out, stderr, code := etckit(t, c.args...)
		if code != c.code || !strings.Contains(out, c.out) {
			t.Errorf("%v: exit %d (want %d), stdout %q stderr %q", c.args, code, c.code, out, stderr)
		}
	}
	tooltest.RequireUnchanged(t, dir, before)

	// Damage: exit 1, and stderr says how many problems.
	seg := filepath.Join(dir, "member", "wal", "0000000000000000-0000000000000000.wal")
	b, _ := os.ReadFile(seg)
	b = b[:23208+30]
	if err := os.WriteFile(seg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := etckit(t, "wal", "verify", dir); code != 1 || !strings.Contains(stderr, "problems found") {
		t.Errorf("damaged: exit %d stderr %q", code, stderr)
	}
	if _, _, code := etckit(t, "wal", "repair", dir); code != 0 {
		t.Errorf("repair: exit %d", code)
	}
	if _, _, code := etckit(t, "wal", "verify", dir); code != 0 {
		t.Errorf("verify after repair: exit %d", code)
	}
}

// TestNoExitOrPanicInTools: library code returns errors; only this main
// may exit (STYLE.md §3 item 14, §4 item 1).
func TestNoExitOrPanicInTools(t *testing.T) {
	root := filepath.Join(filepath.Dir(fixture.Root(t)), "tools")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			switch fn := call.Fun.(type) {
			case *ast.Ident:
				if fn.Name == "panic" {
					t.Errorf("%s: panic", p)
				}
			case *ast.SelectorExpr:
				if x, ok := fn.X.(*ast.Ident); ok {
					name := x.Name + "." + fn.Sel.Name
					if name == "os.Exit" || strings.HasPrefix(name, "log.Fatal") || strings.HasPrefix(name, "log.Panic") || name == "fmt.Println" || name == "fmt.Printf" {
						t.Errorf("%s: %s", p, name)
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
