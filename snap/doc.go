// Package snap reads and writes the snapshot files of an etcd member
// directory (member/snap) byte for byte as etcd 3.5–3.7 do:
//
//   - v2 raft snapshot files, %016x-%016x.snap (term, index);
//   - the v2 store JSON inside them, which carries the cluster membership
//     under /0 (Membership, EncodeV2Membership, DecodeV2Store);
//   - db snapshot files: %016x.snap.db received from a leader, and the
//     files `etcdctl snapshot save` writes (bbolt image + SHA-256 trailer).
//
// # The .snap file
//
// One protobuf message snappb.snapshot (proto2); the crc field is always
// written, even when zero:
//
//	+------+-----------------+------+-------------+------------------------+
//	| 0x08 | crc (varint)    | 0x12 | len (varint)| data: raftpb.Snapshot  |
//	+------+-----------------+------+-------------+------------------------+
//	crc = CRC-32C (Castagnoli) of data, from 0, no chaining.
//	crc == 0 or len(data) == 0 means "empty snapshot" (invalid).
//
//	data = raftpb.Snapshot (proto2, fields in ascending order):
//	  [0x0a len bytes]                 data (only when non-nil): v2 store JSON
//	  0x12 len SnapshotMetadata        always
//	     0x0a len ConfState            always
//	        (0x08 varint)*             voters, unpacked
//	        (0x10 varint)*             learners
//	        (0x18 varint)*             voters_outgoing
//	        (0x20 varint)*             learners_next
//	        0x28 varint                auto_leave, always
//	     0x10 varint                   index, always
//	     0x18 varint                   term, always
//
// Wire format: never change. The file name carries the term first, so the
// lexical order of names is the (term, index) order.
//
// # The db snapshot file
//
//	+--------------------------------------+---------------------------+
//	| bbolt image (N bytes, N % 512 == 0)  | SHA-256 of the image (32) |
//	+--------------------------------------+---------------------------+
//
// A trailer exists iff the file size % 512 == 32 (HasTrailer); a db copied
// out of a data directory has none. %016x.snap.db files that a follower
// receives from its leader are bare bbolt images.
//
// # Side effects
//
// Reading never changes the directory: Read, List and LoadNewest only open
// files for reading. Renaming a broken file to *.broken (as etcd's loader
// does implicitly) is the separate, explicit Quarantine call; offline tools
// never make it. Every write goes to a temporary "tmp*" name in the same
// directory, is fsynced, renamed into place, and the directory is fsynced.
// etcd deletes leftover snap/tmp* files at boot.
package snap
