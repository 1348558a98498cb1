package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Progress is a progress bar on stderr. It shows only when stderr is a
// terminal and the work has run longer than a second, and redraws at most
// five times a second, so short runs, pipes and tests see nothing.
type Progress struct {
	w       io.Writer // nil: disabled
	label   string
	total   int64
	start   time.Time
	last    time.Time
	shown   bool
	mu      sync.Mutex
	nowFunc func() time.Time
}

// NewProgress returns a progress bar for total units (bytes) on w, enabled
// only if w is a terminal (a character device).
func NewProgress(w io.Writer, label string, total int64) *Progress {
	p := &Progress{label: label, total: total, nowFunc: time.Now}
	if IsTerminal(w) {
		p.w = w
	}
	p.start = p.nowFunc()
	return p
}

// IsTerminal reports whether w is an *os.File on a character device.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Update reports that done units of the total are finished.
func (p *Progress) Update(done int64) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.nowFunc()
	if now.Sub(p.start) < time.Second || now.Sub(p.last) < 200*time.Millisecond {
		return
	}
	p.last = now
	p.shown = true
	const width = 30
	frac := 0.0
	if p.total > 0 {
		frac = min(float64(done)/float64(p.total), 1)
	}
	n := int(frac * width)
	bar := make([]byte, width)
	for i := range bar {
		if i < n {
			bar[i] = '='
		} else {
			bar[i] = ' '
		}
	}
	fmt.Fprintf(p.w, "\r%s [%s] %5.1f%% %d/%d MB", p.label, bar, frac*100, done>>20, p.total>>20)
}

// Done clears the bar.
func (p *Progress) Done() {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprintf(p.w, "\r%*s\r", 80, "")
		p.shown = false
	}
}
