package wal

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/etckit/etckit/corrupt"
	"github.com/etckit/etckit/internal/fixture"
	"github.com/etckit/etckit/vfs"
)

// addSeeds adds the head of the real etcd segment (its records up to the
// zero-filled preallocation), whole, cut, and with a flipped bit.
func addSeeds(f *testing.F) {
	root := f.TempDir()
	if err := fixture.ExtractTo(fixture.Path(f, "etcd-3.6.16/small.tar.gz"), root); err != nil {
		f.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "small", "member", "wal", SegmentName(0, 0)))
	if err != nil {
		f.Fatal(err)
	}
	end := len(b)
	for end > 0 && b[end-1] == 0 {
		end--
	}
	head := b[:end+8]
	f.Add(head)
	f.Add(head[:len(head)/2])
	f.Add(head[:200])
	f.Add(head[:72])
	flipped := bytes.Clone(head[:4096])
	flipped[1000] ^= 1
	f.Add(flipped)
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3})
}

func writeSegment(t *testing.T, fsys vfs.FS, dir, name string, b []byte) {
	if err := fsys.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := fsys.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// checkErr: decoding arbitrary bytes ends at EOF or with a *corrupt.Error
// whose offset lies inside the file; never anything else, never a panic.
func checkErr(t *testing.T, err error, size int64) {
	if err == nil || errors.Is(err, io.EOF) {
		return
	}
	ce := corrupt.As(err)
	if ce == nil {
		if errors.Is(err, ErrSnapshotNotFound) || errors.Is(err, ErrMetadataConflict) || errors.Is(err, ErrSliceOutOfRange) || errors.Is(err, ErrSnapshotMismatch) {
			return
		}
		t.Fatalf("error is not a corruption error: %v", err)
	}
	if ce.Offset < 0 || ce.Offset > size || ce.Path == "" {
		t.Fatalf("error at offset %d of a %d-byte file: %v", ce.Offset, size, err)
	}
}

// FuzzDecode feeds arbitrary bytes to the frame decoder as the only segment
// of a WAL, through Scan (both modes) and ReadAll.
func FuzzDecode(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		fsys := vfs.NewMem()
		writeSegment(t, fsys, "/w", SegmentName(0, 0), b)
		for _, cont := range []bool{false, true} {
			n := 0
			err := Scan("/w", ScanOptions{FS: fsys, ContinueOnCRCError: cont}, func(p Position, r Record) error {
				// (Alignment is not checked: a length word without the
				// pad flag may describe an unaligned record, which etcd
				// reads the same way.)
				if p.Offset < 0 || p.Offset+8 > int64(len(b)) {
					t.Fatalf("record at offset %d of %d bytes", p.Offset, len(b))
				}
				n++
				return nil
			})
			checkErr(t, err, int64(len(b)))
			if n > len(b)/8 {
				t.Fatalf("%d records from %d bytes", n, len(b))
			}
		}
		w, err := OpenForRead("/w", Snapshot{}, Options{FS: fsys})
		if err != nil {
			t.Fatal(err)
		}
		_, _, _, err = w.ReadAll()
		w.Close()
		checkErr(t, err, int64(len(b)))
	})
}

// FuzzScanTwoSegments splits the input into two segments, so the CRC chain
// across segments and the torn rule (last segment only) are exercised.
func FuzzScanTwoSegments(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		cut := len(b) / 2 &^ 7
		fsys := vfs.NewMem()
		writeSegment(t, fsys, "/w", SegmentName(0, 0), b[:cut])
		writeSegment(t, fsys, "/w", SegmentName(1, 5), b[cut:])
		err := Scan("/w", ScanOptions{FS: fsys}, func(Position, Record) error { return nil })
		checkErr(t, err, int64(len(b)))
		if _, err := Verify("/w", Snapshot{}, Options{FS: fsys}); err != nil {
			checkErr(t, err, int64(len(b)))
		}
		if _, err := ValidSnapshotEntries("/w", Options{FS: fsys}); err != nil {
			checkErr(t, err, int64(len(b)))
		}
	})
}

// FuzzRecordRoundTrip: what the encoder writes, the decoder reads back.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add([]byte("somedata"), uint64(3), uint64(7), true)
	f.Add([]byte{}, uint64(0), uint64(0), false)
	f.Fuzz(func(t *testing.T, data []byte, term, index uint64, withData bool) {
		typ := raftpb.EntryConfChange
		e := &raftpb.Entry{Type: &typ, Term: &term, Index: &index}
		if withData {
			e.Data = data
		}
		var buf bytes.Buffer
		enc := newEncoder(&buf, 0, 0)
		if err := enc.encodeEntry(e); err != nil {
			t.Fatal(err)
		}
		if err := enc.encode(MetadataType, data); err != nil {
			t.Fatal(err)
		}
		enc.flush()
		fsys := vfs.NewMem()
		writeSegment(t, fsys, "/w", SegmentName(0, 0), buf.Bytes())
		var got []Record
		err := Scan("/w", ScanOptions{FS: fsys}, func(p Position, r Record) error {
			r.Data = bytes.Clone(r.Data)
			got = append(got, r)
			return nil
		})
		if err != nil || len(got) != 2 {
			t.Fatalf("%d records, %v", len(got), err)
		}
		d, err := UnmarshalEntry(got[0].Data)
		if err != nil || d.GetTerm() != term || d.GetIndex() != index || d.GetType() != typ || !bytes.Equal(d.Data, e.Data) || (d.Data == nil) != (e.Data == nil) {
			t.Fatalf("entry round trip: %v vs %v (%v)", d, e, err)
		}
		if got[1].Type != MetadataType || !bytes.Equal(got[1].Data, data) {
			t.Fatalf("metadata round trip")
		}
	})
}
