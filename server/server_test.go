package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func startServer(t *testing.T, dir string) (*Server, *grpc.ClientConn) {
	t.Helper()
	s, err := New(Config{
		Engine:           engine.Options{Name: "default", DataDir: dir, InitialCluster: "default=http://127.0.0.1:2380", NoSync: true},
		ListenClientURLs: []string{"http://127.0.0.1:0"},
		TickInterval:     10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		s.Stop()
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(s.ClientAddrs()[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.Stop()
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); s.Stop() })
	return s, conn
}

func TestServePutGetRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "default.etckit")
	s, conn := startServer(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv := pb.NewKVClient(conn)
	pr, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("foo"), Value: []byte("bar")})
	if err != nil {
		t.Fatal(err)
	}
	if pr.Header.Revision != 2 || pr.Header.MemberId != s.ID() || pr.Header.ClusterId != s.ClusterID() {
		t.Fatalf("put header %v", pr.Header)
	}
	// Concurrent writers share WAL writes.
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("k%02d", i)), Value: []byte("v")}); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	rr, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
	if err != nil || rr.Count != 50 || rr.Header.Revision != 52 {
		t.Fatalf("range %v %v", rr.GetHeader(), err)
	}
	_, err = kv.Put(ctx, &pb.PutRequest{})
	if status.Convert(err).Message() != rpctypes.ErrGRPCEmptyKey.Error() && err.Error() != rpctypes.ErrGRPCEmptyKey.Error() {
		t.Fatalf("empty key: %v", err)
	}
	_, err = kv.Range(ctx, &pb.RangeRequest{Key: []byte("foo"), Revision: 1000})
	if err == nil || !strings.Contains(err.Error(), "future revision") {
		t.Fatalf("future rev: %v", err)
	}
	resp, err := http.Get("http://" + s.ClientAddrs()[0] + "/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"health":"true"`) {
		t.Fatalf("/health: %s", body)
	}
	ml, err := pb.NewClusterClient(conn).MemberList(ctx, &pb.MemberListRequest{})
	if err != nil || len(ml.Members) != 1 || ml.Members[0].Name != "default" {
		t.Fatalf("members %v %v", ml, err)
	}
	s.Stop()
	conn.Close()

	s2, conn2 := startServer(t, dir)
	rr, err = pb.NewKVClient(conn2).Range(ctx, &pb.RangeRequest{Key: []byte("foo")})
	if err != nil || len(rr.Kvs) != 1 || string(rr.Kvs[0].Value) != "bar" || rr.Header.Revision != 52 {
		t.Fatalf("after restart: %v %v", rr, err)
	}
	_ = s2
}
