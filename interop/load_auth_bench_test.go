package interop

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// BenchmarkLoadAuth is BenchmarkLoad with auth enabled on both members:
// every client authenticates once as user "bench" (simple token) and
// sends its token with every request; the user holds one role with 10
// range permissions ([0000, 0001) ... [0009, 000:), readwrite), which
// together cover the benchmark's 100,000 keys "00000000".."00099999", so
// every request passes the permission check after walking the role's
// intervals. The range ops read key "00000042".
func BenchmarkLoadAuth(b *testing.B) {
	runAuthLoad(b, func(impl, dir string, clients int) (*launched, []*grpc.ClientConn, []context.Context) {
		m := launch(b, impl, dir)
		conns := make([]*grpc.ClientConn, clients)
		for i := range conns {
			conns[i] = dialTB(b, m.endpoint)
		}
		return m, conns, enableBenchAuth(b, conns)
	})
}

// runAuthLoad runs the auth load cases, every op and client count on both
// implementations (alternating first as -load.first says), each on a
// member start made ready with auth on and its clients' contexts (nil:
// no token).
func runAuthLoad(b *testing.B, start func(impl, dir string, clients int) (*launched, []*grpc.ClientConn, []context.Context)) {
	impls := []string{"etckit", "etcd"}
	if *loadFirst == "etcd" {
		impls = []string{"etcd", "etckit"}
	}
	const seed = 42
	b.Logf("seed %d", seed)
	value := make([]byte, 256)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	rangeKey := []byte("00000042")
	for _, op := range []string{"put", "range-linearizable", "range-serializable"} {
		for _, clients := range []int{16, 100} {
			for _, impl := range impls {
				runtime.GC()
				dir := filepath.Join(b.TempDir(), impl)
				m, conns, ctxs := start(impl, dir, clients)
				ctx := context.Background()
				if ctxs != nil {
					ctx = ctxs[0]
				}
				if _, err := pb.NewKVClient(conns[0]).Put(ctx, &pb.PutRequest{Key: rangeKey, Value: value}); err != nil {
					b.Fatal(err)
				}
				b.Run(fmt.Sprintf("op=%s/clients=%d/impl=%s", op, clients, impl), func(b *testing.B) {
					runLoadAs(b, op, conns, ctxs, rangeKey, value, seed)
				})
				for _, c := range conns {
					c.Close()
				}
				m.stop()
				os.RemoveAll(dir)
			}
		}
	}
}

// enableBenchAuth creates root and "bench" (10 range permissions),
// enables auth, and authenticates each connection as bench.
func enableBenchAuth(b *testing.B, conns []*grpc.ClientConn) []context.Context {
	setupBenchAuth(b, conns[0])
	ctxs := make([]context.Context, len(conns))
	for i, c := range conns {
		resp, err := pb.NewAuthClient(c).Authenticate(context.Background(), &pb.AuthenticateRequest{Name: "bench", Password: "benchpw"})
		if err != nil {
			b.Fatal(err)
		}
		ctxs[i] = metadata.AppendToOutgoingContext(context.Background(), "token", resp.Token)
	}
	return ctxs
}

// setupBenchAuth creates root and "bench" (10 range permissions) and
// enables auth.
func setupBenchAuth(b *testing.B, conn *grpc.ClientConn) {
	ctx := context.Background()
	a := pb.NewAuthClient(conn)
	must := func(_ any, err error) {
		b.Helper()
		if err != nil {
			b.Fatal(err)
		}
	}
	must(a.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "root", Password: "rootpw"}))
	must(a.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}))
	must(a.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "bench", Password: "benchpw"}))
	must(a.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "ranges"}))
	for i := 0; i < 10; i++ {
		must(a.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: "ranges", Perm: &authpb.Permission{
			PermType: authpb.Permission_READWRITE, Key: fmt.Appendf(nil, "000%d", i), RangeEnd: fmt.Appendf(nil, "000%c", '0'+i+1)}}))
	}
	must(a.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "bench", Role: "ranges"}))
	must(a.AuthEnable(ctx, &pb.AuthEnableRequest{}))
}

// BenchmarkLoadAuthCN is BenchmarkLoadAuth with the identity taken from
// the client certificate instead of a token: both members serve https
// with --client-cert-auth, every client presents a certificate with CN
// "bench" (the same user and 10 permissions) and sends no token.
func BenchmarkLoadAuthCN(b *testing.B) {
	pki := newTestPKI(b, "bench-ca")
	srv, _ := pki.issue("server")
	benchCert, _ := pki.issue("bench")
	runAuthLoad(b, func(impl, dir string, clients int) (*launched, []*grpc.ClientConn, []context.Context) {
		m := launchTLS(b, impl, dir, srv)
		conns := make([]*grpc.ClientConn, clients)
		for i := range conns {
			conns[i] = dialTLS(b, m.endpoint, benchCert)
		}
		setupBenchAuth(b, conns[0])
		return m, conns, nil
	})
}
