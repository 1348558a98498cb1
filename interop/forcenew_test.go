package interop

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/etckit/etckit/engine"
	"github.com/etckit/etckit/wal"
	bolt "go.etcd.io/bbolt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	etcdstorage "go.etcd.io/etcd/server/v3/storage"
	etcdwal "go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// forceSource is a stopped member's data dir with what the force must
// start from: the WAL's HardState and last index, the db's
// consistent_index, and how many WAL records it holds.
type forceSource struct {
	dir           string
	hs            *raftpb.HardState
	last, ci      uint64
	records       int
	uncommitted   int // of the entries appended by appendUncommitted, those not applied
	id, clusterID uint64
}

// walState reads dir's WAL (etckit's reader) from its newest snapshot
// record: HardState and entries.
func walState(t *testing.T, walDir string) (*raftpb.HardState, []*raftpb.Entry) {
	t.Helper()
	w, err := wal.OpenForRead(walDir, wal.Snapshot{}, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, hs, ents, err := w.ReadAll()
	if err != nil {
		t.Fatalf("read %s: %v", walDir, err)
	}
	return hs, ents
}

// walRecords is every record of a WAL directory, in order.
func walRecords(t *testing.T, walDir string) []wal.Record {
	t.Helper()
	var out []wal.Record
	if err := wal.Scan(walDir, wal.ScanOptions{}, func(_ wal.Position, r wal.Record) error {
		out = append(out, wal.Record{Type: r.Type, CRC: r.CRC, Data: slices.Clone(r.Data)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func consistentIndex(t *testing.T, dbPath string) uint64 {
	t.Helper()
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ci uint64
	_ = db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("meta")).Get([]byte("consistent_index")); len(v) == 8 {
			ci = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return ci
}

// appendUncommitted adds n put entries at the HardState's term after the
// last entry of the WAL in dir, without a HardState: what a member has in
// its log but never saw committed.
func appendUncommitted(t *testing.T, walDir string, n int) {
	t.Helper()
	snaps, err := wal.ValidSnapshotEntries(walDir, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wal.Open(walDir, snaps[len(snaps)-1], wal.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	_, hs, ents, err := w.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var add []*raftpb.Entry
	for i := 0; i < n; i++ {
		data, _ := proto.Marshal(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: uint64(900 + i)},
			Put: &pb.PutRequest{Key: []byte(fmt.Sprintf("uncommitted/%d", i)), Value: []byte("lost")}})
		add = append(add, &raftpb.Entry{Type: raftpb.EntryNormal.Enum(), Term: proto.Uint64(hs.GetTerm()),
			Index: proto.Uint64(ents[len(ents)-1].GetIndex() + uint64(i) + 1), Data: data})
	}
	if err := w.Save(&raftpb.HardState{}, add); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// applyPastCommit applies the first n entries above the WAL's commit to
// the db of the stopped member in dir (etckit's engine, as a member that
// applied them and crashed before its next HardState was written): the
// db's consistent_index passes the HardState's commit.
func applyPastCommit(t *testing.T, name, dir string, n int) {
	t.Helper()
	e, err := engine.Open(engine.Options{Name: name, DataDir: dir, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	hs, _, _ := e.RaftStorage().InitialState()
	ents, err := e.RaftStorage().Entries(hs.GetCommit()+1, hs.GetCommit()+1+uint64(n), 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(ents, engine.NewConfTracker(nil).Apply, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// forcedResult is a forced member's outcome, read after it stopped.
type forcedResult struct {
	appended       []wal.Record // the records right after the source's
	ents           []*raftpb.Entry
	members        []*pb.Member
	hash           uint32
	removed        map[string]string
	memberKeys     []string
	memberNoClient []string
	confState      string
}

func memberBuckets(t *testing.T, dbPath string) (removed map[string]string, keys, noClient []string, confState string) {
	t.Helper()
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	removed = map[string]string{}
	_ = db.View(func(tx *bolt.Tx) error {
		_ = tx.Bucket([]byte("members_removed")).ForEach(func(k, v []byte) error {
			removed[string(k)] = string(v)
			return nil
		})
		_ = tx.Bucket([]byte("members")).ForEach(func(k, v []byte) error {
			keys = append(keys, string(k))
			var m map[string]any
			d := json.NewDecoder(bytes.NewReader(v))
			d.UseNumber()
			_ = d.Decode(&m)
			delete(m, "clientURLs") // each run publishes its own client port
			b, _ := json.Marshal(m)
			noClient = append(noClient, string(b))
			return nil
		})
		confState = string(tx.Bucket([]byte("meta")).Get([]byte("confState")))
		return nil
	})
	return removed, keys, noClient, confState
}

// TestForceNewClusterDifferential: a three-member cluster of etcd 3.7.3
// and etckit takes writes and stops; an etcd member's and the etckit
// member's data dirs each get three uncommitted entries at the tail of
// their WAL, and each is forced into a new cluster twice, by etcd's embed
// (ForceNewCluster) and by etckit. Both must append the same WAL records
// (the conf-change entries byte for byte, CRCs equal: no HardState record
// in between, the uncommitted entries replaced), elect themselves alone
// with the same single member (ID, name, peer URL), the same
// members_removed and confState, the uncommitted puts gone and HashKV as
// before; and each boots the other's result normally.
func TestForceNewClusterDifferential(t *testing.T) {
	c := newMixedCluster(t, "etcd", "etcd", "etckit")
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	c.leader(ctx)
	var rev int64
	for _, mm := range c.members {
		for k := 0; k < 10; k++ {
			resp, err := mm.m.kv.Put(ctx, &pb.PutRequest{Key: []byte(fmt.Sprintf("k/%s/%02d", mm.name, k)), Value: []byte(mm.kind)})
			if err != nil {
				t.Fatalf("put through %s: %v", mm.name, err)
			}
			rev = resp.Header.Revision
		}
	}
	hash := c.sameHashKV(ctx, rev)
	ids := map[*mixedMember]uint64{}
	var allIDs []uint64
	var clusterID uint64
	for _, mm := range c.members {
		st, err := mm.m.maint.Status(ctx, &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		ids[mm] = st.Header.MemberId
		allIDs = append(allIDs, st.Header.MemberId)
		clusterID = st.Header.ClusterId
	}
	slices.Sort(allIDs)
	for _, mm := range c.members {
		c.stop(mm)
	}

	for _, tc := range []struct {
		from    *mixedMember
		applied int // of the three uncommitted entries, applied to the db
	}{{c.members[0], 0}, {c.members[2], 0}, {c.members[0], 2}} {
		from := tc.from
		t.Run(fmt.Sprintf("written-by-%s/applied-past-commit=%d", from.kind, tc.applied), func(t *testing.T) {
			base := filepath.Join(t.TempDir(), "base")
			copyDir(t, from.dir, base)
			walDir := filepath.Join(base, "member", "wal")
			appendUncommitted(t, walDir, 3)
			if tc.applied > 0 {
				applyPastCommit(t, from.name, base, tc.applied)
			}
			src := forceSource{dir: base, ci: consistentIndex(t, filepath.Join(base, "member", "snap", "db")), uncommitted: 3 - tc.applied,
				records: len(walRecords(t, walDir)), id: ids[from], clusterID: clusterID}
			var ents []*raftpb.Entry
			src.hs, ents = walState(t, walDir)
			src.last = ents[len(ents)-1].GetIndex()
			commit := max(src.hs.GetCommit(), src.ci)
			t.Logf("source %s: HardState %v, consistent_index %d, last index %d, %d records", from.name, src.hs, src.ci, src.last, src.records)

			results := map[string]*forcedResult{}
			dirs := map[string]string{}
			for _, kind := range []string{"etcd", "etckit"} {
				dir := filepath.Join(t.TempDir(), "forced-by-"+kind)
				copyDir(t, base, dir)
				dirs[kind] = dir
				results[kind] = forceOnce(t, c, &mixedMember{kind: kind, name: from.name, dir: dir, peerURL: from.peerURL,
					clientAddr: freeAddr(t), forceNew: true}, src, rev)
			}
			e, k := results["etcd"], results["etckit"]

			// The records the force appended: two entries, nothing else,
			// byte for byte and CRC for CRC the same.
			if len(e.appended) != 2 || len(k.appended) != 2 {
				t.Fatalf("appended records: etcd %d, etckit %d", len(e.appended), len(k.appended))
			}
			for i := range e.appended {
				er, kr := e.appended[i], k.appended[i]
				if er.Type != wal.EntryType || kr.Type != er.Type || kr.CRC != er.CRC || string(kr.Data) != string(er.Data) {
					t.Fatalf("appended record %d: etcd %v crc %08x, etckit %v crc %08x", i, er.Type, er.CRC, kr.Type, kr.CRC)
				}
				ent, err := wal.UnmarshalEntry(er.Data)
				if err != nil {
					t.Fatal(err)
				}
				var cc raftpb.ConfChange
				if err := proto.Unmarshal(ent.GetData(), &cc); err != nil {
					t.Fatal(err)
				}
				others := slices.DeleteFunc(slices.Clone(allIDs), func(id uint64) bool { return id == src.id })
				if ent.GetType() != raftpb.EntryConfChange || ent.GetTerm() != src.hs.GetTerm() || ent.GetIndex() != commit+uint64(i)+1 ||
					cc.GetType() != raftpb.ConfChangeRemoveNode || cc.GetNodeId() != others[i] || cc.Id != nil || cc.Context != nil {
					t.Fatalf("appended entry %d: %v %v; want RemoveNode %x at term %d index %d", i, ent, &cc, others[i], src.hs.GetTerm(), commit+uint64(i)+1)
				}
				t.Logf("appended %d: index %d term %d RemoveNode %x (crc %08x), the same from both", i, ent.GetIndex(), ent.GetTerm(), cc.GetNodeId(), er.CRC)
			}
			// The log as read back (etckit's reader) agrees through the
			// conf changes.
			for idx := commit - 5; idx <= commit+2; idx++ {
				ee, ke := e.ents[idx-e.ents[0].GetIndex()], k.ents[idx-k.ents[0].GetIndex()]
				if !proto.Equal(ee, ke) {
					t.Fatalf("entry %d differs: etcd %v, etckit %v", idx, ee, ke)
				}
			}
			for kind, r := range results {
				if len(r.members) != 1 || r.members[0].ID != src.id || r.members[0].Name != from.name || !slices.Equal(r.members[0].PeerURLs, []string{from.peerURL}) {
					t.Fatalf("forced by %s: members %v", kind, r.members)
				}
				if r.hash != hash {
					t.Fatalf("forced by %s: HashKV at %d %d, was %d", kind, rev, r.hash, hash)
				}
			}
			if fmt.Sprint(e.removed) != fmt.Sprint(k.removed) || len(e.removed) != 2 || !slices.Equal(e.memberKeys, k.memberKeys) ||
				!slices.Equal(e.memberNoClient, k.memberNoClient) || e.confState != k.confState {
				t.Fatalf("membership buckets differ:\netcd   removed %v members %v %v confState %s\netckit removed %v members %v %v confState %s",
					e.removed, e.memberKeys, e.memberNoClient, e.confState, k.removed, k.memberKeys, k.memberNoClient, k.confState)
			}
			t.Logf("both: member %s, members_removed %v, confState %s, HashKV %d", e.memberNoClient, e.removed, e.confState, hash)

			// Each boots the other's result normally.
			for _, tc := range []struct{ kind, dir string }{{"etckit", dirs["etcd"]}, {"etcd", dirs["etckit"]}} {
				mm := &mixedMember{kind: tc.kind, name: from.name, dir: tc.dir, peerURL: from.peerURL, clientAddr: freeAddr(t)}
				if err := c.start(mm, "new"); err != nil {
					t.Fatalf("%s on %s: %v", tc.kind, tc.dir, err)
				}
				c.dial(mm)
				checkAlone(t, mm, src, rev, hash)
				if _, err := mm.m.kv.Put(ctx, &pb.PutRequest{Key: []byte("k/after"), Value: []byte(tc.kind)}); err != nil {
					t.Fatalf("%s on the other's result: put: %v", tc.kind, err)
				}
				c.stop(mm)
				t.Logf("%s booted the data dir forced by the other: one member, HashKV %d, writes", tc.kind, hash)
			}
		})
	}
}

// forceOnce starts mm (forceNew set) on its copy, checks it leads alone
// with every committed key and none of the uncommitted, stops it and reads
// what it left.
func forceOnce(t *testing.T, c *mixedCluster, mm *mixedMember, src forceSource, rev int64) *forcedResult {
	t.Helper()
	if err := c.start(mm, "new"); err != nil {
		t.Fatalf("force by %s: %v", mm.kind, err)
	}
	c.dial(mm)
	r := &forcedResult{}
	r.members, r.hash = checkAlone(t, mm, src, rev, 0)
	c.stop(mm)
	walDir := filepath.Join(mm.dir, "member", "wal")
	recs := walRecords(t, walDir)
	if len(recs) < src.records+2 {
		t.Fatalf("forced by %s: %d records, the source had %d", mm.kind, len(recs), src.records)
	}
	r.appended = recs[src.records : src.records+2]
	_, r.ents = walState(t, walDir)
	r.removed, r.memberKeys, r.memberNoClient, r.confState = memberBuckets(t, filepath.Join(mm.dir, "member", "snap", "db"))
	if mm.kind == "etckit" {
		// etcd's own reader reads what etckit appended.
		w, err := etcdwal.OpenForRead(zap.NewNop(), walDir, &walpb.Snapshot{Index: proto.Uint64(0), Term: proto.Uint64(0)})
		if err != nil {
			t.Fatal(err)
		}
		_, _, ents, err := w.ReadAll()
		w.Close()
		if err != nil || len(ents) != len(r.ents) {
			t.Fatalf("etcd's reader: %d entries, %v; etckit's %d", len(ents), err, len(r.ents))
		}
	}
	return r
}

// checkAlone: mm leads a one-member cluster of the source's cluster ID,
// has the committed keys and not the uncommitted, and HashKV at rev is
// want (0: any). It returns the member list and the hash.
func checkAlone(t *testing.T, mm *mixedMember, src forceSource, rev int64, want uint32) ([]*pb.Member, uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var st *pb.StatusResponse
	for i := 0; i < 300; i++ {
		var err error
		if st, err = mm.m.maint.Status(ctx, &pb.StatusRequest{}); err == nil && st.Leader == st.Header.MemberId {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st == nil || st.Leader != src.id || st.Header.MemberId != src.id || st.Header.ClusterId != src.clusterID {
		t.Fatalf("%s: status %v, want member and leader %x of cluster %x", mm.kind, st, src.id, src.clusterID)
	}
	ml, err := mm.m.cluster.MemberList(ctx, &pb.MemberListRequest{Linearizable: true})
	if err != nil || len(ml.Members) != 1 {
		t.Fatalf("%s: member list %v %v", mm.kind, ml, err)
	}
	rr, err := mm.m.kv.Range(ctx, &pb.RangeRequest{Key: []byte("k/"), RangeEnd: []byte("k0"), Revision: rev})
	if err != nil || rr.Count != 30 {
		t.Fatalf("%s: range at %d: %v keys %v", mm.kind, rev, rr.GetCount(), err)
	}
	// The entries the db had applied past the HardState's commit are
	// kept (etcd's max(commit, consistent_index)), the others dropped.
	if rr, err := mm.m.kv.Range(ctx, &pb.RangeRequest{Key: []byte("uncommitted/"), RangeEnd: []byte("uncommitted0")}); err != nil || rr.Count != int64(3-src.uncommitted) {
		t.Fatalf("%s: %v of the uncommitted entries applied (%v), want the %d the db had applied", mm.kind, rr.GetCount(), err, 3-src.uncommitted)
	}
	h, err := mm.m.maint.HashKV(ctx, &pb.HashKVRequest{Revision: rev})
	if err != nil || (want != 0 && h.Hash != want) {
		t.Fatalf("%s: HashKV at %d: %v %v, want %d", mm.kind, rev, h.GetHash(), err, want)
	}
	return ml.Members, h.Hash
}

// TestForceNewClusterEntriesAsEtcd compares etckit's two pieces with
// etcd 3.7.3's own functions on random inputs (seed printed): the member
// IDs a snapshot's ConfState and the conf changes after it leave
// (GetEffectiveNodeIDsFromWALEntries) and the entries that leave self
// alone (CreateConfigChangeEnts), byte for byte, self known or not.
func TestForceNewClusterEntriesAsEtcd(t *testing.T) {
	const seed = 20261203
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewSource(seed))
	types := []raftpb.ConfChangeType{raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode, raftpb.ConfChangeRemoveNode, raftpb.ConfChangeUpdateNode}
	added := 0 // rounds where self was not known and is added first
	for round := 0; round < 200; round++ {
		cs := &raftpb.ConfState{}
		for i := 0; i < r.Intn(4); i++ {
			cs.Voters = append(cs.Voters, uint64(1+r.Intn(8)))
		}
		if r.Intn(3) == 0 {
			cs.Learners = append(cs.Learners, uint64(1+r.Intn(8)))
		}
		var ents []*raftpb.Entry
		for i := 0; i < r.Intn(10); i++ {
			ent := &raftpb.Entry{Index: proto.Uint64(uint64(101 + i)), Term: proto.Uint64(3), Type: raftpb.EntryNormal.Enum()}
			if r.Intn(2) == 0 {
				cc := &raftpb.ConfChange{Type: types[r.Intn(len(types))].Enum(), NodeId: proto.Uint64(uint64(1 + r.Intn(8))), Id: proto.Uint64(r.Uint64())}
				ent.Type, ent.Data = raftpb.EntryConfChange.Enum(), mustMarshal(t, cc)
			}
			ents = append(ents, ent)
		}
		snap := &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(100), Term: proto.Uint64(2), ConfState: cs}}
		want := etcdstorage.GetEffectiveNodeIDsFromWALEntries(zap.NewNop(), snap, ents)
		got, err := engine.EffectiveMemberIDs(cs, ents)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("round %d: member IDs %v (%v), etcd %v", round, got, err, want)
		}
		self, term, index := uint64(1+r.Intn(8)), uint64(3+r.Intn(5)), uint64(100+len(ents))
		wantEnts := etcdstorage.CreateConfigChangeEnts(zap.NewNop(), want, self, term, index)
		gotEnts, err := engine.ForceNewClusterEntries(got, self, term, index)
		if err != nil || len(gotEnts) != len(wantEnts) {
			t.Fatalf("round %d: %d entries (%v), etcd %d", round, len(gotEnts), err, len(wantEnts))
		}
		for i := range wantEnts {
			if a, b := mustMarshal(t, gotEnts[i]), mustMarshal(t, wantEnts[i]); !bytes.Equal(a, b) {
				t.Fatalf("round %d entry %d: %x, etcd %x", round, i, a, b)
			}
		}
		if !slices.Contains(want, self) {
			added++
		}
	}
	if added == 0 || added == 200 {
		t.Fatalf("self added in %d of 200 rounds: both paths must be compared", added)
	}
	t.Logf("200 rounds the same as etcd, %d of them adding self first", added)
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
