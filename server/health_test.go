package server

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestGRPCHealthService: grpc.health.v1.Health answers SERVING for ""
// (every service), as etcd's; with StopGRPCServiceOnDefrag a Defragment
// turns it NOT_SERVING and back, seen in order by a Watch; without the
// gate a Defragment leaves it SERVING.
func TestGRPCHealthService(t *testing.T) {
	for _, gate := range []bool{false, true} {
		t.Run(map[bool]string{false: "gate=off", true: "gate=on"}[gate], func(t *testing.T) {
			_, conn := startServer(t, filepath.Join(t.TempDir(), "m"), func(c *Config) { c.StopGRPCServiceOnDefrag = gate })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			hc := healthpb.NewHealthClient(conn)
			r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("check: %v %v", r, err)
			}
			if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "etcdserverpb.KV"}); err == nil {
				t.Fatal("check of a service etcd does not name: no error") // etcd registers "" only: NotFound
			}
			w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if r, err := w.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("watch: first %v %v", r, err)
			}
			kv := pb.NewKVClient(conn)
			for i := range 100 {
				if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte{'k', byte(i)}, Value: make([]byte, 1024)}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := pb.NewMaintenanceClient(conn).Defragment(ctx, &pb.DefragmentRequest{}); err != nil {
				t.Fatal(err)
			}
			if gate {
				for _, want := range []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVING} {
					if r, err := w.Recv(); err != nil || r.Status != want {
						t.Fatalf("watch during defrag: got %v %v, want %v", r, err, want)
					}
				}
			}
			if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("check after defrag: %v %v", r, err)
			}
		})
	}
}
