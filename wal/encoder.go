package wal

import (
	"encoding/binary"
	"hash/crc32"
	"io"

	"go.etcd.io/raft/v3/raftpb"
)

// pageWriter batches writes as etcd's pkg/ioutil.PageWriter does: bytes are
// buffered up to a 128 KiB watermark; a write that would overflow first
// completes the current 4096-byte page (relative to the file offset the
// writer started at), flushes, writes whole pages directly and buffers the
// rest. Matching it exactly matters for one reason: WAL.Save cuts a segment
// when the bytes handed to the OS reach the segment size, so the flush
// points decide where etcd cuts, and we must cut at the same record.
type pageWriter struct {
	w          io.Writer
	pageOffset int // offset within a page of the start of buf
	buffered   int
	buf        []byte // watermark + one page of slack
	written    int64  // bytes handed to w (the OS file offset, relative)
}

const bufferWatermarkBytes = 128 * 1024

func newPageWriter(w io.Writer, pageOffset int) *pageWriter {
	return &pageWriter{w: w, pageOffset: pageOffset % pageBytes, buf: make([]byte, bufferWatermarkBytes+pageBytes)}
}

func (pw *pageWriter) Write(p []byte) (n int, err error) {
	if len(p)+pw.buffered <= bufferWatermarkBytes {
		copy(pw.buf[pw.buffered:], p)
		pw.buffered += len(p)
		return len(p), nil
	}
	// Complete the slack page in the buffer if unaligned.
	slack := pageBytes - (pw.pageOffset+pw.buffered)%pageBytes
	if slack != pageBytes {
		partial := slack > len(p)
		if partial {
			slack = len(p)
		}
		copy(pw.buf[pw.buffered:], p[:slack])
		pw.buffered += slack
		n = slack
		p = p[slack:]
		if partial {
			return n, nil // not enough to complete the page: no unaligned flush
		}
	}
	if err = pw.Flush(); err != nil {
		return n, err
	}
	if len(p) > pageBytes {
		pages := len(p) / pageBytes
		c, werr := pw.w.Write(p[:pages*pageBytes])
		pw.written += int64(c)
		n += c
		if werr != nil {
			return n, werr
		}
		p = p[pages*pageBytes:]
	}
	c, werr := pw.Write(p)
	return n + c, werr
}

// Flush writes whatever is buffered, aligned or not.
func (pw *pageWriter) Flush() error {
	if pw.buffered == 0 {
		return nil
	}
	c, err := pw.w.Write(pw.buf[:pw.buffered])
	pw.written += int64(c)
	pw.pageOffset = (pw.pageOffset + pw.buffered) % pageBytes
	pw.buffered = 0
	return err
}

// encoder frames records into a pageWriter and keeps the running CRC.
type encoder struct {
	pw      *pageWriter
	crc     uint32
	scratch []byte
	word    [frameHeaderBytes]byte
}

// scratchBytes: records up to this size are built without allocating.
const scratchBytes = 1 << 20

func newEncoder(w io.Writer, prevCRC uint32, pageOffset int64) *encoder {
	return &encoder{pw: newPageWriter(w, int(pageOffset%pageBytes)), crc: prevCRC, scratch: make([]byte, scratchBytes)}
}

// encode writes one record. data is nil for a record without a data field.
func (e *encoder) encode(t RecordType, data []byte) error {
	if t != CRCType {
		e.crc = crc32.Update(e.crc, crcTable, data)
	}
	size := recordHeaderMax + len(data) + 8
	var b []byte
	if size <= len(e.scratch) {
		b = e.scratch[:0]
	} else {
		b = make([]byte, 0, size)
	}
	b = appendRecordHeader(b, t, e.crc, data != nil, len(data))
	b = append(b, data...)
	return e.writeFrame(b)
}

// encodeEntry writes an entry record, marshalling the entry in place after
// room for the record header, so the common case copies the data once.
func (e *encoder) encodeEntry(ent *raftpb.Entry) error {
	b := e.scratch
	if size := recordHeaderMax + entrySize(ent) + 8; size > len(b) {
		b = make([]byte, size)
	}
	body := appendEntry(b[recordHeaderMax:recordHeaderMax], ent)
	return e.frameInPlace(b, EntryType, recordHeaderMax+len(body))
}

// encodeState writes a state record.
func (e *encoder) encodeState(s hardState) error {
	body := s.appendTo(e.scratch[recordHeaderMax:recordHeaderMax])
	return e.frameInPlace(e.scratch, StateType, recordHeaderMax+len(body))
}

// frameInPlace frames the record whose data is already in
// b[recordHeaderMax:end]: the header is written just before the data, and
// b has room for the padding after it.
func (e *encoder) frameInPlace(b []byte, t RecordType, end int) error {
	body := b[recordHeaderMax:end]
	e.crc = crc32.Update(e.crc, crcTable, body)
	var hdr [recordHeaderMax]byte
	h := appendRecordHeader(hdr[:0], t, e.crc, true, len(body))
	start := recordHeaderMax - len(h)
	copy(b[start:], h)
	return e.writeFrame(b[start:end])
}

// writeFrame writes the length word and the padded record as two writes,
// exactly as etcd's encoder does (the split matters to the page writer).
// rec must have at least 7 bytes of capacity beyond its length.
func (e *encoder) writeFrame(rec []byte) error {
	lenField, pad := encodeFrameSize(len(rec))
	n := len(rec)
	rec = rec[:n+pad]
	clear(rec[n:])
	binary.LittleEndian.PutUint64(e.word[:], lenField)
	if _, err := e.pw.Write(e.word[:]); err != nil {
		return err
	}
	_, err := e.pw.Write(rec)
	return err
}

func (e *encoder) flush() error { return e.pw.Flush() }
