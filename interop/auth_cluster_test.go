package interop

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/metadata"
)

// TestAuthMixedCluster runs auth on clusters that mix etcd 3.7.3 and
// etckit members. Users and roles are managed through every member in
// turn; a simple token handed out by any member must work on every member
// (each member registers the same token string when it applies the
// Authenticate entry: the proposer's prefix, the applier's consistent
// index), permissions must be enforced alike everywhere, and the whole db
// hash (auth buckets included, password hashes made once by the proposer)
// must agree.
func TestAuthMixedCluster(t *testing.T) {
	for _, kinds := range [][]string{{"etcd", "etckit", "etckit"}, {"etckit", "etcd", "etcd"}} {
		t.Run(fmt.Sprint(kinds), func(t *testing.T) {
			c := newMixedCluster(t, kinds...)
			authOf := func(i int) pb.AuthClient { return pb.NewAuthClient(c.members[i%len(c.members)].m.conn) }
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			steps := []func(pb.AuthClient) error{
				func(a pb.AuthClient) error {
					_, err := a.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "root", Password: "rootpw"})
					return err
				},
				func(a pb.AuthClient) error {
					_, err := a.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"})
					return err
				},
				func(a pb.AuthClient) error {
					_, err := a.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "app"})
					return err
				},
				func(a pb.AuthClient) error {
					_, err := a.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: "app",
						Perm: &authpb.Permission{PermType: authpb.Permission_READWRITE, Key: []byte("/a/"), RangeEnd: []byte("/a0")}})
					return err
				},
				func(a pb.AuthClient) error {
					_, err := a.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "alice", Password: "apw", Options: &authpb.UserAddOptions{}})
					return err
				},
				func(a pb.AuthClient) error {
					_, err := a.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "alice", Role: "app"})
					return err
				},
				func(a pb.AuthClient) error {
					_, err := a.AuthEnable(ctx, &pb.AuthEnableRequest{})
					return err
				},
			}
			for i, step := range steps {
				if err := step(authOf(i)); err != nil {
					t.Fatalf("step %d through %s: %v", i, c.members[i%len(c.members)].name, err)
				}
			}
			login := func(i int, user, pw string) string {
				t.Helper()
				resp, err := authOf(i).Authenticate(ctx, &pb.AuthenticateRequest{Name: user, Password: pw})
				if err != nil {
					t.Fatalf("authenticate %s through %s: %v", user, c.members[i].name, err)
				}
				return resp.Token
			}
			with := func(tok string) context.Context { return metadata.AppendToOutgoingContext(ctx, "token", tok) }
			// Every member's token, used on every member.
			for i, from := range c.members {
				tok := login(i, "alice", "apw")
				for j, on := range c.members {
					key := fmt.Sprintf("/a/%d-%d", i, j)
					var err error
					for try := 0; try < 50; try++ {
						// A token names the index it was made at; a member
						// that has not applied it yet waits for it.
						_, err = on.m.kv.Put(with(tok), &pb.PutRequest{Key: []byte(key), Value: []byte("v")})
						if !errors.Is(err, rpctypes.ErrGRPCInvalidAuthToken) {
							break
						}
						time.Sleep(20 * time.Millisecond)
					}
					if err != nil {
						t.Fatalf("token from %s (%s) on %s (%s): put %s: %v", from.name, from.kind, on.name, on.kind, key, err)
					}
					if _, err := on.m.kv.Put(with(tok), &pb.PutRequest{Key: []byte("/b/x"), Value: []byte("v")}); !errors.Is(err, rpctypes.ErrGRPCPermissionDenied) {
						t.Fatalf("token from %s on %s: put outside the grant: %v, want permission denied", from.name, on.name, err)
					}
					if _, err := on.m.kv.Range(with(tok), &pb.RangeRequest{Key: []byte("/"), RangeEnd: []byte("0"), Serializable: true}); !errors.Is(err, rpctypes.ErrGRPCPermissionDenied) {
						t.Fatalf("token from %s on %s: range over more than the grant: %v, want permission denied", from.name, on.name, err)
					}
				}
			}
			// A revoke through one kind of member is enforced by all. (As in
			// etcd, a token is waited for up to the index before its
			// Authenticate entry: a member that lags by that one entry
			// answers "invalid auth token" and a client retries.)
			root := login(1, "root", "rootpw")
			if err := retryInvalidToken(func() error {
				_, err := authOf(2).RoleRevokePermission(with(root), &pb.AuthRoleRevokePermissionRequest{Role: "app", Key: []byte("/a/"), RangeEnd: []byte("/a0")})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			tok := login(0, "alice", "apw")
			for _, on := range c.members {
				var err error
				for try := 0; try < 50; try++ {
					_, err = on.m.kv.Put(with(tok), &pb.PutRequest{Key: []byte("/a/after"), Value: []byte("v")})
					if !errors.Is(err, rpctypes.ErrGRPCInvalidAuthToken) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if !errors.Is(err, rpctypes.ErrGRPCPermissionDenied) {
					t.Fatalf("after the revoke, put on %s (%s): %v, want permission denied", on.name, on.kind, err)
				}
			}
			// The same db everywhere, auth buckets included.
			var hashes []string
			for try := 0; try < 100; try++ {
				hashes = hashes[:0]
				for _, mm := range c.members {
					var h *pb.HashResponse
					err := retryInvalidToken(func() (err error) {
						h, err = mm.m.maint.Hash(with(root), &pb.HashRequest{})
						return err
					})
					if err != nil {
						t.Fatalf("hash of %s: %v", mm.name, err)
					}
					hashes = append(hashes, fmt.Sprintf("%s=%08x", mm.name, h.Hash))
				}
				if allSameHash(hashes) {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Fatalf("db hashes differ: %v", hashes)
		})
	}
}

func allSameHash(hs []string) bool {
	for _, h := range hs {
		if h[len(h)-8:] != hs[0][len(hs[0])-8:] {
			return false
		}
	}
	return true
}

// retryInvalidToken retries fn while a member does not know the token yet.
func retryInvalidToken(fn func() error) error {
	var err error
	for try := 0; try < 50; try++ {
		if err = fn(); !errors.Is(err, rpctypes.ErrGRPCInvalidAuthToken) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}
