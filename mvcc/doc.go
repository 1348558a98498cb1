// Package mvcc reads and writes etcd's multi-version key-value store: the
// bbolt file member/snap/db, byte for byte as etcd v3.5/v3.6 lay it out,
// with the in-memory key index, the KV operations (Range, Put, DeleteRange,
// Txn, Compact), HashKV and leases.
//
// # Bucket layout (wire format: never change)
//
// The db is a bbolt file. etcd's buckets, in bbolt's byte order:
//
//	bucket            key                              value
//	----------------  -------------------------------  ------------------------------
//	alarm             marshalled etcdserverpb.AlarmMember  empty
//	auth              "authEnabled" | "authRevision"   0x00/0x01 | uint64 BE
//	authRoles         role name                        authpb.Role
//	authUsers         user name                        authpb.User
//	cluster           "clusterVersion" | "downgrade"   semver text | JSON
//	key               revision key (below)             mvccpb.KeyValue
//	lease             lease ID, int64 BE (8 bytes)     leasepb.Lease {ID=1,TTL=2,RemainingTTL=3}
//	members           member ID, lower-case hex        member JSON
//	members_removed   member ID, lower-case hex        "removed"
//	meta              "consistent_index"               uint64 BE
//	                  "term"                           uint64 BE
//	                  "confState"                      raftpb.ConfState JSON
//	                  "scheduledCompactRev"            revision key of (rev, 0)
//	                  "finishedCompactRev"             revision key of (rev, 0)
//	                  "storageVersion"                 "3.6.0" / "3.7.0" (major.minor.0 of the cluster version; absent at 3.5)
//
// # Revision keys of the key bucket (wire format: never change)
//
//	 0                   8   9                  17   18
//	+-------------------+---+-------------------+----+
//	| main, int64 BE    |'_'| sub, int64 BE     |'t' |   't' only on a tombstone
//	+-------------------+---+-------------------+----+
//
// A put is stored under the 17-byte key with its mvccpb.KeyValue{key,
// create_revision, mod_revision, version, value, lease} as value; a delete
// is an 18-byte tombstone whose value is a KeyValue with only key set. Byte
// order of the keys is (main, sub) order. The first write of a fresh store
// gets main revision 2; every write transaction that changes something uses
// main = current+1 and numbers its changes sub = 0, 1, 2, ...
//
// # Key index
//
// In memory, every user key has a keyIndex: its retained revisions in order,
// tombstones flagged, forming generations (a generation ends with a
// tombstone). The index is rebuilt at Open by one streaming pass over the key
// bucket that decodes only key, create_revision, version and lease.
//
// # Requests, watches, leases
//
// Store.Range, Put, DeleteRange and Txn take and return etcdserverpb
// messages and behave as etcd's gRPC validation plus apply layer
// (etcdserver/txn) on etcd's mvcc store. ScheduleCompact compacts the
// index and commits meta/scheduledCompactRev at once, then deletes the
// compacted revisions in the background, in batches, one compaction after
// the other (Compact waits for that); an interrupted compaction resumes
// after the next Open. HashKV is etcd's corruption-check hash. WatchStream delivers etcd
// WatchResponses (catch-up from past revisions, compaction cancel, prev_kv,
// filters, progress, fragmentation). The Lessor keeps leases as etcd's
// lessor does and persists them in the lease bucket.
//
// Two deliberate differences, both where etcd breaks, and both caused by a
// from-key DeleteRange that etcd's duplicate-key check does not see:
//   - a Txn whose put with ignore_value/ignore_lease targets a key removed
//     earlier in the same Txn makes etcd panic while applying it; here it
//     fails with ErrKeyNotFound before anything is written;
//   - a Txn that deletes a key and puts it again leaves a tombstone and a
//     new generation at one main revision; etcd's compaction at that
//     revision removes the new revision from the file but not from its
//     index (etcd then dies on its next read of the key); here the revision
//     stays on disk, and hashes are computed as etcd computes them.
//
// # Defragment
//
// Defragmenting (Backend.Defrag, as etcd's backend.defrag) writes a fresh
// bbolt file snap/db.tmp.<random> beside the db: each bucket, in key
// order, with fill percent 0.9, a transaction committed after every
// DefragLimit (10,000) keys copied. The old db is then closed and the new
// file renamed over it. Only the bbolt handle changes: the pairs are the
// same, so the key index, watchers and leases need nothing.
//
// # Hashes
//
// Two hashes exist, both CRC-32C (Castagnoli).
//
// HashKV (Store.HashKV, HashKeyBucket) covers the key bucket only. Given a
// hash revision H (0 meaning the current one; below the compact revision is
// ErrCompacted, above the current one ErrFutureRev) and the compact
// revision C (-1 if none), the keep set K holds, per user key, the revision
// a compaction at H would leave, unless that is a tombstone. The hasher
// starts with the bytes "key", walks the bucket in order and, for a pair
// at revision r, feeds the revision key and then the value except when
//
//	r.main > H                             (past the hash revision)
//	r.main <= C and K non-empty and r ∉ K  (compacted away)
//	r.main == C and the key is a tombstone
//
// and answers {hash, C, H}. Each compaction records this hash with C the
// previous compact revision, H the new one and K its result.
//
// DBHash is the whole-db hash: for every bucket, in byte order, its name,
// then each of its keys and values. The Hash RPC and etcd-dump-db hash
// leave out the meta keys term, consistent_index and storageVersion;
// etcdutl snapshot status leaves out nothing.
//
// # Errors
//
// Nothing here panics on bad data: a value that does not decode, a key of the
// wrong length or a negative revision yields a *corrupt.Error naming the db
// file, the bucket and the key. Request errors carry etcd's exact messages
// (ErrCompacted, ErrFutureRev, ErrEmptyKey, ErrTooManyOps, ErrDuplicateKey,
// ErrLeaseNotFound, ...).
package mvcc
