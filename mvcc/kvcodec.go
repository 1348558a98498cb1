package mvcc

import (
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/protowire"
)

// appendKeyValue appends the proto3 encoding of a KeyValue exactly as etcd
// (protobuf-go, and gogoproto before it) emits it: fields in number order,
// zero values omitted.
func appendKeyValue(dst []byte, key []byte, create, mod, ver int64, value []byte, lease int64) []byte {
	if len(key) > 0 {
		dst = protowire.AppendTag(dst, 1, protowire.BytesType)
		dst = protowire.AppendBytes(dst, key)
	}
	if create != 0 {
		dst = protowire.AppendTag(dst, 2, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(create))
	}
	if mod != 0 {
		dst = protowire.AppendTag(dst, 3, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(mod))
	}
	if ver != 0 {
		dst = protowire.AppendTag(dst, 4, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(ver))
	}
	if len(value) > 0 {
		dst = protowire.AppendTag(dst, 5, protowire.BytesType)
		dst = protowire.AppendBytes(dst, value)
	}
	if lease != 0 {
		dst = protowire.AppendTag(dst, 6, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(lease))
	}
	return dst
}

func keyValueSize(key []byte, create, mod, ver int64, value []byte, lease int64) int {
	n := 0
	if len(key) > 0 {
		n += 1 + protowire.SizeBytes(len(key))
	}
	if create != 0 {
		n += 1 + protowire.SizeVarint(uint64(create))
	}
	if mod != 0 {
		n += 1 + protowire.SizeVarint(uint64(mod))
	}
	if ver != 0 {
		n += 1 + protowire.SizeVarint(uint64(ver))
	}
	if len(value) > 0 {
		n += 1 + protowire.SizeBytes(len(value))
	}
	if lease != 0 {
		n += 1 + protowire.SizeVarint(uint64(lease))
	}
	return n
}

// EncodeKeyValue returns the stored bytes of kv.
func EncodeKeyValue(kv *mvccpb.KeyValue) []byte {
	n := keyValueSize(kv.Key, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Value, kv.Lease)
	return appendKeyValue(make([]byte, 0, n), kv.Key, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Value, kv.Lease)
}

// kvFields is a decoded KeyValue whose byte fields alias the input.
type kvFields struct {
	key, value              []byte
	create, mod, ver, lease int64
}

// decodeKV decodes b as protobuf-go would (unknown fields and fields of an
// unexpected wire type are skipped, the last occurrence wins), without
// copying: key and value alias b.
func decodeKV(b []byte, f *kvFields) error {
	*f = kvFields{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("mvccpb.KeyValue: %w", protowire.ParseError(n))
		}
		if !num.IsValid() {
			return fmt.Errorf("mvccpb.KeyValue: invalid field number %d", num)
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && (num == 1 || num == 5):
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return fmt.Errorf("mvccpb.KeyValue field %d: %w", num, protowire.ParseError(m))
			}
			if num == 1 {
				f.key = v
			} else {
				f.value = v
			}
			b = b[m:]
		case typ == protowire.VarintType && num >= 2 && num <= 6 && num != 5:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return fmt.Errorf("mvccpb.KeyValue field %d: %w", num, protowire.ParseError(m))
			}
			switch num {
			case 2:
				f.create = int64(v)
			case 3:
				f.mod = int64(v)
			case 4:
				f.ver = int64(v)
			case 6:
				f.lease = int64(v)
			}
			b = b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return fmt.Errorf("mvccpb.KeyValue field %d: %w", num, protowire.ParseError(m))
			}
			b = b[m:]
		}
	}
	return nil
}

// DecodeKeyValue decodes a stored value into a new KeyValue (copying bytes).
func DecodeKeyValue(b []byte) (*mvccpb.KeyValue, error) {
	var f kvFields
	if err := decodeKV(b, &f); err != nil {
		return nil, err
	}
	return f.toProto(false), nil
}

// toProto copies f into a new KeyValue, with one allocation for both byte
// fields.
func (f *kvFields) toProto(keysOnly bool) *mvccpb.KeyValue {
	kv := &mvccpb.KeyValue{CreateRevision: f.create, ModRevision: f.mod, Version: f.ver, Lease: f.lease}
	n := len(f.key)
	if !keysOnly {
		n += len(f.value)
	}
	if n > 0 {
		buf := make([]byte, n)
		copy(buf, f.key)
		if len(f.key) > 0 {
			kv.Key = buf[:len(f.key):len(f.key)]
		}
		if !keysOnly && len(f.value) > 0 {
			copy(buf[len(f.key):], f.value)
			kv.Value = buf[len(f.key):]
		}
	}
	return kv
}

// EncodeKeyValueFields returns the stored bytes of a KeyValue given by its
// fields (no intermediate message).
func EncodeKeyValueFields(key []byte, create, mod, ver int64, value []byte, lease int64) []byte {
	return appendKeyValue(make([]byte, 0, keyValueSize(key, create, mod, ver, value, lease)), key, create, mod, ver, value, lease)
}
