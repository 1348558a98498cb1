package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/etckit/etckit/vfs"
)

// pipeline prepares the next segment in the background, as etcd's
// filePipeline does: <dir>/0.tmp and 1.tmp alternately, locked and
// preallocated, so a cut does not wait for the allocation.
type pipeline struct {
	fs    vfs.FS
	dir   string
	size  int64
	zero  bool // zero the head of each segment (see zero.go)
	count int

	filec chan tmpSegment
	errc  chan error
	donec chan struct{}
}

type tmpSegment struct {
	path   string
	f      vfs.File
	zeroed int64 // bytes from 0 written with zeros and synced
}

func newPipeline(w *WAL) *pipeline {
	p := &pipeline{
		fs:    w.fs,
		dir:   w.dir,
		size:  w.opts.SegmentSize,
		zero:  !w.opts.NoZeroAhead && !w.opts.NoSync,
		filec: make(chan tmpSegment),
		errc:  make(chan error, 1),
		donec: make(chan struct{}),
	}
	go p.run()
	return p
}

func (p *pipeline) open() (tmpSegment, error) {
	select {
	case f := <-p.filec:
		return f, nil
	case err := <-p.errc:
		if err == nil {
			err = errors.New("wal: segment pipeline stopped")
		}
		return tmpSegment{}, err
	}
}

func (p *pipeline) close() error {
	close(p.donec)
	return <-p.errc
}

func (p *pipeline) alloc() (tmpSegment, error) {
	// count%2, so the file is never the one handed out last.
	path := filepath.Join(p.dir, fmt.Sprintf("%d.tmp", p.count%2))
	f, err := p.fs.OpenFile(path, os.O_WRONLY|os.O_CREATE, fileMode)
	if err != nil {
		return tmpSegment{}, fmt.Errorf("wal: %w", err)
	}
	fail := func(err error) (tmpSegment, error) {
		f.Close()
		return tmpSegment{}, err
	}
	if err := lockSegment(f); err != nil {
		return fail(err)
	}
	// Only after the lock: a leftover from a crash is ours to reuse, and
	// must not carry stale records past the new segment's header.
	if err := f.Truncate(0); err != nil {
		return fail(fmt.Errorf("wal: truncate %s: %w", path, err))
	}
	if err := f.Preallocate(p.size); err != nil {
		return fail(fmt.Errorf("wal: preallocate %s: %w", path, err))
	}
	p.count++
	seg := tmpSegment{path: path, f: f}
	if zw, ok := f.(vfs.ZeroWriter); ok && p.zero {
		// The writer's zeroer starts after this head, so the first Saves
		// of the new segment find written blocks too. A failure here only
		// costs that optimisation.
		n := min(int64(zeroLookahead), p.size)
		if zw.WriteZeros(0, n) == nil && f.Datasync() == nil {
			seg.zeroed = n
		}
	}
	return seg, nil
}

func (p *pipeline) run() {
	defer close(p.errc)
	for {
		f, err := p.alloc()
		if err != nil {
			p.errc <- err
			return
		}
		select {
		case p.filec <- f:
		case <-p.donec:
			err := errors.Join(f.f.Close(), p.fs.Remove(f.path))
			if err != nil {
				p.errc <- fmt.Errorf("wal: remove %s: %w", f.path, err)
			}
			return
		}
	}
}
