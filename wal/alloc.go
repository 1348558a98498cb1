package wal

import "go.etcd.io/raft/v3/raftpb"

// entryAlloc hands out decoded entries from slabs: a ReadAll of a full
// segment allocates a few large blocks instead of five objects per entry
// (the Entry, three pointer fields and the data). Entries keep their slab
// alive, which ReadAll's callers do anyway by holding all entries.
type entryAlloc struct {
	ents  []raftpb.Entry
	u64s  []uint64
	types []raftpb.EntryType
	data  []byte
}

const (
	slabEntries  = 512
	slabData     = 256 << 10
	ownDataBytes = 16 << 10 // data this large gets its own allocation
)

func (a *entryAlloc) entry(f *EntryFields) *raftpb.Entry {
	if len(a.ents) == 0 {
		a.ents = make([]raftpb.Entry, slabEntries)
		a.u64s = make([]uint64, 2*slabEntries)
		a.types = make([]raftpb.EntryType, slabEntries)
	}
	e := &a.ents[0]
	a.ents = a.ents[1:]
	if f.HasType {
		a.types[0] = raftpb.EntryType(f.Type)
		e.Type = &a.types[0]
		a.types = a.types[1:]
	}
	if f.HasTerm {
		a.u64s[0] = f.Term
		e.Term = &a.u64s[0]
		a.u64s = a.u64s[1:]
	}
	if f.HasIndex {
		a.u64s[0] = f.Index
		e.Index = &a.u64s[0]
		a.u64s = a.u64s[1:]
	}
	if f.Data != nil {
		e.Data = a.copyData(f.Data)
	}
	return e
}

func (a *entryAlloc) copyData(b []byte) []byte {
	n := len(b)
	if n == 0 {
		return make([]byte, 0) // present but empty: non-nil (no allocation)
	}
	if n >= ownDataBytes {
		return append(make([]byte, 0, n), b...)
	}
	if len(a.data) < n {
		a.data = make([]byte, slabData)
	}
	d := a.data[:n:n]
	copy(d, b)
	a.data = a.data[n:]
	return d
}
