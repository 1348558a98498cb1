package wal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/vfs"
)

// DefaultSegmentSize is etcd's segment size: 64,000,000 bytes (decimal, not
// 64 MiB). Wire format: a different value still produces a readable log, but
// not the same bytes as etcd.
const DefaultSegmentSize int64 = 64_000_000

var (
	ErrMetadataConflict = errors.New("wal: conflicting metadata found")
	ErrFileNotFound     = errors.New("wal: file not found")
	ErrCRCMismatch      = errors.New("walpb: crc mismatch")
	ErrSnapshotMismatch = errors.New("wal: snapshot mismatch")
	ErrSnapshotNotFound = errors.New("wal: snapshot not found")
	ErrSliceOutOfRange  = errors.New("wal: slice bounds out of range")
	ErrDecoderNotFound  = errors.New("wal: decoder not found")
	ErrLocked           = errors.New("wal: segment is locked by another process (a running etcd or etckit?)")
	ErrClosed           = errors.New("wal: closed")
)

const (
	dirMode  fs.FileMode = 0o700
	fileMode fs.FileMode = 0o600
)

// Options configures a WAL. The zero value is etcd's configuration on the
// operating system's filesystem.
type Options struct {
	FS vfs.FS // default vfs.OS{}
	// SegmentSize is the preallocated size of a segment and the threshold
	// at which Save cuts a new one. Default DefaultSegmentSize.
	SegmentSize int64
	// NoSync skips fdatasync (unsafe; for tests and benchmarks, like
	// etcd's --unsafe-no-fsync).
	NoSync bool
	// NoZeroAhead turns off writing zeros into the tail segment ahead of
	// the records (see zero.go); for measuring what it saves.
	NoZeroAhead bool
	// OnSync, when set, is told of each sync of the tail: the bytes the
	// buffered records added to the segment, the time to write them and
	// the time of the fdatasync (synced false with NoSync). For the
	// server's metrics; wal knows no metrics library.
	OnSync func(n int64, write, fsync time.Duration, synced bool)
}

func (o Options) withDefaults() Options {
	if o.FS == nil {
		o.FS = vfs.OS{}
	}
	if o.SegmentSize <= 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	return o
}

// segment is a segment held open for writing, with its lock.
type segment struct {
	name       string
	seq, index uint64
	f          vfs.File
}

// WAL is a write-ahead log in etcd's format. A WAL is opened either for
// reading (OpenForRead: ReadAll, then Close) or for writing (Create, or Open
// followed by ReadAll, then Save/SaveSnapshot/Cut).
type WAL struct {
	mu   sync.Mutex
	opts Options
	fs   vfs.FS
	dir  string

	metadata []byte
	state    hardState // last non-empty state saved or read
	start    Snapshot  // the snapshot ReadAll starts after
	enti     uint64    // index of the last entry saved

	// reading
	dec     *decoder
	readers []*segReader

	// writing
	write   bool
	segs    []*segment // locked segments, oldest first; the last is the tail
	enc     *encoder
	tw      *tailWriter // the tail segment, under enc
	tailOff int64       // file offset of the tail at which the encoder started
	fp      *pipeline
	closed  bool
	// reported: the encoder's written bytes last told to OnSync
	reported int64
}

// Create creates a WAL in dir, which must not hold segments, ready for
// appending. Like etcd it builds the first segment in <dir>.tmp and renames
// the directory into place, so a crash leaves either no WAL or a complete
// one; unlike etcd it also fsyncs <dir>.tmp before the rename.
//
// The first segment holds a CRC record (0), the metadata and the snapshot
// record {index 0, term 0}.
func Create(dir string, metadata []byte, opts Options) (*WAL, error) {
	opts = opts.withDefaults()
	fsys := opts.FS
	dir = filepath.Clean(dir)
	if Exist(fsys, dir) {
		return nil, fmt.Errorf("wal: %s already holds segments: %w", dir, os.ErrExist)
	}
	tmp := dir + ".tmp"
	if err := fsys.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	if err := fsys.MkdirAll(tmp, dirMode); err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	name := SegmentName(0, 0)
	f, err := fsys.OpenFile(filepath.Join(tmp, name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fileMode)
	if err != nil {
		fsys.RemoveAll(tmp)
		return nil, fmt.Errorf("wal: %w", err)
	}
	w := &WAL{opts: opts, fs: fsys, dir: dir, metadata: metadata, write: true}
	w.segs = []*segment{{name: name, f: f}}
	fail := func(err error) (*WAL, error) {
		if w.tw != nil {
			w.tw.stop()
		}
		f.Close()
		fsys.RemoveAll(tmp)
		return nil, err
	}
	if err := lockSegment(f); err != nil {
		return fail(err)
	}
	if err := f.Preallocate(opts.SegmentSize); err != nil {
		return fail(fmt.Errorf("wal: preallocate %s: %w", f.Name(), err))
	}
	w.tw = w.newTail(f, 0, 0)
	w.enc = newEncoder(w.tw, 0, 0)
	if err := w.enc.encode(CRCType, nil); err != nil {
		return fail(err)
	}
	if err := w.enc.encode(MetadataType, metadata); err != nil {
		return fail(err)
	}
	if err := w.saveSnapshotLocked(Snapshot{}); err != nil {
		return fail(err)
	}
	if err := fsys.SyncDir(tmp); err != nil {
		return fail(fmt.Errorf("wal: %w", err))
	}
	if err := fsys.RemoveAll(dir); err != nil {
		return fail(fmt.Errorf("wal: %w", err))
	}
	if err := fsys.Rename(tmp, dir); err != nil {
		return fail(fmt.Errorf("wal: %w", err))
	}
	if err := fsys.SyncDir(filepath.Dir(dir)); err != nil {
		// The directory is in place but its entry may not be durable; do
		// not hand out a WAL whose existence a crash could undo.
		w.tw.stop()
		f.Close()
		return nil, fmt.Errorf("wal: sync parent of %s: %w", dir, err)
	}
	w.fp = newPipeline(w)
	return w, nil
}

// Open opens the WAL in dir for writing at snap: ReadAll must be called
// before appending. Every segment from the one holding snap.Index on is
// try-locked with etcd's locking, so a WAL that a running etcd (or another
// etckit) holds is refused with ErrLocked.
func Open(dir string, snap Snapshot, opts Options) (*WAL, error) {
	return openAt(dir, snap, opts, true)
}

// OpenForRead opens the WAL in dir for reading at snap, without locks.
func OpenForRead(dir string, snap Snapshot, opts Options) (*WAL, error) {
	return openAt(dir, snap, opts, false)
}

func openAt(dir string, snap Snapshot, opts Options, write bool) (*WAL, error) {
	opts = opts.withDefaults()
	dir = filepath.Clean(dir)
	names, err := selectSegments(opts.FS, dir, snap.Index)
	if err != nil {
		return nil, err
	}
	w := &WAL{opts: opts, fs: opts.FS, dir: dir, start: snap, write: write}
	if !write {
		if w.readers, err = openSegments(opts.FS, dir, names); err != nil {
			return nil, err
		}
		w.dec = newDecoder(w.readers)
		return w, nil
	}
	for _, n := range names {
		p := filepath.Join(dir, n)
		f, err := opts.FS.OpenFile(p, os.O_RDWR, fileMode)
		if err == nil {
			if err = lockSegment(f); err != nil {
				f.Close()
			}
		}
		if err != nil {
			w.closeSegs()
			return nil, fmt.Errorf("wal: open %s: %w", p, err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			w.closeSegs()
			return nil, fmt.Errorf("wal: %w", err)
		}
		seq, idx, _ := ParseSegmentName(n)
		w.segs = append(w.segs, &segment{name: n, seq: seq, index: idx, f: f})
		w.readers = append(w.readers, &segReader{name: n, path: p, f: f, size: fi.Size()})
	}
	w.dec = newDecoder(w.readers)
	return w, nil
}

func lockSegment(f vfs.File) error {
	err := f.TryLock()
	if errors.Is(err, vfs.ErrLocked) {
		return fmt.Errorf("%w: %s", ErrLocked, f.Name())
	}
	return err
}

// ReadAll reads the WAL from the snapshot it was opened at: the metadata,
// the last HardState and the entries after the snapshot. A later entry with
// an index already seen replaces that entry and drops everything after it
// (raft's log overwrite). Entries may include uncommitted ones (index >
// state.commit): do not apply those.
//
// Opened for writing, the whole log must decode: a torn tail is returned as
// an error matching corrupt.ErrTornTail (call Repair, then open again), and
// on success the WAL is ready for appending after the last record. Opened
// for reading, a torn tail ends the read without an error; mid-log
// corruption is an error in both modes (etcd's read mode would stop there
// silently).
//
// ErrSnapshotNotFound is returned, with the data, when no snapshot record
// matched the snapshot the WAL was opened at.
func (w *WAL) ReadAll() (metadata []byte, state *raftpb.HardState, ents []*raftpb.Entry, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	state = &raftpb.HardState{}
	if w.dec == nil {
		return nil, state, nil, ErrDecoderNotFound
	}
	d := w.dec
	var (
		rec   Record
		match bool
		alloc entryAlloc
		f     EntryFields
		pos   Position
	)
	where := func(p Position) string { return filepath.Join(w.dir, p.Segment) }
	for {
		pos, _, err = d.next(&rec)
		if err != nil {
			break
		}
		switch rec.Type {
		case EntryType:
			if err = DecodeEntryFields(rec.Data, &f); err != nil {
				return nil, state, ents, corrupt.New(where(pos), pos.Offset, corrupt.MidLog, "undecodable entry", err)
			}
			if f.Index > w.start.Index {
				off := f.Index - w.start.Index - 1
				if off > uint64(len(ents)) {
					return nil, state, ents, fmt.Errorf("%w: snapshot[Index: %d, Term: %d], current entry[Index: %d, Term: %d], len(ents): %d (%s)",
						ErrSliceOutOfRange, w.start.Index, w.start.Term, f.Index, f.Term, len(ents), pos)
				}
				ents = append(ents[:off], alloc.entry(&f))
			}
			w.enti = f.Index
		case StateType:
			s, derr := decodeStateRecord(w.dir, pos, rec.Data)
			if derr != nil {
				return nil, &raftpb.HardState{}, nil, derr
			}
			state = s
		case MetadataType:
			if metadata != nil && !bytes.Equal(metadata, rec.Data) {
				return nil, &raftpb.HardState{}, nil, fmt.Errorf("%w (%s)", ErrMetadataConflict, pos)
			}
			if metadata == nil {
				metadata = bytes.Clone(rec.Data)
				if metadata == nil {
					metadata = []byte{}
				}
			}
		case CRCType:
			// checked by the decoder
		case SnapshotType:
			s, derr := decodeSnapshotRecord(w.dir, pos, rec.Data)
			if derr != nil {
				return nil, &raftpb.HardState{}, nil, derr
			}
			if s.Index == w.start.Index {
				if s.Term != w.start.Term {
					return nil, &raftpb.HardState{}, nil, fmt.Errorf("%w: record {index %d, term %d} vs {index %d, term %d} (%s)",
						ErrSnapshotMismatch, s.Index, s.Term, w.start.Index, w.start.Term, pos)
				}
				match = true
			}
		default:
			return nil, &raftpb.HardState{}, nil, unexpectedType(w.dir, pos, rec.Type)
		}
	}
	if w.write {
		if !errors.Is(err, io.EOF) {
			return nil, &raftpb.HardState{}, nil, err
		}
		if err = w.startAppending(); err != nil {
			return nil, &raftpb.HardState{}, nil, err
		}
	} else {
		if !errors.Is(err, io.EOF) && !errors.Is(err, corrupt.ErrTornTail) {
			return nil, &raftpb.HardState{}, nil, err
		}
		closeSegments(w.readers)
	}
	w.readers, w.dec = nil, nil
	w.metadata = metadata
	if !raft.IsEmptyHardState(state) {
		w.state = makeHardState(state)
	}
	w.start = Snapshot{}
	if !match {
		return metadata, state, ents, ErrSnapshotNotFound
	}
	return metadata, state, ents, nil
}

// startAppending positions the tail after the last valid record, zeroes
// whatever follows (a torn write may have left non-zero bytes after a zero
// length word, which new records must not partially overwrite) while keeping
// the space allocated, and chains the encoder to the decoder's CRC.
func (w *WAL) startAppending() error {
	tail := w.tail()
	off := w.dec.lastOffset()
	fi, err := tail.f.Stat()
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	if err := tail.f.Truncate(off); err != nil {
		return fmt.Errorf("wal: truncate %s: %w", tail.f.Name(), err)
	}
	if err := tail.f.Preallocate(fi.Size()); err != nil {
		return fmt.Errorf("wal: preallocate %s: %w", tail.f.Name(), err)
	}
	if _, err := tail.f.Seek(off, io.SeekStart); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	w.tw = w.newTail(tail.f, off, off)
	w.enc = newEncoder(w.tw, w.dec.lastCRC(), off)
	w.tailOff = off
	w.fp = newPipeline(w)
	return nil
}

// hardState is a raftpb.HardState held by value, with field presence, so
// that remembering the last state costs no allocation per Save.
type hardState struct {
	term, vote, commit          uint64
	hasTerm, hasVote, hasCommit bool
}

func makeHardState(s *raftpb.HardState) hardState {
	return hardState{
		term: s.GetTerm(), vote: s.GetVote(), commit: s.GetCommit(),
		hasTerm: s.Term != nil, hasVote: s.Vote != nil, hasCommit: s.Commit != nil,
	}
}

func (h hardState) empty() bool { return h.term == 0 && h.vote == 0 && h.commit == 0 }

// appendTo encodes raftpb.HardState: term(1), vote(2), commit(3), each
// when set (etcd 3.7's presence rules).
func (h hardState) appendTo(b []byte) []byte {
	if h.hasTerm {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, h.term)
	}
	if h.hasVote {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, h.vote)
	}
	if h.hasCommit {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, h.commit)
	}
	return b
}

func (w *WAL) tail() *segment {
	if len(w.segs) == 0 {
		return nil
	}
	return w.segs[len(w.segs)-1]
}

func (w *WAL) writable() error {
	switch {
	case w.closed:
		return ErrClosed
	case w.enc == nil:
		return errors.New("wal: not open for appending (open for writing and call ReadAll first)")
	}
	return nil
}

// Save appends entries and then the HardState (when not empty), and
// fdatasyncs when raft requires it (new entries, or a changed term or
// vote; a commit-only change is not synced, as in etcd). It cuts a new
// segment when the tail has reached the segment size.
func (w *WAL) Save(st *raftpb.HardState, ents []*raftpb.Entry) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if raft.IsEmptyHardState(st) && len(ents) == 0 {
		return nil
	}
	if err := w.writable(); err != nil {
		return err
	}
	// raft.MustSync: new entries, or a changed term or vote.
	mustSync := len(ents) != 0 || st.GetVote() != w.state.vote || st.GetTerm() != w.state.term
	for _, e := range ents {
		if err := w.enc.encodeEntry(e); err != nil {
			return err
		}
		w.enti = e.GetIndex()
	}
	if !raft.IsEmptyHardState(st) {
		if err := w.saveState(makeHardState(st)); err != nil {
			return err
		}
	}
	if w.tailOff+w.enc.pw.written < w.opts.SegmentSize {
		if mustSync {
			return w.sync()
		}
		return nil
	}
	return w.cut()
}

func (w *WAL) saveState(s hardState) error {
	w.state = s
	return w.enc.encodeState(s)
}

// SaveSnapshot appends a snapshot record and syncs. A snapshot with index >
// 0 must carry its ConfState (etcd >= 3.5 requires it).
func (w *WAL) SaveSnapshot(s Snapshot) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writable(); err != nil {
		return err
	}
	return w.saveSnapshotLocked(s)
}

func (w *WAL) saveSnapshotLocked(s Snapshot) error {
	if s.ConfState == nil && s.Index > 0 {
		return fmt.Errorf("wal: snapshot at index %d is missing its ConfState", s.Index)
	}
	b, err := MarshalSnapshot(s)
	if err != nil {
		return err
	}
	if err := w.enc.encode(SnapshotType, b); err != nil {
		return err
	}
	if w.enti < s.Index {
		w.enti = s.Index
	}
	return w.sync()
}

// Sync flushes buffered records and fdatasyncs the tail segment.
func (w *WAL) Sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writable(); err != nil {
		return err
	}
	return w.sync()
}

func (w *WAL) sync() error {
	var start time.Time
	if w.opts.OnSync != nil {
		start = time.Now()
	}
	if err := w.enc.flush(); err != nil {
		return fmt.Errorf("wal: write %s: %w", w.tail().f.Name(), err)
	}
	if w.opts.NoSync {
		if w.opts.OnSync != nil {
			w.opts.OnSync(w.syncedBytes(), time.Since(start), 0, false)
		}
		return nil
	}
	var flushed time.Time
	if w.opts.OnSync != nil {
		flushed = time.Now()
	}
	if err := w.tail().f.Datasync(); err != nil {
		return fmt.Errorf("wal: fdatasync %s: %w", w.tail().f.Name(), err)
	}
	if w.opts.OnSync != nil {
		w.opts.OnSync(w.syncedBytes(), flushed.Sub(start), time.Since(flushed), true)
	}
	if w.tw != nil && w.tw.z != nil {
		w.tw.z.synced(w.tw.off)
	}
	return nil
}

// syncedBytes is how many bytes were written since the last call (the
// count of the encoder, which a cut starts again).
func (w *WAL) syncedBytes() int64 {
	n := w.enc.pw.written - w.reported
	if n < 0 {
		n = w.enc.pw.written
	}
	w.reported = w.enc.pw.written
	return n
}

// cut finishes the tail segment (truncated to its content) and continues in
// a new one taken from the pipeline: CRC record with the running CRC, the
// metadata, the last HardState; synced, renamed to
// <seq+1>-<last index+1>.wal and made durable with a directory fsync.
func (w *WAL) cut() error {
	tail := w.tail()
	off := w.tailOff + w.enc.pw.written
	w.tw.stop() // before the truncate: nothing may write past off
	if err := tail.f.Truncate(off); err != nil {
		return fmt.Errorf("wal: truncate %s: %w", tail.f.Name(), err)
	}
	if err := w.sync(); err != nil {
		return err
	}
	next, err := w.fp.open()
	if err != nil {
		return err
	}
	seq := tail.seq + 1
	name := SegmentName(seq, w.enti+1)
	w.segs = append(w.segs, &segment{name: name, seq: seq, index: w.enti + 1, f: next.f})
	w.tw = w.newTail(next.f, 0, next.zeroed)
	w.enc = newEncoder(w.tw, w.enc.crc, 0)
	w.tailOff = 0
	if err := w.enc.encode(CRCType, nil); err != nil {
		return err
	}
	if err := w.enc.encode(MetadataType, w.metadata); err != nil {
		return err
	}
	if !w.state.empty() {
		if err := w.saveState(w.state); err != nil {
			return err
		}
	}
	if err := w.sync(); err != nil {
		return err
	}
	if err := w.fs.Rename(next.path, filepath.Join(w.dir, name)); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	if err := w.fs.SyncDir(w.dir); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	return nil
}

// Cut finishes the current segment and starts a new one now.
func (w *WAL) Cut() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writable(); err != nil {
		return err
	}
	return w.cut()
}

// ReleaseLockTo releases the locks of segments that hold only entries below
// index, keeping the last such segment (it may hold index-1): with segments
// starting at 1,2,3,4,5,6, ReleaseLockTo(4) releases 1 and 2 but keeps 3.
// Released segments may be purged.
func (w *WAL) ReleaseLockTo(index uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.segs) == 0 {
		return nil
	}
	smaller := len(w.segs) - 1
	for i, s := range w.segs {
		if s.index >= index {
			smaller = i - 1
			break
		}
	}
	if smaller <= 0 {
		return nil
	}
	var errs []error
	for _, s := range w.segs[:smaller] {
		errs = append(errs, s.f.Close())
	}
	w.segs = append([]*segment(nil), w.segs[smaller:]...)
	return errors.Join(errs...)
}

// Close syncs the tail, stops the pipeline (removing its temporary
// segment) and releases every lock.
func (w *WAL) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	if w.tw != nil {
		w.tw.stop()
	}
	var errs []error
	if w.fp != nil {
		errs = append(errs, w.fp.close())
	}
	if w.enc != nil && w.tail() != nil {
		errs = append(errs, w.sync())
	}
	errs = append(errs, w.closeSegs())
	if w.readers != nil && !w.write {
		errs = append(errs, closeSegments(w.readers))
	}
	return errors.Join(errs...)
}

// newTail wraps the tail segment f for the encoder, zeroing ahead of the
// writer from off when the filesystem supports it and syncs are on.
func (w *WAL) newTail(f vfs.File, off, zeroed int64) *tailWriter {
	t := &tailWriter{f: f, off: off}
	if !w.opts.NoZeroAhead && !w.opts.NoSync {
		t.z = startZeroAhead(f, off, zeroed)
	}
	return t
}

func (w *WAL) closeSegs() error {
	var errs []error
	for _, s := range w.segs {
		errs = append(errs, s.f.Close())
	}
	w.segs = nil
	return errors.Join(errs...)
}

// Dir is the directory of the WAL.
func (w *WAL) Dir() string { return w.dir }

// Segments lists the names of the segments this WAL holds locks on, oldest
// first (write mode).
func (w *WAL) Segments() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	names := make([]string, len(w.segs))
	for i, s := range w.segs {
		names[i] = s.name
	}
	return names
}
