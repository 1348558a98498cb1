// Package server runs one etcd member over an engine.Engine: the raft node
// loop, the etcd v3 gRPC API and the HTTP endpoints on the client URLs, and
// the `serve` command with etcd's flags.
//
// # Raft loop
//
// One goroutine owns a raft.RawNode; everything else reaches it through an
// inbox (proposals, ReadIndex requests) and a wake-up channel, and conf
// changes come back from the apply goroutine on their own channel:
//
//	tick ──► rn.Tick
//	inbox ─► every waiting proposal in one MsgProp, ReadIndex requests
//	Ready ─► committed entries to the apply goroutine (they are durable
//	         already) ─► leader: send messages ─► engine.SaveReady (WAL
//	         append, fdatasync when raft's MustSync; .snap + WAL snapshot
//	         record first) ─► follower: send ─► rn.Advance ─► next Ready
//	apply goroutine: engine.Apply ─► waiters ─► snapshot every
//	         --snapshot-count
//
// A client write is proposed as an etcdserverpb.InternalRaftRequest
// (header.ID from an etcd-style ID generator) and answered when its entry is
// applied. Proposals that arrive while a Ready is being persisted are
// appended together in the next Ready, so concurrent writers share one WAL
// write and one fdatasync, and applying one batch overlaps the fdatasync of
// the next. Proposals wait while no leader is known; a sweep answers those
// older than the request timeout.
//
// # Cluster
//
// Messages to other members go to a Transport: etcd's peer protocol
// (package transport) on --listen-peer-urls, whose peers follow the
// applied membership (peer.go). Messages from peers wait in a bounded inbox
// the raft loop drains between Readys. A MsgSnap raft makes is replaced by
// a snapshot of the db as it is on the apply goroutine (etcd's merged
// snapshot); a received one is checked, then swapped in by the apply
// goroutine, and the open watch streams move to the new db, every watcher
// catching up from the revision it waits for. Followers forward lease renewals and TimeToLive to the
// leader's /leases; only the leader's lessor expires leases. The Cluster
// API proposes conf changes and answers when they are applied, with etcd's
// strict reconfiguration checks (membership.go); a member joins a running
// cluster from its peers' /members (join.go).
//
// # TLS
//
// Client and peer TLS follow etcd's embed and client/pkg/transport
// (tls.go, listen.go): https and unixs client URLs pass a TLS listener
// (handshake, CRL) into one net/http server that hands application/grpc
// HTTP/2 requests to the gRPC server, so an RPC's peer.AuthInfo is a
// credentials.TLSInfo with the verified chains (certCommonName); https
// peer URLs add etcd's SAN check and allowed CN/hostname, and the
// transport, the peer endpoints' clients and joining dial with the peer
// certificate over HTTP/1.1.
//
// Linearizable reads (Range, read-only Txn, MemberList with linearizable,
// LeaseTimeToLive, /health) wait for a raft ReadIndex round shared by all
// concurrent readers and for the apply of that index; serializable reads are
// answered from the local store.
//
// # API
//
// KV (Range, Put, DeleteRange, Txn, Compact), Watch, Lease (Grant, Revoke,
// KeepAlive, TimeToLive, Leases), Cluster (MemberList, MemberAdd,
// MemberRemove, MemberUpdate, MemberPromote), Maintenance (Status,
// MoveLeader, Hash, HashKV, Snapshot with the SHA-256 trailer, Defragment,
// Alarm). Defragment rewrites the db as etcd does (mvcc's package doc,
// "Defragment") under the running store: only the bbolt file and handle
// change, so the key index, watchers and leases stay; writes wait while the
// copy runs.
//
// Watch follows etcd's serverWatchStream: client-chosen watch IDs (a
// duplicate is created-and-canceled with etcd's reason) and etcd's ID
// allocation otherwise, filters, prev_kv, fragmentation above
// --max-request-bytes plus 512 KiB, progress requests (one response with
// watch ID -1 and the current revision once every watcher of the stream is
// synced), periodic progress_notify (Config.WatchProgressNotifyInterval),
// and compaction cancels with compact_revision and header revision 0.
//
// Errors carry etcd's gRPC codes and messages (rpctypes): request
// validation, --max-txn-ops, --max-request-bytes, compacted/future
// revisions, lease not found, NOSPACE at --quota-backend-bytes. HTTP on the
// same port: /health, /version, /metrics (etcd's metric names: WAL fsync
// and backend commit/defrag duration histograms, every batch commit timed,
// defrag in flight, leader, proposals, db size, mvcc revisions).
package server
