package mvcc

import "errors"

// requestError is an error that answers a request (a compacted revision, a
// bad argument, a missing lease): the client's to handle. Every other error
// of a store operation is a storage failure, and a member that meets one
// while applying an entry must stop. The mark is made here, where the
// error is made, so no list elsewhere has to remember it.
type requestError struct{ msg string }

func (e *requestError) Error() string { return e.msg }

func requestErr(msg string) error { return &requestError{msg} }

// IsRequestError reports whether err (or an error it wraps) answers the
// request rather than reporting a storage failure.
func IsRequestError(err error) bool {
	var r *requestError
	return errors.As(err, &r)
}

// Errors of the MVCC layer, with etcd's exact messages (storage/mvcc).
var (
	ErrCompacted = requestErr("mvcc: required revision has been compacted")
	ErrFutureRev = requestErr("mvcc: required revision is a future revision")
	// ErrClosed is returned by every operation on a closed Store or Backend.
	ErrClosed = errors.New("mvcc: store is closed")
	// ErrReadOnly is returned by writes on a store opened read-only.
	ErrReadOnly = errors.New("mvcc: store is opened read-only")
)

// Request validation errors, with the messages of etcd's rpctypes (the text a
// client sees as the gRPC status description).
var (
	ErrEmptyKey          = requestErr("etcdserver: key is not provided")
	ErrKeyNotFound       = requestErr("etcdserver: key not found")
	ErrValueProvided     = requestErr("etcdserver: value is provided")
	ErrLeaseProvided     = requestErr("etcdserver: lease is provided")
	ErrTooManyOps        = requestErr("etcdserver: too many operations in txn request")
	ErrDuplicateKey      = requestErr("etcdserver: duplicate key given in txn request")
	ErrInvalidSortOption = requestErr("etcdserver: invalid sort option")
)

// Lease errors, with the messages of etcd's lease package.
var (
	ErrLeaseNotFound    = requestErr("lease not found")
	ErrLeaseExists      = requestErr("lease already exists")
	ErrLeaseTTLTooLarge = requestErr("too large lease TTL")
	// ErrNotPrimary is a lease call on a member that is not (or no longer)
	// the leader.
	ErrNotPrimary = requestErr("not a primary lessor")
)
