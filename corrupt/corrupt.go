// Package corrupt defines the one error type etckit uses for damaged data:
// it names the file, the byte offset and the reason, and is matchable with
// errors.Is against ErrCorrupt and, for the two conditions a write-ahead log
// must tell apart, ErrTornTail and ErrMidLog.
//
//   - A torn tail is damage that a crash during the last, unsynced write can
//     cause: it lies in the final record of the newest segment and is fixed by
//     truncating the log there (nothing that was synced is lost).
//   - Mid-log corruption is damage anywhere else (a CRC mismatch on a complete
//     record, a broken record followed by valid ones, a damaged non-final
//     segment). Truncating would lose synced data, so it is never repaired
//     silently.
package corrupt

import (
	"errors"
	"fmt"
)

var (
	// ErrCorrupt matches every *Error.
	ErrCorrupt = errors.New("corrupt data")
	// ErrTornTail matches an *Error of kind TornTail.
	ErrTornTail = errors.New("torn write at the tail")
	// ErrMidLog matches an *Error of kind MidLog.
	ErrMidLog = errors.New("corruption in the middle of the log")
)

// Kind classifies a corruption.
type Kind int

const (
	// Damaged is corruption that is neither of the two log conditions (a
	// snapshot file with a bad checksum, a db whose digest does not match).
	Damaged Kind = iota
	// TornTail is an incomplete final write; see the package doc.
	TornTail
	// MidLog is damage that truncation cannot fix; see the package doc.
	MidLog
)

func (k Kind) String() string {
	switch k {
	case TornTail:
		return "torn tail"
	case MidLog:
		return "mid-log corruption"
	default:
		return "corrupt"
	}
}

// Error is a corruption at a byte offset of a file.
type Error struct {
	Path   string // file that holds the damage
	Offset int64  // byte offset in Path where the damaged item starts
	Kind   Kind
	Reason string // what is wrong, in a few words
	Err    error  // the underlying error, if any (io.ErrUnexpectedEOF, a decode error)
}

// New returns an *Error.
func New(path string, offset int64, kind Kind, reason string, err error) *Error {
	return &Error{Path: path, Offset: offset, Kind: kind, Reason: reason, Err: err}
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s: %s at offset %d (%#x): %s", e.Path, e.Kind, e.Offset, e.Offset, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is makes errors.Is(err, ErrCorrupt) true for every *Error and
// ErrTornTail/ErrMidLog true for the matching kind.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrCorrupt:
		return true
	case ErrTornTail:
		return e.Kind == TornTail
	case ErrMidLog:
		return e.Kind == MidLog
	}
	return false
}

func (e *Error) Unwrap() error { return e.Err }

// As returns the *Error in err's chain, or nil.
func As(err error) *Error {
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	return nil
}
