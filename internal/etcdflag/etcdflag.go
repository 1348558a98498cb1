// Package etcdflag reads etcd's command-line flag set from etcd's own code,
// and the flag lists kept in server/testdata (etcd-flags-<version>.txt, one
// "name<TAB>default" line per flag), for the tests that check `etckit serve`
// accepts every etcd flag: the server's own tests read the lists, the
// interop modules (etcd 3.7.3 and 3.6.8) check them against etcd.
package etcdflag

import (
	"bufio"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
)

// Etcd is every flag of an etcd release's command line: fs holds what
// embed.Config.AddFlags defined (the caller runs it, with the etcd module
// it imports), configGo is that module's etcdmain/config.go, whose own
// flags and ignored legacy flags are read from its syntax tree (etcdmain
// keeps its flag set unexported). name -> etcd's default value ("" for
// etcdmain's own).
func Etcd(fs *flag.FlagSet, configGo string) (map[string]string, error) {
	out := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { out[f.Name] = f.DefValue })
	names, err := etcdmainNames(configGo)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			out[n] = ""
		}
	}
	return out, nil
}

// etcdmainNames are the string literals naming each fs.XxxVar/fs.Var call
// of etcdmain/config.go, and its "ignored" list.
func etcdmainNames(path string) ([]string, error) {
	file, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		return nil, err
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
		return nil, fmt.Errorf("etcdflag: no flags found in %s", path)
	}
	return names, nil
}

// ReadList reads a flag list (server/testdata/etcd-flags-<version>.txt):
// name -> etcd's default value; lines starting with # are comments.
func ReadList(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, def, ok := strings.Cut(line, "\t")
		if !ok {
			return nil, fmt.Errorf("%s:%d: %q is not name<TAB>default", path, n, line)
		}
		out[name] = def
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
