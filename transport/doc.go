// Package transport is etcd's peer protocol (rafthttp), byte for byte: the
// raft messages one member sends another over --listen-peer-urls, so that
// etckit and etcd members can form one raft group.
//
// Each member dials every peer it wants to receive from (streams are long
// polls: the dialled side's response body carries its messages to the
// dialler), and POSTs to peers when no stream is attached:
//
//	GET  /raft/stream/msgapp/<from-hex>   200, then msgappv2 frames (MsgApp only)
//	GET  /raft/stream/message/<from-hex>  200, then length-prefixed messages
//	POST /raft                            one raftpb.Message, no prefix → 204
//	GET  /raft/probing                    {"OK":true,"Now":"<RFC 3339>"}
//
// Requests carry X-Server-From, X-Server-Version, X-Min-Cluster-Version,
// X-Etcd-Cluster-ID, X-PeerURLs and, on streams, X-Raft-To (IDs in hex
// without leading zeros, compared as strings). A wrong version or cluster
// ID is answered 412; a removed member's stream dial 410, which makes the
// dialler stop itself (a sender stops on a 403 too, which etcd's handlers
// never give: see ErrRemovedSender).
//
// The message stream (and the snapshot envelope):
//
//	+------------+---------------------------+----
//	| N, u64 BE  | raftpb.Message, N bytes   | next …
//	+------------+---------------------------+----
//
// The msgappv2 stream; encoder and decoder of one connection both keep a
// (term, index) starting at (0, 0), updated after each frame:
//
//	0x00                                                  link heartbeat
//	0x02 | N u64 | raftpb.Message (MsgApp), N bytes       term ← m.Term, index ← last entry (or m.Index)
//	0x01 | k u64 | (len u64 | Entry)×k | commit u64       index += k; a MsgApp whose Index and
//	                                                      LogTerm equal (index, term), LogTerm == Term
//
// A link heartbeat is MsgHeartbeat with From = To = 0; writers send one
// every 5 s / 3 because diallers drop a stream silent for 5 s. It never
// reaches raft.
package transport
