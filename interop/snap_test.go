package interop

// Differential tests of etckit's snap package against etcd's own snap,
// v2store and membership code (server/v3 v3.7.3).

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	"github.com/coreos/go-semver/semver"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	etcdsnap "go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v2store"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/snap"
	"github.com/etckit/etckit/vfs"
)

// snapFixtureFiles returns the .snap files etcd 3.6.16 wrote (the six of
// snapshot.tar.gz and the one etcdutl restore wrote), by base name.
func snapFixtureFiles(t *testing.T) map[string][]byte {
	t.Helper()
	dir := filepath.Join(filepath.Dir(fixture.Root(t)), "snap", "testdata", "etcd-3.6.16-copies")
	names, err := vfs.OS{}.ReadDirNames(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		out[n] = b
	}
	if len(out) != 7 {
		t.Fatalf("%d fixture .snap files", len(out))
	}
	return out
}

// snapCases are raft snapshots covering the fields etcd writes: fixture
// snapshots, joint configs, learners, auto_leave, nil/empty/large data.
func snapCases(t *testing.T) []*raftpb.Snapshot {
	t.Helper()
	var out []*raftpb.Snapshot
	names := []string{}
	files := snapFixtureFiles(t)
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s, err := snap.Decode(n, files[n])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	rng := rand.New(rand.NewPCG(3, 6))
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	md := func(index, term uint64, cs *raftpb.ConfState) *raftpb.SnapshotMetadata {
		return &raftpb.SnapshotMetadata{ConfState: raftpb.EnsureConfState(cs), Index: proto.Uint64(index), Term: proto.Uint64(term)}
	}
	out = append(out,
		&raftpb.Snapshot{Data: []byte("{}"), Metadata: md(11, 1, &raftpb.ConfState{Voters: []uint64{1}})},
		&raftpb.Snapshot{Data: nil, Metadata: md(2, 1, &raftpb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4, 5}})},
		&raftpb.Snapshot{Data: []byte{}, Metadata: md(3, 2, &raftpb.ConfState{
			Voters: []uint64{1, 2}, VotersOutgoing: []uint64{1, 3}, LearnersNext: []uint64{3}, AutoLeave: proto.Bool(true)})},
		&raftpb.Snapshot{Data: big, Metadata: md(1<<40, 1<<33, &raftpb.ConfState{Voters: []uint64{^uint64(0)}})},
		&raftpb.Snapshot{Data: []byte("x"), Metadata: md(7, 0, nil)},
	)
	return out
}

// (1) etckit Save → etcd's snapshotter loads the same snapshot, and the
// file is byte-identical to what etcd's SaveSnap writes.
func TestSnapEtckitSaveEtcdLoads(t *testing.T) {
	lg := zap.NewNop()
	cases := snapCases(t)
	for i, s := range cases {
		ours, theirs := t.TempDir(), t.TempDir()
		path, err := snap.Save(vfs.OS{}, ours, s)
		if err != nil {
			t.Fatal(err)
		}
		if err := etcdsnap.New(lg, theirs).SaveSnap(s); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(path)
		b, err := os.ReadFile(filepath.Join(theirs, filepath.Base(path)))
		if err != nil {
			t.Fatalf("case %d: etcd wrote another name: %v", i, err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("case %d (%v): etckit's file differs from etcd's (%d vs %d bytes)", i, snap.PointOf(s), len(a), len(b))
		}
		got, err := etcdsnap.New(lg, ours).Load()
		if err != nil || !proto.Equal(got, s) {
			t.Fatalf("case %d: etcd Load = %v, %v", i, got.GetMetadata(), err)
		}
		got, err = etcdsnap.Read(lg, path)
		if err != nil || !proto.Equal(got, s) {
			t.Fatalf("case %d: etcd Read: %v", i, err)
		}
	}

	// All in one directory: etcd's LoadNewestAvailable and etckit's
	// LoadNewest pick the same file for the same WAL records.
	dir := t.TempDir()
	var points []snap.Point
	for _, s := range cases {
		if _, err := snap.Save(vfs.OS{}, dir, s); err != nil {
			t.Fatal(err)
		}
		points = append(points, snap.PointOf(s))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 50; round++ {
		var valid []snap.Point
		var walSnaps []*walpb.Snapshot
		for _, p := range points {
			if rng.IntN(3) == 0 {
				valid = append(valid, p)
				walSnaps = append(walSnaps, &walpb.Snapshot{Index: proto.Uint64(p.Index), Term: proto.Uint64(p.Term)})
			}
		}
		want, werr := etcdsnap.New(lg, dir).LoadNewestAvailable(walSnaps)
		got, p, skipped, gerr := snap.LoadNewest(vfs.OS{}, dir, valid)
		if (werr == nil) != (gerr == nil) || len(skipped) != 0 {
			t.Fatalf("round %d: etcd %v, etckit %v (skipped %v)", round, werr, gerr, skipped)
		}
		if werr != nil {
			if !errors.Is(werr, etcdsnap.ErrNoSnapshot) || !errors.Is(gerr, snap.ErrNoSnapshot) {
				t.Fatalf("round %d: %v / %v", round, werr, gerr)
			}
			continue
		}
		if !proto.Equal(got, want) || p != snap.PointOf(want) {
			t.Fatalf("round %d: etckit chose %v, etcd %v", round, p, snap.PointOf(want))
		}
	}
}

// A snapshot whose optional fields are unset (possible with raftpb v3.7's
// explicit presence) is written in the canonical form etcd 3.5/3.6 write,
// which is what etcd 3.7 writes after raftpb.EnsureSnapshot.
func TestSnapSparsePresenceIsCanonical(t *testing.T) {
	lg := zap.NewNop()
	s := &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(9), ConfState: &raftpb.ConfState{Voters: []uint64{1}}}}
	ours, theirs := t.TempDir(), t.TempDir()
	path, err := snap.Save(vfs.OS{}, ours, s)
	if err != nil {
		t.Fatal(err)
	}
	ensured := raftpb.EnsureSnapshot(proto.Clone(s).(*raftpb.Snapshot))
	if err := etcdsnap.New(lg, theirs).SaveSnap(ensured); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(path)
	b, _ := os.ReadFile(filepath.Join(theirs, filepath.Base(path)))
	if !bytes.Equal(a, b) {
		t.Fatal("etckit's sparse-input file differs from etcd's canonical one")
	}
}

// (2) etcd's SaveSnap → etckit reads the same snapshot and re-encodes the
// same bytes.
func TestSnapEtcdSaveEtckitReads(t *testing.T) {
	lg := zap.NewNop()
	dir := t.TempDir()
	cases := snapCases(t)
	for i, s := range cases {
		if err := etcdsnap.New(lg, dir).SaveSnap(s); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, snap.PointOf(s).FileName())
		got, err := snap.Read(vfs.OS{}, path)
		if err != nil || !proto.Equal(got, s) {
			t.Fatalf("case %d: etckit Read: %v", i, err)
		}
		b, _ := os.ReadFile(path)
		if !bytes.Equal(snap.Encode(got), b) {
			t.Fatalf("case %d: re-encoding differs", i)
		}
	}
	ps, err := snap.List(vfs.OS{}, dir)
	if err != nil || len(ps) != len(cases) {
		t.Fatalf("List = %v, %v", ps, err)
	}
	want, err := etcdsnap.New(lg, dir).Load()
	if err != nil {
		t.Fatal(err)
	}
	got, p, _, err := snap.LoadNewestMatching(vfs.OS{}, dir, nil)
	if err != nil || !proto.Equal(got, want) || p != ps[0] {
		t.Fatalf("newest: etckit %v, etcd %v, %v", p, snap.PointOf(want), err)
	}
}

// etcd's Read and etckit's Decode agree on which damaged files are
// readable, and on what they contain, over seeded random damage.
func TestSnapCorruptionVerdictsMatchEtcd(t *testing.T) {
	lg := zap.NewNop()
	files := snapFixtureFiles(t)
	orig := files["0000000000000002-0000000000001776.snap"]
	small := snap.Encode(&raftpb.Snapshot{Data: []byte("{}"), Metadata: &raftpb.SnapshotMetadata{
		ConfState: raftpb.EnsureConfState(&raftpb.ConfState{Voters: []uint64{1}}), Index: proto.Uint64(5), Term: proto.Uint64(1)}})
	rng := rand.New(rand.NewPCG(20261121, 3))
	dir := t.TempDir()
	path := filepath.Join(dir, "x.snap")
	agreeOK, agreeErr := 0, 0
	for i := 0; i < 3000; i++ {
		base := orig
		if i%2 == 1 {
			base = small
		}
		b := bytes.Clone(base)
		switch i % 6 {
		case 0, 1: // bit flips
			for k := 0; k <= rng.IntN(3); k++ {
				off := rng.IntN(len(b))
				b[off] ^= 1 << rng.IntN(8)
			}
		case 2, 3: // flips in the header and trailer, where structure lives
			off := rng.IntN(12)
			if rng.IntN(2) == 0 {
				off = len(b) - 1 - off
			}
			if off >= 0 && off < len(b) {
				b[off] = byte(rng.Uint32())
			}
		case 4: // truncation
			b = b[:rng.IntN(len(b)+1)]
		case 5: // random bytes appended (a new field or garbage)
			extra := make([]byte, 1+rng.IntN(8))
			for j := range extra {
				extra[j] = byte(rng.Uint32())
			}
			b = append(b, extra...)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		want, werr := etcdsnap.Read(lg, path)
		got, gerr := snap.Read(vfs.OS{}, path)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("case %d (%x...): etcd %v, etckit %v", i, b[:min(len(b), 16)], werr, gerr)
		}
		if werr == nil {
			if !proto.Equal(got, want) {
				t.Fatalf("case %d: both accept, different snapshots", i)
			}
			agreeOK++
			continue
		}
		agreeErr++
		if errors.Is(werr, etcdsnap.ErrEmptySnapshot) != errors.Is(gerr, snap.ErrEmptySnapshot) ||
			errors.Is(werr, etcdsnap.ErrCRCMismatch) != errors.Is(gerr, snap.ErrCRCMismatch) {
			t.Fatalf("case %d: etcd %v, etckit %v", i, werr, gerr)
		}
	}
	t.Logf("3000 damaged files: both accept %d, both reject %d", agreeOK, agreeErr)
}

// fakeMembershipBackend lets a RaftCluster apply changes without a bbolt
// backend; only the v2 store (written by RaftCluster.Store) matters here.
type fakeMembershipBackend struct{ membership.MembershipBackend }

func (fakeMembershipBackend) MustCreateBackendBuckets()                       {}
func (fakeMembershipBackend) MustSaveMemberToBackend(*membership.Member)      {}
func (fakeMembershipBackend) MustDeleteMemberFromBackend(types.ID)            {}
func (fakeMembershipBackend) MustSaveClusterVersionToBackend(*semver.Version) {}
func (fakeMembershipBackend) ClusterVersionFromBackend() *semver.Version      { return nil }

// etcdCluster builds a RaftCluster through etcd's membership code.
func etcdCluster(t *testing.T, nMembers, nRemoved int, ver string, rng *rand.Rand) *membership.RaftCluster {
	t.Helper()
	lg := zap.NewNop()
	cl := membership.NewCluster(lg)
	cl.SetBackend(fakeMembershipBackend{})
	for i := 0; i < nMembers+nRemoved; i++ {
		urls, err := types.NewURLs([]string{fmt.Sprintf("https://10.0.%d.%d:2380", i/200, i%200)})
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("m%d", i)
		var m *membership.Member
		if rng.IntN(4) == 0 {
			m = membership.NewMemberAsLearner(name, urls, "tok", nil)
		} else {
			m = membership.NewMember(name, urls, "tok", nil)
		}
		cl.AddMember(m, membership.ApplyBoth)
		if rng.IntN(2) == 0 {
			cl.UpdateAttributes(m.ID, membership.Attributes{Name: name,
				ClientURLs: []string{fmt.Sprintf("https://10.0.%d.%d:2379", i/200, i%200), "http://<&>"}}, membership.ApplyBoth)
		}
		if i >= nMembers {
			cl.RemoveMember(m.ID, membership.ApplyBoth)
		}
	}
	if ver != "" {
		cl.SetVersion(semver.Must(semver.NewVersion(ver)), func(*zap.Logger, *semver.Version) {}, membership.ApplyBoth)
	}
	return cl
}

func membershipOf(cl *membership.RaftCluster) map[uint64]snap.Member {
	ms := map[uint64]snap.Member{}
	for _, m := range cl.Members() {
		sm := snap.Member{ID: uint64(m.ID), PeerURLs: m.PeerURLs, IsLearner: m.IsLearner}
		if m.ClientURLs != nil {
			sm.Name, sm.ClientURLs = m.Name, m.ClientURLs
		}
		ms[sm.ID] = sm
	}
	return ms
}

func asMap(ms []snap.Member) map[uint64]snap.Member {
	out := map[uint64]snap.Member{}
	for _, m := range ms {
		out[m.ID] = m
	}
	return out
}

// (3) The v2 membership JSON: etcd's GetMembershipInfoInV2Format (v2store
// filled by RaftCluster.Store) and etckit's EncodeV2Membership give the
// same bytes for the same member order, and etcd's v2store.Recovery
// accepts etckit's JSON and yields the same members.
func TestSnapV2MembershipMatchesEtcd(t *testing.T) {
	lg := zap.NewNop()
	rng := rand.New(rand.NewPCG(7, 11))
	for _, tc := range []struct {
		members, removed int
		ver              string
	}{{1, 0, ""}, {1, 0, "3.6.0"}, {3, 2, "3.7.0"}, {5, 0, "3.5.0"}, {0, 0, ""}, {600, 150, "3.6.0"}} {
		t.Run(fmt.Sprintf("members=%d/removed=%d/version=%s", tc.members, tc.removed, tc.ver), func(t *testing.T) {
			cl := etcdCluster(t, tc.members, tc.removed, tc.ver, rng)
			theirs := etcdserver.GetMembershipInfoInV2Format(lg, cl)

			// etcd walks Go maps, so its order is random: read it back, then
			// encode the same membership in that order.
			st, err := snap.DecodeV2Store(theirs)
			if err != nil {
				t.Fatal(err)
			}
			wantMembers := membershipOf(cl)
			if !reflect.DeepEqual(asMap(st.Members), wantMembers) || len(st.Members) != tc.members {
				t.Fatalf("etckit read %d members from etcd's JSON, want %d", len(st.Members), len(wantMembers))
			}
			if len(st.Removed) != tc.removed || st.Version != tc.ver {
				t.Fatalf("removed %v version %q", st.Removed, st.Version)
			}
			for _, id := range st.Removed {
				if !cl.IsIDRemoved(types.ID(id)) {
					t.Fatalf("%x reported removed", id)
				}
			}
			ours, err := snap.EncodeV2Membership(&st.Membership)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ours, theirs) {
				t.Fatalf("JSON differs:\n ours %.600s\netcd  %.600s", ours, theirs)
			}

			// etcd recovers a store from etckit's JSON (what it does when it
			// boots from a .snap) and finds the same membership; saving that
			// store gives back the same bytes.
			m2 := st.Membership
			rng.Shuffle(len(m2.Members), func(i, j int) { m2.Members[i], m2.Members[j] = m2.Members[j], m2.Members[i] })
			ours, err = snap.EncodeV2Membership(&m2)
			if err != nil {
				t.Fatal(err)
			}
			vs := v2store.New(etcdserver.StoreClusterPrefix, etcdserver.StoreKeysPrefix)
			if err := vs.Recovery(ours); err != nil {
				t.Fatal(err)
			}
			// (Before any Get: reads bump the store's Stats.)
			resaved, err := vs.Save()
			if err != nil || !bytes.Equal(resaved, ours) {
				t.Fatalf("etcd re-saves etckit's store differently: %v", err)
			}
			members, removed := membership.MembersFromStore(lg, vs)
			if len(members) != tc.members || len(removed) != tc.removed {
				t.Fatalf("etcd recovered %d members, %d removed", len(members), len(removed))
			}
			for id, m := range members {
				want := wantMembers[uint64(id)]
				if !reflect.DeepEqual(m.PeerURLs, want.PeerURLs) || m.IsLearner != want.IsLearner ||
					m.Name != want.Name || !reflect.DeepEqual(m.ClientURLs, want.ClientURLs) {
					t.Fatalf("member %s: etcd recovered %+v, want %+v", id, m, want)
				}
			}
			if ok, err := membership.IsMetaStoreOnly(vs); err != nil || !ok {
				t.Fatalf("IsMetaStoreOnly = %v, %v", ok, err)
			}
		})
	}
}

// The restored fixture's v2 store, recovered by etcd, gives the member
// etckit reads from it.
func TestSnapV2FixtureMembersAgree(t *testing.T) {
	lg := zap.NewNop()
	for name, b := range snapFixtureFiles(t) {
		s, err := snap.Decode(name, b)
		if err != nil {
			t.Fatal(err)
		}
		st, err := snap.DecodeV2Store(s.GetData())
		if err != nil {
			t.Fatal(err)
		}
		vs := v2store.New()
		if err := vs.Recovery(s.GetData()); err != nil {
			t.Fatal(err)
		}
		members, removed := membership.MembersFromStore(lg, vs)
		if len(members) != len(st.Members) || len(removed) != len(st.Removed) {
			t.Fatalf("%s: etcd %d members, etckit %d", name, len(members), len(st.Members))
		}
		for _, m := range st.Members {
			em := members[types.ID(m.ID)]
			if em == nil || !reflect.DeepEqual(em.PeerURLs, m.PeerURLs) || em.Name != m.Name {
				t.Fatalf("%s: member %x: etcd %+v, etckit %+v", name, m.ID, em, m)
			}
		}
	}
}

// (4) db snapshot files: an image taken by etcd's backend with its SHA-256
// appended (what etcd's Maintenance.Snapshot streams and etcdctl saves)
// equals etckit's WriteWithTrailer output; both verify, the stripped copy
// opens with bbolt, and one flipped byte is caught.
func TestSnapDBTrailerMatchesEtcd(t *testing.T) {
	lg := zap.NewNop()
	dir := t.TempDir()
	be := backend.NewDefaultBackend(lg, filepath.Join(dir, "db"))
	tx := be.BatchTx()
	tx.Lock()
	tx.UnsafeCreateBucket(schema.Key)
	for i := 0; i < 500; i++ {
		tx.UnsafePut(schema.Key, []byte(fmt.Sprintf("key-%04d", i)), bytes.Repeat([]byte{byte(i)}, 100))
	}
	tx.Unlock()
	be.ForceCommit()

	var image, theirs bytes.Buffer
	h := sha256.New()
	bs := be.Snapshot()
	if _, err := bs.WriteTo(io.MultiWriter(&image, &theirs, h)); err != nil {
		t.Fatal(err)
	}
	bs.Close()
	be.Close()
	theirs.Write(h.Sum(nil))
	etcdFile := filepath.Join(dir, "etcd.db")
	if err := os.WriteFile(etcdFile, theirs.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	ourFile := filepath.Join(dir, "etckit.db")
	n, err := snap.WriteWithTrailer(vfs.OS{}, ourFile, bytes.NewReader(image.Bytes()))
	if err != nil || n != int64(theirs.Len()) {
		t.Fatalf("WriteWithTrailer = %d, %v", n, err)
	}
	ours, _ := os.ReadFile(ourFile)
	if !bytes.Equal(ours, theirs.Bytes()) {
		t.Fatal("etckit's db snapshot differs from etcd's")
	}
	for _, p := range []string{etcdFile, ourFile, fixture.Path(t, "etcd-3.6.16/snapshot-db/small-snapshot.db")} {
		if !snap.HasTrailer(int64(len(ours))) {
			t.Fatal("no trailer detected")
		}
		if err := snap.Verify(vfs.OS{}, p); err != nil {
			t.Fatal(err)
		}
	}

	stripped := filepath.Join(dir, "restored-db")
	if _, err := snap.CopyWithoutTrailer(vfs.OS{}, ourFile, stripped, false); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(stripped, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(schema.Key.Name())
		if b == nil || b.Stats().KeyN != 500 {
			return errors.New("key bucket missing or incomplete")
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	bad := bytes.Clone(theirs.Bytes())
	bad[len(bad)/3] ^= 0x80
	badFile := filepath.Join(dir, "bad.db")
	if err := os.WriteFile(badFile, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := snap.Verify(vfs.OS{}, badFile); !errors.Is(err, snap.ErrDigestMismatch) {
		t.Fatalf("Verify(flipped) = %v", err)
	}
}
