package snap

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/etckit/etckit/corrupt"
)

// FuzzDecodeSnap: the .snap decoder never panics, fails only with a
// *corrupt.Error naming the file and an offset inside it, and what it
// accepts re-encodes to a file it decodes the same way. Seeded with the
// real etcd files (7 KB each).
func FuzzDecodeSnap(f *testing.F) {
	for _, b := range fixtureSnaps(f) {
		f.Add(b)
	}
	f.Add(restoredSnap(f))
	f.Add([]byte{})
	f.Add(EncodeEnvelope([]byte{0x12, 0x00}))
	f.Add(Encode(testSnapshot(3, 1, nil)))
	f.Fuzz(checkDecodeSnap)
}

// FuzzDecodeSnapSmall runs the same checks from small seeds: the fixture
// files with their v2 store JSON cut to a few bytes (CRC recomputed). Go's
// fuzzer minimizes every new interesting input, which takes about a minute
// for a 7 KB one (the subset-removal pass is quadratic), so under a short
// -fuzztime FuzzDecodeSnap mostly minimizes while this one mutates.
func FuzzDecodeSnapSmall(f *testing.F) {
	for name, b := range fixtureSnaps(f) {
		s, err := Decode(name, b)
		if err != nil {
			f.Fatal(err)
		}
		s.Data = s.Data[:8]
		f.Add(Encode(s))
	}
	f.Add([]byte{0x08, 0x01, 0x12, 0x00})
	f.Fuzz(checkDecodeSnap)
}

func checkDecodeSnap(t *testing.T, b []byte) {
	s, err := Decode("f.snap", b)
	if err != nil {
		ce := corrupt.As(err)
		if ce == nil || ce.Path != "f.snap" || ce.Offset < 0 || ce.Offset > int64(len(b)) {
			t.Fatalf("bad error %v", err)
		}
		return
	}
	enc := Encode(s)
	s2, err := Decode("g.snap", enc)
	if err != nil {
		t.Fatalf("re-encoded snapshot does not decode: %v", err)
	}
	if !bytes.Equal(MarshalSnapshot(s2), MarshalSnapshot(s)) || !bytes.Equal(Encode(s2), enc) {
		t.Fatal("encode/decode is not a fixpoint")
	}
	data, _, err := DecodeEnvelope("f.snap", b)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := DecodeEnvelope("h.snap", EncodeEnvelope(data)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("envelope round trip: %v", err)
	}
}

// FuzzDecodeV2Store: the v2 store reader never panics, and the membership
// it returns encodes to JSON it reads back identically.
func FuzzDecodeV2Store(f *testing.F) {
	for _, b := range fixtureSnaps(f) {
		s, err := Decode("seed", b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(s.GetData())
	}
	r, err := Decode("seed", restoredSnap(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(r.GetData())
	f.Add([]byte(`{"Root":{"Children":{"0":{"Children":{"members":{"Children":{"1":{"Children":{"raftAttributes":{"Value":"{}"}}}}},"removed_members":{"Children":{"2":{}}}}},"1":{"Children":{"k":{}}}}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := DecodeV2Store(b)
		if err != nil {
			return
		}
		js, err := EncodeV2Membership(&st.Membership)
		if err != nil {
			t.Fatalf("decoded membership does not encode: %v", err)
		}
		st2, err := DecodeV2Store(js)
		if err != nil {
			t.Fatalf("encoded membership does not decode: %v", err)
		}
		if !reflect.DeepEqual(st2.Membership, st.Membership) {
			t.Fatalf("round trip:\n%+v\n%+v", st.Membership, st2.Membership)
		}
	})
}
