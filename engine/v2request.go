package engine

import (
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
)

// V2Request is etcd's v2 etcdserverpb.Request (proto2: ID=1, Method=2,
// Path=3, Val=4, ...), which the v3.7 API module no longer has (the package
// doc, "v2 requests"). etcd v3.6 still applies two of them (applyV2); v3.5
// WALs hold them.
type V2Request struct {
	ID                                      uint64
	Method, Path, Val, PrevValue            string
	Dir, PrevExist, Wait, Recursive, Sorted bool
	Quorum, Stream, Refresh                 bool
	HasPrevExist, HasRefresh                bool // the field is present
	PrevIndex, Since                        uint64
	Expiration, Time                        int64
}

// ErrNotV2Request is DecodeV2Request's error for bytes that are not a v2
// Request.
var ErrNotV2Request = errors.New("not a v2 request")

// DecodeV2Request decodes a v2 Request strictly: every field must have the
// wire type of its declaration, no other field may appear, and Method must
// be present. The one decoder of these records, for apply and dump-logs.
func DecodeV2Request(b []byte) (*V2Request, error) {
	r := &V2Request{}
	hasMethod := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, ErrNotV2Request
		}
		b = b[n:]
		switch num {
		case 2, 3, 4, 6:
			if typ != protowire.BytesType {
				return nil, ErrNotV2Request
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, ErrNotV2Request
			}
			b = b[n:]
			switch num {
			case 2:
				r.Method, hasMethod = string(v), true
			case 3:
				r.Path = string(v)
			case 4:
				r.Val = string(v)
			case 6:
				r.PrevValue = string(v)
			}
		case 1, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17:
			if typ != protowire.VarintType {
				return nil, ErrNotV2Request
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, ErrNotV2Request
			}
			b = b[n:]
			switch num {
			case 1:
				r.ID = v
			case 5:
				r.Dir = v != 0
			case 7:
				r.PrevIndex = v
			case 8:
				r.PrevExist, r.HasPrevExist = v != 0, true
			case 9:
				r.Expiration = int64(v)
			case 10:
				r.Wait = v != 0
			case 11:
				r.Since = v
			case 12:
				r.Recursive = v != 0
			case 13:
				r.Sorted = v != 0
			case 14:
				r.Quorum = v != 0
			case 15:
				r.Time = int64(v)
			case 16:
				r.Stream = v != 0
			case 17:
				r.Refresh, r.HasRefresh = v != 0, true
			}
		default:
			return nil, ErrNotV2Request
		}
	}
	if !hasMethod {
		return nil, ErrNotV2Request
	}
	return r, nil
}
