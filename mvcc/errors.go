package mvcc

import "errors"

// Errors of the MVCC layer, with etcd's exact messages (storage/mvcc).
var (
	ErrCompacted = errors.New("mvcc: required revision has been compacted")
	ErrFutureRev = errors.New("mvcc: required revision is a future revision")
	// ErrClosed is returned by every operation on a closed Store or Backend.
	ErrClosed = errors.New("mvcc: store is closed")
	// ErrReadOnly is returned by writes on a store opened read-only.
	ErrReadOnly = errors.New("mvcc: store is opened read-only")
)

// Request validation errors, with the messages of etcd's rpctypes (the text a
// client sees as the gRPC status description).
var (
	ErrEmptyKey          = errors.New("etcdserver: key is not provided")
	ErrKeyNotFound       = errors.New("etcdserver: key not found")
	ErrValueProvided     = errors.New("etcdserver: value is provided")
	ErrLeaseProvided     = errors.New("etcdserver: lease is provided")
	ErrTooManyOps        = errors.New("etcdserver: too many operations in txn request")
	ErrDuplicateKey      = errors.New("etcdserver: duplicate key given in txn request")
	ErrInvalidSortOption = errors.New("etcdserver: invalid sort option")
)

// Lease errors, with the messages of etcd's lease package.
var (
	ErrLeaseNotFound    = errors.New("lease not found")
	ErrLeaseExists      = errors.New("lease already exists")
	ErrLeaseTTLTooLarge = errors.New("too large lease TTL")
)
