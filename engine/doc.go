// Package engine is one etcd member's data directory, read and written byte
// for byte as etcd v3.6 does: bootstrap of a new member, recovery of an
// existing one, the raft log (a raft.Storage over the WAL and the newest
// snapshot), the apply of committed entries to the MVCC store and the
// periodic snapshot with purge of old files.
//
// # Layout
//
//	<data-dir>/                       0700
//	  member/                         0700
//	    wal/                          0700  (or --wal-dir)
//	      %016x-%016x.wal             0600  segments: sequence, first raft index
//	    snap/                         0700
//	      db                          0600  bbolt: keys, leases, members, meta
//	      %016x-%016x.snap                  v2 snapshot: term, index; v2 membership JSON
//	      %016x.snap.db               0600  db received from a leader (index)
//
// # Boot
//
// With no segment in the WAL directory, Open bootstraps: member and cluster
// IDs derived from --initial-cluster and --initial-cluster-token (SHA-1, as
// etcd), a WAL whose metadata is etcdserverpb.Metadata{NodeID, ClusterID},
// one ConfChange AddNode entry per initial member (term 1, members in ID
// order, context = member JSON) and HardState{term 1, commit n}, and a db
// with etcd's ten buckets. The members bucket is written when those entries
// are applied, as etcd does.
//
// Before either, Open deletes leftover snap/tmp* and snap/db.tmp* files, as
// etcd does. A member whose WAL directory holds at least one *.wal file is
// an existing one, and Open follows etcd's order: the WAL's valid snapshot
// records, the newest .snap among them (unloadable files are quarantined as
// .broken), snap/<index>.snap.db renamed over db when db's consistent_index
// is older than the snapshot, then the WAL read from the snapshot on. A torn
// tail is repaired once (the segment is backed up as .broken first); any
// other damage is refused with the file and byte offset.
//
// With Options.ForceNewCluster (etcd's --force-new-cluster) an existing
// member then becomes the only member of its cluster, as etcd v3.6.1+ and
// v3.7 do it (forcenew.go): commit = max(HardState commit, consistent_index),
// the entries above it dropped, and after them one ConfChange per other
// member the log knows (RemoveNode; AddNode of itself first if it is not
// known), at the HardState's term, saved to the WAL without a HardState
// record and committed in the raft log, so that they are applied like any
// committed entry. The cluster ID is kept.
//
// # Bootstrap entries
//
// A new cluster's log starts with one entry per initial member, members in
// ascending ID order, all committed:
//
//	Entry{Type: ConfChange, Term: 1, Index: i+1,
//	      Data: ConfChange{ID: 0, Type: AddNode, NodeID: id, Context: member JSON}}
//
// followed by HardState{term 1, vote 0, commit n}. raftpb.ConfChange is
// proto2 with id=1, type=2 (AddNode 0, RemoveNode 1, UpdateNode 2,
// AddLearnerNode 3), node_id=3, all always written (id too, though 0), and
// context=4 when non-nil. A later member add carries member JSON as
// context (AddLearnerNode for a learner), a promotion the member's ID with
// "isPromote": true, a peer-URL update (UpdateNode) member JSON, a removal
// nothing. After each election the new leader appends a normal entry with
// no data.
//
// # v2 requests
//
// v3.5 WALs carry some normal entries as a v2 etcdserverpb.Request
// (V2Request), proto2: ID=1, Method=2, Path=3, Val=4, Dir=5, PrevValue=6,
// PrevIndex=7, PrevExist=8, Expiration=9, Wait=10, Since=11, Recursive=12,
// Sorted=13, Quorum=14, Time=15 (Unix ns), Stream=16, Refresh=17. Every
// field is written except PrevExist and Refresh, which appear only when
// set. The methods found in such WALs are PUT, POST, DELETE, QGET and SYNC
// (with Time).
//
// # Restore
//
// Restore makes a new member directory from a db snapshot as `etcdutl
// snapshot restore` does. The input is a bbolt image, with a 32-byte SHA-256
// trailer iff its size % 512 == 32 (see snap's package doc): a trailer is
// checked unless SkipHashCheck, and a file without one is refused unless
// SkipHashCheck. The data directory must be empty or absent and the WAL
// directory absent; the name must be in the initial cluster with its
// advertised peer URLs. What it writes:
//
//  1. member/snap/db (0600): the image without its trailer, then in one
//     transaction the members and members_removed buckets emptied (every
//     other bucket kept), one members/<hex id> JSON per initial member,
//     meta/consistent_index = n and meta/term = 1 (even if that lowers
//     them) and, with BumpRevision B (requires MarkCompacted), an empty
//     value at revision (M+B, 0), M the highest main revision, with
//     meta/scheduledCompactRev set to it;
//  2. one WAL segment, created via wal.tmp: CRC, metadata {this member,
//     cluster}, Snapshot{0,0}, the n bootstrap entries (above),
//     HardState{term 1, vote = the smallest member ID, commit n};
//  3. member/snap/0000000000000001-<n as %016x>.snap: the members' v2
//     membership, ConfState{all IDs ascending as voters}, index n, term 1;
//  4. then a WAL snapshot record {n, 1, that ConfState}, the segment's
//     last record.
//
// Learners become voters; meta/confState is left as it was.
//
// # Apply
//
// Apply takes committed entries. Normal entries carry an
// etcdserverpb.InternalRaftRequest (a v2 Request in v3.5 WALs); entries at or
// below the db's consistent_index were applied before a crash and are
// skipped; for the others the request's writes and meta/consistent_index +
// meta/term go into one bbolt transaction (mvcc.Backend.HoldCommits keeps the
// backend from committing between them). Conf changes always reach raft.
//
// # Snapshots
//
// Every Options.SnapshotCount applied entries (etcd: 10,000) the server calls
// Snapshot: db commit, .snap, WAL snapshot record, lock release, raft log
// compaction (5,000 entries kept) and purge: 5 .snap, 5 .snap.db and 5 WAL
// segments kept, a segment only once no longer locked.
package engine
