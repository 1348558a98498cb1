package corrupt

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestErrorMatching(t *testing.T) {
	torn := New("/d/0-0.wal", 4096, TornTail, "zero sector in record", io.ErrUnexpectedEOF)
	mid := New("/d/0-0.wal", 64, MidLog, "crc mismatch", nil)
	dmg := New("/d/x.snap", 0, Damaged, "empty file", nil)
	wrapped := fmt.Errorf("open: %w", torn)

	cases := []struct {
		err    error
		target error
		want   bool
	}{
		{torn, ErrCorrupt, true}, {torn, ErrTornTail, true}, {torn, ErrMidLog, false}, {torn, io.ErrUnexpectedEOF, true},
		{mid, ErrCorrupt, true}, {mid, ErrTornTail, false}, {mid, ErrMidLog, true},
		{dmg, ErrCorrupt, true}, {dmg, ErrTornTail, false}, {dmg, ErrMidLog, false},
		{wrapped, ErrTornTail, true}, {wrapped, ErrMidLog, false},
		{errors.New("x"), ErrCorrupt, false},
	}
	for i, c := range cases {
		if got := errors.Is(c.err, c.target); got != c.want {
			t.Errorf("case %d: errors.Is(%v, %v) = %v, want %v", i, c.err, c.target, got, c.want)
		}
	}
	if As(wrapped) != torn || As(errors.New("x")) != nil {
		t.Fatal("As did not find the *Error in the chain")
	}
	msg := torn.Error()
	for _, want := range []string{"/d/0-0.wal", "offset 4096", "0x1000", "torn tail", "zero sector", "unexpected EOF"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}
