package interop

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
)

var simpleToken = regexp.MustCompile(`^[a-zA-Z]{16}\.\d+$`)

// rawCodec sends and receives messages as the bytes given, so that a
// request can carry what a generated client refuses to marshal (a proto3
// string that is not UTF-8).
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// nameRequest is a request whose field 1 is name (AuthRoleAddRequest,
// AuthUserAddRequest{name=1, password=2}).
func nameRequest(name string, password string) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, name)
	if password != "" {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, password)
	}
	return b
}

// clientScript is the clientv3 (and raw gRPC) session of
// TestAuthClientBehaviour; every answer is one line, followed by the auth
// status an anonymous client reads (3.7 answers it with auth enabled).
func clientScript(t *testing.T, m *authMember) []string {
	t.Helper()
	var lines []string
	anon, err := authClient(t, m, "", "")
	if err != nil {
		t.Fatalf("%s: anonymous client: %v", m.impl, err)
	}
	conn := dialTB(t, m.endpoint)
	t.Cleanup(func() { conn.Close() })
	authRPC, kvRPC := pb.NewAuthClient(conn), pb.NewKVClient(conn)
	ctxT := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 10*time.Second)
	}
	step := func(what string, f func(ctx context.Context) string) {
		ctx, cancel := ctxT()
		res := f(ctx)
		cancel()
		ctx, cancel = ctxT()
		st, err := anon.AuthStatus(ctx)
		cancel()
		as := clientErrText(err)
		if err == nil {
			as = fmt.Sprintf("enabled %v authRevision %d kv rev %d", st.Enabled, st.AuthRevision, st.Header.Revision)
		}
		lines = append(lines, fmt.Sprintf("%-40s %s   [auth status: %s]", what+":", res, as))
	}
	e := clientErrText
	is := func(err, target error) string {
		return fmt.Sprintf("%s errors.Is(%v)=%v", e(err), target, errors.Is(err, target))
	}
	token := func(ctx context.Context, user, pw string) (string, string) {
		r, err := authRPC.Authenticate(ctx, &pb.AuthenticateRequest{Name: user, Password: pw})
		if err != nil {
			return "", e(err)
		}
		if !simpleToken.MatchString(r.Token) {
			return r.Token, fmt.Sprintf("token %q is not a simple token", r.Token)
		}
		return r.Token, fmt.Sprintf("simple token, rev %d", r.Header.Revision)
	}
	rangeWith := func(ctx context.Context, key, tok string) string {
		if tok != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "token", tok)
		}
		r, err := kvRPC.Range(ctx, &pb.RangeRequest{Key: []byte(key)})
		if err != nil {
			return e(err)
		}
		return fmt.Sprintf("count %d rev %d", r.Count, r.Header.Revision)
	}
	rawCall := func(ctx context.Context, method string, req []byte, tok string) string {
		if tok != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "token", tok)
		}
		var resp []byte
		err := conn.Invoke(ctx, method, &req, &resp, grpc.ForceCodec(rawCodec{}))
		return e(err)
	}

	// Auth disabled.
	step("authenticate (auth disabled)", func(ctx context.Context) string { _, s := token(ctx, "root", "x"); return s })
	step("user add root", func(ctx context.Context) string { _, err := anon.UserAdd(ctx, "root", "rootpw"); return e(err) })
	step("user grant root root", func(ctx context.Context) string { _, err := anon.UserGrantRole(ctx, "root", "root"); return e(err) })
	step("role add r1", func(ctx context.Context) string { _, err := anon.RoleAdd(ctx, "r1"); return e(err) })
	step("r1 readwrite foo", func(ctx context.Context) string {
		_, err := anon.RoleGrantPermission(ctx, "r1", "foo", "", clientv3.PermissionType(clientv3.PermReadWrite))
		return e(err)
	})
	step("user add alice", func(ctx context.Context) string { _, err := anon.UserAdd(ctx, "alice", "apw"); return e(err) })
	step("grant alice r1", func(ctx context.Context) string { _, err := anon.UserGrantRole(ctx, "alice", "r1"); return e(err) })
	step("grant alice r1 again", func(ctx context.Context) string { _, err := anon.UserGrantRole(ctx, "alice", "r1"); return e(err) })
	step("user add carol", func(ctx context.Context) string { _, err := anon.UserAdd(ctx, "carol", "cpw"); return e(err) })
	step("user add empty name", func(ctx context.Context) string {
		_, err := anon.UserAdd(ctx, "", "x")
		return is(err, rpctypes.ErrUserEmpty)
	})
	step("role add empty name", func(ctx context.Context) string {
		_, err := anon.RoleAdd(ctx, "")
		return is(err, rpctypes.ErrRoleEmpty)
	})
	step("user add password 73 bytes", func(ctx context.Context) string {
		_, err := anon.UserAdd(ctx, "big", strings.Repeat("p", 73))
		return e(err)
	})
	step("user add password 72 bytes", func(ctx context.Context) string {
		_, err := anon.UserAdd(ctx, "big", strings.Repeat("p", 72))
		return e(err)
	})
	step("change password 73 bytes", func(ctx context.Context) string {
		_, err := anon.UserChangePassword(ctx, "carol", strings.Repeat("p", 73))
		return e(err)
	})
	step("user add empty password", func(ctx context.Context) string { _, err := anon.UserAdd(ctx, "nopass", ""); return e(err) })
	step("user add no-password", func(ctx context.Context) string {
		_, err := anon.UserAddWithOptions(ctx, "cn", "", &clientv3.UserAddOptions{NoPassword: true})
		return e(err)
	})
	// Role and user names with odd bytes.
	for _, name := range []string{"a\x00b", "ключ", "\x00", " sp ace", strings.Repeat("r", 300)} {
		step(fmt.Sprintf("role add %.20q", name), func(ctx context.Context) string { _, err := anon.RoleAdd(ctx, name); return e(err) })
	}
	step("role add \\xff (client)", func(ctx context.Context) string { _, err := anon.RoleAdd(ctx, "\xff"); return e(err) })
	step("role add \\xff (raw)", func(ctx context.Context) string {
		return rawCall(ctx, "/etcdserverpb.Auth/RoleAdd", nameRequest("\xff", ""), "")
	})
	step("user add \\xfe\\xff (raw)", func(ctx context.Context) string {
		return rawCall(ctx, "/etcdserverpb.Auth/UserAdd", nameRequest("\xfe\xff", "pw"), "")
	})
	step("user add \\x00 (raw)", func(ctx context.Context) string {
		return rawCall(ctx, "/etcdserverpb.Auth/UserAdd", nameRequest("u\x00", "pw"), "")
	})
	step("a\\x00b from-key \\xff\\x00", func(ctx context.Context) string {
		_, err := anon.RoleGrantPermission(ctx, "a\x00b", "\xff\x00", "\x00", clientv3.PermissionType(clientv3.PermRead))
		return e(err)
	})
	step("ключ readwrite ключ/ prefix", func(ctx context.Context) string {
		_, err := anon.RoleGrantPermission(ctx, "ключ", "ключ/", clientv3.GetPrefixRangeEnd("ключ/"), clientv3.PermissionType(clientv3.PermReadWrite))
		return e(err)
	})
	step("grant alice a\\x00b", func(ctx context.Context) string { _, err := anon.UserGrantRole(ctx, "alice", "a\x00b"); return e(err) })
	step("grant alice ключ", func(ctx context.Context) string {
		_, err := anon.UserGrantRole(ctx, "alice", "ключ")
		return e(err)
	})
	step("role list", func(ctx context.Context) string {
		r, err := anon.RoleList(ctx)
		if err != nil {
			return e(err)
		}
		return fmt.Sprintf("%.40q", r.Roles)
	})
	step("role get a\\x00b", func(ctx context.Context) string {
		r, err := anon.RoleGet(ctx, "a\x00b")
		if err != nil {
			return e(err)
		}
		return fmt.Sprintf("%v", r.Perm)
	})
	step("user list", func(ctx context.Context) string {
		r, err := anon.UserList(ctx)
		if err != nil {
			return e(err)
		}
		return fmt.Sprintf("%q", r.Users)
	})
	step("user get alice", func(ctx context.Context) string {
		r, err := anon.UserGet(ctx, "alice")
		if err != nil {
			return e(err)
		}
		return fmt.Sprintf("%q", r.Roles)
	})
	step("put foo (auth disabled)", func(ctx context.Context) string { _, err := anon.Put(ctx, "foo", "bar"); return e(err) })
	step("put \\xff\\x00x", func(ctx context.Context) string { _, err := anon.Put(ctx, "\xff\x00x", "odd"); return e(err) })
	step("put ключ/1", func(ctx context.Context) string { _, err := anon.Put(ctx, "ключ/1", "v"); return e(err) })
	step("auth enable", func(ctx context.Context) string { _, err := anon.AuthEnable(ctx); return e(err) })

	// Auth enabled.
	step("wrong password", func(ctx context.Context) string {
		_, err := authClient(t, m, "alice", "bad")
		return is(err, rpctypes.ErrAuthFailed)
	})
	step("unknown user", func(ctx context.Context) string {
		_, err := authClient(t, m, "nosuch", "x")
		return is(err, rpctypes.ErrAuthFailed)
	})
	step("no-password user with a password", func(ctx context.Context) string {
		_, err := authClient(t, m, "cn", "x")
		return e(err)
	})
	step("72-byte password authenticates", func(ctx context.Context) string {
		_, s := token(ctx, "big", strings.Repeat("p", 72))
		return s
	})
	step("empty password authenticates", func(ctx context.Context) string {
		_, s := token(ctx, "nopass", "")
		return s
	})
	step("anonymous put", func(ctx context.Context) string {
		_, err := anon.Put(ctx, "foo", "x")
		return is(err, rpctypes.ErrUserEmpty)
	})
	step("anonymous get", func(ctx context.Context) string {
		_, err := anon.Get(ctx, "foo")
		return is(err, rpctypes.ErrUserEmpty)
	})
	step("anonymous user list", func(ctx context.Context) string {
		_, err := anon.UserList(ctx)
		return is(err, rpctypes.ErrUserEmpty)
	})
	root, err := authClient(t, m, "root", "rootpw")
	if err != nil {
		lines = append(lines, "root client: "+e(err))
		return lines
	}
	alice, err := authClient(t, m, "alice", "apw")
	if err != nil {
		lines = append(lines, "alice client: "+e(err))
		return lines
	}
	get := func(c *clientv3.Client, key string) func(ctx context.Context) string {
		return func(ctx context.Context) string {
			r, err := c.Get(ctx, key)
			if err != nil {
				return e(err)
			}
			return fmt.Sprintf("count %d rev %d", r.Count, r.Header.Revision)
		}
	}
	step("alice get foo", get(alice, "foo"))
	step("alice get \\xff\\x00x (from-key \\xff\\x00)", get(alice, "\xff\x00x"))
	step("alice get \\xff (below the grant)", get(alice, "\xff"))
	step("alice get ключ/1", get(alice, "ключ/1"))
	step("alice get bar", get(alice, "bar"))
	step("root grants r1 read bar", func(ctx context.Context) string {
		_, err := root.RoleGrantPermission(ctx, "r1", "bar", "", clientv3.PermissionType(clientv3.PermRead))
		return e(err)
	})
	step("alice (same client) get bar", get(alice, "bar"))
	step("alice put foo while root changes r1 20 times", func(ctx context.Context) string {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var aliceErrs, rootErrs []string
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				if _, err := alice.Put(ctx, "foo", fmt.Sprint(i)); err != nil {
					mu.Lock()
					aliceErrs = append(aliceErrs, e(err))
					mu.Unlock()
				}
			}
		}()
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if _, err := root.RoleGrantPermission(ctx, "r1", fmt.Sprintf("k%02d", i), "", clientv3.PermissionType(clientv3.PermRead)); err != nil {
					mu.Lock()
					rootErrs = append(rootErrs, e(err))
					mu.Unlock()
				}
			}
		}()
		wg.Wait()
		return fmt.Sprintf("alice errors %q, root errors %q", aliceErrs, rootErrs)
	})
	step("alice get foo after", get(alice, "foo"))
	step("alice user get self", func(ctx context.Context) string {
		r, err := alice.UserGet(ctx, "alice")
		if err != nil {
			return e(err)
		}
		return fmt.Sprintf("%.40q", r.Roles)
	})
	step("alice role get ключ (own role)", func(ctx context.Context) string {
		r, err := alice.RoleGet(ctx, "ключ")
		if err != nil {
			return e(err)
		}
		return fmt.Sprintf("%v", r.Perm)
	})
	step("alice role get a\\x00b (own role)", func(ctx context.Context) string { _, err := alice.RoleGet(ctx, "a\x00b"); return e(err) })
	step("alice auth disable", func(ctx context.Context) string {
		_, err := alice.AuthDisable(ctx)
		return is(err, rpctypes.ErrPermissionDenied)
	})

	// Tokens.
	var aliceTok, carolTok string
	step("authenticate alice (raw)", func(ctx context.Context) string { var s string; aliceTok, s = token(ctx, "alice", "apw"); return s })
	step("range foo with alice's token", func(ctx context.Context) string { return rangeWith(ctx, "foo", aliceTok) })
	step("range foo, authorization header", func(ctx context.Context) string {
		r, err := kvRPC.Range(metadata.AppendToOutgoingContext(ctx, "authorization", aliceTok), &pb.RangeRequest{Key: []byte("foo")})
		if err != nil {
			return e(err)
		}
		return fmt.Sprintf("count %d", r.Count)
	})
	step("range foo, authorization Bearer", func(ctx context.Context) string {
		r, err := kvRPC.Range(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+aliceTok), &pb.RangeRequest{Key: []byte("foo")})
		if err != nil {
			return e(err)
		}
		return fmt.Sprintf("count %d", r.Count)
	})
	step("range foo, garbage token", func(ctx context.Context) string { return rangeWith(ctx, "foo", "garbage") })
	step("range foo, unknown token", func(ctx context.Context) string { return rangeWith(ctx, "foo", "abcdefghijklmnop.1") })
	step("auth status, garbage token", func(ctx context.Context) string {
		_, err := authRPC.AuthStatus(metadata.AppendToOutgoingContext(ctx, "token", "garbage"), &pb.AuthStatusRequest{})
		return e(err)
	})
	step("user get alice, garbage token", func(ctx context.Context) string {
		_, err := authRPC.UserGet(metadata.AppendToOutgoingContext(ctx, "token", "garbage"), &pb.AuthUserGetRequest{Name: "alice"})
		return e(err)
	})
	step("authenticate, garbage token", func(ctx context.Context) string {
		_, err := authRPC.Authenticate(metadata.AppendToOutgoingContext(ctx, "token", "garbage"), &pb.AuthenticateRequest{Name: "alice", Password: "apw"})
		return e(err)
	})
	rawWatch := func(ctx context.Context, key, tok string) string {
		if tok != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "token", tok)
		}
		ws, err := pb.NewWatchClient(conn).Watch(ctx)
		if err != nil {
			return e(err)
		}
		defer ws.CloseSend()
		req := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte(key)}}}
		if err := ws.Send(req); err != nil {
			return e(err)
		}
		r, err := ws.Recv()
		if err != nil {
			return e(err)
		}
		return strings.Join(strings.Fields(text(normalize(r))), " ")
	}
	step("raw watch create foo, alice's token", func(ctx context.Context) string { return rawWatch(ctx, "foo", aliceTok) })
	step("raw watch create zzz, alice's token", func(ctx context.Context) string { return rawWatch(ctx, "zzz", aliceTok) })
	step("raw watch create foo, anonymous", func(ctx context.Context) string { return rawWatch(ctx, "foo", "") })
	step("raw watch create foo, garbage token", func(ctx context.Context) string { return rawWatch(ctx, "foo", "garbage") })
	step("raw role add \\xff as root", func(ctx context.Context) string {
		tok, s := token(ctx, "root", "rootpw")
		if tok == "" {
			return s
		}
		return rawCall(ctx, "/etcdserverpb.Auth/RoleAdd", nameRequest("\xff", ""), tok)
	})
	step("authenticate carol", func(ctx context.Context) string { var s string; carolTok, s = token(ctx, "carol", "cpw"); return s })
	step("root changes carol's password", func(ctx context.Context) string {
		_, err := root.UserChangePassword(ctx, "carol", "cpw2")
		return e(err)
	})
	step("carol's old token", func(ctx context.Context) string { return rangeWith(ctx, "foo", carolTok) })
	step("carol's old password", func(ctx context.Context) string { _, s := token(ctx, "carol", "cpw"); return s })
	step("carol's new password", func(ctx context.Context) string { _, s := token(ctx, "carol", "cpw2"); return s })
	step("alice's token still valid", func(ctx context.Context) string { return rangeWith(ctx, "foo", aliceTok) })

	// Deleting a user invalidates its tokens; a connected client re-authenticates and fails.
	step("root deletes alice", func(ctx context.Context) string { _, err := root.UserDelete(ctx, "alice"); return e(err) })
	step("deleted alice's token", func(ctx context.Context) string { return rangeWith(ctx, "foo", aliceTok) })
	step("deleted alice's client get foo", func(ctx context.Context) string {
		_, err := alice.Get(ctx, "foo")
		return is(err, rpctypes.ErrAuthFailed)
	})
	step("deleted alice's client put foo", func(ctx context.Context) string {
		_, err := alice.Put(ctx, "foo", "x")
		return is(err, rpctypes.ErrAuthFailed)
	})
	step("new client as deleted alice", func(ctx context.Context) string {
		_, err := authClient(t, m, "alice", "apw")
		return is(err, rpctypes.ErrAuthFailed)
	})
	step("root re-adds alice", func(ctx context.Context) string { _, err := root.UserAdd(ctx, "alice", "apw"); return e(err) })
	step("old token of re-added alice", func(ctx context.Context) string { return rangeWith(ctx, "foo", aliceTok) })
	step("alice's old client, re-added (no roles)", get(alice, "foo"))
	step("root grants alice r1", func(ctx context.Context) string { _, err := root.UserGrantRole(ctx, "alice", "r1"); return e(err) })
	step("alice's old client get foo", get(alice, "foo"))
	step("root revokes r1 foo", func(ctx context.Context) string {
		_, err := root.RoleRevokePermission(ctx, "r1", "foo", "")
		return e(err)
	})
	step("alice get foo (revoked)", get(alice, "foo"))
	step("root role delete r1", func(ctx context.Context) string { _, err := root.RoleDelete(ctx, "r1"); return e(err) })
	step("alice user get (role deleted)", func(ctx context.Context) string {
		r, err := alice.UserGet(ctx, "alice")
		if err != nil {
			return e(err)
		}
		return fmt.Sprintf("%q", r.Roles)
	})
	step("root user revoke-role alice r1 (deleted role)", func(ctx context.Context) string {
		_, err := root.UserRevokeRole(ctx, "alice", "r1")
		return e(err)
	})

	// Disable: credentialed clients keep working, tokens are ignored.
	var rootTok string
	step("authenticate root", func(ctx context.Context) string { var s string; rootTok, s = token(ctx, "root", "rootpw"); return s })
	step("auth disable", func(ctx context.Context) string { _, err := root.AuthDisable(ctx); return e(err) })
	step("root's token after disable", func(ctx context.Context) string { return rangeWith(ctx, "foo", rootTok) })
	step("garbage token after disable", func(ctx context.Context) string { return rangeWith(ctx, "foo", "garbage") })
	step("root client after disable", get(root, "foo"))
	step("alice client after disable", get(alice, "foo"))
	step("new client, wrong password, disabled", func(ctx context.Context) string {
		c, err := authClient(t, m, "root", "bad")
		if err != nil {
			return e(err)
		}
		return get(c, "foo")(ctx)
	})
	step("authenticate (disabled again)", func(ctx context.Context) string { _, s := token(ctx, "root", "rootpw"); return s })
	step("auth enable again", func(ctx context.Context) string { _, err := anon.AuthEnable(ctx); return e(err) })
	step("root's token before disable", func(ctx context.Context) string { return rangeWith(ctx, "foo", rootTok) })
	step("root client after re-enable", get(root, "foo"))
	return lines
}

// TestAuthClientBehaviour runs clientScript with clientv3 3.7.3 against
// etcd 3.7.3 and etckit: wrong password (ErrAuthFailed), anonymous
// requests (ErrUserEmpty), a connected client across permission changes
// and concurrent auth changes (ErrAuthOldRevision is retried), deleted
// users and their tokens, password changes, bcrypt's 72-byte limit, role
// and user names with NUL, non-ASCII and invalid UTF-8 bytes, tokens in
// the authorization header, garbage tokens, disable and re-enable; the
// answers and the auth status after every step must be etcd's.
func TestAuthClientBehaviour(t *testing.T) {
	var results [][]string
	for _, impl := range []string{"etcd", authCandidate()} {
		m := startAuthMember(t, impl, dataDir(t, impl))
		lines := clientScript(t, m)
		m.stopAndCheck(t)
		t.Logf("%s:\n%s", impl, strings.Join(lines, "\n"))
		results = append(results, lines)
	}
	compareLines(t, "clientv3 session", "etcd", authCandidate(), results[0], results[1])
}
