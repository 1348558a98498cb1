// Package boltfile reads bbolt's file layout with plain reads: the two meta
// pages, page headers, branch and leaf elements and the freelist page's
// header. It is the one place etckit knows these bytes; engine (restore)
// and the offline tools (dump-db, doctor, snapshot status) walk a db with
// it before bbolt opens the file, because bbolt panics or recurses without
// end on a damaged page. It never panics on any input.
//
// # Pages (bbolt internal/common; wire format: never change)
//
// Every page starts with a 16-byte header, little endian:
//
//	 0        8       10      12        16
//	+--------+-------+-------+---------+
//	| id u64 | flags | count | overflow|   flags: 0x01 branch, 0x02 leaf,
//	|        | u16   | u16   | u32     |   0x04 meta, 0x10 freelist
//	+--------+-------+-------+---------+
//
// overflow more pages follow the page in the file and belong to it.
//
// A meta page (pages 0 and 1) holds after the header:
//
//	16 magic u32 = 0xED0CDAED   20 version u32 = 2   24 pageSize u32
//	28 flags u32                32 root bucket {pgid u64, sequence u64}
//	48 freelist pgid u64        56 high-water pgid u64   64 txid u64
//	72 checksum u64: FNV-64a of bytes 16..71
//
// bbolt reads the valid meta page with the higher txid (page 0 on a tie);
// the page size is meta page 0's when that page is valid, the system's
// otherwise.
//
// After a branch or leaf page's header stand count 16-byte elements, each
// locating its key (and value) by a position relative to the element:
//
//	branch: pos u32, ksize u32, pgid u64 (the child page)
//	leaf:   flags u32, pos u32, ksize u32, vsize u32
//
// Keys of one page are in strictly increasing byte order. A leaf element
// with flag 0x01 is a sub-bucket: its value is {root pgid u64, sequence
// u64}, followed, when root is 0, by the bucket's inline leaf page.
package boltfile

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/vfs"
)

// Layout constants.
const (
	PageHeaderSize   = 16
	ElemSize         = 16
	MetaSize         = 64
	BucketHeaderSize = 16
	BranchFlag       = 0x01
	LeafFlag         = 0x02
	MetaFlag         = 0x04
	FreelistFlag     = 0x10
	BucketLeafFlag   = 0x01
	Magic            = 0xED0CDAED
	Version          = 2
	// MaxDepth bounds the tree walk: bbolt's trees are a few levels deep,
	// a deeper one is a cycle through distinct pages.
	MaxDepth = 64
	// NoFreelist is the meta's freelist pgid when the freelist is not
	// persisted (etcd: NoFreelistSync).
	NoFreelist = ^uint64(0)
)

// Header is a page header.
type Header struct {
	ID       uint64
	Flags    uint16
	Count    uint16
	Overflow uint32
}

// ParseHeader decodes the header at the start of b (at least
// PageHeaderSize bytes).
func ParseHeader(b []byte) Header {
	return Header{
		ID:       binary.LittleEndian.Uint64(b),
		Flags:    binary.LittleEndian.Uint16(b[8:]),
		Count:    binary.LittleEndian.Uint16(b[10:]),
		Overflow: binary.LittleEndian.Uint32(b[12:]),
	}
}

// Meta is a valid meta page.
type Meta struct {
	Page      uint64 // 0 or 1
	PageSize  int
	Root      uint64 // the root bucket's page
	Freelist  uint64 // the freelist's page, NoFreelist when not persisted
	HighWater uint64 // pages in use: the file's high-water mark
	TxID      uint64
}

// Problem is damage found in a bbolt file.
type Problem struct {
	Page   uint64 // the page that holds the damage
	Offset int64  // its byte offset in the file (of the field or element when known)
	Detail string
}

func (p Problem) String() string {
	return fmt.Sprintf("page %d at offset %d: %s", p.Page, p.Offset, p.Detail)
}

// Err is the problem as a corruption of the file at path.
func (p Problem) Err(path string) *corrupt.Error {
	return corrupt.New(path, p.Offset, corrupt.Damaged, fmt.Sprintf("page %d: %s", p.Page, p.Detail), nil)
}

// Options tune Check.
type Options struct {
	// Limit is the most problems listed (0: 100); the walk stops there.
	Limit int
	// Progress, when set, is called with the bytes of the pages visited.
	Progress func(done int64)
}

// Report is what Check found.
type Report struct {
	// Meta is the meta page bbolt reads (valid only when OK).
	Meta Meta
	OK   bool
	// Rejected are the meta pages bbolt rejects (bad magic, version or
	// checksum); with one of the two rejected bbolt reads the other.
	Rejected []Problem
	// Problems is the damage of the page tree bbolt would read (or the
	// lack of any valid meta page): bbolt may crash on such a file.
	Problems []Problem
}

// First returns the first problem of the tree as a corruption of path, or
// nil.
func (r *Report) First(path string) *corrupt.Error {
	if len(r.Problems) == 0 {
		return nil
	}
	return r.Problems[0].Err(path)
}

// metaPageSize is the page size bbolt uses for the file: meta page 0's when
// that page is valid, the system's otherwise.
func metaPageSize(r io.ReaderAt) int {
	var b [PageHeaderSize + MetaSize]byte
	if _, err := r.ReadAt(b[:], 0); err == nil && checkMeta(b[PageHeaderSize:]) == "" {
		return int(binary.LittleEndian.Uint32(b[PageHeaderSize+8:]))
	}
	return os.Getpagesize()
}

// checkMeta says why bbolt rejects the meta m (the 64 bytes after the
// header), or "".
func checkMeta(m []byte) string {
	switch {
	case binary.LittleEndian.Uint32(m) != Magic:
		return fmt.Sprintf("meta page has magic %#x, not %#x", binary.LittleEndian.Uint32(m), uint32(Magic))
	case binary.LittleEndian.Uint32(m[4:]) != Version:
		return fmt.Sprintf("meta page has version %d, not %d", binary.LittleEndian.Uint32(m[4:]), Version)
	case fnv64a(m[:56]) != binary.LittleEndian.Uint64(m[56:]):
		return "meta page fails its checksum"
	}
	return ""
}

// ReadMeta reads both meta pages of the first size bytes of r: the one
// bbolt reads (ok false when neither is valid) and the rejected ones.
func ReadMeta(r io.ReaderAt, size int64) (meta Meta, ok bool, rejected []Problem) {
	pageSize := metaPageSize(io.NewSectionReader(r, 0, size))
	for i := uint64(0); i < 2; i++ {
		off := int64(i) * int64(pageSize)
		var b [PageHeaderSize + MetaSize]byte
		if off+int64(len(b)) > size {
			rejected = append(rejected, Problem{Page: i, Offset: off, Detail: fmt.Sprintf("meta page cannot be read: the file has %d bytes", size)})
			continue
		}
		if _, err := r.ReadAt(b[:], off); err != nil {
			rejected = append(rejected, Problem{Page: i, Offset: off, Detail: fmt.Sprintf("meta page cannot be read: %v", err)})
			continue
		}
		m := b[PageHeaderSize:]
		if why := checkMeta(m); why != "" {
			rejected = append(rejected, Problem{Page: i, Offset: off, Detail: why})
			continue
		}
		t := binary.LittleEndian.Uint64(m[48:])
		if !ok || t > meta.TxID {
			meta = Meta{Page: i, PageSize: int(binary.LittleEndian.Uint32(m[8:])), Root: binary.LittleEndian.Uint64(m[16:]),
				Freelist: binary.LittleEndian.Uint64(m[32:]), HighWater: binary.LittleEndian.Uint64(m[40:]), TxID: t}
			ok = true
		}
	}
	if len(rejected) == 1 {
		rejected[0].Detail += " (bbolt ignores it and reads the other meta page)"
	}
	return meta, ok, rejected
}

// Check reads the meta pages of the bbolt image in the first size bytes of
// r and walks the tree of the one bbolt reads: every page reached must lie
// below the high-water mark, carry its own id, be a branch or leaf page
// whose elements stay inside it with keys in order, be reached once and
// no deeper than MaxDepth; sub-buckets, inline or not, are followed. It
// never panics; read errors are problems too.
func Check(r io.ReaderAt, size int64, opts Options) *Report {
	if opts.Limit <= 0 {
		opts.Limit = 100
	}
	rep := &Report{}
	rep.Meta, rep.OK, rep.Rejected = ReadMeta(r, size)
	if !rep.OK {
		if len(rep.Rejected) == 0 {
			rep.Problems = []Problem{{Detail: "no valid meta page"}}
		}
		for _, p := range rep.Rejected {
			p.Detail = "no valid meta page: " + p.Detail
			rep.Problems = append(rep.Problems, p)
		}
		return rep
	}
	m := rep.Meta
	metaOff := int64(m.Page) * int64(m.PageSize)
	ps := int64(m.PageSize)
	switch {
	case ps < 512 || ps > 1<<20 || ps&(ps-1) != 0:
		rep.Problems = []Problem{{Page: m.Page, Offset: metaOff + PageHeaderSize + 8, Detail: fmt.Sprintf("page size %d is not a power of two between 512 and 1 MiB", ps)}}
		return rep
	case m.HighWater < 2 || m.HighWater > uint64(size/ps):
		rep.Problems = []Problem{{Page: m.Page, Offset: metaOff + PageHeaderSize + 40,
			Detail: fmt.Sprintf("the high-water mark is page %d but the image has %d bytes (%d pages of %d): truncated", m.HighWater, size, size/ps, ps)}}
		return rep
	}
	w := &walker{r: r, pageSize: ps, hwm: m.HighWater, seen: map[uint64]bool{}, opts: opts}
	w.visit(m.Root, m.Page, metaOff+PageHeaderSize+16, 0)
	rep.Problems = w.problems
	return rep
}

// CheckFile runs Check over the whole file at path in fsys.
func CheckFile(fsys vfs.FS, path string, opts Options) (rep *Report, err error) {
	err = readFile(fsys, path, func(r io.ReaderAt, size int64) { rep = Check(r, size, opts) })
	return rep, err
}

// ReadMetaFile runs ReadMeta over the whole file at path in fsys.
func ReadMetaFile(fsys vfs.FS, path string) (meta Meta, ok bool, rejected []Problem, err error) {
	err = readFile(fsys, path, func(r io.ReaderAt, size int64) { meta, ok, rejected = ReadMeta(r, size) })
	return meta, ok, rejected, err
}

// readFile calls fn with the file at path and its size.
func readFile(fsys vfs.FS, path string, fn func(r io.ReaderAt, size int64)) error {
	f, err := fsys.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	fn(f, fi.Size())
	return nil
}

// ReadHeader reads the header of page id.
func ReadHeader(r io.ReaderAt, pageSize int, id uint64) (Header, error) {
	var b [PageHeaderSize]byte
	if _, err := r.ReadAt(b[:], int64(id)*int64(pageSize)); err != nil {
		return Header{}, err
	}
	return ParseHeader(b[:]), nil
}

type walker struct {
	r        io.ReaderAt
	pageSize int64
	hwm      uint64
	seen     map[uint64]bool
	opts     Options
	problems []Problem
}

func (w *walker) full() bool { return len(w.problems) >= w.opts.Limit }

func (w *walker) add(pg uint64, off int64, format string, args ...any) {
	if !w.full() {
		w.problems = append(w.problems, Problem{Page: pg, Offset: off, Detail: fmt.Sprintf(format, args...)})
	}
}

// visit checks page id, referenced by page parent at offset ref, and its
// subtree.
func (w *walker) visit(id, parent uint64, ref int64, depth int) {
	if w.full() {
		return
	}
	switch {
	case id < 2 || id >= w.hwm:
		w.add(parent, ref, "reference to page %d outside 2..%d", id, w.hwm-1)
		return
	case w.seen[id]:
		w.add(parent, ref, "reference to page %d, which is referenced twice (a cycle or a shared page)", id)
		return
	case depth > MaxDepth:
		w.add(parent, ref, "tree deeper than %d pages", MaxDepth)
		return
	}
	w.seen[id] = true
	off := int64(id) * w.pageSize
	var hb [PageHeaderSize]byte
	if _, err := w.r.ReadAt(hb[:], off); err != nil {
		w.add(id, off, "cannot read the page: %v", err)
		return
	}
	h := ParseHeader(hb[:])
	if h.ID != id {
		w.add(id, off, "header says page %d", h.ID)
		return
	}
	if id+uint64(h.Overflow) >= w.hwm {
		w.add(id, off+12, "the page and its %d overflow pages run past the high-water mark %d", h.Overflow, w.hwm)
		return
	}
	for i := uint64(1); i <= uint64(h.Overflow); i++ {
		if w.seen[id+i] {
			w.add(id, off+12, "overflow page %d is referenced twice", id+i)
			return
		}
		w.seen[id+i] = true
	}
	buf := make([]byte, int64(h.Overflow+1)*w.pageSize)
	if _, err := w.r.ReadAt(buf, off); err != nil {
		w.add(id, off, "cannot read the page: %v", err)
		return
	}
	if w.opts.Progress != nil {
		w.opts.Progress(int64(len(w.seen)) * w.pageSize)
	}
	w.node(buf, id, off, depth)
}

// node checks the elements of one branch or leaf page held in buf (a whole
// page, or an inline bucket's page inside page id) at file offset off.
func (w *walker) node(buf []byte, id uint64, off int64, depth int) {
	h := ParseHeader(buf)
	span := int64(len(buf))
	if h.Flags != BranchFlag && h.Flags != LeafFlag {
		w.add(id, off+8, "page flags %#x, want branch or leaf", h.Flags)
		return
	}
	count := int64(h.Count)
	if PageHeaderSize+count*ElemSize > span {
		w.add(id, off+10, "%d elements do not fit in %d bytes", count, span)
		return
	}
	var prev []byte
	for i := int64(0); i < count && !w.full(); i++ {
		eoff := PageHeaderSize + i*ElemSize
		e := buf[eoff:]
		var pos, ks, vs int64
		var eflags uint32
		if h.Flags == BranchFlag {
			pos, ks = int64(binary.LittleEndian.Uint32(e)), int64(binary.LittleEndian.Uint32(e[4:]))
		} else {
			eflags = binary.LittleEndian.Uint32(e)
			pos, ks, vs = int64(binary.LittleEndian.Uint32(e[4:])), int64(binary.LittleEndian.Uint32(e[8:])), int64(binary.LittleEndian.Uint32(e[12:]))
		}
		end := eoff + pos + ks + vs
		if end > span {
			w.add(id, off+eoff, "element %d/%d ends at byte %d of a %d-byte page", i, count, end, span)
			return
		}
		key := buf[eoff+pos : eoff+pos+ks]
		if i > 0 && string(key) <= string(prev) {
			w.add(id, off+eoff+pos, "element %d/%d: keys out of order", i, count)
		}
		prev = key
		if h.Flags == BranchFlag {
			w.visit(binary.LittleEndian.Uint64(e[8:]), id, off+eoff+8, depth+1)
			continue
		}
		if eflags&BucketLeafFlag == 0 { // a key, not a bucket
			continue
		}
		voff := eoff + pos + ks
		v := buf[voff:end]
		if len(v) < BucketHeaderSize {
			w.add(id, off+voff, "bucket %q: header of %d bytes", key, len(v))
			continue
		}
		if root := binary.LittleEndian.Uint64(v); root != 0 {
			w.visit(root, id, off+voff, depth+1)
			continue
		}
		inline := v[BucketHeaderSize:]
		ioff := off + voff + BucketHeaderSize
		if len(inline) < PageHeaderSize || binary.LittleEndian.Uint16(inline[8:]) != LeafFlag {
			w.add(id, ioff, "bucket %q: inline page is not a leaf", key)
			continue
		}
		if depth+1 > MaxDepth {
			w.add(id, ioff, "tree deeper than %d pages", MaxDepth)
			continue
		}
		w.node(inline, id, ioff, depth+1)
	}
}

func fnv64a(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}
