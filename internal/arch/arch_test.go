// Package arch holds the test that keeps the package layering of
// ARCHITECTURE.md true: dependencies point one way, from the binary down
// to the leaf packages.
package arch

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/etckit/etckit/"

// layer gives each package of the product module its room; a package may
// import packages of its own room only where allowed below, and of rooms
// under it.
func layer(pkg string) (room string, rank int) {
	switch {
	case pkg == "vfs" || pkg == "corrupt":
		return "leaf", 0
	case pkg == "wal" || pkg == "snap" || pkg == "mvcc" || pkg == "mvcc/boltfile":
		return "format", 1
	case pkg == "auth":
		return "store", 2
	case pkg == "transport":
		return "transport", 1
	case pkg == "engine":
		return "engine", 3
	case pkg == "server":
		return "server", 4
	case pkg == "tools/tooltest":
		return "internal", -1 // the tools' test harness
	case pkg == "tools/cli":
		return "tools-base", 4
	case strings.HasPrefix(pkg, "tools/"):
		return "tools", 5
	case strings.HasPrefix(pkg, "cmd/"):
		return "cmd", 6
	case strings.HasPrefix(pkg, "internal/"):
		return "internal", -1 // test helpers: imported by tests only
	}
	return "", -2
}

// allowed reports whether from may import to.
func allowed(from, to string) bool {
	fr, frank := layer(from)
	tr, trank := layer(to)
	switch {
	case fr == "internal":
		return true // test helpers may drive any package
	case tr == "internal":
		return fr == "internal" // test helpers stay out of the product
	case fr == "format" && tr == "format":
		return false // each format owns its bytes alone
	case fr == "transport":
		return tr == "leaf" // the peer protocol knows no storage
	case fr == "server":
		return tr != "tools" && tr != "tools-base" && tr != "cmd"
	case fr == "tools" || fr == "tools-base":
		return tr != "server" && tr != "cmd" // offline tools never need a running member
	case tr == "server" || tr == "transport":
		return fr == "server" || fr == "cmd"
	}
	return trank < frank || (fr == tr && fr == "tools")
}

func TestImportRules(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var bad []string
	seen := 0
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			// Own modules and data, not the product.
			switch rel {
			case "interop", "conformance", "robustness", "testdata", ".git":
				return filepath.SkipDir
			}
			if d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		from := filepath.ToSlash(filepath.Dir(rel))
		if room, _ := layer(from); room == "" {
			bad = append(bad, rel+": package "+from+" has no room in the layering (add it to arch_test.go and ARCHITECTURE.md)")
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		seen++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if isMetricsLib(p) && from != "server" {
				// the rooms below report through observer hooks
				bad = append(bad, rel+": "+from+" imports "+p+": only server knows the metrics library")
			}
			if !strings.HasPrefix(p, module) {
				continue
			}
			to := strings.TrimPrefix(p, module)
			if !allowed(from, to) {
				fr, _ := layer(from)
				tr, _ := layer(to)
				bad = append(bad, rel+": "+from+" ("+fr+") imports "+to+" ("+tr+")")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < 50 {
		t.Fatalf("read only %d files under %s: the walk is broken", seen, root)
	}
	sort.Strings(bad)
	for _, b := range bad {
		t.Error(b)
	}
}

// isMetricsLib: Prometheus' client and the gRPC interceptors over it.
func isMetricsLib(p string) bool {
	return strings.HasPrefix(p, "github.com/prometheus/") || strings.HasPrefix(p, "github.com/grpc-ecosystem/go-grpc-middleware")
}

// TestRulesRefuse checks the rules themselves on imports that must fail.
func TestRulesRefuse(t *testing.T) {
	for _, c := range [][2]string{
		{"mvcc", "wal"}, {"wal", "engine"}, {"engine", "server"}, {"tools/doctor", "server"},
		{"transport", "mvcc"}, {"auth", "engine"}, {"vfs", "corrupt"}, {"mvcc", "internal/fixture"},
		{"server", "tools/dumpdb"}, {"engine", "transport"},
	} {
		if allowed(c[0], c[1]) {
			t.Errorf("%s may import %s", c[0], c[1])
		}
	}
	for _, c := range [][2]string{
		{"mvcc", "corrupt"}, {"auth", "mvcc"}, {"engine", "auth"}, {"server", "transport"},
		{"tools/doctor", "tools/dumpdb"}, {"cmd/etckit", "server"}, {"tools/dumpdb", "tools/cli"},
	} {
		if !allowed(c[0], c[1]) {
			t.Errorf("%s may not import %s", c[0], c[1])
		}
	}
}
