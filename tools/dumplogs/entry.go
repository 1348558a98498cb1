package dumplogs

import (
	"go.etcd.io/raft/v3/raftpb"

	"github.com/etckit/etckit/wal"
)

// entryOf fills dst as wal.UnmarshalEntry would from the fields that
// wal.DecodeEntryFields read without allocating, except that Data aliases
// the record: use it only until the scanner moves on.
func entryOf(e *wal.EntryFields, dst *raftpb.Entry) *raftpb.Entry {
	*dst = raftpb.Entry{}
	if e.HasType {
		t := raftpb.EntryType(e.Type)
		dst.Type = &t
	}
	if e.HasTerm {
		dst.Term = &e.Term
	}
	if e.HasIndex {
		dst.Index = &e.Index
	}
	dst.Data = e.Data
	return dst
}
