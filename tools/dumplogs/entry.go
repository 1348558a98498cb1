package dumplogs

import (
	"fmt"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
)

// rawEntry is a raftpb.Entry as wal.UnmarshalEntry decodes it, without
// allocating: data aliases the record (entry_test.go checks it against
// wal.UnmarshalEntry, errors included).
type rawEntry struct {
	typ, term, index       uint64
	hasType, hasTerm, hasI bool
	data                   []byte // aliases the input; nil when absent
}

// decodeRawEntry is wal's decodeEntryFields: the same fields, the same
// errors.
func decodeRawEntry(b []byte, e *rawEntry) error {
	*e = rawEntry{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("raftpb.Entry: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.VarintType && num >= 1 && num <= 3 {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("raftpb.Entry field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case 1:
				if v <= uint64(raftpb.EntryConfChangeV2) {
					e.typ, e.hasType = v, true
				}
			case 2:
				e.term, e.hasTerm = v, true
			case 3:
				e.index, e.hasI = v, true
			}
			continue
		}
		if num == 4 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("raftpb.Entry.Data: %w", protowire.ParseError(n))
			}
			e.data = v[:len(v):len(v)]
			if e.data == nil {
				e.data = []byte{}
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("raftpb.Entry field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}

// entry fills dst as wal.UnmarshalEntry would, except that Data aliases
// the record: use it only until the scanner moves on.
func (e *rawEntry) entry(dst *raftpb.Entry) *raftpb.Entry {
	*dst = raftpb.Entry{}
	if e.hasType {
		t := raftpb.EntryType(e.typ)
		dst.Type = &t
	}
	if e.hasTerm {
		dst.Term = &e.term
	}
	if e.hasI {
		dst.Index = &e.index
	}
	dst.Data = e.data
	return dst
}
