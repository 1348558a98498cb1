package engine

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/wal"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

const forceNewCluster3 = "m0=http://127.0.0.1:11,m1=http://127.0.0.1:12,m2=http://127.0.0.1:13"

// threeMemberWAL bootstraps m0 of a three-member cluster, applies the
// bootstrap conf changes, then saves puts at term 2: the first committed
// of them committed by the HardState, the first applied of them applied
// (applied may exceed committed: etcd persists a HardState only when the
// term or vote changes or entries come with it), the rest in the log only.
func threeMemberWAL(t *testing.T, total, committedPuts, appliedPuts int) (Options, *Engine) {
	t.Helper()
	opts := Options{Name: "m0", DataDir: filepath.Join(t.TempDir(), "m0"), InitialCluster: forceNewCluster3, NoSync: true}
	e, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	cc := NewConfTracker(nil)
	if err := e.Apply(committed(t, e), cc.Apply, nil); err != nil {
		t.Fatal(err)
	}
	typ := raftpb.EntryNormal
	var ents []*raftpb.Entry
	for i := 0; i < total; i++ {
		ents = append(ents, &raftpb.Entry{Term: proto.Uint64(2), Index: proto.Uint64(uint64(4 + i)), Type: &typ,
			Data: put(uint64(100+i), fmt.Sprintf("k%02d", i), "v")})
	}
	hs := &raftpb.HardState{Term: proto.Uint64(2), Vote: proto.Uint64(e.ID()), Commit: proto.Uint64(uint64(3 + committedPuts))}
	if err := e.SaveReady(hs, ents, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(ents[:appliedPuts], cc.Apply, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Store().Commit(); err != nil {
		t.Fatal(err)
	}
	return opts, e
}

// readWALFile is what etckit's WAL reader (and etcd's) sees in dir.
func readWALFile(t *testing.T, dir string) (*raftpb.HardState, []*raftpb.Entry) {
	t.Helper()
	w, err := wal.OpenForRead(dir, wal.Snapshot{}, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, hs, ents, err := w.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return hs, ents
}

func decodeCC(t *testing.T, ent *raftpb.Entry) *raftpb.ConfChange {
	t.Helper()
	var cc raftpb.ConfChange
	if ent.GetType() != raftpb.EntryConfChange {
		t.Fatalf("entry %d is %v, want a conf change", ent.GetIndex(), ent.GetType())
	}
	if err := proto.Unmarshal(ent.GetData(), &cc); err != nil {
		t.Fatal(err)
	}
	return &cc
}

// TestForceNewCluster: a member of three with uncommitted entries at the
// tail of its WAL is forced into a new cluster. The entries above the
// commit index are gone from the log (also as the WAL reader reads the
// file), two RemoveNode entries for the others follow at the HardState's
// term, the raft log is committed through them, no HardState record is
// written (etcd saves them with an empty one); then a real raft node
// applies them, elects itself alone and writes a HardState at a new term
// committing them, and the members buckets say one member, two removed.
// The second case has the db applied past the HardState's commit: the
// commit index kept is the consistent index, as etcd v3.5.22+/v3.6.1+.
func TestForceNewCluster(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		total, committed, applied int
		wantCommit                uint64 // commit kept before the conf changes
	}{
		{"commit-from-hardstate", 8, 5, 5, 8},
		{"commit-from-consistent-index", 8, 5, 7, 10},
		{"nothing-uncommitted", 4, 4, 4, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, e := threeMemberWAL(t, tc.total, tc.committed, tc.applied)
			self, ids := e.ID(), []uint64{}
			for _, m := range e.Members() {
				ids = append(ids, m.ID)
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			walDir := filepath.Join(opts.DataDir, "member", "wal")
			hsBefore, _ := readWALFile(t, walDir)

			opts.ForceNewCluster = true
			e, err := Open(opts)
			if err != nil {
				t.Fatal(err)
			}
			fr := e.ForceNew()
			if fr == nil || fr.WALCommit != uint64(3+tc.committed) || fr.Commit != tc.wantCommit ||
				fr.Discarded != int(3+uint64(tc.total)-tc.wantCommit) || !slices.Equal(fr.Members, ids) || len(fr.Appended) != 2 {
				t.Fatalf("force-new result %+v, want commit %d of WAL commit %d, members %x", fr, tc.wantCommit, 3+tc.committed, ids)
			}
			last := tc.wantCommit + 2
			hs, _, _ := e.RaftStorage().InitialState()
			li, _ := e.RaftStorage().LastIndex()
			if hs.GetCommit() != last || li != last || hs.GetTerm() != 2 || e.CommitIndex() != last {
				t.Fatalf("raft log: HardState %v, last index %d, want commit = last = %d", hs, li, last)
			}

			// The file, read back while the member holds it (as etcd's
			// reader would).
			hsAfter, ents := readWALFile(t, walDir)
			if !proto.Equal(hsAfter, hsBefore) {
				t.Errorf("HardState in the WAL changed to %v (etcd writes none here)", hsAfter)
			}
			if uint64(len(ents)) != last || ents[len(ents)-1].GetIndex() != last {
				t.Fatalf("WAL holds %d entries, last %d; want 1..%d", len(ents), ents[len(ents)-1].GetIndex(), last)
			}
			var removed []uint64
			for _, ent := range ents[tc.wantCommit:] {
				cc := decodeCC(t, ent)
				if ent.GetTerm() != 2 || cc.GetType() != raftpb.ConfChangeRemoveNode || cc.Id != nil || cc.Context != nil {
					t.Fatalf("appended entry %v: %v, want RemoveNode at term 2 without ID or context", ent, cc)
				}
				removed = append(removed, cc.GetNodeId())
			}
			want := slices.DeleteFunc(slices.Clone(ids), func(id uint64) bool { return id == self })
			if !slices.Equal(removed, want) {
				t.Fatalf("removed %x, want %x", removed, want)
			}
			for _, ent := range ents[3:tc.wantCommit] {
				if ent.GetType() != raftpb.EntryNormal || ent.GetTerm() != 2 {
					t.Fatalf("kept entry %v", ent)
				}
			}
			t.Logf("WAL commit %d, kept through %d, dropped %d, appended RemoveNode %x at %d..%d",
				fr.WALCommit, fr.Commit, fr.Discarded, removed, tc.wantCommit+1, last)

			// A real raft node over the engine, as the server drives it:
			// it applies the removals, elects itself and writes a
			// HardState at a new term that commits them.
			runAlone(t, e, last)
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			hsAfter, _ = readWALFile(t, walDir)
			if hsAfter.GetTerm() <= 2 || hsAfter.GetCommit() < last || hsAfter.GetVote() != self {
				t.Fatalf("HardState after the election %v", hsAfter)
			}
			// Restarted without the flag: one member, the committed puts.
			opts.ForceNewCluster = false
			if e, err = Open(opts); err != nil {
				t.Fatal(err)
			}
			if err := e.Apply(committed(t, e), NewConfTracker(nil).Apply, nil); err != nil {
				t.Fatal(err)
			}
			if ms := e.Members(); len(ms) != 1 || ms[0].ID != self || !e.IsRemoved(want[0]) || !e.IsRemoved(want[1]) {
				t.Fatalf("members %+v", ms)
			}
			if cs := e.ConfState(); !slices.Equal(cs.GetVoters(), []uint64{self}) {
				t.Fatalf("ConfState %v", cs)
			}
			rr, err := e.Store().Range(&pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")})
			if err != nil || rr.Count != int64(tc.wantCommit-3) {
				t.Fatalf("range: %d keys %v, want %d (the committed puts)", rr.GetCount(), err, tc.wantCommit-3)
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			// Reopened with the flag still on: nothing else is removed.
			opts.ForceNewCluster = true
			e, err = Open(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			if fr := e.ForceNew(); len(fr.Appended) != 0 || !slices.Equal(fr.Members, []uint64{self}) {
				t.Fatalf("second force-new %+v", fr)
			}
		})
	}
}

// runAlone drives a raft node over e until it leads and has applied index
// want, persisting and applying as the server does.
func runAlone(t *testing.T, e *Engine, want uint64) {
	t.Helper()
	rn, err := raft.NewRawNode(&raft.Config{ID: e.ID(), ElectionTick: 10, HeartbeatTick: 1, Storage: e.RaftStorage(),
		MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 256, CheckQuorum: true, PreVote: true, Logger: discardRaftLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 500; i++ {
		rn.Tick()
		for rn.HasReady() {
			rd := rn.Ready()
			if err := e.SaveReady(rd.HardState, rd.Entries, rd.Snapshot); err != nil {
				t.Fatal(err)
			}
			if err := e.Apply(rd.CommittedEntries, rn.ApplyConfChange, nil); err != nil {
				t.Fatal(err)
			}
			rn.Advance(rd)
		}
		st := rn.BasicStatus()
		if idx, _ := e.Applied(); st.RaftState == raft.StateLeader && idx >= want {
			return
		}
	}
	t.Fatalf("no leader with index %d applied after 500 ticks: %+v", want, rn.BasicStatus())
}

type discardRaftLogger struct{}

func (discardRaftLogger) Debug(...any)              {}
func (discardRaftLogger) Debugf(string, ...any)     {}
func (discardRaftLogger) Error(...any)              {}
func (discardRaftLogger) Errorf(string, ...any)     {}
func (discardRaftLogger) Info(...any)               {}
func (discardRaftLogger) Infof(string, ...any)      {}
func (discardRaftLogger) Warning(...any)            {}
func (discardRaftLogger) Warningf(string, ...any)   {}
func (discardRaftLogger) Fatal(v ...any)            { panic(fmt.Sprint(v...)) }
func (discardRaftLogger) Fatalf(f string, v ...any) { panic(fmt.Sprintf(f, v...)) }
func (discardRaftLogger) Panic(v ...any)            { panic(fmt.Sprint(v...)) }
func (discardRaftLogger) Panicf(f string, v ...any) { panic(fmt.Sprintf(f, v...)) }

// TestForceNewClusterEntries: etcd's CreateConfigChangeEnts. A self the
// log does not know is added first with etcd's default peer URL, the
// others removed in ascending order; the bytes are fixed (no ConfChange
// ID), so they can be compared with etcd's.
func TestForceNewClusterEntries(t *testing.T) {
	ents, err := ForceNewClusterEntries([]uint64{5, 9}, 7, 4, 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 3 {
		t.Fatalf("%d entries", len(ents))
	}
	wants := []string{
		`type:ConfChangeAddNode node_id:7 context:"{\"id\":7,\"peerURLs\":[\"http://localhost:2380\"]}"`,
		`type:ConfChangeRemoveNode node_id:5`,
		`type:ConfChangeRemoveNode node_id:9`,
	}
	for i, ent := range ents {
		cc := decodeCC(t, ent)
		if ent.GetTerm() != 4 || ent.GetIndex() != uint64(21+i) {
			t.Errorf("entry %d at term %d index %d", i, ent.GetTerm(), ent.GetIndex())
		}
		if got := strings.Join(strings.Fields(fmt.Sprint(cc)), " "); got != wants[i] {
			t.Errorf("entry %d: %s, want %s", i, got, wants[i])
		}
	}
	if ents, _ := ForceNewClusterEntries([]uint64{7}, 7, 4, 20); len(ents) != 0 {
		t.Errorf("self alone: %d entries", len(ents))
	}
}

// TestForceNewClusterBadConfChange: a conf-change entry whose data is not
// a ConfChange is refused with the segment and offset of its record, and
// the WAL is left as it was.
func TestForceNewClusterBadConfChange(t *testing.T) {
	opts, e := threeMemberWAL(t, 1, 1, 1)
	typ := raftpb.EntryConfChange
	bad := &raftpb.Entry{Term: proto.Uint64(2), Index: proto.Uint64(5), Type: &typ, Data: []byte{0xff, 0xff, 0xff}}
	if err := e.SaveReady(&raftpb.HardState{Term: proto.Uint64(2), Vote: proto.Uint64(e.ID()), Commit: proto.Uint64(5)}, []*raftpb.Entry{bad}, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	walDir := filepath.Join(opts.DataDir, "member", "wal")
	_, before := readWALFile(t, walDir)
	opts.ForceNewCluster = true
	_, err := Open(opts)
	ce := corrupt.As(err)
	if ce == nil || !errors.Is(err, corrupt.ErrCorrupt) || ce.Offset <= 0 || !strings.HasSuffix(ce.Path, ".wal") || !strings.Contains(err.Error(), "entry 5") {
		t.Fatalf("open: %v", err)
	}
	t.Logf("refused: %v", err)
	if _, after := readWALFile(t, walDir); len(after) != len(before) {
		t.Fatalf("WAL changed: %d entries, was %d", len(after), len(before))
	}
}
