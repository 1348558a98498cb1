package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Limits of the decoders. etcd caps the message stream at 512 MiB and the
// snapshot envelope at 64 MiB; it puts no cap on msgappv2 lengths, where
// these decoders use the message stream's.
const (
	MaxMessageBytes  = 512 << 20
	MaxSnapshotBytes = 64 << 20
	maxEntries       = 1 << 24 // entries in one msgappv2 AppEntries frame
)

// ErrExceedSizeLimit is etcd's error for a length prefix above the limit.
var ErrExceedSizeLimit = errors.New("rafthttp: error limit exceeded")

// msgappv2 frame types.
const (
	frameLinkHeartbeat byte = 0
	frameAppEntries    byte = 1
	frameApp           byte = 2
)

// linkHeartbeat is the message a stream writer sends to keep the dialler's
// read deadline from firing: MsgHeartbeat with From and To zero.
func linkHeartbeat() *raftpb.Message {
	return &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum()}
}

// IsLinkHeartbeat reports whether m is a link heartbeat, which never goes
// to raft.
func IsLinkHeartbeat(m *raftpb.Message) bool {
	return m.GetType() == raftpb.MsgHeartbeat && m.GetTo() == 0 && m.GetFrom() == 0
}

// MessageEncoder writes the message stream (and the snapshot envelope): each
// message a u64 big-endian length and its protobuf bytes.
type MessageEncoder struct {
	w   io.Writer
	buf []byte
}

// NewMessageEncoder returns an encoder writing to w.
func NewMessageEncoder(w io.Writer) *MessageEncoder { return &MessageEncoder{w: w} }

// Encode writes m.
func (e *MessageEncoder) Encode(m *raftpb.Message) error {
	b, err := proto.MarshalOptions{}.MarshalAppend(append(e.buf[:0], make([]byte, 8)...), m)
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint64(b, uint64(len(b)-8))
	e.buf = b[:0]
	if cap(e.buf) > 1<<20 {
		e.buf = nil // do not keep a large message's buffer
	}
	_, err = e.w.Write(b)
	return err
}

// MessageDecoder reads what MessageEncoder writes.
type MessageDecoder struct {
	r     io.Reader
	limit uint64
	off   int64 // bytes consumed, for errors
}

// NewMessageDecoder returns a decoder of the message stream read from r,
// refusing messages above limit bytes.
func NewMessageDecoder(r io.Reader, limit uint64) *MessageDecoder {
	return &MessageDecoder{r: r, limit: limit}
}

// Offset is how many bytes the decoder has consumed.
func (d *MessageDecoder) Offset() int64 { return d.off }

// Decode reads the next message. A clean end of the stream before a new
// message is io.EOF; an end inside one is io.ErrUnexpectedEOF.
func (d *MessageDecoder) Decode() (*raftpb.Message, error) {
	var lb [8]byte
	if _, err := io.ReadFull(d.r, lb[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint64(lb[:])
	if n > d.limit {
		return nil, fmt.Errorf("%w: message of %d bytes at offset %d (limit %d)", ErrExceedSizeLimit, n, d.off, d.limit)
	}
	buf, err := readN(d.r, n)
	if err != nil {
		return nil, noEOF(err)
	}
	m := &raftpb.Message{}
	if err := proto.Unmarshal(buf, m); err != nil {
		return nil, fmt.Errorf("rafthttp: message at offset %d: %w", d.off, err)
	}
	d.off += 8 + int64(n)
	return m, nil
}

// readN reads exactly n bytes, growing the buffer as data arrives so that a
// lying length prefix costs no more memory than the bytes sent.
func readN(r io.Reader, n uint64) ([]byte, error) {
	const chunk = 1 << 20
	if n <= chunk {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return b, err
	}
	b := make([]byte, 0, chunk)
	for uint64(len(b)) < n {
		k := min(n-uint64(len(b)), chunk)
		b = append(b, make([]byte, k)...)
		if _, err := io.ReadFull(r, b[uint64(len(b))-k:]); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// MsgAppV2Encoder writes the msgappv2 stream. It keeps the (term, index)
// the decoder on the other end also keeps, and writes a MsgApp that
// continues exactly where the last one ended, in the same term, in the
// short AppEntries form. Only MsgApp and link heartbeats may be encoded.
type MsgAppV2Encoder struct {
	w           *bufio.Writer
	term, index uint64
	buf         []byte
}

// NewMsgAppV2Encoder returns an encoder writing to w; it buffers, so call
// Flush.
func NewMsgAppV2Encoder(w io.Writer) *MsgAppV2Encoder {
	return &MsgAppV2Encoder{w: bufio.NewWriterSize(w, 64<<10)}
}

// Flush writes what is buffered.
func (e *MsgAppV2Encoder) Flush() error { return e.w.Flush() }

// Encode writes m, a MsgApp or a link heartbeat.
func (e *MsgAppV2Encoder) Encode(m *raftpb.Message) error {
	var u [8]byte
	switch {
	case IsLinkHeartbeat(m):
		return e.w.WriteByte(frameLinkHeartbeat)
	case m.GetType() != raftpb.MsgApp:
		return fmt.Errorf("rafthttp: %v on the msgappv2 stream", m.GetType())
	case e.index == m.GetIndex() && e.term == m.GetLogTerm() && m.GetLogTerm() == m.GetTerm():
		e.w.WriteByte(frameAppEntries)
		binary.BigEndian.PutUint64(u[:], uint64(len(m.Entries)))
		e.w.Write(u[:])
		for _, ent := range m.Entries {
			b, err := proto.MarshalOptions{}.MarshalAppend(e.buf[:0], ent)
			if err != nil {
				return err
			}
			binary.BigEndian.PutUint64(u[:], uint64(len(b)))
			e.w.Write(u[:])
			e.w.Write(b)
			e.keep(b)
			e.index++
		}
		binary.BigEndian.PutUint64(u[:], m.GetCommit())
		_, err := e.w.Write(u[:])
		return err
	default:
		b, err := proto.MarshalOptions{}.MarshalAppend(e.buf[:0], m)
		if err != nil {
			return err
		}
		e.w.WriteByte(frameApp)
		binary.BigEndian.PutUint64(u[:], uint64(len(b)))
		e.w.Write(u[:])
		_, err = e.w.Write(b)
		e.keep(b)
		e.term, e.index = m.GetTerm(), m.GetIndex()
		if n := len(m.Entries); n > 0 {
			e.index = m.Entries[n-1].GetIndex()
		}
		return err
	}
}

func (e *MsgAppV2Encoder) keep(b []byte) {
	if cap(b) <= 1<<20 {
		e.buf = b[:0]
	}
}

// MsgAppV2Decoder reads the msgappv2 stream from one peer; from and to are
// the stream's identities (the short form carries no IDs).
type MsgAppV2Decoder struct {
	r           *bufio.Reader
	from, to    uint64
	term, index uint64
	off         int64
}

// NewMsgAppV2Decoder returns a decoder of the msgappv2 stream that from
// sends to to.
func NewMsgAppV2Decoder(r io.Reader, from, to uint64) *MsgAppV2Decoder {
	return &MsgAppV2Decoder{r: bufio.NewReaderSize(r, 64<<10), from: from, to: to}
}

// Offset is how many bytes the decoder has consumed.
func (d *MsgAppV2Decoder) Offset() int64 { return d.off }

func (d *MsgAppV2Decoder) u64() (uint64, error) {
	var u [8]byte
	if _, err := io.ReadFull(d.r, u[:]); err != nil {
		return 0, noEOF(err)
	}
	d.off += 8
	return binary.BigEndian.Uint64(u[:]), nil
}

// Decode reads the next frame: a link heartbeat or a MsgApp.
func (d *MsgAppV2Decoder) Decode() (*raftpb.Message, error) {
	at := d.off
	typ, err := d.r.ReadByte()
	if err != nil {
		return nil, err // io.EOF: a clean end between frames
	}
	d.off++
	switch typ {
	case frameLinkHeartbeat:
		return linkHeartbeat(), nil
	case frameAppEntries:
		m := &raftpb.Message{Type: raftpb.MsgApp.Enum(), From: proto.Uint64(d.from), To: proto.Uint64(d.to),
			Term: proto.Uint64(d.term), LogTerm: proto.Uint64(d.term), Index: proto.Uint64(d.index)}
		n, err := d.u64()
		if err != nil {
			return nil, err
		}
		if n > maxEntries {
			return nil, fmt.Errorf("%w: %d entries in the msgappv2 frame at offset %d", ErrExceedSizeLimit, n, at)
		}
		m.Entries = make([]*raftpb.Entry, 0, min(n, 1024))
		for i := uint64(0); i < n; i++ {
			size, err := d.u64()
			if err != nil {
				return nil, err
			}
			if size > MaxMessageBytes {
				return nil, fmt.Errorf("%w: entry of %d bytes in the msgappv2 frame at offset %d", ErrExceedSizeLimit, size, at)
			}
			b, err := readN(d.r, size)
			if err != nil {
				return nil, noEOF(err)
			}
			d.off += int64(size)
			ent := &raftpb.Entry{}
			if err := proto.Unmarshal(b, ent); err != nil {
				return nil, fmt.Errorf("rafthttp: entry %d of the msgappv2 frame at offset %d: %w", i, at, err)
			}
			m.Entries = append(m.Entries, ent)
			d.index++
		}
		commit, err := d.u64()
		if err != nil {
			return nil, err
		}
		m.Commit = proto.Uint64(commit)
		return m, nil
	case frameApp:
		size, err := d.u64()
		if err != nil {
			return nil, err
		}
		if size > MaxMessageBytes {
			return nil, fmt.Errorf("%w: message of %d bytes in the msgappv2 frame at offset %d", ErrExceedSizeLimit, size, at)
		}
		b, err := readN(d.r, size)
		if err != nil {
			return nil, noEOF(err)
		}
		d.off += int64(size)
		m := &raftpb.Message{}
		if err := proto.Unmarshal(b, m); err != nil {
			return nil, fmt.Errorf("rafthttp: msgappv2 frame at offset %d: %w", at, err)
		}
		d.term, d.index = m.GetTerm(), m.GetIndex()
		if n := len(m.Entries); n > 0 {
			d.index = m.Entries[n-1].GetIndex()
		}
		return m, nil
	default:
		return nil, fmt.Errorf("failed to parse type %d in msgappv2 stream (offset %d)", typ, at)
	}
}
