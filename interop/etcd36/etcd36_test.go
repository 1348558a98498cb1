package etcd36

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// bin holds the binaries built once per test process.
var bin struct {
	once         sync.Once
	dir          string
	etcd, etckit string
	walgen       string
	err          error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
	}
	os.Exit(code)
}

// build compiles etcd-dump-logs (this module's etcd 3.6.x), etckit (the
// product module at ../..) and walgen.
func build(tb testing.TB) {
	tb.Helper()
	bin.once.Do(func() {
		bin.dir, bin.err = os.MkdirTemp("", "etcd36-bin")
		if bin.err != nil {
			return
		}
		bin.etcd = filepath.Join(bin.dir, "etcd-dump-logs")
		bin.etckit = filepath.Join(bin.dir, "etckit")
		bin.walgen = filepath.Join(bin.dir, "walgen")
		for _, c := range []struct{ dir, out, pkg string }{
			{".", bin.etcd, "go.etcd.io/etcd/v3/tools/etcd-dump-logs"},
			{"../..", bin.etckit, "./cmd/etckit"},
			{"walgen", bin.walgen, "."},
		} {
			cmd := exec.Command("go", "build", "-o", c.out, c.pkg)
			cmd.Dir = c.dir
			if out, err := cmd.CombinedOutput(); err != nil {
				bin.err = fmt.Errorf("go build %s: %v\n%s", c.pkg, err, out)
				return
			}
		}
	})
	if bin.err != nil {
		tb.Fatal(bin.err)
	}
}

// run runs a binary with stdout to w and returns its peak RSS in KiB.
func run(tb testing.TB, w io.Writer, name string, args ...string) int64 {
	tb.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdout = w
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %v: %v\n%s", filepath.Base(name), args, err, stderr.String())
	}
	return cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss // KiB on Linux
}

// extract unpacks a fixture tarball of the product module into a
// temporary directory.
func extract(t *testing.T, rel string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", rel))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o700)
		case tar.TypeReg:
			if err = os.MkdirAll(filepath.Dir(p), 0o700); err == nil {
				var out *os.File
				if out, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600); err == nil {
					_, err = io.Copy(out, tr)
					if cerr := out.Close(); err == nil {
						err = cerr
					}
				}
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

var countLine = regexp.MustCompile(`(?m)^Entry types \(.*\) count is : (\d+)$`)

// TestSameEntryCount: on the etcd 3.6.16 fixture, both tools print the
// same summary line (etckit copies etcd-dump-logs' wording) and the same
// count of entries.
func TestSameEntryCount(t *testing.T) {
	build(t)
	dir := filepath.Join(extract(t, "etcd-3.6.16/small.tar.gz"), "small")
	var etcd, etckit strings.Builder
	run(t, &etcd, bin.etcd, dir)
	run(t, &etckit, bin.etckit, "dump-logs", dir)
	me, mk := countLine.FindStringSubmatch(etcd.String()), countLine.FindStringSubmatch(etckit.String())
	if me == nil || mk == nil {
		t.Fatalf("no count line: etcd-dump-logs %q, etckit %q", tail(etcd.String()), tail(etckit.String()))
	}
	if me[0] != mk[0] || me[1] != "113" {
		t.Errorf("etcd-dump-logs: %q, etckit: %q (want 113 entries)", me[0], mk[0])
	}
}

func tail(s string) string {
	if len(s) > 200 {
		return s[len(s)-200:]
	}
	return s
}

// benchWAL is a data directory per number of full segments, written once.
var benchWAL = map[int]string{}

func walFor(b *testing.B, full int) (dir string, bytes int64) {
	b.Helper()
	build(b)
	dir, ok := benchWAL[full]
	if !ok {
		dir = filepath.Join(bin.dir, fmt.Sprintf("wal-%d", full))
		run(b, io.Discard, bin.walgen, "-data-dir", dir, "-full-segments", fmt.Sprint(full))
		benchWAL[full] = dir
	}
	// MB/s counts the full segments (the last, fresh segment is mostly
	// preallocated zeros that both tools stop reading at once).
	names, err := filepath.Glob(filepath.Join(dir, "member", "wal", "*.wal"))
	if err != nil || len(names) != full+1 {
		b.Fatalf("segments %v (err %v), want %d", names, err, full+1)
	}
	for _, n := range names[:full] {
		fi, err := os.Stat(n)
		if err != nil {
			b.Fatal(err)
		}
		bytes += fi.Size()
	}
	return dir, bytes
}

// BenchmarkDumpLogs runs each tool as a process over one, two and four full
// 64,000,000-byte segments of 1 KiB puts, output to /dev/null, and
// reports the largest peak RSS of the runs.
func BenchmarkDumpLogs(b *testing.B) {
	for _, full := range []int{1, 2, 4} {
		for _, impl := range []struct {
			name string
			args func(dir string) (string, []string)
		}{
			{"etcd", func(dir string) (string, []string) { return bin.etcd, []string{dir} }},
			{"etckit", func(dir string) (string, []string) { return bin.etckit, []string{"dump-logs", dir} }},
			// etcd-dump-logs prints every value whole; etckit cuts values
			// at 256 bytes by default. --max-value 0 prints the same bytes.
			{"etckit-full-values", func(dir string) (string, []string) {
				return bin.etckit, []string{"dump-logs", "--max-value", "0", dir}
			}},
		} {
			b.Run(fmt.Sprintf("segments=%d/impl=%s", full, impl.name), func(b *testing.B) {
				dir, n := walFor(b, full)
				name, args := impl.args(dir)
				benchProcess(b, n, name, args)
			})
		}
	}
}

// BenchmarkWALVerify: etckit wal verify over the same logs. etcd has no
// verify command; etcd-dump-logs (which reads and CRC-checks every record
// the same way) is the baseline.
func BenchmarkWALVerify(b *testing.B) {
	for _, full := range []int{1, 2, 4} {
		for _, impl := range []struct {
			name string
			args func(dir string) (string, []string)
		}{
			{"etcd", func(dir string) (string, []string) { return bin.etcd, []string{dir} }},
			{"etckit", func(dir string) (string, []string) { return bin.etckit, []string{"wal", "verify", dir} }},
		} {
			b.Run(fmt.Sprintf("segments=%d/impl=%s", full, impl.name), func(b *testing.B) {
				dir, n := walFor(b, full)
				name, args := impl.args(dir)
				benchProcess(b, n, name, args)
			})
		}
	}
}

func benchProcess(b *testing.B, n int64, name string, args []string) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer null.Close()
	b.SetBytes(n)
	var peak int64
	for b.Loop() {
		peak = max(peak, run(b, null, name, args...))
	}
	b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB")
}
