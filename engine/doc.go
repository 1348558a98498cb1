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
// Otherwise Open follows etcd's order: the WAL's valid snapshot records, the
// newest .snap among them (unloadable files are quarantined as .broken),
// snap/<index>.snap.db renamed over db when db's consistent_index is older
// than the snapshot, then the WAL read from the snapshot on. A torn tail is
// repaired once (the segment is backed up as .broken first); any other
// damage is refused with the file and byte offset.
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
