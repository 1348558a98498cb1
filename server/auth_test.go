package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// enableTestAuth makes root and alice (readwrite on [a, b)), enables auth
// and returns a context carrying alice's token and one carrying root's.
func enableTestAuth(t *testing.T, ctx context.Context, conn *grpc.ClientConn) (alice, root context.Context) {
	t.Helper()
	a := pb.NewAuthClient(conn)
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "root", Password: "rootpw"}))
	must(a.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}))
	must(a.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "alice", Password: "apw"}))
	must(a.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "r"}))
	must(a.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: "r",
		Perm: &authpb.Permission{PermType: authpb.Permission_READWRITE, Key: []byte("a"), RangeEnd: []byte("b")}}))
	must(a.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "alice", Role: "r"}))
	must(a.AuthEnable(ctx, &pb.AuthEnableRequest{}))
	login := func(user, pw string) context.Context {
		resp, err := a.Authenticate(ctx, &pb.AuthenticateRequest{Name: user, Password: pw})
		if err != nil {
			t.Fatal(err)
		}
		return metadata.AppendToOutgoingContext(ctx, "token", resp.Token)
	}
	return login("alice", "apw"), login("root", "rootpw")
}

// TestAuthConcurrentChanges: requests race permission changes. Each one is
// decided on one auth revision: it succeeds, or fails with "revision of
// auth store is old" (and succeeds when retried), never anything else.
func TestAuthConcurrentChanges(t *testing.T) {
	_, conn := startServer(t, filepath.Join(t.TempDir(), "m"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice, root := enableTestAuth(t, ctx, conn)
	kv, a := pb.NewKVClient(conn), pb.NewAuthClient(conn)
	var stale atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				key := fmt.Appendf(nil, "a/%d/%d", w, i)
				var err error
				for try := 0; try < 20; try++ {
					if _, err = kv.Put(alice, &pb.PutRequest{Key: key, Value: []byte("v")}); err == nil {
						_, err = kv.Range(alice, &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("b"), CountOnly: true})
					}
					if !errors.Is(err, rpctypes.ErrGRPCAuthOldRevision) {
						break
					}
					stale.Add(1)
				}
				if err != nil {
					errc <- fmt.Errorf("put %s: %w", key, err)
					return
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		perm := &authpb.Permission{PermType: authpb.Permission_READ, Key: fmt.Appendf(nil, "z%d", i)}
		if _, err := a.RoleGrantPermission(root, &pb.AuthRoleGrantPermissionRequest{Name: "r", Perm: perm}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	t.Logf("%d requests answered with a stale auth revision and retried", stale.Load())
	// Permissions outside the grant stay refused.
	if _, err := kv.Put(alice, &pb.PutRequest{Key: []byte("b"), Value: []byte("v")}); !errors.Is(err, rpctypes.ErrGRPCPermissionDenied) {
		t.Fatalf("put outside the grant: %v", err)
	}
}

// TestAuthLeaseExpiry: with auth on, a lease of alice's expires and takes
// its key with it (the member revokes as root, as etcd's WithRoot).
func TestAuthLeaseExpiry(t *testing.T) {
	_, conn := startServer(t, filepath.Join(t.TempDir(), "m"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice, _ := enableTestAuth(t, ctx, conn)
	kv, lc := pb.NewKVClient(conn), pb.NewLeaseClient(conn)
	if _, err := lc.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 1}); !errors.Is(err, rpctypes.ErrGRPCUserEmpty) {
		t.Fatalf("anonymous lease grant: %v, want user name is empty", err)
	}
	l, err := lc.LeaseGrant(alice, &pb.LeaseGrantRequest{TTL: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(alice, &pb.PutRequest{Key: []byte("a1"), Value: []byte("v"), Lease: l.ID}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := kv.Range(alice, &pb.RangeRequest{Key: []byte("a1")})
		if err != nil {
			t.Fatal(err)
		}
		if r.Count == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the key of an expired lease is still there after 20 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
