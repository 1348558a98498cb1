package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path/filepath"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/vfs"
)

// readBufferBytes is the read size of the decoder: large enough that a
// 64,000,000-byte segment is read in a few dozen system calls and most
// records are decoded in place, without a copy.
const readBufferBytes = 1 << 20

// Position is where a record's frame (its length word) starts.
type Position struct {
	Segment string // segment file name, e.g. 0000000000000000-0000000000000000.wal
	Offset  int64  // byte offset of the length word in that segment
}

func (p Position) String() string { return fmt.Sprintf("%s:%d", p.Segment, p.Offset) }

type segReader struct {
	name string // base name
	path string
	f    vfs.File
	size int64 // at open, the bound for record lengths (as etcd)
}

// decoder reads records from a sequence of segments, checking the CRC chain.
type decoder struct {
	segs  []*segReader
	cur   int
	br    *bufio.Reader
	off   int64 // offset in segs[cur] just after the last valid record
	crc   uint32
	large []byte // frames larger than the read buffer

	// continueOnCRC makes a CRC mismatch on a complete record non-fatal:
	// next returns the record with the error and decoding goes on after it
	// (etcd-dump-logs --raw).
	continueOnCRC bool
}

func newDecoder(segs []*segReader) *decoder {
	// Small segments (tests, tools reading fragments) get a small buffer.
	size := int64(4096)
	for _, s := range segs {
		size = max(size, s.size)
	}
	d := &decoder{segs: segs, br: bufio.NewReaderSize(nil, int(min(size, readBufferBytes)))}
	if len(segs) > 0 {
		d.br.Reset(segs[0].f)
	}
	return d
}

// lastCRC is the running CRC after the last record decoded.
func (d *decoder) lastCRC() uint32 { return d.crc }

// lastOffset is the offset, in the current segment, after the last valid record.
func (d *decoder) lastOffset() int64 { return d.off }

func (d *decoder) corruption(s *segReader, off int64, kind corrupt.Kind, reason string, err error) error {
	return corrupt.New(s.path, off, kind, reason, err)
}

// unexpectedEOF classifies a record cut short: a torn tail in the last
// segment, mid-log corruption anywhere else. Both wrap io.ErrUnexpectedEOF,
// the condition etcd reports for them.
func (d *decoder) unexpectedEOF(s *segReader, off int64, reason string) error {
	kind := corrupt.MidLog
	if d.cur == len(d.segs)-1 {
		kind = corrupt.TornTail
	}
	return d.corruption(s, off, kind, reason, io.ErrUnexpectedEOF)
}

// next decodes the next record into rec. It returns io.EOF after the last
// record of the last segment. ok reports whether rec holds a complete record
// even though err is non-nil (a CRC mismatch with continueOnCRC). rec.Data
// aliases the decoder's buffer until the next call.
func (d *decoder) next(rec *Record) (pos Position, ok bool, err error) {
	for {
		if d.cur >= len(d.segs) {
			return Position{}, false, io.EOF
		}
		s := d.segs[d.cur]
		pos = Position{Segment: s.name, Offset: d.off}
		hdr, perr := d.br.Peek(frameHeaderBytes)
		if len(hdr) == 0 && errors.Is(perr, io.EOF) || len(hdr) == frameHeaderBytes && binary.LittleEndian.Uint64(hdr) == 0 {
			// End of the segment's data (file end or zeroed preallocation).
			if d.cur == len(d.segs)-1 {
				return pos, false, io.EOF
			}
			d.cur++
			d.off = 0
			d.br.Reset(d.segs[d.cur].f)
			continue
		}
		if len(hdr) < frameHeaderBytes {
			if errors.Is(perr, io.EOF) {
				return pos, false, d.unexpectedEOF(s, d.off, fmt.Sprintf("length word cut short (%d of 8 bytes)", len(hdr)))
			}
			return pos, false, fmt.Errorf("wal: read %s at offset %d: %w", s.path, d.off, perr)
		}
		n, pad := decodeFrameSize(binary.LittleEndian.Uint64(hdr))
		if _, err := d.br.Discard(frameHeaderBytes); err != nil {
			return pos, false, fmt.Errorf("wal: read %s at offset %d: %w", s.path, d.off, err)
		}
		// Bound the length before allocating: the record must fit in the file.
		if limit := s.size - d.off - pad; n > limit {
			return pos, false, d.unexpectedEOF(s, d.off, fmt.Sprintf("record length %d exceeds the %d bytes left in the file", n, limit))
		}
		size := int(n + pad)
		var frame []byte
		if size <= d.br.Size() {
			frame, perr = d.br.Peek(size)
			if len(frame) < size {
				if errors.Is(perr, io.EOF) {
					return pos, false, d.unexpectedEOF(s, d.off, fmt.Sprintf("record cut short (%d of %d bytes)", len(frame), size))
				}
				return pos, false, fmt.Errorf("wal: read %s at offset %d: %w", s.path, d.off, perr)
			}
			_, _ = d.br.Discard(size) // cannot fail: Peek returned size bytes
		} else {
			if cap(d.large) < size {
				d.large = make([]byte, size)
			}
			frame = d.large[:size]
			if m, err := io.ReadFull(d.br, frame); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return pos, false, d.unexpectedEOF(s, d.off, fmt.Sprintf("record cut short (%d of %d bytes)", m, size))
				}
				return pos, false, fmt.Errorf("wal: read %s at offset %d: %w", s.path, d.off, err)
			}
		}
		last := d.cur == len(d.segs)-1
		if err := unmarshalRecord(frame[:n], rec); err != nil {
			if last && IsTornWrite(frame, d.off+frameHeaderBytes) {
				return pos, false, d.corruption(s, d.off, corrupt.TornTail, "undecodable record with an all-zero sector (torn write)", io.ErrUnexpectedEOF)
			}
			return pos, false, d.corruption(s, d.off, corrupt.MidLog, "undecodable record", err)
		}
		if rec.Type == CRCType {
			// The chain value at a segment head. A fresh decoder (running
			// CRC 0) adopts it; otherwise it must match.
			if d.crc != 0 && rec.CRC != d.crc {
				err := d.corruption(s, d.off, corrupt.MidLog, fmt.Sprintf("crc record holds %#08x, the chain is at %#08x", rec.CRC, d.crc), ErrCRCMismatch)
				if !d.continueOnCRC {
					return pos, false, err
				}
				d.crc = rec.CRC
				d.off += frameHeaderBytes + n + pad
				return pos, true, err
			}
			d.crc = rec.CRC
		} else {
			d.crc = crc32.Update(d.crc, crcTable, rec.Data)
			if rec.CRC != d.crc {
				var err error
				if last && IsTornWrite(frame, d.off+frameHeaderBytes) {
					err = d.corruption(s, d.off, corrupt.TornTail, fmt.Sprintf("crc mismatch (record %#08x, chain %#08x) in a record with an all-zero sector (torn write)", rec.CRC, d.crc), io.ErrUnexpectedEOF)
				} else {
					err = d.corruption(s, d.off, corrupt.MidLog, fmt.Sprintf("crc mismatch (record %#08x, chain %#08x)", rec.CRC, d.crc), ErrCRCMismatch)
				}
				if !d.continueOnCRC {
					return pos, false, err
				}
				d.off += frameHeaderBytes + n + pad
				return pos, true, err
			}
		}
		d.off += frameHeaderBytes + n + pad
		return pos, true, nil
	}
}

// openSegments opens the named segments of dir read-only (no locks: reading
// never conflicts with a writer, as in etcd).
func openSegments(fsys vfs.FS, dir string, names []string) ([]*segReader, error) {
	segs := make([]*segReader, 0, len(names))
	for _, n := range names {
		p := filepath.Join(dir, n)
		f, err := fsys.Open(p)
		if err != nil {
			closeSegments(segs)
			return nil, fmt.Errorf("wal: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			closeSegments(segs)
			return nil, fmt.Errorf("wal: %w", err)
		}
		segs = append(segs, &segReader{name: n, path: p, f: f, size: fi.Size()})
	}
	return segs, nil
}

func closeSegments(segs []*segReader) error {
	var errs []error
	for _, s := range segs {
		if s.f != nil {
			errs = append(errs, s.f.Close())
		}
	}
	return errors.Join(errs...)
}
