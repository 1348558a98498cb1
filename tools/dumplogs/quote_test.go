package dumplogs

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func checkQuote(t *testing.T, b []byte) {
	t.Helper()
	if got, want := string(appendQuote(nil, b)), strconv.Quote(string(b)); got != want {
		t.Fatalf("appendQuote(%x) = %s, want %s", b, got, want)
	}
	for _, limit := range []int{0, 1, 2, 3, 4, 5, 7, 16, 256} {
		if got, want := QuoteBytes(b, limit), quoteBytesRef(b, limit); got != want {
			t.Fatalf("QuoteBytes(%x, %d) = %s, want %s", b, limit, got, want)
		}
	}
}

// quoteBytesRef is QuoteBytes as it was written before appendQuote.
func quoteBytesRef(b []byte, limit int) string {
	if limit > 0 && len(b) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(b[cut]) && limit-cut < utf8.UTFMax {
			cut--
		}
		if cut == 0 {
			cut = limit
		}
		return strconv.Quote(string(b[:cut])) + "...(" + strconv.Itoa(len(b)) + " bytes)"
	}
	return strconv.Quote(string(b))
}

func TestAppendQuoteEdges(t *testing.T) {
	// Every single byte, every pair of bytes.
	for i := 0; i < 256; i++ {
		checkQuote(t, []byte{byte(i)})
		for j := 0; j < 256; j++ {
			checkQuote(t, []byte{byte(i), byte(j)})
		}
	}
	// Every rune (valid, surrogates and beyond the maximum), encoded by
	// hand so invalid ones stay invalid.
	for r := rune(0); r <= utf8.MaxRune+0x100; r++ {
		b := []byte{0xf0 | byte(r>>18)&0x07, 0x80 | byte(r>>12)&0x3f, 0x80 | byte(r>>6)&0x3f, 0x80 | byte(r)&0x3f}
		var enc []byte
		switch {
		case r < 0x80:
			enc = []byte{byte(r)}
		case r < 0x800:
			enc = []byte{0xc0 | byte(r>>6), 0x80 | byte(r)&0x3f}
		case r < 0x10000:
			enc = []byte{0xe0 | byte(r>>12), 0x80 | byte(r>>6)&0x3f, 0x80 | byte(r)&0x3f}
		default:
			enc = b
		}
		if string(appendQuote(nil, enc)) != strconv.Quote(string(enc)) {
			checkQuote(t, enc)
		}
	}
	for _, s := range []string{"", `"`, `\`, "a\"b\\c", "\u00ad\u00a0\u2028\ufeff\U0001F600\U000e0001\ufffd", "\xef\xbf\xbd", "\xed\xa0\x80", "\xc0\x80", "\xf4\x90\x80\x80", "héllo\x00wörld\x7f", strings.Repeat("é", 200)} {
		checkQuote(t, []byte(s))
	}
}

func TestAppendQuoteRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "\x00", "\n", "\"", "\\", "\x7f", "\x80", "\xff", "é", "\u2028", "\U0001F600", "\xe2\x82", "\xf0\x9f", "\u00ad"}
	for n := 0; n < 20000; n++ {
		var b []byte
		l := rng.IntN(300)
		if n%2 == 0 {
			b = make([]byte, l)
			for i := range b {
				b[i] = byte(rng.UintN(256))
			}
		} else {
			for len(b) < l {
				b = append(b, alphabet[rng.IntN(len(alphabet))]...)
			}
		}
		checkQuote(t, b)
	}
}

func FuzzAppendQuote(f *testing.F) {
	for _, s := range []string{"", "abc", "\x00\xff", "é\u2028\U0001F600", "\xe2\x82"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkQuote(t, b) })
}
