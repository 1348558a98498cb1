package interop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/status"
)

// authClient is a clientv3 client of m as user:password ("" anonymous).
func authClient(t *testing.T, m *authMember, user, password string) (*clientv3.Client, error) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{m.endpoint},
		DialTimeout: 5 * time.Second,
		Username:    user,
		Password:    password,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { cli.Close() })
	return cli, nil
}

// clientErrText is what a client sees of err: the message, and the gRPC code
// when there is one.
func clientErrText(err error) string {
	if err == nil {
		return "ok"
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return fmt.Sprintf("error %q (%v)", ee.Error(), ee.Code())
	}
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("error %q (%v)", s.Message(), s.Code())
	}
	return fmt.Sprintf("error %q", err.Error())
}

// authSetup creates, over clientv3 with auth disabled, the users, roles
// and keys the boot tests boot with, enable auth, and make two changes as
// root with auth on.
func authSetup(ctx context.Context, t *testing.T, m *authMember) error {
	t.Helper()
	anon, err := authClient(t, m, "", "")
	if err != nil {
		return err
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"user add root", func() error { _, err := anon.UserAdd(ctx, "root", "rootpw"); return err }},
		{"grant root", func() error { _, err := anon.UserGrantRole(ctx, "root", "root"); return err }},
		{"role add r1", func() error { _, err := anon.RoleAdd(ctx, "r1"); return err }},
		{"r1 foo", func() error {
			_, err := anon.RoleGrantPermission(ctx, "r1", "foo", "", clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}},
		{"r1 /app/", func() error {
			_, err := anon.RoleGrantPermission(ctx, "r1", "/app/", clientv3.GetPrefixRangeEnd("/app/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		}},
		{"role add r2", func() error { _, err := anon.RoleAdd(ctx, "r2"); return err }},
		{"r2 [a,c)", func() error {
			_, err := anon.RoleGrantPermission(ctx, "r2", "a", "c", clientv3.PermissionType(clientv3.PermRead))
			return err
		}},
		{"r2 [zz,)", func() error {
			_, err := anon.RoleGrantPermission(ctx, "r2", "zz", "\x00", clientv3.PermissionType(clientv3.PermWrite))
			return err
		}},
		{"user add alice", func() error { _, err := anon.UserAdd(ctx, "alice", "apw"); return err }},
		{"grant alice r2", func() error { _, err := anon.UserGrantRole(ctx, "alice", "r2"); return err }},
		{"grant alice r1", func() error { _, err := anon.UserGrantRole(ctx, "alice", "r1"); return err }},
		{"user add carol", func() error { _, err := anon.UserAdd(ctx, "carol", "cpw"); return err }},
		{"user add bob", func() error {
			_, err := anon.UserAddWithOptions(ctx, "bob", "", &clientv3.UserAddOptions{NoPassword: true})
			return err
		}},
		{"put foo", func() error { _, err := anon.Put(ctx, "foo", "bar"); return err }},
		{"put a", func() error { _, err := anon.Put(ctx, "a", "1"); return err }},
		{"put b", func() error { _, err := anon.Put(ctx, "b", "2"); return err }},
		{"put /app/x", func() error { _, err := anon.Put(ctx, "/app/x", "1"); return err }},
		{"put zz", func() error { _, err := anon.Put(ctx, "zz", "0"); return err }},
		{"auth enable", func() error { _, err := anon.AuthEnable(ctx); return err }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	root, err := authClient(t, m, "root", "rootpw")
	if err != nil {
		return fmt.Errorf("root client: %w", err)
	}
	if _, err := root.RoleAdd(ctx, "r3"); err != nil {
		return fmt.Errorf("role add r3 (auth on): %w", err)
	}
	if _, err := root.Put(ctx, "c", "3"); err != nil {
		return fmt.Errorf("put c (auth on): %w", err)
	}
	return nil
}

var authSetupPasswords = map[string]string{"root": "rootpw", "alice": "apw", "carol": "cpw"}

type authTableOp struct {
	name string
	do   func(ctx context.Context, c *clientv3.Client) (string, error)
}

func kvsText(r *clientv3.GetResponse) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rev %d count %d more %v", r.Header.Revision, r.Count, r.More)
	for _, kv := range r.Kvs {
		fmt.Fprintf(&b, " %q=%q@%d/%d/v%d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version)
	}
	return b.String()
}

// authTable is what every user is asked after the boot.
var authTable = []authTableOp{
	{"auth status", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.AuthStatus(ctx)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("enabled %v authRevision %d rev %d", r.Enabled, r.AuthRevision, r.Header.Revision), nil
	}},
	{"get foo", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.Get(ctx, "foo")
		if err != nil {
			return "", err
		}
		return kvsText(r), nil
	}},
	{"get [a,c)", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.Get(ctx, "a", clientv3.WithRange("c"))
		if err != nil {
			return "", err
		}
		return kvsText(r), nil
	}},
	{"get [a,d) serializable", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.Get(ctx, "a", clientv3.WithRange("d"), clientv3.WithSerializable())
		if err != nil {
			return "", err
		}
		return kvsText(r), nil
	}},
	{"get /app/ prefix", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.Get(ctx, "/app/", clientv3.WithPrefix())
		if err != nil {
			return "", err
		}
		return kvsText(r), nil
	}},
	{"get all", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return "", err
		}
		return kvsText(r), nil
	}},
	{"put foo", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.Put(ctx, "foo", "v")
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("rev %d", r.Header.Revision), nil
	}},
	{"put b prev-kv", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.Put(ctx, "b", "x", clientv3.WithPrevKV())
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("rev %d prev %v", r.Header.Revision, r.PrevKv != nil), nil
	}},
	{"put zzz", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.Put(ctx, "zzz", "v")
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("rev %d", r.Header.Revision), nil
	}},
	{"delete zzz", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.Delete(ctx, "zzz")
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("rev %d deleted %d", r.Header.Revision, r.Deleted), nil
	}},
	{"txn", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Value("a"), "=", "1")).
			Then(clientv3.OpPut("zz1", "x")).Else(clientv3.OpGet("b")).Commit()
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("rev %d succeeded %v", r.Header.Revision, r.Succeeded), nil
	}},
	{"lease grant+revoke", func(ctx context.Context, c *clientv3.Client) (string, error) {
		g, err := c.Grant(ctx, 600)
		if err != nil {
			return "", err
		}
		_, err = c.Revoke(ctx, g.ID)
		return fmt.Sprintf("granted TTL %d, revoked: %s", g.TTL, clientErrText(err)), nil
	}},
	{"watch foo", func(ctx context.Context, c *clientv3.Client) (string, error) {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for r := range c.Watch(wctx, "foo", clientv3.WithCreatedNotify()) {
			return fmt.Sprintf("created %v canceled %v err %s", r.Created, r.Canceled, clientErrText(r.Err())), nil
		}
		return "", errors.New("watch channel closed")
	}},
	{"member list", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.MemberList(ctx)
		if err != nil {
			return "", err
		}
		var ms []string
		for _, m := range r.Members {
			ms = append(ms, fmt.Sprintf("%x %s %v", m.ID, m.Name, m.PeerURLs))
		}
		return strings.Join(ms, "; "), nil
	}},
	{"status", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.Status(ctx, c.Endpoints()[0])
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("rev %d leader %x", r.Header.Revision, r.Leader), nil
	}},
	{"alarm list", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.AlarmList(ctx)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d alarms", len(r.Alarms)), nil
	}},
	{"user get alice", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.UserGet(ctx, "alice")
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("roles %q", r.Roles), nil
	}},
	{"user get root", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.UserGet(ctx, "root")
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("roles %q", r.Roles), nil
	}},
	{"user list", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.UserList(ctx)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%q", r.Users), nil
	}},
	{"role list", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.RoleList(ctx)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%q", r.Roles), nil
	}},
	{"role get r2", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.RoleGet(ctx, "r2")
		if err != nil {
			return "", err
		}
		var ps []string
		for _, p := range r.Perm {
			ps = append(ps, fmt.Sprintf("%v[%q,%q)", p.PermType, p.Key, p.RangeEnd))
		}
		return strings.Join(ps, " "), nil
	}},
	{"role get root", func(ctx context.Context, c *clientv3.Client) (string, error) {
		_, err := c.RoleGet(ctx, "root")
		return "", err
	}},
	{"user add+delete tmp", func(ctx context.Context, c *clientv3.Client) (string, error) {
		if _, err := c.UserAdd(ctx, "tmp", "tmppw"); err != nil {
			return "", err
		}
		_, err := c.UserDelete(ctx, "tmp")
		return "deleted: " + clientErrText(err), nil
	}},
	{"hashkv", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.HashKV(ctx, c.Endpoints()[0], 0)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("hash %d compact %d rev %d", r.Hash, r.CompactRevision, r.Header.Revision), nil
	}},
	{"compact 2", func(ctx context.Context, c *clientv3.Client) (string, error) {
		r, err := c.Compact(ctx, 2)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("rev %d", r.Header.Revision), nil
	}},
}

var authTableUsers = []struct{ user, password string }{
	{"alice", "apw"}, {"carol", "cpw"}, {"", ""}, {"alice", "bad"}, {"bob", "x"}, {"nosuch", "x"}, {"root", "rootpw"},
}

// runAuthTable asks authTable of m as every user of authTableUsers, in
// order, and returns one line per (user, op).
func runAuthTable(t *testing.T, m *authMember) []string {
	t.Helper()
	var lines []string
	for _, u := range authTableUsers {
		who := u.user + ":" + u.password
		if u.user == "" {
			who = "anonymous"
		}
		cli, err := authClient(t, m, u.user, u.password)
		if err != nil {
			lines = append(lines, fmt.Sprintf("%s: new client: %s", who, clientErrText(err)))
			continue
		}
		for _, op := range authTable {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			res, err := op.do(ctx, cli)
			cancel()
			if err != nil {
				res = clientErrText(err)
			}
			lines = append(lines, fmt.Sprintf("%s: %s: %s", who, op.name, res))
		}
		cli.Close()
	}
	return lines
}

// compareLines requires the same lines and prints both sides of each
// difference.
func compareLines(t *testing.T, what, na, nb string, a, b []string) {
	t.Helper()
	if strings.Join(a, "\n") == strings.Join(b, "\n") {
		t.Logf("%s: %d answers, same", what, len(a))
		return
	}
	t.Errorf("%s: answers differ\n%s", what, unifiedDiff(na, nb, strings.Join(a, "\n")+"\n", strings.Join(b, "\n")+"\n"))
}

// copyDir copies a stopped member's data dir.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAuthBootAcross: users, roles, permissions and auth enabled, written
// by etcd 3.7.3 (over clientv3), are served by etckit booting that data
// dir exactly as by etcd rebooting it: a table of (user, request) answers
// (values, revisions, error strings and codes) recorded on etcd and
// replayed on etckit. Then the reverse: etckit writes the same setup, both
// etckit and etcd boot it and must give etcd's answers, and the stopped
// dirs hold the same auth buckets.
func TestAuthBootAcross(t *testing.T) {
	candidate := authCandidate()
	var reference []string
	refDir := dataDir(t, "etcd-setup-pristine")

	t.Run("etcd-writes", func(t *testing.T) {
		dir := dataDir(t, "etcd")
		m := startAuthMember(t, "etcd", dir)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := authSetup(ctx, t, m); err != nil {
			t.Fatalf("etcd setup: %v", err)
		}
		m.stopAndCheck(t)
		copyDir(t, dir, refDir)
		other := dataDir(t, candidate+"-on-etcd")
		copyDir(t, dir, other)

		m = startAuthMember(t, "etcd", dir)
		reference = runAuthTable(t, m)
		m.stopAndCheck(t)
		t.Logf("etcd rebooting its dir:\n%s", strings.Join(reference, "\n"))

		k := startAuthMember(t, candidate, other)
		got := runAuthTable(t, k)
		k.stopAndCheck(t)
		compareLines(t, candidate+" booting etcd's dir", "etcd on its dir", candidate+" on etcd's dir", reference, got)
	})

	t.Run(candidate+"-writes", func(t *testing.T) {
		if reference == nil {
			t.Skip("no reference answers from etcd")
		}
		dir := dataDir(t, candidate)
		k := startAuthMember(t, candidate, dir)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := authSetup(ctx, t, k); err != nil {
			t.Fatalf("%s setup (the same requests etcd answered): %v", candidate, err)
		}
		k.stopAndCheck(t)
		compareAuthBuckets(t, refDir, dir, authSetupPasswords)
		etcdDir := dataDir(t, "etcd-on-"+candidate)
		copyDir(t, dir, etcdDir)

		k = startAuthMember(t, candidate, dir)
		got := runAuthTable(t, k)
		k.stopAndCheck(t)
		compareLines(t, candidate+" rebooting its dir", "etcd on its dir", candidate+" on its dir", reference, got)

		m := startAuthMember(t, "etcd", etcdDir)
		got = runAuthTable(t, m)
		m.stopAndCheck(t)
		compareLines(t, "etcd booting "+candidate+"'s dir", "etcd on its dir", "etcd on "+candidate+"'s dir", reference, got)
	})
}
