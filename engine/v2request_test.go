package engine

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func v2Bytes(method, path, val string) []byte {
	b := protowire.AppendTag(nil, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 7)
	for i, s := range []string{method, path, val} {
		b = protowire.AppendTag(b, protowire.Number(2+i), protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	return b
}

func TestDecodeV2Request(t *testing.T) {
	r, err := DecodeV2Request(v2Bytes("PUT", "/0/version", "3.5.0"))
	if err != nil || r.ID != 7 || r.Method != "PUT" || r.Path != "/0/version" || r.Val != "3.5.0" {
		t.Fatalf("%+v %v", r, err)
	}
	for name, b := range map[string][]byte{
		"no method":      protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 7),
		"wrong type":     protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 7),
		"unknown field":  protowire.AppendVarint(protowire.AppendTag(v2Bytes("PUT", "/", ""), 40, protowire.VarintType), 1),
		"truncated":      v2Bytes("PUT", "/0/version", "3.5.0")[:8],
		"irr with field": protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte{8, 1}),
	} {
		if _, err := DecodeV2Request(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzDecodeV2Request: no input panics, and what decodes has a method.
func FuzzDecodeV2Request(f *testing.F) {
	f.Add(v2Bytes("PUT", "/0/members/8e9e05c52164694d/attributes", `{"name":"default","clientURLs":["http://localhost:2379"]}`))
	f.Add(v2Bytes("SYNC", "", ""))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeV2Request(b)
		if err == nil && r == nil {
			t.Fatal("nil request without an error")
		}
	})
}
