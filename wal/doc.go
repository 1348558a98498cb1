// Package wal reads and writes etcd's write-ahead log byte for byte
// (etcd 3.5–3.7; FORMATS.md §2).
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
