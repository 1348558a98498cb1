package interop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/etckit/etckit/server"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// rangeStream reads a whole KV.RangeStream: every chunk, or the error as
// (code, message).
func rangeStream(ctx context.Context, m *member, req *pb.RangeRequest) ([]*pb.RangeStreamResponse, string) {
	st, err := m.kv.RangeStream(ctx, req)
	var chunks []*pb.RangeStreamResponse
	for err == nil {
		var c *pb.RangeStreamResponse
		if c, err = st.Recv(); err == nil {
			chunks = append(chunks, c)
		}
	}
	if errors.Is(err, io.EOF) {
		return chunks, ""
	}
	s := status.Convert(err)
	return chunks, fmt.Sprintf("%s: %s", s.Code(), s.Message())
}

// TestServerRangeStreamDifferential: etcd 3.7's KV.RangeStream against
// etcd 3.7.3 and etckit, on the same seeded data (values of 0 to 40 KiB,
// so that chunks grow and shrink around a 64 KiB --max-request-bytes):
// every chunk is equal, header (but IDs and term), keys, More and Count,
// and so are the refusals (sort orders, revision filters, empty key,
// future and compacted revisions). client/v3's GetStream collects
// the same answer from both.
func TestServerRangeStreamDifferential(t *testing.T) {
	const seed, keys = 20261203, 600
	t.Logf("seed %d (replay: go test -run TestServerRangeStreamDifferential; the seed is fixed)", seed)
	const maxReq = 64 * 1024
	_, e := startEtcd(t, dataDir(t, "etcd"), func(c *embed.Config) { c.MaxRequestBytes = maxReq })
	_, k := startEtckit(t, dataDir(t, "etckit"), func(c *server.Config) { c.MaxRequestBytes = maxReq })
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	r := rand.New(rand.NewSource(seed))
	for i := 0; i < keys; i++ {
		size := r.Intn(512)
		if r.Intn(10) == 0 {
			size = r.Intn(40 * 1024)
		}
		req := &pb.PutRequest{Key: []byte(fmt.Sprintf("k/%04d", r.Intn(keys))), Value: []byte(strings.Repeat("v", size))}
		compareCall(t, ctx, i, req, e, k)
	}
	compareCall(t, ctx, keys, &pb.DeleteRangeRequest{Key: []byte("k/01"), RangeEnd: []byte("k/02")}, e, k)
	compareCall(t, ctx, keys+1, &pb.CompactionRequest{Revision: 50, Physical: true}, e, k)
	all, _ := compareCall(t, ctx, keys+2, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true}, e, k)
	rev := all.(*pb.RangeResponse).Header.Revision

	reqs := []*pb.RangeRequest{
		{Key: []byte("k/"), RangeEnd: []byte("k0")},
		{Key: []byte{0}, RangeEnd: []byte{0}},
		{Key: []byte("k/0300"), RangeEnd: []byte{0}},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), Limit: 7},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), Limit: 250},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), Limit: 100000},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), KeysOnly: true},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), CountOnly: true},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), CountOnly: true, Limit: 3},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), Serializable: true},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), Revision: 300},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), Revision: 50},
		{Key: []byte("k/0005")},
		{Key: []byte("nothing")},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), SortOrder: pb.RangeRequest_ASCEND},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_KEY, Limit: 20},
		// Refused.
		{Key: []byte("k/"), RangeEnd: []byte("k0"), SortOrder: pb.RangeRequest_DESCEND},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), SortTarget: pb.RangeRequest_VALUE, SortOrder: pb.RangeRequest_ASCEND},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), MinModRevision: 10},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), MaxCreateRevision: 10},
		{Key: nil},
		{Key: []byte("k/"), SortOrder: 7},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), Revision: rev + 10},
		{Key: []byte("k/"), RangeEnd: []byte("k0"), Revision: 20},
	}
	maxChunks, refused := 0, 0
	for i, req := range reqs {
		ce, errE := rangeStream(ctx, e, proto.Clone(req).(*pb.RangeRequest))
		ck, errK := rangeStream(ctx, k, proto.Clone(req).(*pb.RangeRequest))
		if errE != errK {
			t.Fatalf("request %d %s: etcd error %q, etckit %q", i, text(req), errE, errK)
		}
		if errE != "" {
			refused++
		}
		if len(ce) != len(ck) {
			t.Fatalf("request %d %s: etcd sent %d chunks (%s), etckit %d (%s)", i, text(req), len(ce), chunkSizes(ce), len(ck), chunkSizes(ck))
		}
		for j := range ce {
			if !proto.Equal(normalize(ce[j]), normalize(ck[j])) {
				t.Fatalf("request %d %s chunk %d:\netcd:   %s\netckit: %s", i, text(req), j, brief(ce[j]), brief(ck[j]))
			}
		}
		maxChunks = max(maxChunks, len(ce))
		t.Logf("request %d: %d chunks %s %s", i, len(ce), chunkSizes(ce), errE)
	}

	// client/v3 3.7's streaming Get assembles the chunks into one answer.
	var got []*clientv3.GetResponse
	for _, m := range []*member{e, k} {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{m.endpoint}, DialTimeout: 10 * time.Second, MaxCallRecvMsgSize: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		ch, err := c.GetStream(ctx, "k/", clientv3.WithPrefix())
		var resp *clientv3.GetResponse
		if err == nil {
			resp, err = clientv3.GetStreamToGetResponse(ch)
		}
		c.Close()
		if err != nil {
			t.Fatalf("%s: GetStream: %v", m.name, err)
		}
		got = append(got, resp)
	}
	a, b := (*pb.RangeResponse)(got[0]), (*pb.RangeResponse)(got[1])
	if !proto.Equal(normalize(a), normalize(b)) || a.Count == 0 {
		t.Fatalf("GetStream: etcd %d keys count %d, etckit %d keys count %d", len(a.Kvs), a.Count, len(b.Kvs), b.Count)
	}
	t.Logf("%d requests equal (%d refused alike), up to %d chunks; GetStream %d keys on both", len(reqs), refused, maxChunks, len(a.Kvs))
	if maxChunks < 5 {
		t.Fatalf("at most %d chunks: the data no longer exercises chunk sizing", maxChunks)
	}
}

func chunkSizes(cs []*pb.RangeStreamResponse) string {
	var b strings.Builder
	b.WriteString("[")
	for i, c := range cs {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%d", len(c.GetRangeResponse().GetKvs()))
	}
	b.WriteString("]")
	return b.String()
}

// brief prints a chunk without its values.
func brief(c *pb.RangeStreamResponse) string {
	r := proto.Clone(normalize(c)).(*pb.RangeStreamResponse).GetRangeResponse()
	var keys []string
	for _, kv := range r.GetKvs() {
		keys = append(keys, fmt.Sprintf("%s@%d/%dB", kv.Key, kv.ModRevision, len(kv.Value)))
	}
	return fmt.Sprintf("header %v more %v count %d keys %v", r.GetHeader(), r.GetMore(), r.GetCount(), keys)
}
