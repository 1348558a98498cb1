package engine

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDataDirPermissions: new directories are 0700; an existing data dir
// with wider permissions is used with etcd's warning.
func TestDataDirPermissions(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "fresh")
	e, err := Open(Options{Name: "default", DataDir: dir, NoSync: true, InitialCluster: "default=http://127.0.0.1:2380"})
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	for _, d := range []string{dir, filepath.Join(dir, "member"), filepath.Join(dir, "member", "snap"), filepath.Join(dir, "member", "wal")} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s created with %v, want 0700", d, fi.Mode().Perm())
		}
	}
	for _, f := range []string{filepath.Join(dir, "member", "snap", "db")} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want 0600", f, fi.Mode(), err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	e, err = Open(Options{Name: "default", DataDir: dir, NoSync: true, InitialCluster: "default=http://127.0.0.1:2380", Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	if want := `exist, but the permission is \"drwxr-xr-x\". The recommended permission is \"-rwx------\"`; !strings.Contains(buf.String(), want) {
		t.Fatalf("no permission warning in the log:\n%s", buf.String())
	}
}
