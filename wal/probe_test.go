package wal

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestProbeRecord(t *testing.T) {
	good := append(appendRecordHeader(nil, EntryType, 7, true, 3), "abc"...)
	if rec, ok := ProbeRecord(good); !ok || rec.Type != EntryType || rec.CRC != 7 || string(rec.Data) != "abc" {
		t.Errorf("etcd's record: %+v %v", rec, ok)
	}
	for name, b := range map[string][]byte{
		"unknown field": protowire.AppendVarint(protowire.AppendTag(good, 9, protowire.VarintType), 1),
		"bad type":      appendRecordHeader(nil, RecordType(9), 7, false, 0),
		"no crc":        protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), uint64(EntryType)),
		"truncated":     good[:len(good)-1],
	} {
		if _, ok := ProbeRecord(b); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	lenField, pad := encodeFrameSize(13)
	var hdr [8]byte
	for i := range hdr {
		hdr[i] = byte(lenField >> (8 * i))
	}
	if n, p := DecodeFrameHeader(hdr[:]); n != 13 || p != int64(pad) || p != 3 {
		t.Errorf("frame header: %d %d", n, p)
	}
}
