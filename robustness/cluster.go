package robustness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// etckitBinary builds `etckit` from this repository once per test binary
// run (the module is nested in the product's repository, so `go build`
// runs in the parent directory, the product's module).
func etckitBinary(t testing.TB) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "robustness-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "etckit")
		cmd := exec.Command("go", "build", "-o", buildBin, "./cmd/etckit")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/etckit: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

var (
	etcdOnce sync.Once
	etcdBin  string
	etcdErr  error
)

// etcdBinary is etcd 3.7.3's server: path itself, or with "build", built
// from the module proxy in interop/ (whose go.mod requires
// go.etcd.io/etcd/server/v3 v3.7.3), once per test binary run.
func etcdBinary(t testing.TB, path string) string {
	if path != "build" {
		return path
	}
	etcdOnce.Do(func() {
		dir, err := os.MkdirTemp("", "robustness-etcd-")
		if err != nil {
			etcdErr = err
			return
		}
		etcdBin = filepath.Join(dir, "etcd")
		cmd := exec.Command("go", "build", "-o", etcdBin, "go.etcd.io/etcd/server/v3")
		cmd.Dir = "../interop"
		if out, err := cmd.CombinedOutput(); err != nil {
			etcdErr = fmt.Errorf("go build go.etcd.io/etcd/server/v3 in interop/: %v\n%s", err, out)
		}
	})
	if etcdErr != nil {
		t.Fatal(etcdErr)
	}
	return etcdBin
}

// member is one `etckit serve` process (or, in a mixed cluster, etcd). Its peer URL, as the cluster
// knows it, is its proxy's address; the process listens on peerAddr.
type member struct {
	name       string
	dataDir    string
	logPath    string
	clientURL  string
	peerAddr   string
	proxy      *proxy
	args       []string
	bin        string
	mu         sync.Mutex
	cmd        *exec.Cmd
	exited     chan struct{}
	killed     bool // the harness killed it; an exit otherwise is a failure
	unexpected error
}

type cluster struct {
	t       testing.TB
	members []*member
	token   string
}

var (
	portsMu sync.Mutex
	used    = map[int]bool{}
)

// freeAddr is the address of a free loopback port for a member to bind
// itself (and bind again after every restart). It is below the kernel's
// ephemeral range, which the listeners on port 0 and every outgoing
// connection draw from: a port from that range, closed again, was taken
// by a peer connection before the member bound it (a harness failure, seen
// as "bind: address already in use"). No port is handed out twice.
func freeAddr(t testing.TB) string {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				low = n
			}
		}
	}
	portsMu.Lock()
	defer portsMu.Unlock()
	for try := 0; try < 1000; try++ {
		port := 10000 + rand.IntN(low-10000)
		if used[port] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		used[port] = true
		return ln.Addr().String()
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return ""
}

// startCluster starts n members and waits until each answers a
// linearizable read. Everything stops at the end of the test. With
// etcdPath, member 0 is that etcd binary (same flags: etckit's are etcd's).
func startCluster(t testing.TB, n int, dir, token, etcdPath string) *cluster {
	bin := etckitBinary(t)
	c := &cluster{t: t, token: token}
	var initial []string
	for i := 0; i < n; i++ {
		pln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		m := &member{
			name:      fmt.Sprintf("m%d", i),
			dataDir:   filepath.Join(dir, fmt.Sprintf("m%d.etckit", i)),
			logPath:   filepath.Join(dir, fmt.Sprintf("m%d.log", i)),
			clientURL: "http://" + freeAddr(t),
			peerAddr:  freeAddr(t),
			bin:       bin,
		}
		m.proxy = newProxy(pln, m.peerAddr)
		c.members = append(c.members, m)
		initial = append(initial, fmt.Sprintf("%s=http://%s", m.name, m.proxy.addr()))
	}
	for _, m := range c.members {
		m.args = []string{"serve",
			"--name", m.name,
			"--data-dir", m.dataDir,
			"--listen-client-urls", m.clientURL,
			"--advertise-client-urls", m.clientURL,
			"--listen-peer-urls", "http://" + m.peerAddr,
			"--initial-advertise-peer-urls", "http://" + m.proxy.addr(),
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", token,
			"--heartbeat-interval", "50",
			"--election-timeout", "500",
			// Small, so that runs cross snapshots and compactions of the raft log.
			"--snapshot-count", "200",
			"--watch-progress-notify-interval", "200ms",
			"--log-level", "warn",
		}
	}
	if etcdPath != "" {
		m := c.members[0]
		m.bin, m.args = etcdBinary(t, etcdPath), m.args[1:]
	}
	t.Cleanup(c.stop)
	for _, m := range c.members {
		if err := m.start(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.waitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

func (m *member) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== %s start %s %s\n", time.Now().Format(time.RFC3339Nano), m.bin, strings.Join(m.args, " "))
	cmd := exec.Command(m.bin, m.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = memberProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %v", m.name, err)
	}
	m.cmd, m.killed, m.exited = cmd, false, make(chan struct{})
	exited := m.exited
	go func() {
		err := cmd.Wait()
		logf.Close()
		m.mu.Lock()
		if !m.killed && m.unexpected == nil {
			m.unexpected = fmt.Errorf("member %s exited by itself: %v (log %s)", m.name, err, m.logPath)
		}
		m.mu.Unlock()
		close(exited)
	}()
	return nil
}

// kill sends SIGKILL (a crash: nothing flushed, no shutdown) and waits
// for the process to be gone.
func (m *member) kill() {
	m.mu.Lock()
	if m.cmd == nil || m.killed {
		m.mu.Unlock()
		return
	}
	m.killed = true
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	exited := m.exited
	m.mu.Unlock()
	<-exited
}

func (m *member) running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd != nil && !m.killed
}

func (m *member) exitErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.unexpected
}

func (c *cluster) stop() {
	for _, m := range c.members {
		m.kill()
	}
	for _, m := range c.members {
		m.proxy.close()
	}
}

func (c *cluster) endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.clientURL)
	}
	return eps
}

// exitErr reports a member that stopped without being killed.
func (c *cluster) exitErr() error {
	for _, m := range c.members {
		if err := m.exitErr(); err != nil {
			return err
		}
	}
	return nil
}

func newClient(endpoints ...string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          2 * time.Second,
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: time.Second,
		Logger:               zap.NewNop(),
	})
}

// waitReady waits until every member answers a linearizable read.
func (c *cluster) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, m := range c.members {
		if err := m.waitReady(deadline); err != nil {
			return err
		}
		if err := c.exitErr(); err != nil {
			return err
		}
	}
	return nil
}

func (m *member) waitReady(deadline time.Time) error {
	cli, err := newClient(m.clientURL)
	if err != nil {
		return err
	}
	defer cli.Close()
	var lastErr error
	for time.Now().Before(deadline) {
		if err := m.exitErr(); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "health")
		cancel()
		if err == nil {
			return nil
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("member %s not ready: %v (log %s)", m.name, lastErr, m.logPath)
}

// leader is the index of the member that reports itself leader.
func (c *cluster) leader(ctx context.Context) (int, error) {
	cli, err := newClient(c.endpoints()...)
	if err != nil {
		return -1, err
	}
	defer cli.Close()
	for i, m := range c.members {
		if !m.running() {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cli.Status(sctx, m.clientURL)
		cancel()
		if err != nil {
			continue
		}
		if st.Leader == st.Header.MemberId {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no member reports itself leader")
}
