package engine

import (
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// ConfTracker applies committed conf changes to a ConfState the way raft
// does for the changes etcd proposes (no joint consensus), for replaying a
// log without a raft node: offline tools and tests. Its Apply is a
// ConfChanger. Members keep the order they were added in.
type ConfTracker struct{ cs raftpb.ConfState }

// NewConfTracker starts from cs (nil: no members).
func NewConfTracker(cs *raftpb.ConfState) *ConfTracker {
	t := &ConfTracker{}
	if cs != nil {
		proto.Merge(&t.cs, cs)
	}
	return t
}

// Apply applies cci and returns a copy of the resulting ConfState.
func (t *ConfTracker) Apply(cci raftpb.ConfChangeI) *raftpb.ConfState {
	for _, ch := range cci.AsV2().GetChanges() {
		id := ch.GetNodeId()
		t.cs.Voters = without(t.cs.Voters, id)
		t.cs.Learners = without(t.cs.Learners, id)
		switch ch.GetType() {
		case raftpb.ConfChangeAddNode:
			t.cs.Voters = append(t.cs.Voters, id)
		case raftpb.ConfChangeAddLearnerNode:
			t.cs.Learners = append(t.cs.Learners, id)
		}
	}
	return proto.Clone(&t.cs).(*raftpb.ConfState)
}

func without(s []uint64, id uint64) []uint64 {
	out := s[:0:0]
	for _, x := range s {
		if x != id {
			out = append(out, x)
		}
	}
	return out
}
