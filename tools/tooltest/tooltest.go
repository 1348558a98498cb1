// Package tooltest holds the test helpers of the etckit tools: running a
// command in-process, golden files under testdata/golden (rewritten only
// with -update), and hashing a directory to prove a command left it
// byte-identical. Only tests import it.
package tooltest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/tools/cli"
	"github.com/spf13/cobra"
)

// update rewrites golden files instead of comparing: go test ./tools/... -update
var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// goldenRoot is testdata/golden, found from the package directory before
// any test changes the working directory (t.Chdir).
var goldenRoot = func() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if fi, err := os.Stat(filepath.Join(dir, "testdata", fixture.Etcd3616)); err == nil && fi.IsDir() {
			return filepath.Join(dir, "testdata", "golden")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}()

// Fixture returns the absolute path of rel inside testdata; unlike
// fixture.Path it works after t.Chdir.
func Fixture(t testing.TB, rel string) string {
	t.Helper()
	if goldenRoot == "" {
		goldenRoot = filepath.Join(fixture.Root(t), "golden")
	}
	return filepath.Join(filepath.Dir(goldenRoot), rel)
}

// Result is what a command printed and its exit code.
type Result struct {
	Stdout, Stderr string
	Code           int
	Err            error
}

// Run executes cmd with args in-process and returns its output and the exit
// code cmd/etckit would use.
func Run(t testing.TB, cmd *cobra.Command, args ...string) Result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: cli.Code(err), Err: err}
}

// Golden compares got with testdata/golden/<name>, or writes it with -update.
func Golden(t testing.TB, name, got string) {
	t.Helper()
	if goldenRoot == "" {
		goldenRoot = filepath.Join(fixture.Root(t), "golden")
	}
	path := filepath.Join(goldenRoot, name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run the test with -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("output differs from %s (rerun with -update if the change is intended):\n%s", path, firstDiff(string(want), got))
	}
}

func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(wl), len(gl)); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return "line " + strconv.Itoa(i+1) + ":\nwant: " + clip(w) + "\ngot:  " + clip(g)
		}
	}
	return "(no line differs)"
}

func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// Normalize replaces the temporary directory in output by <dir>.
func Normalize(s, dir string) string { return strings.ReplaceAll(s, dir, "<dir>") }

// HashDir returns a digest of every file and directory under dir: path,
// mode, size and SHA-256 of the content.
func HashDir(t testing.TB, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		v := fi.Mode().String() + " " + fi.ModTime().UTC().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			v += " " + hex.EncodeToString(sum[:])
		}
		m[rel] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// RequireUnchanged fails if the directory differs from the earlier hash.
func RequireUnchanged(t testing.TB, dir string, before map[string]string) {
	t.Helper()
	after := HashDir(t, dir)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed: %q -> %q", k, v, after[k])
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s was created", k)
		}
	}
}
