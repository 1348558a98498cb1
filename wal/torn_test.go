package wal

import (
	"bytes"
	"testing"
)

func TestIsTornWrite(t *testing.T) {
	nz := func(n int) []byte { return bytes.Repeat([]byte{0xab}, n) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	zero := func(n int) []byte { return make([]byte, n) }
	cases := []struct {
		name  string
		frame []byte
		off   int64
		want  bool
	}{
		{"empty frame", nil, 8, false},
		{"no zero bytes", nz(100), 8, false},
		{"zeros inside a sector are data", cat(nz(10), zero(100), nz(10)), 8, false},
		{"all-zero small frame", zero(16), 8, true},
		{"whole zero sector in the middle", cat(nz(504), zero(512), nz(100)), 8, true},
		{"zero piece before the first boundary", cat(zero(504), nz(600)), 8, true},
		{"zero piece after the last boundary", cat(nz(504), nz(512), zero(20)), 8, true},
		{"zeros straddling a boundary, no piece all zero", cat(nz(400), zero(200), nz(500)), 8, false},
		{"512 zero bytes not aligned to a sector", cat(nz(100), zero(512), nz(100)), 8, false},
		{"aligned by the file offset, not the frame", cat(nz(100), zero(512), nz(100)), 412, true},
		{"frame exactly one sector, all zero", zero(512), 512, true},
		{"frame exactly one sector, one byte set", cat(zero(511), nz(1)), 512, false},
	}
	for _, c := range cases {
		if got := IsTornWrite(c.frame, c.off); got != c.want {
			t.Errorf("%s: IsTornWrite = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestFrameSize(t *testing.T) {
	for n := 0; n < 40; n++ {
		word, pad := encodeFrameSize(n)
		if (n+pad)%8 != 0 || pad > 7 {
			t.Fatalf("n=%d pad=%d", n, pad)
		}
		if pad == 0 && word>>56 != 0 || pad != 0 && word>>56 != uint64(0x80|pad) {
			t.Fatalf("n=%d top byte %#x", n, word>>56)
		}
		gn, gp := decodeFrameSize(word)
		if gn != int64(n) || gp != int64(pad) {
			t.Fatalf("round trip of %d: %d %d", n, gn, gp)
		}
	}
	// The reader ignores pad bits when the flag bit is clear, as etcd does.
	if n, p := decodeFrameSize(0x0700000000000010); n != 16 || p != 0 {
		t.Fatalf("pad without flag: %d %d", n, p)
	}
}
