package dumplogs

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/etckit/etckit/wal"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func checkRawEntry(t *testing.T, b []byte) {
	t.Helper()
	want, werr := wal.UnmarshalEntry(b)
	var r wal.EntryFields
	gerr := wal.DecodeEntryFields(b, &r)
	if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
		t.Fatalf("%x: error %v, want %v", b, gerr, werr)
	}
	if werr != nil {
		return
	}
	var e raftpb.Entry
	got := entryOf(&r, &e)
	same := func(a, b *uint64) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
	if (got.Type == nil) != (want.Type == nil) || (got.Type != nil && *got.Type != *want.Type) ||
		!same(got.Term, want.Term) || !same(got.Index, want.Index) ||
		(got.Data == nil) != (want.Data == nil) || !bytes.Equal(got.Data, want.Data) {
		t.Fatalf("%x: got %v, want %v", b, got, want)
	}
}

func TestRawEntryMatchesWAL(t *testing.T) {
	typ := raftpb.EntryConfChange
	seeds := [][]byte{nil, {}, {0x22, 0x00}, {0x08, 0x07}, {0x08, 0x02, 0x10, 0x05, 0x18, 0x09, 0x22, 0x03, 'a', 'b', 'c'}}
	for _, e := range []*raftpb.Entry{{Term: new(uint64), Index: new(uint64), Type: &typ, Data: []byte("xyz")}} {
		b, err := proto.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, s := range seeds {
		checkRawEntry(t, s)
		for i := range len(s) {
			checkRawEntry(t, s[:i])
		}
	}
	for n := 0; n < 50000; n++ {
		var b []byte
		for range rng.IntN(6) {
			num := protowire.Number(rng.IntN(7))
			switch rng.IntN(4) {
			case 0:
				b = protowire.AppendTag(b, num, protowire.VarintType)
				b = protowire.AppendVarint(b, rng.Uint64()>>uint(rng.IntN(64)))
			case 1:
				b = protowire.AppendTag(b, num, protowire.BytesType)
				b = protowire.AppendBytes(b, make([]byte, rng.IntN(4)))
			case 2:
				b = protowire.AppendTag(b, num, protowire.Type(rng.IntN(8)))
			default:
				b = append(b, byte(rng.UintN(256)))
			}
		}
		checkRawEntry(t, b)
	}
}

func FuzzRawEntry(f *testing.F) {
	f.Add([]byte{0x08, 0x02, 0x10, 0x05, 0x18, 0x09, 0x22, 0x03, 'a', 'b', 'c'})
	f.Fuzz(func(t *testing.T, b []byte) { checkRawEntry(t, b) })
}
