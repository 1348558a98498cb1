// Package wal reads and writes etcd's write-ahead log byte for byte
// (etcd 3.5–3.7; the format is described below).
//
// # Directory
//
// A WAL is a directory of segments named %016x-%016x.wal: a sequence number
// and the raft index of the first entry the segment may hold. Lexical order
// is numeric order. Segments are preallocated to 64,000,000 bytes; a
// finished segment is truncated to its content, the newest one is
// zero-filled past its last record. The next segment is prepared in the
// background as 0.tmp / 1.tmp. Writers lock every segment they hold with
// etcd's locks (Linux OFD locks, flock elsewhere); readers take no lock.
// While appending, a writer also writes zeros a few MiB ahead of its
// records (zero.go): the bytes stay the same, but the preallocated blocks
// become written ones, so fdatasync has no extent conversion to journal.
//
// # Frame
//
// Every record is a frame aligned to 8 bytes:
//
//	 0                   8                     8+N           8+N+P
//	+-------------------+---------------------+-------------+
//	| length word (LE)  | walpb.Record (N)    | zeros (P)   |
//	+-------------------+---------------------+-------------+
//
//	length word, as a little-endian uint64:
//	 63  62..59  58..56  55 ..................................... 0
//	+---+-------+-------+------------------------------------------+
//	| F |   0   |   P   |  N: length of the encoded record          |
//	+---+-------+-------+------------------------------------------+
//	F = 1 iff P != 0 (the top byte is 0x80|P); P = (8 - N%8) % 8.
//	A length word of 0 ends the segment's data (preallocated zeros).
//
//	walpb.Record (proto2): type = 1 (int64, always), crc = 2 (uint32,
//	always), data = 3 (bytes, absent in CRC records).
//
//	type  name      data
//	1     metadata  etcdserverpb.Metadata{NodeID, ClusterID}, equal in every segment
//	2     entry     raftpb.Entry
//	3     state     raftpb.HardState
//	4     crc       none; crc = the running CRC at the segment head
//	5     snapshot  walpb.Snapshot{index, term, conf_state}
//
// # CRC chain
//
// One CRC-32C (Castagnoli) runs over the data of every record, across
// segments; each record stores the value after its own data:
//
//	segment 0:  CRC(0) ─ meta ─ snap{0,0} ─ entry ─ state ─ ... ─ entry
//	              crc0=0  c1=U(0,m) c2=U(c1,s)  c3=U(c2,e) ...      cN
//	segment 1:  CRC(cN) ─ meta ─ state ─ entry ...
//	                      U(cN,m)
//	U(c, d) = crc32.Update(c, Castagnoli, d)
//
// A reader that starts at a later segment adopts the CRC record's value;
// one that has a running value checks it (mismatch: mid-log corruption).
//
// # Payloads
//
// All payloads are proto2 and written in field-number order; scalar fields
// are emitted even when zero unless noted.
//
//	Metadata  NodeID=1, ClusterID=2; every segment's copy must be identical
//	          (else ErrMetadataConflict)
//	Entry     Type=1 (0 normal, 1 conf change, 2 conf change v2), Term=2,
//	          Index=3, Data=4 only when non-nil (a leader's empty entry has
//	          none): {Normal, 2, 5, nil} is 08 00 10 02 18 05
//	HardState term=1, vote=2, commit=3; {1,0,1} is 08 01 10 00 18 01; an
//	          all-zero HardState is never written
//	Snapshot  index=1, term=2, conf_state=3 only when set (missing in the
//	          first {0,0} record)
//	ConfState voters=1, learners=2, voters_outgoing=3, learners_next=4 (each
//	          repeated and unpacked), auto_leave=5 always, also when false
//
// Snapshot{3, 1, voters [0x10]} is 08 03 10 01 1a 04 08 10 28 00. etcd 3.6
// writes auto_leave=false and a conf change's id=0 (see engine's package
// doc, "Bootstrap entries"); etcd 3.7's pointer-field raftpb omits both.
// etckit writes 3.6's bytes; the values decode the same.
//
// # A fresh WAL
//
// Create with metadata "somedata" writes, from offset 0 of segment
// 0000000000000000-0000000000000000.wal (TestFormatVector):
//
//	off   length word              record
//	0x00  04 00 00 00 00 00 00 84  08 04 10 00 +4 zeros           crc, 0
//	0x10  12 00 00 00 00 00 00 86  08 01 10 85 d4 fd a0 07 1a 08  metadata,
//	                               "somedata" +6 zeros            crc 0x741f6a05
//	0x30  0e 00 00 00 00 00 00 82  08 05 10 80 db 81 c1 01        snapshot {0,0},
//	                               1a 04 08 00 10 00 +2 zeros     crc 0x18206d80
//	0x48  zeros up to the segment size
//
// 0x741f6a05 is CRC-32C("somedata"); 0x18206d80 continues it over the
// snapshot record's data 08 00 10 00.
//
// # Damage
//
// Decoding errors are *corrupt.Error values naming the segment and the
// offset of the damaged frame. In the newest segment, a frame cut short, or
// an undecodable or CRC-failing frame containing an all-zero 512-byte sector
// (IsTornWrite), is a torn tail (corrupt.ErrTornTail, also
// io.ErrUnexpectedEOF): what a crash during an unsynced write leaves, fixed
// by Repair. Everything else is mid-log corruption (corrupt.ErrMidLog),
// which is never repaired silently.
//
// # Differences from etcd's package
//
// The bytes written are etcd's (interop/ proves it). The API returns errors
// where etcd panics or exits, Repair reports what it did instead of a bool,
// Scan streams records with their positions, configuration (segment size,
// filesystem) is per WAL in Options, and a few writes are made safer
// without changing bytes: the temporary WAL directory is fsynced before it
// is renamed into place, a reused N.tmp is truncated before it is filled,
// and a repair's backup is synced before the segment is truncated.
package wal
