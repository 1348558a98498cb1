package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// RecordType is walpb.Record.type. Wire format: never change the values.
type RecordType int64

const (
	MetadataType RecordType = 1 // data: etcdserverpb.Metadata, opaque to the WAL
	EntryType    RecordType = 2 // data: raftpb.Entry
	StateType    RecordType = 3 // data: raftpb.HardState
	CRCType      RecordType = 4 // no data; crc carries the running CRC
	SnapshotType RecordType = 5 // data: walpb.Snapshot
)

func (t RecordType) String() string {
	switch t {
	case MetadataType:
		return "metadata"
	case EntryType:
		return "entry"
	case StateType:
		return "state"
	case CRCType:
		return "crc"
	case SnapshotType:
		return "snapshot"
	}
	return fmt.Sprintf("unknown(%d)", int64(t))
}

// Valid reports whether t is one of the five record types.
func (t RecordType) Valid() bool { return t >= MetadataType && t <= SnapshotType }

// crcTable is CRC-32C (Castagnoli). Wire format: never change.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Record is a decoded walpb.Record.
type Record struct {
	Type RecordType
	CRC  uint32
	// Data is nil for a record without a data field (CRC records). Records
	// returned by a Scanner alias its buffer: copy Data to keep it.
	Data []byte
}

// Snapshot is walpb.Snapshot: the raft index and term of a snapshot, with
// the membership at that point (required for index > 0 since etcd 3.5).
type Snapshot struct {
	Index     uint64
	Term      uint64
	ConfState *raftpb.ConfState
}

// Frame layout. Wire format: never change.
const (
	frameHeaderBytes = 8
	sectorBytes      = 512
	pageBytes        = 8 * sectorBytes // the page writer's unit
)

// encodeFrameSize returns the length word for a record of n bytes and the
// number of zero bytes that pad it to 8-byte alignment.
func encodeFrameSize(n int) (lenField uint64, pad int) {
	lenField = uint64(n)
	pad = (8 - n%8) % 8
	if pad != 0 {
		lenField |= uint64(0x80|pad) << 56
	}
	return lenField, pad
}

// decodeFrameSize splits a length word into the record length and padding.
func decodeFrameSize(lenField uint64) (n int64, pad int64) {
	n = int64(lenField &^ (uint64(0xff) << 56))
	if int64(lenField) < 0 {
		pad = int64((lenField >> 56) & 0x7)
	}
	return n, pad
}

// recordHeaderMax bounds the encoded type and crc fields plus the data tag
// and length of a record (1+10 + 1+5 + 1+10).
const recordHeaderMax = 28

// appendRecordHeader appends the walpb.Record fields that precede data:
// type (always), crc (always) and, when hasData, the data tag and length.
func appendRecordHeader(b []byte, t RecordType, crc uint32, hasData bool, dataLen int) []byte {
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(int64(t)))
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(crc))
	if hasData {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(dataLen))
	}
	return b
}

var errTruncatedField = errors.New("truncated protobuf field")

// unmarshalRecord decodes a walpb.Record. Data aliases b. Unknown fields and
// known fields of the wrong wire type are skipped, as protobuf decoders do.
func unmarshalRecord(b []byte, rec *Record) error {
	_, err := decodeRecord(b, rec)
	return err
}

// Fields seen by decodeRecord.
const (
	seenType = 1 << iota
	seenCRC
	seenData
	seenOther
)

// decodeRecord is unmarshalRecord also saying which fields it met.
func decodeRecord(b []byte, rec *Record) (seen int, err error) {
	*rec = Record{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return seen, fmt.Errorf("walpb.Record: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return seen, fmt.Errorf("walpb.Record.type: %w", protowire.ParseError(n))
			}
			rec.Type = RecordType(int64(v))
			b = b[n:]
			seen |= seenType
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return seen, fmt.Errorf("walpb.Record.crc: %w", protowire.ParseError(n))
			}
			rec.CRC = uint32(v)
			b = b[n:]
			seen |= seenCRC
		case num == 3 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return seen, fmt.Errorf("walpb.Record.data: %w", protowire.ParseError(n))
			}
			rec.Data = v[:len(v):len(v)]
			if rec.Data == nil {
				rec.Data = []byte{}
			}
			b = b[n:]
			seen |= seenData
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return seen, fmt.Errorf("walpb.Record field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			seen |= seenOther
		}
	}
	return seen, nil
}

// ProbeRecord reports whether b, the payload of a frame, parses as a
// record as etcd writes it: type (one of the five) and crc present, and no
// field but type, crc and data. Data aliases b. It is for looking at bytes
// no CRC chain vouches for (past damage), not for reading a log.
func ProbeRecord(b []byte) (Record, bool) {
	var rec Record
	seen, err := decodeRecord(b, &rec)
	return rec, err == nil && seen&(seenType|seenCRC) == seenType|seenCRC && seen&seenOther == 0 && rec.Type.Valid()
}

// DecodeFrameHeader decodes a frame's 8-byte little-endian length word:
// the record's length and the zero bytes that pad it to 8-byte alignment.
func DecodeFrameHeader(b []byte) (n, pad int64) {
	return decodeFrameSize(binary.LittleEndian.Uint64(b))
}

// appendEntry appends raftpb.Entry in wire order Type(1), Term(2), Index(3),
// Data(4). Like the generated code of etcd 3.7 (proto2 explicit presence), a
// field is written when it is set: a nil pointer or nil Data is omitted. The
// raft library sets Type, Term and Index on every entry.
func appendEntry(b []byte, e *raftpb.Entry) []byte {
	if e.Type != nil {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(*e.Type)))
	}
	if e.Term != nil {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, *e.Term)
	}
	if e.Index != nil {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, *e.Index)
	}
	if e.Data != nil {
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendBytes(b, e.Data)
	}
	return b
}

func entrySize(e *raftpb.Entry) int {
	n := 0
	if e.Type != nil {
		n += 1 + protowire.SizeVarint(uint64(int64(*e.Type)))
	}
	if e.Term != nil {
		n += 1 + protowire.SizeVarint(*e.Term)
	}
	if e.Index != nil {
		n += 1 + protowire.SizeVarint(*e.Index)
	}
	if e.Data != nil {
		n += 1 + protowire.SizeBytes(len(e.Data))
	}
	return n
}

// EntryFields is a decoded raftpb.Entry before it is given pointer fields:
// what DecodeEntryFields reads, without allocating. Data aliases the input
// (nil when the field is absent); the Has flags tell which scalar fields
// were present, as the pointer fields of raftpb.Entry do.
type EntryFields struct {
	Type, Term, Index          uint64
	HasType, HasTerm, HasIndex bool
	Data                       []byte
}

// EntryType values the closed proto2 enum accepts; others are unknown fields.
func validEntryType(v uint64) bool { return v <= uint64(raftpb.EntryConfChangeV2) }

// DecodeEntryFields decodes a raftpb.Entry into e without allocating; it
// accepts and rejects exactly what UnmarshalEntry does.
func DecodeEntryFields(b []byte, e *EntryFields) error {
	*e = EntryFields{}
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
				if validEntryType(v) {
					e.Type, e.HasType = v, true
				}
			case 2:
				e.Term, e.HasTerm = v, true
			case 3:
				e.Index, e.HasIndex = v, true
			}
			continue
		}
		if num == 4 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("raftpb.Entry.Data: %w", protowire.ParseError(n))
			}
			e.Data = v[:len(v):len(v)]
			if e.Data == nil {
				e.Data = []byte{}
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

// UnmarshalEntry decodes a raftpb.Entry; the result does not alias b.
func UnmarshalEntry(b []byte) (*raftpb.Entry, error) {
	var f EntryFields
	if err := DecodeEntryFields(b, &f); err != nil {
		return nil, err
	}
	e := &raftpb.Entry{}
	if f.HasType {
		t := raftpb.EntryType(f.Type)
		e.Type = &t
	}
	if f.HasTerm {
		e.Term = &f.Term
	}
	if f.HasIndex {
		e.Index = &f.Index
	}
	if f.Data != nil {
		e.Data = append([]byte{}, f.Data...)
	}
	return e, nil
}

// UnmarshalHardState decodes a raftpb.HardState.
func UnmarshalHardState(b []byte) (*raftpb.HardState, error) {
	s := &raftpb.HardState{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("raftpb.HardState: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.VarintType && num >= 1 && num <= 3 {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, fmt.Errorf("raftpb.HardState field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case 1:
				s.Term = &v
			case 2:
				s.Vote = &v
			case 3:
				s.Commit = &v
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, fmt.Errorf("raftpb.HardState field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return s, nil
}

// MarshalSnapshot encodes walpb.Snapshot: index(1) and term(2) always,
// conf_state(3) when set.
func MarshalSnapshot(s Snapshot) ([]byte, error) {
	b := make([]byte, 0, 24)
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, s.Index)
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, s.Term)
	if s.ConfState != nil {
		cs, err := proto.MarshalOptions{Deterministic: true}.Marshal(s.ConfState)
		if err != nil {
			return nil, fmt.Errorf("wal: marshal conf state: %w", err)
		}
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, cs)
	}
	return b, nil
}

// UnmarshalSnapshot decodes walpb.Snapshot.
func UnmarshalSnapshot(b []byte) (Snapshot, error) {
	var s Snapshot
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Snapshot{}, fmt.Errorf("walpb.Snapshot: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case (num == 1 || num == 2) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Snapshot{}, fmt.Errorf("walpb.Snapshot field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			if num == 1 {
				s.Index = v
			} else {
				s.Term = v
			}
		case num == 3 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return Snapshot{}, fmt.Errorf("walpb.Snapshot.conf_state: %w", protowire.ParseError(n))
			}
			b = b[n:]
			// A repeated message field merges, as protobuf does.
			if s.ConfState == nil {
				s.ConfState = &raftpb.ConfState{}
			}
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(v, s.ConfState); err != nil {
				return Snapshot{}, fmt.Errorf("walpb.Snapshot.conf_state: %w", err)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return Snapshot{}, fmt.Errorf("walpb.Snapshot field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return s, nil
}
