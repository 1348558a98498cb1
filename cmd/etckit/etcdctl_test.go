package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The real CLI peer: `etckit serve` as a process, driven by Debian's
// etcdctl (package etcd-client, installed by .ci/run). Outside CI a machine
// without etcdctl skips this test; in CI its absence is a failure.
func etcdctlPath(t *testing.T) string {
	p, err := exec.LookPath("etcdctl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("etcdctl not found; .ci/run installs Debian's etcd-client")
		}
		t.Skip("etcdctl not installed (apt-get install etcd-client)")
	}
	return p
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type served struct {
	cmd *exec.Cmd
	url string
	log *strings.Builder
}

// startServe runs `etckit serve` on 127.0.0.1 and waits (bounded) for /health.
func startServe(t *testing.T, dataDir string) *served {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	cmd := exec.Command(os.Args[0], "serve", "--data-dir", dataDir,
		"--listen-client-urls", url, "--advertise-client-urls", url,
		"--initial-advertise-peer-urls", peer, "--listen-peer-urls", peer, "--initial-cluster", "default="+peer)
	cmd.Env = append(os.Environ(), "ETCKIT_RUN_MAIN=1")
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &served{cmd: cmd, url: url, log: &log}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	for i := 0; i < 200; i++ {
		resp, err := http.Get(url + "/health")
		if err == nil {
			var h struct{ Health string }
			json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if h.Health == "true" {
				return s
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("etckit serve did not become healthy; log:\n%s", log.String())
	return nil
}

// stop sends SIGTERM and requires a clean exit.
func (s *served) stop(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("etckit serve exited with %v; log:\n%s", err, s.log.String())
		}
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		t.Fatalf("etckit serve did not stop on SIGTERM; log:\n%s", s.log.String())
	}
}

func TestEtcdctlAgainstServe(t *testing.T) {
	ctl := etcdctlPath(t)
	dataDir := filepath.Join(t.TempDir(), "member.etckit")
	s := startServe(t, dataDir)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(ctl, append([]string{"--endpoints", s.url, "--command-timeout", "10s"}, args...)...)
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("etcdctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	expect := func(got, want string) {
		t.Helper()
		if got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	expect(run("put", "/a", "1"), "OK")
	expect(run("put", "/a", "2", "--prev-kv"), "OK\n/a\n1")
	expect(run("put", "/b", "3"), "OK")
	expect(run("get", "/a"), "/a\n2")
	expect(run("get", "/a", "--rev=2"), "/a\n1")
	expect(run("get", "/", "--prefix", "--keys-only"), "/a\n\n/b")
	js := run("get", "/", "--prefix", "-w", "json")
	expect(jsonField(t, js, "revision")+" "+jsonCount(t, js), "4 2")
	expect(run("del", "/b"), "1")
	expect(run("compact", "3"), "compacted revision 3")
	cmd := exec.Command(ctl, "--endpoints", s.url, "get", "/a", "--rev=2")
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "required revision has been compacted") {
		t.Fatalf("read below the compaction: %v %s", err, out)
	}
	lease := strings.Fields(run("lease", "grant", "600"))[1]
	expect(run("put", "/leased", "v", "--lease="+lease), "OK")
	if ttl := run("lease", "timetolive", lease, "--keys"); !strings.Contains(ttl, "attached keys([/leased])") {
		t.Fatalf("timetolive: %s", ttl)
	}
	if ml := run("member", "list"); !strings.Contains(ml, "started, default, ") || !strings.Contains(ml, s.url) {
		t.Fatalf("member list: %s", ml)
	}
	hashOf := func(out string) string { _, h, _ := strings.Cut(out, ", "); return h }
	hash := hashOf(run("endpoint", "hashkv"))
	if hash == "" || hash == "0" {
		t.Fatalf("hashkv %q", hash)
	}
	snapFile := filepath.Join(t.TempDir(), "snap.db")
	if out := run("snapshot", "save", snapFile); !strings.Contains(out, "Snapshot saved at") {
		t.Fatalf("snapshot save: %s", out)
	}
	s.stop(t)

	// The data survives a restart, with the same HashKV.
	s = startServe(t, dataDir)
	expect(run("get", "/a"), "/a\n2")
	expect(run("get", "/b"), "")
	expect(hashOf(run("endpoint", "hashkv")), hash)
	s.stop(t)
}

func jsonCount(t *testing.T, js string) string {
	var v struct {
		Count json.Number `json:"count"`
	}
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	return v.Count.String()
}

func jsonField(t *testing.T, js, field string) string {
	var v struct {
		Header map[string]json.Number `json:"header"`
	}
	d := json.NewDecoder(strings.NewReader(js))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	return v.Header[field].String()
}
