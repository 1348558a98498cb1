package mvcc

import "testing"

// FuzzUnmarshalLeaseRecord: no lease bucket value panics the decoder, and
// what decodes encodes back to a record that decodes the same.
func FuzzUnmarshalLeaseRecord(f *testing.F) {
	f.Add(LeaseRecord{ID: 7, TTL: 60, RemainingTTL: 30}.Marshal())
	f.Add(LeaseRecord{ID: -1}.Marshal())
	f.Add([]byte{0x08})
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := UnmarshalLeaseRecord(b)
		if err != nil {
			return
		}
		again, err := UnmarshalLeaseRecord(l.Marshal())
		if err != nil || again != l {
			t.Fatalf("%+v re-encoded decodes as %+v (%v)", l, again, err)
		}
	})
}
