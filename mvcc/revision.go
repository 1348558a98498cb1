package mvcc

import (
	"encoding/binary"
	"fmt"
)

// Wire format: never change. See the package documentation.
const (
	// RevBytesLen is the length of a revision key of a put.
	RevBytesLen = 8 + 1 + 8
	// TombstoneBytesLen is the length of a revision key of a delete.
	TombstoneBytesLen = RevBytesLen + 1
	revSeparator      = '_'
	tombstoneMark     = 't'
)

// Revision is a (main, sub) revision: main is the store revision of a write
// transaction, sub the position of the change inside it.
type Revision struct {
	Main int64
	Sub  int64
}

// GreaterThan reports whether r > o in (main, sub) order.
func (r Revision) GreaterThan(o Revision) bool {
	if r.Main != o.Main {
		return r.Main > o.Main
	}
	return r.Sub > o.Sub
}

// AppendRevKey appends the 17-byte key of r (18 bytes with the 't' mark if
// tombstone) to dst.
func AppendRevKey(dst []byte, r Revision, tombstone bool) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Main))
	dst = append(dst, revSeparator)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Sub))
	if tombstone {
		dst = append(dst, tombstoneMark)
	}
	return dst
}

// RevKey returns the 17- or 18-byte key of r.
func RevKey(r Revision, tombstone bool) []byte {
	return AppendRevKey(make([]byte, 0, TombstoneBytesLen), r, tombstone)
}

// ParseRevKey decodes a key of the key bucket, rejecting what etcd v3.6
// rejects: a length other than 17 or 18, a separator other than '_', a
// trailing byte other than 't', and negative numbers.
func ParseRevKey(k []byte) (r Revision, tombstone bool, err error) {
	switch len(k) {
	case RevBytesLen:
	case TombstoneBytesLen:
		if k[RevBytesLen] != tombstoneMark {
			return Revision{}, false, fmt.Errorf("revision key %x: byte 17 is %#x, not 't'", k, k[RevBytesLen])
		}
		tombstone = true
	default:
		return Revision{}, false, fmt.Errorf("revision key %x: length %d, want 17 or 18", k, len(k))
	}
	if k[8] != revSeparator {
		return Revision{}, false, fmt.Errorf("revision key %x: separator %#x, not '_'", k, k[8])
	}
	r.Main = int64(binary.BigEndian.Uint64(k[:8]))
	r.Sub = int64(binary.BigEndian.Uint64(k[9:17]))
	if r.Main < 0 || r.Sub < 0 {
		return Revision{}, false, fmt.Errorf("revision key %x: negative revision", k)
	}
	return r, tombstone, nil
}
