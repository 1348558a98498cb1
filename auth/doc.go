// Package auth is etcd's authentication and role-based access control over
// the member's bbolt db: users, roles, the permission check every request
// passes, the auth revision, and the tokens Authenticate hands out. It
// keeps the three auth buckets byte for byte as etcd v3.5–v3.7 does, so an
// auth-enabled data dir moves between etcd and etckit with its users and
// permissions.
//
// # Buckets (wire format: never change)
//
//	bucket     key              value
//	---------  ---------------  ---------------------------------------------
//	auth       "authEnabled"    1 byte: 0x01 enabled, 0x00 disabled (absent: disabled)
//	auth       "authRevision"   uint64 big-endian (absent reads as 0; a new member writes 1)
//	authRoles  role name        authpb.Role
//	authUsers  user name        authpb.User
//
// A user value, as proto3 (fields in number order, zero fields left out):
//
//	+------------+--------------------+------------------+---------------------+
//	| 1 name     | 2 password         | 3 roles (repeat) | 4 options           |
//	| bytes      | bcrypt "$2a$10$…"  | sorted ascending | UserAddOptions:     |
//	|            | 60 bytes; none for | string each      | 22 00 = present and |
//	|            | a no-password user |                  | empty; 22 02 08 01 =|
//	|            |                    |                  | no_password; absent |
//	|            |                    |                  | in pre-3.4 data     |
//	+------------+--------------------+------------------+---------------------+
//
// A role value: 1 name (bytes), 2 keyPermission (repeated Permission
// {1 permType READ=0|WRITE=1|READWRITE=2, 2 key, 3 range_end}), kept
// sorted by key alone with Go's sort.Sort, as etcd does. A permission's
// range_end is empty for one key, "\x00" for every key from key on, and
// otherwise the end of [key, range_end).
//
// # Identity and checks
//
// A request's identity (AuthInfo) is resolved by the member that receives
// it, from a token or a client certificate's common name, and travels in
// the raft request's header (username, auth_revision). Every member checks
// it again when it applies the entry (CheckRequest, and the admin check of
// the Auth requests in Apply), so a permission change between proposal and
// apply is seen the same way by every member: an identity older than the
// store's auth revision gets ErrAuthOldRevision.
//
// The permission check is etcd's: each user's roles are flattened into two
// sorted interval lists (read, write) over etcd's key order in which the
// empty key is the largest; a single key is allowed when one interval
// holds it, a range when the intervals overlapping it cover it without a
// gap.
package auth
