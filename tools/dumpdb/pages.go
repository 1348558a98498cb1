package dumpdb

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"
	"strings"

	"github.com/etckit/etckit/tools/cli"
)

// bbolt's page layout (FORMATS §7.2; bbolt internal/common): a 16-byte
// header {id u64, flags u16, count u16, overflow u32}; branch elements
// {pos u32, ksize u32, pgid u64}, leaf elements {flags u32, pos u32,
// ksize u32, vsize u32}, positions relative to the element; a leaf element
// with flag 1 is a sub-bucket whose value is {root pgid u64, sequence u64}
// followed, when root is 0, by an inline leaf page.
const (
	pageHeaderSize  = 16
	elemSize        = 16
	branchPageFlag  = 0x01
	leafPageFlag    = 0x02
	bucketLeafFlag  = 0x01
	bucketHeaderLen = 16
	maxDepth        = 64
)

// PageProblem is a damaged page found by CheckPages.
type PageProblem struct {
	Page   uint64
	Offset int64 // byte offset of the page (or of the inline page) in the file
	Detail string
}

func (p PageProblem) String() string {
	return fmt.Sprintf("page %d at offset %d: %s", p.Page, p.Offset, p.Detail)
}

// pageWalker walks bbolt's tree from the file with plain reads, so that a
// damaged page (a cycle, a wild page id, an element past its page) is
// reported instead of crashing bbolt, which panics or recurses forever on
// such pages.
type pageWalker struct {
	f        *os.File
	pageSize int64
	hwm      uint64
	seen     map[uint64]bool
	problems []PageProblem
	progress func(done int64)
}

func (w *pageWalker) add(pg uint64, off int64, format string, args ...any) {
	if len(w.problems) < 100 {
		w.problems = append(w.problems, PageProblem{Page: pg, Offset: off, Detail: fmt.Sprintf(format, args...)})
	}
}

// read returns page pg with its overflow pages.
func (w *pageWalker) read(pg uint64) ([]byte, bool) {
	off := int64(pg) * w.pageSize
	hdr := make([]byte, pageHeaderSize)
	if _, err := w.f.ReadAt(hdr, off); err != nil {
		w.add(pg, off, "cannot read the page: %v", err)
		return nil, false
	}
	overflow := uint64(binary.LittleEndian.Uint32(hdr[12:]))
	if pg+overflow >= w.hwm {
		w.add(pg, off, "page and its %d overflow pages run past the high-water mark %d", overflow, w.hwm)
		return nil, false
	}
	b := make([]byte, int64(overflow+1)*w.pageSize)
	if _, err := w.f.ReadAt(b, off); err != nil {
		w.add(pg, off, "cannot read the page: %v", err)
		return nil, false
	}
	return b, true
}

// walk checks the tree under page pg.
func (w *pageWalker) walk(pg uint64, depth int) {
	off := int64(pg) * w.pageSize
	switch {
	case pg < 2 || pg >= w.hwm:
		w.add(pg, -1, "page id %d is outside 2..%d", pg, w.hwm-1)
		return
	case w.seen[pg]:
		w.add(pg, off, "page is referenced twice (a cycle or a shared page)")
		return
	case depth > maxDepth:
		w.add(pg, off, "tree deeper than %d", maxDepth)
		return
	}
	w.seen[pg] = true
	if w.progress != nil {
		w.progress(int64(len(w.seen)) * w.pageSize)
	}
	b, ok := w.read(pg)
	if !ok {
		return
	}
	if id := binary.LittleEndian.Uint64(b); id != pg {
		w.add(pg, off, "page header says id %d", id)
		return
	}
	for i := uint64(1); i <= uint64(binary.LittleEndian.Uint32(b[12:])); i++ {
		if w.seen[pg+i] {
			w.add(pg+i, off+int64(i)*w.pageSize, "overflow page is referenced twice")
		}
		w.seen[pg+i] = true
	}
	w.node(pg, off, b, depth)
}

// node checks one page's elements (b holds the page, at file offset off).
func (w *pageWalker) node(pg uint64, off int64, b []byte, depth int) {
	flags := binary.LittleEndian.Uint16(b[8:])
	count := int(binary.LittleEndian.Uint16(b[10:]))
	if pageHeaderSize+count*elemSize > len(b) {
		w.add(pg, off, "%d elements do not fit in the page", count)
		return
	}
	var prev []byte
	for i := 0; i < count; i++ {
		e := pageHeaderSize + i*elemSize
		var pos, ksize, vsize, eflags uint32
		var child uint64
		switch flags {
		case branchPageFlag:
			pos, ksize, child = binary.LittleEndian.Uint32(b[e:]), binary.LittleEndian.Uint32(b[e+4:]), binary.LittleEndian.Uint64(b[e+8:])
		case leafPageFlag:
			eflags, pos, ksize, vsize = binary.LittleEndian.Uint32(b[e:]), binary.LittleEndian.Uint32(b[e+4:]), binary.LittleEndian.Uint32(b[e+8:]), binary.LittleEndian.Uint32(b[e+12:])
		default:
			w.add(pg, off, "flags %#x: not a branch or leaf page", flags)
			return
		}
		start := uint64(e) + uint64(pos)
		end := start + uint64(ksize) + uint64(vsize)
		if end > uint64(len(b)) {
			w.add(pg, off+int64(e), "element %d/%d runs past the page", i, count)
			return
		}
		key := b[start : start+uint64(ksize)]
		if prev != nil && string(key) <= string(prev) {
			w.add(pg, off+int64(start), "element %d/%d: keys out of order", i, count)
		}
		prev = key
		if flags == branchPageFlag {
			w.walk(child, depth+1)
			continue
		}
		if eflags&bucketLeafFlag == 0 {
			continue
		}
		val := b[start+uint64(ksize) : end]
		if len(val) < bucketHeaderLen {
			w.add(pg, off+int64(start), "bucket %q: header of %d bytes", key, len(val))
			continue
		}
		if root := binary.LittleEndian.Uint64(val); root != 0 {
			w.walk(root, depth+1)
			continue
		}
		inline := val[bucketHeaderLen:]
		ioff := off + int64(start) + int64(ksize) + bucketHeaderLen
		if len(inline) < pageHeaderSize || binary.LittleEndian.Uint16(inline[8:]) != leafPageFlag {
			w.add(pg, ioff, "bucket %q: inline page is not a leaf", key)
			continue
		}
		w.node(pg, ioff, inline, depth+1)
	}
}

// CheckPages walks the bbolt file's tree (from the newest valid meta page)
// with plain reads and lists damaged pages. It never panics; the error is
// an I/O error or a file with no valid meta page. progress (optional) is
// called with the bytes of the pages visited so far.
func CheckPages(path string, pageSize int, progress ...func(done int64)) ([]PageProblem, error) {
	_, hwm, _, ok := metaInfo(path, pageSize)
	if !ok {
		return nil, fmt.Errorf("%s: no valid bbolt meta page", path)
	}
	root, ok := metaRoot(path, pageSize)
	if !ok {
		return nil, fmt.Errorf("%s: no valid bbolt meta page", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	w := &pageWalker{f: f, pageSize: int64(pageSize), hwm: hwm, seen: map[uint64]bool{}}
	if len(progress) > 0 {
		w.progress = progress[0]
	}
	w.walk(root, 0)
	return w.problems, nil
}

// metaRoot returns the root bucket's page from the newest valid meta.
func metaRoot(path string, pageSize int) (uint64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	_, _, txid, ok := metaInfo(path, pageSize)
	if !ok {
		return 0, false
	}
	for i := 0; i < 2; i++ {
		b := make([]byte, 16+64)
		if _, err := f.ReadAt(b, int64(i*pageSize)); err != nil {
			continue
		}
		if binary.LittleEndian.Uint64(b[16+48:]) == txid && binary.LittleEndian.Uint32(b[16:]) == 0xED0CDAED {
			return binary.LittleEndian.Uint64(b[16+16:]), true
		}
	}
	return 0, false
}

// PagesError is returned for a db whose pages are damaged: bbolt would
// crash reading them, so nothing is read through bbolt (exit 1).
type PagesError struct {
	Path     string
	Problems []PageProblem
}

func (e *PagesError) Error() string {
	var s []string
	for i, p := range e.Problems {
		if i == 5 {
			s = append(s, fmt.Sprintf("... %d more", len(e.Problems)-5))
			break
		}
		s = append(s, p.String())
	}
	return fmt.Sprintf("%s: damaged bbolt pages, not read further (etckit doctor lists them): %s", e.Path, strings.Join(s, "; "))
}

func pagesError(path string, probs []PageProblem) error {
	return &cli.ExitError{Code: cli.ExitProblems, Err: &PagesError{Path: path, Problems: probs}}
}

// MetaProblems lists the meta pages (0 and 1) that bbolt rejects (bad
// magic, version or checksum). bbolt opens a file with one valid meta page
// and reads the tree that page names; when the rejected page was the newer
// one, that is the state before the last commit. pageSize is the db's page
// size; 0 reads it from meta page 0 (the system's page size, bbolt's
// default, when that page is damaged).
func MetaProblems(path string, pageSize int) ([]PageProblem, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if pageSize <= 0 {
		pageSize = os.Getpagesize()
		var b [pageHeaderSize + 12]byte
		if _, err := f.ReadAt(b[:], 0); err == nil && binary.LittleEndian.Uint32(b[pageHeaderSize:]) == 0xED0CDAED {
			if ps := int(binary.LittleEndian.Uint32(b[pageHeaderSize+8:])); ps >= 512 && ps&(ps-1) == 0 {
				pageSize = ps
			}
		}
	}
	var probs []PageProblem
	for i := 0; i < 2; i++ {
		off := int64(i * pageSize)
		b := make([]byte, pageHeaderSize+64)
		if _, err := f.ReadAt(b, off); err != nil {
			probs = append(probs, PageProblem{Page: uint64(i), Offset: off, Detail: fmt.Sprintf("meta page cannot be read: %v", err)})
			continue
		}
		m := b[pageHeaderSize:]
		h := fnv.New64a()
		h.Write(m[:56])
		var detail string
		switch {
		case binary.LittleEndian.Uint32(m[0:]) != 0xED0CDAED:
			detail = fmt.Sprintf("meta page has magic %#x, not 0xed0cdaed", binary.LittleEndian.Uint32(m[0:]))
		case binary.LittleEndian.Uint32(m[4:]) != 2:
			detail = fmt.Sprintf("meta page has version %d, not 2", binary.LittleEndian.Uint32(m[4:]))
		case h.Sum64() != binary.LittleEndian.Uint64(m[56:]):
			detail = "meta page fails its checksum"
		default:
			continue
		}
		probs = append(probs, PageProblem{Page: uint64(i), Offset: off, Detail: detail})
	}
	if len(probs) == 1 {
		probs[0].Detail += " (bbolt ignores it and reads the other meta page)"
	}
	return probs, nil
}
