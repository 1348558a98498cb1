package engine

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/wal"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// TestEntryEncodingAsEtcd: every normal entry etcd 3.6.16 wrote in the
// fixtures (puts, deletes, txns, compaction, leases, alarm, member
// attributes, cluster version) decodes as an InternalRaftRequest and
// re-encodes to the same bytes, and the bootstrap conf change and WAL
// metadata etckit builds equal etcd's. So the entries etckit proposes are
// byte for byte what etcd proposes for the same request.
func TestEntryEncodingAsEtcd(t *testing.T) {
	root := fixture.Extract(t, "etcd-3.6.16/small.tar.gz")
	w, err := wal.OpenForRead(filepath.Join(root, "small", "member", "wal"), wal.Snapshot{}, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	md, _, ents, err := w.ReadAll()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(md, MarshalMetadata(fixtureMemberID, fixtureClusterID)) {
		t.Fatalf("metadata %x, etcd wrote %x", MarshalMetadata(fixtureMemberID, fixtureClusterID), md)
	}
	ms, _, _ := InitialMembers("default=http://127.0.0.1:23800", "etcd-cluster")
	boot, err := BootstrapEntries(ms)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(boot[0], ents[0]) {
		t.Fatalf("bootstrap entry %v, etcd wrote %v", boot[0], ents[0])
	}
	b1, _ := proto.Marshal(boot[0])
	b2, _ := proto.Marshal(ents[0])
	if !bytes.Equal(b1, b2) || !bytes.Equal(boot[0].GetData(), ents[0].GetData()) {
		t.Fatal("bootstrap entry bytes differ")
	}
	n := 0
	for _, e := range ents {
		if e.GetType() != raftpb.EntryNormal || len(e.GetData()) == 0 {
			continue
		}
		var r pb.InternalRaftRequest
		if err := proto.Unmarshal(e.GetData(), &r); err != nil {
			t.Fatalf("entry %d: %v", e.GetIndex(), err)
		}
		if len(r.ProtoReflect().GetUnknown()) > 0 {
			t.Fatalf("entry %d has unknown fields", e.GetIndex())
		}
		again, err := proto.MarshalOptions{Deterministic: true}.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, e.GetData()) {
			t.Fatalf("entry %d: re-encoded\n%x\netcd wrote\n%x", e.GetIndex(), again, e.GetData())
		}
		n++
	}
	t.Logf("%d InternalRaftRequest entries re-encode byte for byte", n)
}
