package interop

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/server"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/pkg/v3/featuregate"
	"go.etcd.io/etcd/server/v3/embed"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestGRPCHealthVsEtcd: grpc.health.v1.Health on etcd 3.7.3 (embed) and
// on etckit, with feature gate StopGRPCServiceOnDefrag off and on: Check of
// "" and of a named service, and what a Watch of "" sees across a
// Defragment (with the gate: NOT_SERVING, then SERVING again). The two
// transcripts must be equal.
func TestGRPCHealthVsEtcd(t *testing.T) {
	for _, gate := range []bool{false, true} {
		t.Run(fmt.Sprintf("StopGRPCServiceOnDefrag=%v", gate), func(t *testing.T) {
			_, e := startEtcd(t, filepath.Join(t.TempDir(), "etcd"), func(c *embed.Config) {
				if err := c.ServerFeatureGate.(featuregate.MutableFeatureGate).Set(fmt.Sprintf("StopGRPCServiceOnDefrag=%v", gate)); err != nil {
					t.Fatal(err)
				}
			})
			_, k := startEtckit(t, filepath.Join(t.TempDir(), "etckit"), func(c *server.Config) { c.StopGRPCServiceOnDefrag = gate })
			et, kt := healthTranscript(t, e, gate), healthTranscript(t, k, gate)
			if et != kt {
				t.Fatalf("etcd:\n%s\netckit:\n%s", et, kt)
			}
			t.Logf("both:\n%s", et)
		})
	}
}

func healthTranscript(t *testing.T, m *member, gate bool) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	hc := healthpb.NewHealthClient(m.conn)
	check := func(service string) {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		fmt.Fprintf(&out, "check %q: %v %v %q\n", service, r.GetStatus(), status.Code(err), status.Convert(err).Message())
	}
	check("")
	check("etcdserverpb.KV")
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recv := func() {
		r, err := w.Recv()
		fmt.Fprintf(&out, "watch: %v %v\n", r.GetStatus(), status.Code(err))
	}
	recv()
	for i := range 200 {
		if _, err := m.kv.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "k%03d", i), Value: make([]byte, 1024)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.maint.Defragment(ctx, &pb.DefragmentRequest{}); err != nil {
		t.Fatal(err)
	}
	if gate {
		recv()
		recv()
	}
	check("")
	if ctx.Err() != nil {
		t.Fatalf("%s: %v", m.name, ctx.Err())
	}
	return out.String()
}
