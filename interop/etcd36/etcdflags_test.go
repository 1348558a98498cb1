package etcd36

import (
	"bufio"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.etcd.io/etcd/server/v3/embed"
)

// etcdFlags is every flag of etcd 3.7.3's command line, read from etcd's
// own code: embed.Config.AddFlags (run), plus the flags etcdmain's
// newConfig defines itself and its ignored legacy flags (read from
// etcdmain/config.go's syntax tree, since etcdmain keeps its flag set
// unexported). name -> etcd's default value ("" for etcdmain's).
func etcdFlags(t testing.TB) map[string]string {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	embed.NewConfig().AddFlags(fs)
	out := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { out[f.Name] = f.DefValue })
	for _, n := range etcdmainFlagNames(t) {
		if _, ok := out[n]; !ok {
			out[n] = ""
		}
	}
	return out
}

// etcdmainFlagNames are the names etcdmain/config.go of the etcd server
// module this module requires gives its flags: the string literal naming
// each fs.XxxVar/fs.Var call, and the "ignored" list.
func etcdmainFlagNames(t testing.TB) []string {
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "go.etcd.io/etcd/server/v3").Output()
	if err != nil {
		t.Fatalf("go list -m go.etcd.io/etcd/server/v3: %v", err)
	}
	path := filepath.Join(strings.TrimSpace(string(dir)), "etcdmain", "config.go")
	file, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	lit := func(e ast.Expr) (string, bool) {
		b, ok := e.(*ast.BasicLit)
		if !ok || b.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(b.Value)
		return s, err == nil
	}
	ast.Inspect(file, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.ValueSpec:
			for i, id := range n.Names {
				if id.Name != "ignored" || i >= len(n.Values) {
					continue
				}
				if cl, ok := n.Values[i].(*ast.CompositeLit); ok {
					for _, e := range cl.Elts {
						if s, ok := lit(e); ok {
							names = append(names, s)
						}
					}
				}
			}
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok || len(n.Args) < 2 {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "fs" || !(sel.Sel.Name == "Var" || strings.HasSuffix(sel.Sel.Name, "Var")) {
				return true
			}
			if s, ok := lit(n.Args[1]); ok {
				names = append(names, s)
			}
		}
		return true
	})
	if len(names) == 0 {
		t.Fatalf("no flags found in %s", path)
	}
	return names
}

// TestEtcdFlagsTestdata: ../../server/testdata/etcd-flags-v3.6.8.txt
// (what etckit's own tests check `etckit serve` accepts, and README's
// table lists) is etcd 3.6.8's flag set, read from etcd's code here; it
// fails when they differ.
func TestEtcdFlagsTestdata(t *testing.T) {
	got := etcdFlags(t)
	f, err := os.Open(filepath.Join("..", "..", "server", "testdata", "etcd-flags-v3.6.8.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := sc.Text(); line != "" && !strings.HasPrefix(line, "#") {
			name, def, _ := strings.Cut(line, "\t")
			want[name] = def
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if w, ok := want[k]; !ok || w != got[k] {
			t.Errorf("etcd 3.6.8 has --%s (default %q), testdata %q (listed: %v)", k, got[k], w, ok)
		}
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("testdata has --%s, etcd 3.6.8 does not", k)
		}
	}
	t.Logf("etcd 3.6.8 has %d flags", len(got))
}
