package mvcc

import (
	"fmt"
	"testing"
)

func TestRequestErrorsMarked(t *testing.T) {
	for _, err := range []error{ErrCompacted, ErrFutureRev, ErrEmptyKey, ErrKeyNotFound, ErrValueProvided,
		ErrLeaseProvided, ErrTooManyOps, ErrDuplicateKey, ErrInvalidSortOption, ErrLeaseNotFound, ErrLeaseExists,
		ErrLeaseTTLTooLarge, fmt.Errorf("txn op 3: %w", ErrKeyNotFound)} {
		if !IsRequestError(err) {
			t.Errorf("%v is not marked as a request error", err)
		}
	}
	for _, err := range []error{ErrClosed, ErrReadOnly, fmt.Errorf("bbolt: %w", ErrClosed), nil} {
		if IsRequestError(err) {
			t.Errorf("%v is marked as a request error: a member would go on after a storage failure", err)
		}
	}
}
