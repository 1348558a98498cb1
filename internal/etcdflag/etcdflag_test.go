package etcdflag

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadList(t *testing.T) {
	got, err := ReadList(filepath.Join("..", "..", "server", "testdata", "etcd-flags-v3.7.3.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 128 || got["name"] != "default" || got["snapshot-count"] != "10000" {
		t.Fatalf("%d flags, --name %q, --snapshot-count %q", len(got), got["name"], got["snapshot-count"])
	}
	bad := filepath.Join(t.TempDir(), "bad.txt")
	if err := os.WriteFile(bad, []byte("# comment\nname\tdefault\nno-tab\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadList(bad); err == nil || !strings.Contains(err.Error(), "bad.txt:3:") {
		t.Fatalf("bad line: %v", err)
	}
}

func TestEtcdmainNamesRefusesEmpty(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "config.go")
	if err := os.WriteFile(empty, []byte("package etcdmain\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := etcdmainNames(empty); err == nil {
		t.Fatal("no flags: no error")
	}
}
