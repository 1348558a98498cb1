package dumplogs

import (
	"strconv"
	"unicode/utf8"
)

const lowerhex = "0123456789abcdef"

// asciiSafe[c] is true for the ASCII bytes strconv.Quote copies as they
// are: printable ASCII except the quote and the backslash.
var asciiSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c <= 0x7e; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendQuote appends strconv.Quote(string(s)) to dst, byte for byte,
// without converting s to a string (quote_test.go checks it against
// strconv.Quote).
func appendQuote(dst, s []byte) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if asciiSafe[c] {
				j := i + 1
				for j < len(s) && s[j] < utf8.RuneSelf && asciiSafe[s[j]] {
					j++
				}
				dst = append(dst, s[i:j]...)
				i = j
				continue
			}
			dst = appendEscapedASCII(dst, c)
			i++
			continue
		}
		r, width := utf8.DecodeRune(s[i:])
		if width == 1 && r == utf8.RuneError {
			dst = append(dst, '\\', 'x', lowerhex[c>>4], lowerhex[c&0xF])
			i++
			continue
		}
		if strconv.IsPrint(r) {
			dst = append(dst, s[i:i+width]...)
		} else {
			dst = appendEscapedRune(dst, r)
		}
		i += width
	}
	return append(dst, '"')
}

// appendEscapedASCII escapes an ASCII byte that is not copied as it is.
func appendEscapedASCII(dst []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(dst, '\\', c)
	case '\a':
		return append(dst, '\\', 'a')
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	case '\v':
		return append(dst, '\\', 'v')
	}
	// Other control characters and DEL.
	return append(dst, '\\', 'x', lowerhex[c>>4], lowerhex[c&0xF])
}

// appendEscapedRune escapes a valid non-ASCII rune that is not printable,
// as strconv does (\u for the BMP, \U above).
func appendEscapedRune(dst []byte, r rune) []byte {
	if r < 0x10000 {
		dst = append(dst, '\\', 'u')
		for s := 12; s >= 0; s -= 4 {
			dst = append(dst, lowerhex[r>>uint(s)&0xF])
		}
		return dst
	}
	dst = append(dst, '\\', 'U')
	for s := 28; s >= 0; s -= 4 {
		dst = append(dst, lowerhex[r>>uint(s)&0xF])
	}
	return dst
}
